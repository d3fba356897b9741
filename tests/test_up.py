"""`helios up` end to end: real Redis, gunicorn and a worker, a browser signs in, Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import REPO_ROOT, free_port, helios_command, wait_until


@pytest.fixture
def helios_up(tmp_path: Path):
    """A running `helios up` with its own data dir; yields (url, email, password, process)."""
    port = free_port()
    env = {
        "HELIOS_DATA_DIR": str(tmp_path / "var"),
        "HELIOS_BIND": f"127.0.0.1:{port}",
        "HELIOS_WEB_WORKERS": "1",
        "HELIOS_GRACEFUL_TIMEOUT": "10",
        "PATH": __import__("os").environ["PATH"],
        "PYTHONUNBUFFERED": "1",
    }
    out = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        helios_command("up"), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        start_new_session=True,  # the leader of its process group, as a shell makes it
    )  # fmt: skip
    log = Path(out.name)

    def banner():
        if proc.poll() is not None:
            pytest.fail(f"helios up exited with {proc.returncode}:\n{log.read_text()}")
        return re.search(r"email:\s+(\S+)\n\s+password:\s+(\S+)", log.read_text())

    started = time.monotonic()
    found = wait_until(banner, timeout=60, what="helios up's banner")
    ready_after = time.monotonic() - started
    url = f"http://127.0.0.1:{port}"
    yield url, found.group(1), found.group(2), proc, log, ready_after
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_up_serves_a_ready_panel_and_stops_cleanly_on_ctrl_c(helios_up):
    url, _email, _password, proc, log, ready_after = helios_up
    assert ready_after < 30, f"ready only after {ready_after:.1f} s"
    assert requests.get(f"{url}/readyz", timeout=5).json() == {"status": "ready"}
    children = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(child.cmdline()) for child in children)
    assert "redis-server" in names
    assert "panel panel" in names and "panel worker --with-follower" in names
    assert _follower(proc).ppid() == _worker(proc).pid  # forked by the worker: shared pages

    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=60) == 0, log.read_text()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
    text = log.read_text()
    assert text.count("password:") == 1
    assert "Traceback" not in text


@pytest.mark.parametrize("how", ["sigint-to-its-group", "sigterm-to-every-process"])
def test_up_stops_within_seconds_however_it_is_stopped(helios_up, how):
    """SIGINT to the whole process group (a shell's job control, `kill -INT -- -PGID`), and
    SIGTERM to every process at once (systemd's default KillMode, a container runtime)."""
    _url, _email, _password, proc, log, _ready = helios_up
    children = psutil.Process(proc.pid).children(recursive=True)
    if how == "sigint-to-its-group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        for process in [psutil.Process(proc.pid), *children]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {[c.cmdline() for c in alive]}"
    assert "did not stop" not in log.read_text()


def test_browser_signs_in_as_the_bootstrapped_admin(helios_up, page, artifacts):
    url, email, password, _proc, _log, _ready = helios_up
    page.goto(f"{url}/")
    assert "/login" in page.url
    page.screenshot(path=str(artifacts / "login.png"), full_page=True)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Email or password is wrong."

    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    assert page.get_by_role("heading", name="Apps", exact=True).is_visible()
    assert "No cluster connected" in page.get_by_role("status").inner_text()
    assert page.get_by_text(email).is_visible()
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login"))
    page.goto(f"{url}/")
    assert "/login" in page.url


def test_children_stop_when_up_itself_is_killed(helios_up):
    _url, _email, _password, proc, _log, _ready = helios_up
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 3
    proc.kill()  # SIGKILL: no chance to stop anything itself
    proc.wait(timeout=10)
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"orphans left running: {[c.cmdline() for c in alive]}"


def mapped_files(pid: int) -> dict[str, str]:
    """The files a process has mapped, by path: the address of the first mapping of each."""
    found: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            found.setdefault(fields[5], fields[0].split("-")[0])
    return found


def test_up_waits_as_the_keeper_without_the_panels_libraries(helios_up):
    """Once started, `helios up` is panel.run.keeper: same pid, same children, none of the
    libraries it needed to set up (their compiled extensions are no longer mapped)."""
    _url, _email, _password, proc, _log, _ready = helios_up
    up = psutil.Process(proc.pid)
    # The banner is printed just before the exec.
    wait_until(lambda: "panel.run.keeper" in up.cmdline(), timeout=30, what="the keeper")
    roles = " ".join(" ".join(child.cmdline()) for child in up.children())
    assert "panel panel" in roles and "panel worker --with-follower" in roles
    assert "redis-server" in roles
    mapped = " ".join(mapped_files(proc.pid))
    for extension in ("pydantic_core", "_psycopg", "_cffi_backend", "greenlet"):
        assert extension not in mapped
    # The probe can see them: the worker, a full Helios process, has them mapped.
    assert "pydantic_core" in " ".join(mapped_files(_worker(proc).pid))


def _worker(proc) -> psutil.Process:
    children = psutil.Process(proc.pid).children()
    return next(c for c in children if "panel worker" in " ".join(c.cmdline()))


def _follower(proc) -> psutil.Process:
    return next(c for c in _worker(proc).children() if c.name() == "helios-follower")


def test_up_exits_1_and_stops_everything_when_a_child_dies(helios_up):
    _url, _email, _password, proc, log, _ready = helios_up
    worker = _worker(proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    worker.kill()
    assert proc.wait(timeout=60) == 1, log.read_text()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {[c.cmdline() for c in alive]}"
    assert f"pid {worker.pid} exited with -9; stopping" in log.read_text()


def test_up_stops_everything_when_the_follower_dies(helios_up):
    """The follower is the worker's child: when it dies the worker stops (exit 1), and with
    it everything `helios up` started."""
    _url, _email, _password, proc, log, _ready = helios_up
    worker, follower = _worker(proc), _follower(proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    follower.kill()
    assert proc.wait(timeout=60) == 1, log.read_text()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {[c.cmdline() for c in alive]}"
    text = log.read_text()
    assert f"the follower (pid {follower.pid}) exited with -9; stopping" in text
    assert f"pid {worker.pid} exited with 1; stopping" in text


def test_the_panels_workers_share_the_panel_the_master_loaded(helios_up):
    """The gunicorn master imports the panel before it forks its workers (preload): each
    worker has the panel's compiled extensions mapped where the master has them, inherited
    rather than loaded again on its own."""
    _url, _email, _password, proc, _log, _ready = helios_up
    master = next(
        c for c in psutil.Process(proc.pid).children() if "panel panel" in " ".join(c.cmdline())
    )
    in_master = {path: at for path, at in mapped_files(master.pid).items() if "_psycopg" in path}
    assert in_master, "the master did not load the panel (peewee loads psycopg2)"
    workers = master.children()
    assert workers
    for worker in workers:
        in_worker = mapped_files(worker.pid)
        assert {path: in_worker.get(path) for path in in_master} == in_master
