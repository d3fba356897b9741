"""Run a command that dies, with every process it starts, when the process that asked for it dies.

``python -m panel.drivers.tether PID COMMAND [ARG...]`` is how the Ansible driver starts
ansible-playbook. ansible-runner starts its command on a pseudo-terminal with SIGHUP ignored,
so when the worker process running a provisioning job is SIGKILLed, ansible-playbook and the
task it runs would carry on, unwatched, while the sweep records the run as failed. The tether
asks the kernel for SIGTERM when its parent (PID) dies (Linux's parent-death signal), runs the
command as its child, and on SIGTERM or SIGINT (the parent's death, a timeout, a cancel) kills
every process below it — found through /proc, since Ansible's workers start sessions of their
own, and kept below it by making the tether their subreaper. Otherwise it exits with the
command's code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # prctl options, from <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
USAGE = "usage: python -m panel.drivers.tether PARENT_PID COMMAND [ARG...]"


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc (empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(_signum: int, _frame: object) -> None:
    """SIGKILL everything below this process (twice: a fork may race the first pass), then
    this process."""
    for _ in range(2):
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(128 + signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run the command tethered to the parent; its exit code."""
    if len(argv) < 3 or not argv[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    parent, command = int(argv[1]), argv[2:]
    with contextlib.suppress(OSError):  # a session leader (pexpect's child) leads a group already
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, _kill_all)
    signal.signal(signal.SIGINT, _kill_all)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: neither exists
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans below stay below, to be found
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the signal was asked for
        _kill_all(signal.SIGTERM, None)
    try:
        child = subprocess.Popen(command)  # an argument list, built by the driver
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
