"""Idle memory of `helios up`: panel, worker and Redis, next to their floors from the same run.

Starts `helios up` in a temporary data dir, waits until it is ready and has settled, then
reads the resident set size (RSS) of every process in its tree. The floors are a bare Python
interpreter that imported nothing and a bare redis-server, both started by this script.
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from support import free_port, parse_sizes, report

SETTLE = 5.0  # seconds to let processes reach their idle state
MB = 1024 * 1024


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / MB


def role_of(proc: psutil.Process) -> str:
    cmdline = " ".join(proc.cmdline())
    if "redis-server" in cmdline:
        return "redis"
    if "helios-panel" in proc.name() or "panel panel" in cmdline or "gunicorn" in cmdline:
        return "panel"
    if proc.name() == "helios-follower" or "panel follower" in cmdline:
        return "follower"  # forked by the worker under `helios up`: not one of its processes
    if "panel worker" in cmdline or "rq:" in cmdline:
        return "worker"
    return "other"


def measure_floor(argv: list[str]) -> float:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        return rss_mb(psutil.Process(proc.pid))
    finally:
        proc.terminate()
        proc.wait()


def run_up(data_dir: Path) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "HELIOS_DATA_DIR": str(data_dir),
        "HELIOS_BIND": f"127.0.0.1:{free_port()}",
        "HELIOS_LOG_LEVEL": "warning",
    }
    env.pop("HELIOS_REDIS_URL", None)
    log = data_dir / "up.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "up"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if re.search(r"running at", log.read_text()):
            return proc, log
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"helios up did not start:\n{log.read_text()}")


def main() -> None:
    parse_sizes(argparse.ArgumentParser(description=__doc__.splitlines()[0]), {})
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        from panel.run.redis_server import find_redis_server

        python_floor = measure_floor([sys.executable, "-c", "import time; time.sleep(5)"])
        redis_floor = measure_floor(
            [find_redis_server(), "--port", str(free_port()), "--save", "", "--appendonly", "no"]
        )
        proc, _log = run_up(Path(tmp) / "var")
        try:
            time.sleep(SETTLE)
            tree = psutil.Process(proc.pid).children(recursive=True)
            totals: dict[str, list[float]] = {}
            for child in tree:
                totals.setdefault(role_of(child), []).append(rss_mb(child))
            supervisor = rss_mb(psutil.Process(proc.pid))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)

    print(f"{'process':<34}{'RSS MB':>10}{'floor MB':>10}  floor")
    roles = (
        ("panel", python_floor, "bare python"),
        ("worker", python_floor, "bare python"),
        ("redis", redis_floor, "bare redis-server"),
        ("follower", python_floor, "bare python"),
    )
    for role, floor, floor_name in roles:
        values = totals.get(role, [])
        label = f"{role} ({len(values)} process{'es' if len(values) != 1 else ''})"
        print(f"{label:<34}{sum(values):>10.1f}{floor * len(values):>10.1f}  {floor_name}")
    print(f"{'helios up supervisor':<34}{supervisor:>10.1f}{python_floor:>10.1f}  bare python")
    idle = sum(sum(v) for k, v in totals.items() if k in {"panel", "worker", "redis"})  # as before
    print(f"{'panel + worker + redis':<34}{idle:>10.1f}")
    if totals.get("other"):
        print(f"unclassified processes: {len(totals['other'])}, {sum(totals['other']):.1f} MB")
    for role, floor, floor_name in roles:
        count = len(totals.get(role, []))
        label = f"{count} process{'es' if count != 1 else ''}"
        report(figure=f"idle RSS, {role} ({label})", value=sum(totals.get(role, [])),
               unit="MB", floor_name=f"{floor_name} x {count}", floor=floor * count)  # fmt: skip
    floors = sum(len(totals.get(r, [])) * f for r, f, _n in roles if r != "follower")
    report(figure="idle RSS, panel + worker + redis", value=idle, unit="MB",
           floor_name="as many bare pythons and redis-servers", floor=floors)  # fmt: skip


if __name__ == "__main__":
    main()
