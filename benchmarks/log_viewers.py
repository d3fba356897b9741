"""1, 100 and 500 people watching one build's log live, on the real panel, next to floors.

Seeds a fresh SQLite database with one user, a repo app and one running build, starts a Redis
server and the real panel under gunicorn with the default settings (2 gevent workers), signs in
through the login form, then opens the build's log stream (GET /apps/<slug>/builds/<n>/log)
from one client process: an asyncio loop holding every viewer's socket, each reading Server-Sent
Events and reconnecting with Last-Event-ID as EventSource does.

- Memory: RSS and PSS of the gunicorn workers before and after opening 500 streams, per stream;
  the Redis pub/sub connections the panel holds meanwhile; GET /healthz while they are open,
  next to GET /healthz with no stream open (the floor).
- Latency: for 1, 100 and 500 viewers, CHUNKS chunks of LINES lines each are stored with
  ``append_log`` (one every INTERVAL seconds), which publishes them on Redis; each viewer notes
  when each chunk arrives. Publish → viewer latency over every (viewer, chunk), next to a raw
  Redis publish → subscriber round trip (the floor), the lines each viewer got against those
  sent (dropped must be 0), and the CPU per chunk of the panel's workers and of this client
  (both share the machine's cores).

Prints figures only; asserts nothing.

Usage: python benchmarks/log_viewers.py [--chunks N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import requests
from support import parse_sizes, report, start_panel, start_redis

VIEWERS = (1, 100, 500)
CHUNKS = 40  # per case
LINES = 5  # per chunk
INTERVAL = 0.25  # seconds between two chunks
HEALTH_REQUESTS = 500
REDIS_ROUNDS = 500
SETTLE = 2.0  # seconds for opened streams to settle before memory is read
EMAIL = "bench@example.com"
PASSWORD = "Granite Heron Lantern 58"
USER_AGENT = "helios-bench/1"  # the session is bound to it (Flask-Login "strong" protection)
MB = 1024 * 1024


def seed(database_url: str) -> int:
    """Create the schema, a user in a team, a repo app and its running build; the build's id."""
    from panel.actions.accounts import create_user
    from panel.actions.apps import create_app
    from panel.db import database, migrate_up, open_database
    from panel.models import Build, BuildStatus, Team

    open_database(database_url)
    migrate_up()
    create_user(EMAIL, PASSWORD, team_slug="bench")
    app = create_app(actor=None, team=Team.get(Team.slug == "bench"), slug="shop",
                     repo="acme/shop", branch="main")  # fmt: skip
    build = Build.create(app=app, number=1, git_sha="a" * 40, branch="main",
                         status=BuildStatus.RUNNING.value)  # fmt: skip
    database.close()
    return build.id


def sign_in(url: str) -> str:
    """The Cookie header of a signed-in browser."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    form = session.get(f"{url}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', form).group(1)
    answer = session.post(
        f"{url}/login",
        data={"email": EMAIL, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    if answer.status_code != 302:
        sys.exit(f"sign-in failed with {answer.status_code}")
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in session.cookies)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------------------
# Publishing: chunks stored and published as the log collector does, timed at the publish
# ---------------------------------------------------------------------------------------------


class TimedRedis:
    """A Redis client for ``append_log`` that notes when each chunk's publish starts."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.published: dict[int, float] = {}  # seq → perf_counter() at PUBLISH

    def publish(self, channel: str, document: str) -> int:
        self.published[json.loads(document)["seq"]] = time.perf_counter()
        return self.client.publish(channel, document)


class Log:
    """The build's log as the benchmark writes it: one stream, chunks of LINES lines."""

    def __init__(self, build_id: int, database_url: str, redis_url: str) -> None:
        from panel.db import open_database

        open_database(database_url)
        self.build_id, self.offset, self.last_seq = build_id, 0, 0
        self.redis = TimedRedis(redis.Redis.from_url(redis_url))

    def append(self, label: str) -> int:
        """Store and publish one chunk; its seq."""
        from panel.actions.logs import append_log
        from panel.db import database

        text = "".join(f"{label} line {n}: {'x' * 60}\n" for n in range(LINES))
        size = len(text.encode())
        with database.connection_context():
            stored = append_log(self.build_id, "build", "stdout", text, after=self.offset,
                                offset=self.offset + size, max_bytes=50_000_000,
                                redis_conn=self.redis)  # fmt: skip
        self.offset += size
        self.last_seq = stored.seqs[-1]
        return self.last_seq


