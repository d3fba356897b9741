"""What the benchmark scripts share: free ports and a throw-away Redis server."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["free_port", "start_redis"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A real redis-server without persistence on a free port, answering PING; its URL."""
    from panel.run.redis_server import find_redis_server

    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(250):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        raise SystemExit(f"redis-server did not answer on port {port} within 5 s")
    return proc, f"redis://127.0.0.1:{port}/0"
