"""panel.run.keeper, what `helios up` becomes once everything runs: real processes, real signals.

Each test starts a launcher that does what `helios up` does at the end of its start: it starts
children, blocks SIGINT, SIGTERM and SIGCHLD, and execs the keeper with their pids. The
children are small Python programs that note SIGTERM in a file (or ignore it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from conftest import REPO_ROOT, wait_until

HEAVY = ["flask", "peewee", "redis", "rq", "requests", "pydantic", "gevent", "cryptography"]

# argv: its name, the folder it writes to, "stubborn" to ignore SIGTERM.
CHILD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    name, folder, mode = sys.argv[1:4]
    def stop(signum, frame):
        Path(folder, name + ".stopped").write_text("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop)
    Path(folder, name + ".ready").write_text("")
    while True:
        time.sleep(1)
""")

# argv: the folder, the keeper's timeout, "signal-first" to send itself SIGTERM before the
# exec, then one "name:mode" per child; the last child is passed as the Redis server, unless
# NO_REDIS is set.
LAUNCHER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    from pathlib import Path
    from panel.run.keeper import WATCHED, keeper_argv
    folder, timeout, first, *specs = sys.argv[1:]
    children = []
    for spec in specs:
        name, mode = spec.split(":")
        children.append(subprocess.Popen([sys.executable, "-c", CHILD, name, folder, mode]))
        while not Path(folder, name + ".ready").exists():
            time.sleep(0.02)
    Path(folder, "pids").write_text(" ".join(str(child.pid) for child in children))
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    if first == "signal-first":
        os.kill(os.getpid(), signal.SIGTERM)  # pending across the exec
    pids = [child.pid for child in children]
    if os.environ.get("NO_REDIS"):  # Redis is not ours (HELIOS_REDIS_URL): all are children
        os.execv(sys.executable, keeper_argv(pids, float(timeout), None, "json", "info"))
    os.execv(sys.executable, keeper_argv(pids[:-1], float(timeout), pids[-1], "json", "info"))
""")


def launch(folder: Path, timeout: float, first: str, *specs: str, **env: str) -> subprocess.Popen:
    code = f"CHILD = {CHILD!r}\n{LAUNCHER}"
    log = (folder / "keeper.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-c", code, str(folder), str(timeout), first, *specs],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
    )  # fmt: skip


def children_of(folder: Path) -> list[int]:
    wait_until(lambda: (folder / "pids").exists(), timeout=30, what="the children")
    return [int(pid) for pid in (folder / "pids").read_text().split()]


def documents(folder: Path) -> list[dict]:
    lines = (folder / "keeper.log").read_text().splitlines()
    return [json.loads(line) for line in lines]  # JSON logs: every line is one document


def messages(folder: Path) -> list[str]:
    return [document["message"] for document in documents(folder)]


def assert_gone(pids: list[int]) -> None:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        if process.status() != psutil.STATUS_ZOMBIE:
            alive.append(pid)
    assert alive == [], f"left running: {alive}"


@pytest.fixture
def stop_leftovers(tmp_path):
    """Pids to kill at the end if a failed test left them running (only ours: by folder)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if str(tmp_path) in process.cmdline():
                process.kill()


def test_the_keeper_loads_nothing_of_the_panels_libraries():
    """Imported in a fresh interpreter, so no other test's imports can hide one."""
    probe = (
        "import json, sys\nimport panel.run.keeper\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "panel" in loaded  # the probe saw the import
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_stop_sent_while_up_becomes_the_keeper_is_not_lost(tmp_path, stop_leftovers):
    """SIGTERM arrives after `helios up` blocked it, before the exec: the keeper acts on it."""
    keeper = launch(tmp_path, 10, "signal-first", "panel:polite", "worker:polite", "redis:polite")
    pids = children_of(tmp_path)
    stop_leftovers.extend(pids)
    assert keeper.wait(timeout=60) == 0, (tmp_path / "keeper.log").read_text()
    assert_gone(pids)
    for name in ("panel", "worker", "redis"):  # each was asked, none was killed
        assert (tmp_path / f"{name}.stopped").read_text() == "SIGTERM"
    said = messages(tmp_path)
    assert said[0] == "up: SIGTERM received, stopping gracefully"
    assert said[-1] == "stopped"
    assert {document["process"] for document in documents(tmp_path)} == {"up"}
    assert {document["pid"] for document in documents(tmp_path)} == {keeper.pid}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_keeper_stops_its_children_and_kills_one_that_does_not_stop(
    tmp_path, stop_leftovers, signum
):
    keeper = launch(tmp_path, 1, "wait", "panel:polite", "worker:stubborn", "redis:polite")
    pids = children_of(tmp_path)
    stop_leftovers.extend(pids)
    wait_until(lambda: "panel.run.keeper" in " ".join(psutil.Process(keeper.pid).cmdline()),
               timeout=30, what="the exec")  # fmt: skip
    assert psutil.Process(keeper.pid).children() != []  # the children stayed its children
    os.kill(keeper.pid, signum)
    assert keeper.wait(timeout=60) == 0, (tmp_path / "keeper.log").read_text()
    assert_gone(pids)
    assert (tmp_path / "panel.stopped").exists() and (tmp_path / "redis.stopped").exists()
    said = messages(tmp_path)
    assert said[0] == f"up: {signal.Signals(signum).name} received, stopping gracefully"
    assert f"pid {pids[1]} did not stop in 1 s; killing it" in said
    assert said[-1] == "stopped"


def test_a_child_that_exits_stops_the_others_and_the_keeper_exits_1(tmp_path, stop_leftovers):
    keeper = launch(tmp_path, 10, "wait", "panel:polite", "worker:polite", "redis:polite")
    pids = children_of(tmp_path)
    stop_leftovers.extend(pids)
    wait_until(lambda: "panel.run.keeper" in " ".join(psutil.Process(keeper.pid).cmdline()),
               timeout=30, what="the exec")  # fmt: skip
    os.kill(pids[1], signal.SIGKILL)
    assert keeper.wait(timeout=60) == 1, (tmp_path / "keeper.log").read_text()
    assert_gone(pids)
    assert (tmp_path / "panel.stopped").exists() and (tmp_path / "redis.stopped").exists()
    said = messages(tmp_path)
    assert f"pid {pids[1]} exited with -9; stopping" in said
    assert said[-1] == "stopped"


def test_without_a_redis_of_its_own_the_keeper_stops_only_its_children(tmp_path, stop_leftovers):
    keeper = launch(tmp_path, 10, "signal-first", "panel:polite", "worker:polite", NO_REDIS="1")
    pids = children_of(tmp_path)
    stop_leftovers.extend(pids)
    assert keeper.wait(timeout=60) == 0, (tmp_path / "keeper.log").read_text()
    assert_gone(pids)
    assert (tmp_path / "panel.stopped").exists() and (tmp_path / "worker.stopped").exists()
    assert messages(tmp_path) == ["up: SIGTERM received, stopping gracefully", "stopped"]
