"""Idle CPU and memory of the control plane with its scheduled jobs running, next to its floors.

Starts `helios up` (panel under gunicorn, RQ worker, follower, its own Redis) as a user runs
it, in its own process group with a temporary data dir, pointed at the Nomad test double
holding N apps (default 100, ``--apps``), each with a live release whose allocation runs.
With the default HELIOS_SAMPLE_INTERVAL=10 and HELIOS_DRIFT_INTERVAL=300 the worker queues a
sampling pass every 10 s and a drift check every 5 minutes. After a warm-up (20 s) it reads,
over a window (default 60 s, ``--seconds``), the CPU seconds of every process of the tree by
role, as % of one core (work horses through the RQ worker's reaped-children times), then the
resident (RSS) and proportional (PSS: shared pages split between their users) memory of the
tree, and counts the sampling and drift jobs that ended in the window (RQ's registries).
Floors, measured in the same run: the same stack with the scheduled jobs off
(HELIOS_SAMPLE_INTERVAL=0, HELIOS_DRIFT_INTERVAL=0) over the same window, and a bare
`redis-server`, idle. Everything started is stopped by pid at the end, also on error.
Prints figures only; asserts nothing.

Usage: python benchmarks/idle_footprint.py [--apps N] [--seconds S] [--warmup S]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the double is test code

from nomad_double import run_nomad_double  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from support import free_port, live_apps_in_double, parse_sizes, report  # noqa: E402

MB = 1024 * 1024
READY_TIMEOUT = 90  # seconds for `helios up` to print its banner
ROLES = (
    "supervisor (helios up)",
    "gunicorn master",
    "gunicorn workers",
    "rq worker",
    "rq scheduler",
    "rq work horses",
    "follower",
    "redis",
)


@dataclass
class Footprint:
    """One measured window: CPU % of one core per role, memory at its end, jobs that ended."""

    cpu: dict[str, float] = field(default_factory=dict)
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    jobs: dict[str, int] = field(default_factory=dict)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def reaped_seconds(proc: psutil.Process) -> float:
    """CPU of the children this process has waited for (RQ's work horses, once reaped)."""
    times = proc.cpu_times()
    return times.children_user + times.children_system


def roles(up: psutil.Process) -> dict[int, str]:
    """Every long-lived process of the tree by role (work horses come and go: not here)."""
    found = {up.pid: "supervisor (helios up)"}
    for child in up.children():
        cmdline = " ".join(child.cmdline())
        if "redis-server" in cmdline:
            found[child.pid] = "redis"
        elif cmdline.endswith("panel panel"):
            found[child.pid] = "gunicorn master"
            found.update({w.pid: "gunicorn workers" for w in child.children()})
        elif "panel worker" in cmdline:
            found[child.pid] = "rq worker"
            for sub in child.children():  # the follower, the scheduler; maybe a horse now
                if sub.name() == "helios-follower":  # forked by `helios worker --with-follower`
                    found[sub.pid] = "follower"
                elif time.time() - sub.create_time() > 10:  # a horse lives a few seconds
                    found[sub.pid] = "rq scheduler"
        elif cmdline.endswith("panel follower"):
            found[child.pid] = "follower"
    return found


def start_up(data_dir: Path, sample: int, drift: int) -> tuple[subprocess.Popen, str]:
    """`helios up` in a process group of its own; (process, Redis URL) once its banner shows."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "HELIOS_REDIS_URL"},
        "HELIOS_BIND": f"127.0.0.1:{free_port()}",
        "HELIOS_LOG_LEVEL": "warning",
        "HELIOS_WEB_WORKERS": "2",
        "HELIOS_GRACEFUL_TIMEOUT": "5",  # nothing to drain: a quicker stop
        "HELIOS_SAMPLE_INTERVAL": str(sample),
        "HELIOS_DRIFT_INTERVAL": str(drift),
    }
    log = data_dir / f"up-{sample}-{drift}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "up"], env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0,
        )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        started = re.search(r"running at.*\n.*Redis: started here \(pid (\d+)\)", log.read_text())
        if started:  # redis-server renames itself: its listening socket says where it is
            redis_server = psutil.Process(int(started.group(1)))
            for conn in redis_server.net_connections(kind="unix"):
                if conn.laddr.endswith(".sock"):
                    return proc, f"unix://{conn.laddr}"
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop_tree(proc)
    raise SystemExit(f"helios up did not start:\n{log.read_text()}")


def stop_tree(proc: subprocess.Popen) -> None:
    """Ctrl-C to `helios up` (it stops its children), then kill by pid whatever is left."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for left in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            left.kill()


def ended_jobs(redis_url: str, queues: tuple[str, ...], since: float, until: float) -> set[tuple]:
    """(function, job id) of the jobs that ended between ``since`` and ``until`` (epoch s)."""
    import redis
    from rq.job import Job
    from rq.queue import Queue

    connection = redis.Redis.from_url(redis_url)
    found = set()
    for name in queues:
        queue = Queue(name, connection=connection)
        ids = queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
        for job in Job.fetch_many(ids, connection=connection):
            if job is None or job.ended_at is None:
                continue
            ended = job.ended_at.timestamp()
            if since <= ended <= until:
                found.add((job.func_name, job.id))
    return found


def measure(data_dir: Path, sample: int, drift: int, warmup: float, seconds: float) -> Footprint:
    """Start the stack, wait ``warmup``, measure over ``seconds``, stop it."""
    from panel.config import Settings
    from panel.reconcile.drift import DRIFT_JOB
    from panel.reconcile.observe import SAMPLE_JOB

    queues = Settings.from_env().queues
    up, redis_url = start_up(data_dir, sample, drift)
    try:
        time.sleep(warmup)
        tree = psutil.Process(up.pid)
        by_pid = roles(tree)
        procs = {pid: psutil.Process(pid) for pid in by_pid}
        worker = next(p for pid, p in procs.items() if by_pid[pid] == "rq worker")
        began = {pid: cpu_seconds(p) for pid, p in procs.items()}
        horses_began = reaped_seconds(worker)
        since = time.time()
        seen = set()
        for _ in range(4):  # the registries forget a sampling job after 60 s: look 4 times
            time.sleep(seconds / 4)
            seen |= ended_jobs(redis_url, queues, since, since + seconds)
        result = Footprint(cpu=dict.fromkeys(ROLES, 0.0))
        for pid, proc in procs.items():
            result.cpu[by_pid[pid]] += (cpu_seconds(proc) - began[pid]) / seconds * 100
        result.cpu["rq work horses"] = (reaped_seconds(worker) - horses_began) / seconds * 100
        for proc in [tree, *tree.children(recursive=True)]:
            try:
                memory = proc.memory_full_info()
            except psutil.NoSuchProcess:  # a work horse that just ended
                continue
            result.rss_mb += memory.rss / MB
            result.pss_mb += memory.pss / MB
        result.jobs = {
            "sampling": sum(1 for func, _ in seen if func == SAMPLE_JOB),
            "drift": sum(1 for func, _ in seen if func == DRIFT_JOB),
            "other": sum(1 for func, _ in seen if func not in (SAMPLE_JOB, DRIFT_JOB)),
            "drift since start": sum(
                1 for func, _ in ended_jobs(redis_url, queues, 0, time.time()) if func == DRIFT_JOB
            ),
        }
        return result
    finally:
        stop_tree(up)


def bare_redis(workdir: Path, warmup: float, seconds: float) -> Footprint:
    """A redis-server started here, idle: its CPU over ``seconds`` after ``warmup``."""
    from support import start_redis

    proc, _url = start_redis(workdir)
    try:
        time.sleep(warmup)
        redis = psutil.Process(proc.pid)
        began = cpu_seconds(redis)
        time.sleep(seconds)
        memory = redis.memory_full_info()
        return Footprint(
            cpu={"redis": (cpu_seconds(redis) - began) / seconds * 100},
            rss_mb=memory.rss / MB, pss_mb=memory.pss / MB,
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:8.1f}x" if floor > 0 else f"{'-':>9}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=20.0)
    args = parse_sizes(parser, {"seconds": 20.0, "warmup": 10.0})
    with (
        tempfile.TemporaryDirectory(prefix="helios-bench-idle-") as tmp,
        run_nomad_double(nodes=[(1_000_000, 1_000_000)], auto_advance=False) as double,
    ):
        started = time.monotonic()
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        _settings, driver, _jobs = live_apps_in_double(args.apps, str(data_dir), double)
        running = [a for a in driver.all_allocations() if a["ClientStatus"] == "running"]
        from panel.db import database

        database.close()  # `helios up` owns the database from now on
        print(f"{args.apps} apps, {len(running)} allocations running in the Nomad double "
              f"(setup {time.monotonic() - started:.0f} s); {psutil.cpu_count()} cores; "
              f"warm-up {args.warmup:.0f} s, window {args.seconds:.0f} s\n")  # fmt: skip
        on = measure(data_dir, 10, 300, args.warmup, args.seconds)
        with ThreadPoolExecutor(1) as pool:  # the bare Redis idles beside the second stack
            bare = pool.submit(bare_redis, Path(tmp), args.warmup, args.seconds)
            off = measure(data_dir, 0, 0, args.warmup, args.seconds)
            bare = bare.result()

    print(f"{'figure':44} {'value':>9} {'floor':>9} {'ratio':>9}   floor is")
    for role in ROLES:
        print(f"{'CPU % of one core, ' + role:44} {on.cpu[role]:9.2f} {off.cpu[role]:9.2f} "
              f"{ratio(on.cpu[role], off.cpu[role])}   jobs off")  # fmt: skip
    total_on, total_off = sum(on.cpu.values()), sum(off.cpu.values())
    print(f"{'CPU % of one core, whole tree':44} {total_on:9.2f} {total_off:9.2f} "
          f"{ratio(total_on, total_off)}   jobs off")  # fmt: skip
    print(f"{'CPU % of one core, redis':44} {on.cpu['redis']:9.2f} {bare.cpu['redis']:9.2f} "
          f"{ratio(on.cpu['redis'], bare.cpu['redis'])}   bare redis-server")  # fmt: skip
    for name, attr in (("RSS MB, whole tree (end)", "rss_mb"), ("PSS MB, whole tree (end)",
                                                              "pss_mb")):  # fmt: skip
        value, floor = getattr(on, attr), getattr(off, attr)
        print(f"{name:44} {value:9.1f} {floor:9.1f} {ratio(value, floor)}   jobs off")
        print(f"{name + ' vs bare Redis':44} {value:9.1f} {getattr(bare, attr):9.1f} "
              f"{ratio(value, getattr(bare, attr))}   bare redis-server")  # fmt: skip
    for kind in ("sampling", "drift", "other"):
        print(f"{kind + ' jobs ended in the window':44} {on.jobs[kind]:9d} "
              f"{off.jobs[kind]:9d} {'':>9}   jobs off")  # fmt: skip
    print(f"{'drift jobs ended since the stack started':44} {on.jobs['drift since start']:9d} "
          f"{off.jobs['drift since start']:9d} {'':>9}   jobs off")  # fmt: skip
    report(figure="idle CPU, whole tree", value=total_on, unit="% of a core",
           floor_name="same stack, scheduled jobs off", floor=total_off)  # fmt: skip
    report(figure="idle CPU, redis", value=on.cpu["redis"], unit="% of a core",
           floor_name="bare redis-server", floor=bare.cpu["redis"])  # fmt: skip
    for name, attr in (("RSS", "rss_mb"), ("PSS", "pss_mb")):
        report(figure=f"control-plane memory {name}, whole tree", value=getattr(on, attr),
               unit="MB", floor_name="same stack, scheduled jobs off",
               floor=getattr(off, attr))  # fmt: skip
        report(figure=f"control-plane memory {name}, whole tree", value=getattr(on, attr),
               unit="MB", floor_name="bare redis-server", floor=getattr(bare, attr))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