# ---------------------------------------------------------------------------------------------
# Viewing: one asyncio loop, a socket per viewer, Server-Sent Events read as EventSource does
# ---------------------------------------------------------------------------------------------


@dataclass
class Viewer:
    after: int  # the last seq seen before this viewer opened
    status: int | None = None
    arrived: dict[int, float] = field(default_factory=dict)  # seq → perf_counter() on arrival
    lines: int = 0
    duplicates: int = 0
    reconnects: int = 0


async def http_head(reader: asyncio.StreamReader) -> int:
    """Read a response's status line and headers; its status."""
    status = int((await reader.readline()).split()[1])
    while (await reader.readline()).strip():
        pass
    return status


async def view(viewer: Viewer, host: str, port: int, path: str, cookie: str) -> None:
    """Follow the log until cancelled, reconnecting after ``retry`` like EventSource."""
    last, retry = viewer.after, 2.0
    while True:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
                f"User-Agent: {USER_AGENT}\r\nAccept: text/event-stream\r\n"
                f"Last-Event-ID: {last}\r\n\r\n".encode()
            )
            viewer.status = await http_head(reader)
            if viewer.status != 200:
                return
            fields: dict[str, str] = {}
            while line := await reader.readline():
                line = line.rstrip(b"\r\n").decode()
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if fields.get("event") == "log":
                    chunk = json.loads(fields["data"])
                    if chunk["seq"] in viewer.arrived:
                        viewer.duplicates += 1
                    else:
                        viewer.arrived[chunk["seq"]] = time.perf_counter()
                        viewer.lines += chunk["text"].count("\n")
                    last = chunk["seq"]
                elif fields.get("event") == "end":
                    return
                retry = int(fields.get("retry", retry * 1000)) / 1000
                fields = {}
        finally:
            writer.close()
        viewer.reconnects += 1
        await asyncio.sleep(retry)


async def open_viewers(count: int, url: str, cookie: str, after: int) -> tuple[list, list]:
    """Start ``count`` viewers; once each has an answer, (viewers, their tasks)."""
    host, port = url.removeprefix("http://").split(":")
    viewers = [Viewer(after) for _ in range(count)]
    path = f"/apps/shop/builds/1/log?after={after}"
    tasks = [asyncio.create_task(view(v, host, int(port), path, cookie)) for v in viewers]
    while any(v.status is None for v in viewers):
        await asyncio.sleep(0.05)
    return viewers, tasks


async def close_viewers(tasks: list, log: Log) -> None:
    """Close every viewer's socket; two more chunks make the panel notice (its writes fail)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for n in range(2):
        await asyncio.to_thread(log.append, f"flush {n}")
        await asyncio.sleep(0.5)


async def time_healthz(url: str, count: int) -> list[float]:
    """Milliseconds of ``count`` sequential GET /healthz, each on a new connection."""
    host, port = url.removeprefix("http://").split(":")
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /healthz HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        status = await http_head(reader)
        await reader.read()
        writer.close()
        timings.append((time.perf_counter() - started) * 1000)
        if status != 200:
            sys.exit(f"/healthz answered {status}")
    return timings


# ---------------------------------------------------------------------------------------------
# Floors and the panel's processes
# ---------------------------------------------------------------------------------------------


def redis_round_trips(redis_url: str) -> list[float]:
    """Milliseconds from PUBLISH to its arrival at a subscriber on another connection."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench:floor")
    timings: list[float] = []
    arrived = threading.Event()

    def listen() -> None:
        for message in pubsub.listen():
            timings.append((time.perf_counter() - float(message["data"])) * 1000)
            arrived.set()
            if len(timings) == REDIS_ROUNDS:
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    for _ in range(REDIS_ROUNDS):
        arrived.clear()
        client.publish("bench:floor", repr(time.perf_counter()))
        arrived.wait(5)
        time.sleep(0.002)
    listener.join(timeout=5)
    pubsub.close()
    return timings


