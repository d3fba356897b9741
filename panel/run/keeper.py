"""What `helios up` becomes once everything runs: a small process that only waits and stops.

`helios up` needs the panel's libraries to set things up (migrations, keys, the first
administrator), then nothing of them while it waits; kept loaded, they are tens of megabytes
doing nothing. So, with everything started, it replaces itself (``os.execv``: same pid, its
children stay its children) with this module, which loads the standard library only (its log
format comes from panel.run.log_format, which does too). Its command line gives it the
children's pids, in the order they stop, Redis's pid if it started one, and how long to wait
for each.

It waits for SIGINT, SIGTERM or a child's exit (SIGCHLD) with ``sigwaitinfo``, the three kept
blocked: `helios up` blocked them before the exec, so a Ctrl-C during it stays pending and is
seen here. On SIGINT or SIGTERM it asks each child to stop (SIGTERM), waits up to the timeout,
kills what is left, then stops Redis the same way, and exits 0. When a child exits on its own
it logs it, stops the others and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time

from panel.run.log_format import TEXT_FORMAT, JsonFormatter, set_process_name

__all__ = ["keeper_argv", "main"]

# The records go on as `helios up`'s: same logger, same process name.
logger = logging.getLogger("panel.run.up")

WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
REDIS_STOP_TIMEOUT = 10.0  # seconds, as panel.run.redis_server.STOP_TIMEOUT


def keeper_argv(
    children: list[int],
    timeout: float,
    redis_pid: int | None,
    log_format: str,
    log_level: str,
) -> list[str]:
    """The command line `helios up` execs to become the keeper of ``children``."""
    argv = [sys.executable, "-m", "panel.run.keeper", "--timeout", str(timeout)]
    argv += ["--log-format", log_format, "--log-level", log_level]
    if redis_pid is not None:
        argv += ["--redis", str(redis_pid)]
    return argv + [str(pid) for pid in children]


class _Children:
    """The processes kept, by pid; an exit is reaped once and remembered."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.exits: dict[int, int] = {}

    def reap(self) -> None:
        for pid in self.pids:
            if pid in self.exits:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours, or reaped already: gone either way
                self.exits[pid] = -1
                continue
            if done:
                self.exits[pid] = os.waitstatus_to_exitcode(status)

    def running(self) -> list[int]:
        self.reap()
        return [pid for pid in self.pids if pid not in self.exits]


def _wait(seconds: float) -> None:
    """Until a watched signal arrives or ``seconds`` pass; a stop asked again is only logged."""
    info = signal.sigtimedwait(WATCHED, max(0.0, seconds))
    if info is not None and info.si_signo != signal.SIGCHLD:
        logger.info("up: stop already under way")


def _stop(children: _Children, timeout: float) -> None:
    """SIGTERM to each child still running, wait up to ``timeout`` for all, kill the rest."""
    for pid in children.running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while children.running() and time.monotonic() < deadline:
        _wait(deadline - time.monotonic())
    for pid in children.running():
        logger.warning("pid %d did not stop in %.0f s; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def keep(children: list[int], timeout: float, redis_pid: int | None) -> int:
    """Wait for a stop request or a child's exit, then stop the children, then Redis."""
    kept = _Children(children)
    code = 0
    while True:
        kept.reap()  # also what exited before this process had started waiting
        exited = [pid for pid in children if pid in kept.exits]
        if exited:
            pid = exited[0]
            logger.error("pid %d exited with %s; stopping", pid, kept.exits[pid])
            code = 1
            break
        info = signal.sigwaitinfo(WATCHED)
        if info.si_signo != signal.SIGCHLD:
            name = signal.Signals(info.si_signo).name
            logger.info("up: %s received, stopping gracefully", name)
            break
    _stop(kept, timeout)
    if redis_pid is not None:
        _stop(_Children([redis_pid]), REDIS_STOP_TIMEOUT)
    logger.info("stopped")
    return code


def _configure_logging(log_format: str, log_level: str) -> None:
    set_process_name("up")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level.upper())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m panel.run.keeper", description=__doc__)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--redis", type=int, default=None)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("children", type=int, nargs="+")
    args = parser.parse_args(argv)
    # Blocked by `helios up` before it became this process; blocked again for a keeper started
    # on its own. Kept blocked: sigwaitinfo takes them, no handler ever runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    _configure_logging(args.log_format, args.log_level)
    try:
        return keep(args.children, args.timeout, args.redis)
    except Exception:  # logged like `helios up` logs it; the children die with this process
        logger.critical("uncaught exception", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
