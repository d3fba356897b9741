"""/metrics latency as the metrics directory grows, next to GET /healthz on the same server.

Starts the real panel under gunicorn (two workers, a metrics token) and a Redis server, sends
requests so both workers have samples, then times sequential scrapes of /metrics with the
directory as it is, and again with 100 and 1,000 extra sample files (copies of a worker's
histogram file under unused pids: what work horses recording deployment ends would leave
behind until the next `helios up`). The floor is GET /healthz, timed the same way. Prints
figures only; asserts nothing.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from support import start_panel, start_redis

TOKEN = "bench-metrics-token-0123456789"
REQUESTS = 200
WARMUP = 10
EXTRA_FILES = (0, 100, 1_000)
FAKE_PID_BASE = 4_000_000  # above Linux's pid_max: never a live process


def timed(session: requests.Session, url: str, headers: dict[str, str]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of sequential GETs."""
    for _ in range(WARMUP):
        session.get(url, headers=headers, timeout=30).raise_for_status()
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        session.get(url, headers=headers, timeout=30).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="helios-bench-metrics-"))
    redis_proc, redis_url = start_redis(workdir)
    data_dir = workdir / "var"
    data_dir.mkdir()
    database_url = f"sqlite:///{data_dir / 'helios.db'}"
    from panel.db import migrate_up, open_database

    open_database(database_url)
    migrate_up()
    panel, url = start_panel(
        data_dir, database_url, redis_url, HELIOS_WEB_WORKERS="2", HELIOS_METRICS_TOKEN=TOKEN
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    metrics_dir = data_dir / "metrics"
    try:
        session = requests.Session()
        for _ in range(200):  # new connections: both workers serve some
            requests.get(f"{url}/healthz", headers={"Connection": "close"}, timeout=10)
        floor = timed(session, f"{url}/healthz", {})
        print(f"GET /healthz (floor)                   p50 {floor[0]:6.2f} ms  "
              f"p99 {floor[1]:6.2f} ms")  # fmt: skip
        template = max(metrics_dir.glob("histogram_*.db"), key=lambda p: p.stat().st_size)
        made = 0
        for extra in EXTRA_FILES:
            for n in range(made, extra):
                shutil.copyfile(template, metrics_dir / f"histogram_{FAKE_PID_BASE + n}.db")
            made = extra
            files = len(list(metrics_dir.glob("*.db")))
            p50, p99 = timed(session, f"{url}/metrics", auth)
            size = len(session.get(f"{url}/metrics", headers=auth, timeout=30).content)
            print(f"GET /metrics, {files:5d} sample files      p50 {p50:6.2f} ms  "
                  f"p99 {p99:6.2f} ms  ({size / 1024:.0f} KB)")  # fmt: skip
    finally:
        panel.terminate()
        panel.wait(timeout=30)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