def workers(panel: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(panel.pid).children()


def memory_mb(panel: subprocess.Popen) -> tuple[float, float]:
    """(RSS, PSS) of the panel's gunicorn workers together, in MB."""
    found = [proc.memory_full_info() for proc in workers(panel)]
    return sum(m.rss for m in found) / MB, sum(m.pss for m in found) / MB


def cpu_seconds(panel: subprocess.Popen) -> float:
    return sum(sum(proc.cpu_times()[:2]) for proc in workers(panel))


def streams_per_worker(panel: subprocess.Popen, port: int) -> list[int]:
    """Open connections on the panel's port, per worker."""
    return sorted(
        sum(1 for c in proc.net_connections("tcp") if c.laddr.port == port and c.raddr)
        for proc in workers(panel)
    )


def pubsub_connections(redis_url: str) -> int:
    """Connections of the Redis server in pub/sub mode, the benchmark's own aside."""
    return len(redis.Redis.from_url(redis_url).client_list(_type="pubsub"))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


async def memory_phase(panel, url: str, cookie: str, log: Log, redis_url: str) -> dict:
    """Memory and /healthz before and with 500 open streams."""
    _warm, tasks = await open_viewers(5, url, cookie, log.last_seq)
    await close_viewers(tasks, log)  # every module and template of a stream is loaded now
    await time_healthz(url, 50)
    result = {"healthz_floor": await time_healthz(url, HEALTH_REQUESTS)}
    await asyncio.sleep(SETTLE)
    result["before"] = memory_mb(panel)
    started = time.perf_counter()
    viewers, tasks = await open_viewers(max(VIEWERS), url, cookie, log.last_seq)
    result["open_seconds"] = time.perf_counter() - started
    result["statuses"] = sorted({v.status for v in viewers})
    await asyncio.sleep(SETTLE)
    result["after"] = memory_mb(panel)
    result["per_worker"] = streams_per_worker(panel, int(url.rsplit(":", 1)[1]))
    result["pubsub"] = pubsub_connections(redis_url)
    result["healthz_open"] = await time_healthz(url, HEALTH_REQUESTS)
    await close_viewers(tasks, log)
    return result


async def latency_case(count: int, chunks: int, panel, url: str, cookie: str, log: Log) -> dict:
    """Publish → viewer latency and lines received with ``count`` viewers."""
    viewers, tasks = await open_viewers(count, url, cookie, log.last_seq)
    await asyncio.sleep(1.0)
    cpu, client_cpu = cpu_seconds(panel), time.process_time()
    sent = []
    for n in range(chunks):
        sent.append(await asyncio.to_thread(log.append, f"chunk {n}"))
        await asyncio.sleep(INTERVAL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        all(seq in v.arrived for seq in sent) for v in viewers
    ):
        await asyncio.sleep(0.1)
    cpu, client_cpu = cpu_seconds(panel) - cpu, time.process_time() - client_cpu
    await close_viewers(tasks, log)
    latencies = [
        (v.arrived[seq] - log.redis.published[seq]) * 1000
        for v in viewers
        for seq in sent
        if seq in v.arrived
    ]
    return {
        "latencies": latencies,
        "lines_sent": chunks * LINES * count,
        "lines_got": sum(v.lines for v in viewers if v.status == 200),
        "duplicates": sum(v.duplicates for v in viewers),
        "reconnects": sum(v.reconnects for v in viewers),
        "refused": sum(1 for v in viewers if v.status != 200),
        "cpu_ms_per_chunk": cpu / chunks * 1000,
        "client_ms_per_chunk": client_cpu / chunks * 1000,
    }


async def measure(
    chunks: int, panel, url: str, cookie: str, log: Log, redis_url: str
) -> tuple[dict, dict]:
    memory = await memory_phase(panel, url, cookie, log, redis_url)
    cases = {count: await latency_case(count, chunks, panel, url, cookie, log) for count in VIEWERS}
    return memory, cases


def print_tables(
    floor: list[float], memory: dict, cases: dict, workers_count: int, chunks: int
) -> None:
    print(f"gunicorn with {workers_count} gevent workers (the default), SQLite + Redis; "
          f"{chunks} chunks of {LINES} lines per case, one every {INTERVAL} s")  # fmt: skip
    base = statistics.median(floor)
    print(f"{'publish → viewer':<36}{'p50 ms':>9}{'p99 ms':>9}{'p50 / floor':>13}"
          f"{'lines sent':>12}{'dropped':>9}{'dup':>5}{'reconn':>8}"
          f"{'CPU ms/chunk: panel':>21}{'client':>8}")  # fmt: skip
    print(f"{'Redis PUBLISH → subscriber (floor)':<36}{base:>9.2f}"
          f"{percentile(floor, 0.99):>9.2f}{1:>12.1f}x")  # fmt: skip
    for count, case in cases.items():
        lat = case["latencies"] or [float("nan")]
        p50 = statistics.median(lat)
        dropped = case["lines_sent"] - case["lines_got"]
        label = f"{count} viewer{'s' if count > 1 else ''}" + (
            f" ({case['refused']} refused)" if case["refused"] else ""
        )
        print(f"{label:<36}{p50:>9.2f}{percentile(lat, 0.99):>9.2f}{p50 / base:>12.1f}x"
              f"{case['lines_sent']:>12,}{dropped:>9}{case['duplicates']:>5}"
              f"{case['reconnects']:>8}{case['cpu_ms_per_chunk']:>21.1f}"
              f"{case['client_ms_per_chunk']:>8.1f}")  # fmt: skip
    count = max(VIEWERS)
    floor_h, open_h = memory["healthz_floor"], memory["healthz_open"]
    print(f"{'GET /healthz':<36}{'p50 ms':>9}{'p99 ms':>9}{'p99 / floor':>13}")
    for label, timings in (("no stream open (floor)", floor_h), (f"{count} streams open", open_h)):
        print(f"{label:<36}{statistics.median(timings):>9.2f}{percentile(timings, 0.99):>9.2f}"
              f"{percentile(timings, 0.99) / percentile(floor_h, 0.99):>12.1f}x")  # fmt: skip
    (rss0, pss0), (rss1, pss1) = memory["before"], memory["after"]
    print(f"{count} streams opened in {memory['open_seconds']:.1f} s, statuses "
          f"{memory['statuses']}, per worker {memory['per_worker']}; Redis pub/sub "
          f"connections {memory['pubsub']} (the workers' hubs)")  # fmt: skip
    print(f"{'workers memory':<36}{'before MB':>10}{'after MB':>10}{'per stream KB':>15}")
    for label, before, after in (("RSS", rss0, rss1), ("PSS", pss0, pss1)):
        print(f"{label:<36}{before:>10.1f}{after:>10.1f}{(after - before) * 1024 / count:>15.1f}")


def report_figures(floor: list[float], memory: dict, cases: dict) -> None:
    """The key figures, each next to its floor from this run."""
    base = statistics.median(floor)
    for count in (1, max(VIEWERS)):
        lat = cases[count]["latencies"] or [float("nan")]
        report(figure=f"log publish -> viewer p50, {count} viewers", value=statistics.median(lat),
               unit="ms", floor_name="Redis PUBLISH -> subscriber p50", floor=base)  # fmt: skip
        report(figure=f"log publish -> viewer p99, {count} viewers", value=percentile(lat, 0.99),
               unit="ms", floor_name="Redis PUBLISH -> subscriber p99",
               floor=percentile(floor, 0.99))  # fmt: skip
    count = max(VIEWERS)
    report(figure=f"GET /healthz p99, {count} streams open",
           value=percentile(memory["healthz_open"], 0.99), unit="ms",
           floor_name="GET /healthz p99, no stream open",
           floor=percentile(memory["healthz_floor"], 0.99))  # fmt: skip
    for n, name in enumerate(("RSS", "PSS")):
        report(figure=f"panel workers {name}, {count} streams open", value=memory["after"][n],
               unit="MB", floor_name="no stream open", floor=memory["before"][n])  # fmt: skip


def main() -> None:
    from panel.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=CHUNKS, help="chunks published per case")
    chunks = parse_sizes(parser, {"chunks": 12}).chunks

    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'helios.db'}"
        build_id = seed(database_url)
        redis_proc, redis_url = start_redis(data_dir)
        panel, url = start_panel(data_dir, database_url, redis_url)
        try:
            cookie = sign_in(url)
            floor = redis_round_trips(redis_url)
            log = Log(build_id, database_url, redis_url)
            memory, cases = asyncio.run(measure(chunks, panel, url, cookie, log, redis_url))
        finally:
            panel.terminate()
            panel.wait(timeout=60)
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    print_tables(floor, memory, cases, Settings.from_env(environ={}).web_workers, chunks)
    report_figures(floor, memory, cases)


if __name__ == "__main__":
    main()
