"""What the benchmark scripts share: free ports, a throw-away Redis server, a real panel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

__all__ = ["free_port", "start_panel", "start_redis"]


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


def start_panel(
    data_dir: Path, database_url: str, redis_url: str, **settings: str
) -> tuple[subprocess.Popen, str]:
    """`helios panel` under gunicorn on a free port, on this database and Redis, with
    ``settings`` (HELIOS_* names) on top; its URL once /readyz answers (exits if it never does).
    """
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "NOMAD_"))},
        "HELIOS_DATA_DIR": str(data_dir),
        "HELIOS_DATABASE_URL": database_url,
        "HELIOS_REDIS_URL": redis_url,
        "HELIOS_BIND": f"127.0.0.1:{port}",
        "HELIOS_LOG_LEVEL": "warning",
        **settings,
    }
    log_path = data_dir / "panel.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "panel"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the panel exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"the panel did not become ready:\n{log_path.read_text()}")
