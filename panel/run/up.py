"""`helios up`: everything needed to look around, on one machine, stopped with one Ctrl-C.

After `helios`'s checks (the address free, Redis answering or a redis-server to start, the
database opening), applies migrations, starts a real Redis server (unless HELIOS_REDIS_URL points
at one), then the panel and one worker as child processes (the worker forks the follower, so
the two share their loaded code: ``helios worker --with-follower``); once the panel is ready
it bootstraps the first administrator, prints its password once, and waits.
On SIGINT or SIGTERM it asks each child to stop gracefully, waits for them, then stops Redis.

It waits as :mod:`panel.run.keeper`: with everything started it replaces itself (same pid, the
same children) with that small process, which does the waiting and stopping without the
libraries needed to set up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from panel.actions.accounts import Bootstrap, bootstrap_admin
from panel.config import mask_url
from panel.crypto import load_or_create_key
from panel.db import migrate_up
from panel.run.keeper import WATCHED, keeper_argv
from panel.run.redis_server import LocalRedis, start_redis, stop_with_parent
from panel.run.runtime import Process, metrics_dir

__all__ = ["run_up"]

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0  # seconds for the panel's /readyz to answer 200
POLL_INTERVAL = 0.2  # seconds


def _spawn(role: str, env: dict[str, str], *options: str) -> subprocess.Popen:
    # Own session: a Ctrl-C reaches `helios up` only, which then stops children in order.
    # If `helios up` itself is killed outright, the kernel asks the children to stop too.
    return subprocess.Popen(
        [sys.executable, "-m", "panel", role, *options],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=stop_with_parent,  # only calls prctl: safe between fork and exec
    )


def _wait_ready(url: str, children: list[subprocess.Popen], process: Process) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not process.stop_requested.is_set():
        if any(child.poll() is not None for child in children):
            return False
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        time.sleep(POLL_INTERVAL)
    return False


def _stop_children(children: list[subprocess.Popen], timeout: float) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("pid %d did not stop in %.0f s; killing it", child.pid, timeout)
            child.kill()
            child.wait()


def _print_banner(url: str, admin: Bootstrap | None, redis_note: str) -> None:
    lines = ["", f"  Helios is running at {url}", f"  Redis: {redis_note}"]
    if admin is not None:
        lines += [
            "",
            "  First administrator (this password is shown once, now):",
            f"    email:    {admin.email}",
            f"    password: {admin.password}",
        ]
    else:
        lines.append("  Sign in with your account (helios admin create EMAIL adds one).")
    lines += ["", "  Press Ctrl-C to stop everything.", ""]
    print("\n".join(lines), flush=True)


def _become_keeper(
    process: Process, children: list[subprocess.Popen], local_redis: LocalRedis | None
) -> None:
    """Replace this process with panel.run.keeper; returns only if it could not."""
    settings = process.settings
    argv = keeper_argv(
        [child.pid for child in children],
        settings.graceful_timeout + 5,
        local_redis.pid if local_redis else None,
        settings.log_format,
        settings.log_level,
    )
    # Blocked across the exec, a Ctrl-C or a child's exit stays pending for the keeper.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    if process.stop_requested.is_set() or any(child.poll() is not None for child in children):
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # stopped here, as before
        return
    process.database.close()
    process.redis.close()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 (our interpreter, our code)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        logger.warning("could not hand over to panel.run.keeper (%s): waiting here", exc)


def _clear_metrics(path: Path) -> None:
    # Prometheus samples of an earlier run's processes: none of this run's has started yet.
    for stale in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def run_up(process: Process) -> int:
    """Run migrations, Redis, the panel, a worker and its follower until asked to stop."""
    settings = process.settings
    process.install_signal_handlers()
    applied = migrate_up()
    if applied:
        logger.info("applied migrations: %s", ", ".join(applied))
    load_or_create_key(settings.data_dir / "session.key")
    if not settings.encryption_key:
        load_or_create_key(settings.data_dir / "encryption.key")

    local_redis: LocalRedis | None = None
    redis_url = settings.redis_url
    if not redis_url:
        local_redis = start_redis(settings.data_dir / "run")
        redis_url = local_redis.url
    env = {**os.environ, "HELIOS_REDIS_URL": redis_url, "HELIOS_DATA_DIR": str(settings.data_dir)}
    _clear_metrics(metrics_dir(settings))
    children = [_spawn("panel", env), _spawn("worker", env, "--with-follower")]
    url = f"http://{settings.bind}"
    try:
        if not _wait_ready(url, children, process):
            if process.stop_requested.is_set():
                return 0
            logger.error("the panel did not become ready at %s/readyz; see the log above", url)
            return 1
        # Only now, with everything up: a start that failed created no administrator, so no
        # password was printed for an account the next start would not show again.
        admin = bootstrap_admin()
        redis_note = f"started here (pid {local_redis.pid})" if local_redis else mask_url(redis_url)
        _print_banner(url, admin, redis_note)
        _become_keeper(process, children, local_redis)
        while not process.stop_requested.wait(POLL_INTERVAL):
            for child in children:
                if child.poll() is not None:
                    logger.error("pid %d exited with %s; stopping", child.pid, child.returncode)
                    return 1
        return 0
    finally:
        _stop_children(children, settings.graceful_timeout + 5)
        if local_redis is not None:
            local_redis.stop()
        logger.info("stopped")
