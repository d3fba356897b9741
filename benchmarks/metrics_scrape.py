"""/metrics latency as the metrics directory grows, next to GET /healthz on the same server.

Starts the real panel under gunicorn (two workers, a metrics token), a Redis server and a
real `helios worker`, sends requests so both gunicorn workers have samples, runs 300 jobs
(``--jobs``) whose work horses each record a deployment's end (files of their own, folded into
the archive once the worker reaped the horse), then times sequential scrapes of /metrics with
the directory as that leaves it, and again with 100 and 1,000 extra sample files (copies of a
gunicorn worker's histogram file under unused pids: what the horses would leave behind if their
files were not folded). The floor is GET /healthz, timed the same way. Prints figures only;
asserts nothing.

Usage: python benchmarks/metrics_scrape.py [--jobs N] [--requests N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
import requests
from rq import Queue
from rq.job import JobStatus
from support import parse_sizes, report, start_panel, start_redis

TOKEN = "bench-metrics-token-0123456789"
REQUESTS = 200
WARMUP = 10
EXTRA_FILES = (0, 100, 1_000)
FAKE_PID_BASE = 4_000_000  # above Linux's pid_max: never a live process


def timed(
    session: requests.Session, url: str, headers: dict[str, str], count: int
) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``count`` sequential GETs."""
    for _ in range(WARMUP):
        session.get(url, headers=headers, timeout=30).raise_for_status()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        session.get(url, headers=headers, timeout=30).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def run_jobs(data_dir: Path, database_url: str, redis_url: str, count: int) -> float:
    """``count`` jobs recording a deployment's end, each in a work horse of a real worker,
    queued at once; seconds until the last finished."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "NOMAD_"))},
        "HELIOS_DATA_DIR": str(data_dir),
        "HELIOS_DATABASE_URL": database_url,
        "HELIOS_REDIS_URL": redis_url,
        "HELIOS_LOG_LEVEL": "warning",
    }
    with (data_dir / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "panel", "worker"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        from panel.config import Settings

        queue = Queue(Settings.from_env().queues[0], connection=redis.Redis.from_url(redis_url))
        started = time.monotonic()
        jobs = [queue.enqueue("panel.metrics.count_deployment", "succeeded") for _ in range(count)]
        # (a job is finished once its horse ended; the worker folds the horse's files next)
        while any(job.get_status() != JobStatus.FINISHED for job in jobs):
            if worker.poll() is not None:
                sys.exit(f"the worker exited:\n{(data_dir / 'worker.log').read_text()}")
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--requests", type=int, default=REQUESTS, help="sequential, per case")
    args = parse_sizes(parser, {"jobs": 60, "requests": 40})
    jobs = args.jobs
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
        seconds = run_jobs(data_dir, database_url, redis_url, jobs)
        print(f"{jobs} jobs recording a deployment's end ran in {seconds:.1f} s, one worker")
        floor = timed(session, f"{url}/healthz", {}, args.requests)
        print(f"GET /healthz (floor)                   p50 {floor[0]:6.2f} ms  "
              f"p99 {floor[1]:6.2f} ms")  # fmt: skip
        served = {f"histogram_{child.pid}.db" for child in psutil.Process(panel.pid).children()}
        template = max((p for p in metrics_dir.glob("histogram_*.db") if p.name in served),
                       key=lambda p: p.stat().st_size)  # fmt: skip
        made, scrapes = 0, []
        for extra in EXTRA_FILES:
            for n in range(made, extra):
                shutil.copyfile(template, metrics_dir / f"histogram_{FAKE_PID_BASE + n}.db")
            made = extra
            files = len(list(metrics_dir.glob("*.db")))
            p50, p99 = timed(session, f"{url}/metrics", auth, args.requests)
            size = len(session.get(f"{url}/metrics", headers=auth, timeout=30).content)
            print(f"GET /metrics, {files:5d} sample files      p50 {p50:6.2f} ms  "
                  f"p99 {p99:6.2f} ms  ({size / 1024:.0f} KB)")  # fmt: skip
            scrapes.append((files, p50, p99))
        for files, p50, p99 in scrapes:
            for name, value, base in (("p50", p50, floor[0]), ("p99", p99, floor[1])):
                report(figure=f"GET /metrics {name}, {files} sample files", value=value,
                       unit="ms", floor_name=f"GET /healthz {name}", floor=base)  # fmt: skip
    finally:
        panel.terminate()
        panel.wait(timeout=30)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
