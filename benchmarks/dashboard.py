"""Dashboard latency with 1,000 apps and 100,000 deployments, next to a bare endpoint's floor.

Seeds a fresh SQLite database (one user, one team, 1,000 apps, each with 100 releases and 100
deployments, bulk-inserted in one transaction), starts the real panel under gunicorn with
``--web-workers`` workers (2, as the default install) plus a Redis server, signs in through the
login form, then times sequential GETs of the
dashboard next to GET /healthz (a bare Flask endpoint on the same server: the floor). The panel
keeps a rendered list until something it shows changes, so the dashboard is timed twice: as
it is asked for again and again, and with a change (a plain SQL write from this process)
before each GET, so each is rendered anew. Then
32 concurrent clients (``--clients``) of `hey` (Debian package hey: a separate process, so the
load is not generated inside this one) hit each for ``--seconds``: p50, p99 and requests/s of
the dashboard next to /healthz under the same load.
Prints figures only; asserts nothing.

Usage: python benchmarks/dashboard.py [--apps N] [--deployments-per-app N] [--requests N]
       [--clients N] [--seconds S] [--web-workers N] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from support import parse_sizes, report, require_tool, start_panel, start_redis

APPS = 1_000
DEPLOYMENTS_PER_APP = 100
REQUESTS = 200
WARMUP = 10
CLIENTS = 32
RENDERED = "GET / after a change (rendered)"
SECONDS = 10.0  # of load per concurrent case
BATCH = 500  # rows per INSERT: well under SQLite's limit of bound variables
EMAIL = "bench@example.com"
PASSWORD = "Granite Heron Lantern 58"  # strong, and free of the email
STATUSES = ["succeeded"] * 8 + ["failed", "reverted"]


def seed(database_url: str, apps: int, per_app: int) -> float:
    """Create the schema and the rows; return the seconds the inserts took."""
    from peewee import chunked

    from panel.actions.accounts import create_user
    from panel.db import database, migrate_up, open_database, refresh_statistics
    from panel.models import App, Deployment, Release, Team

    open_database(database_url)
    migrate_up()
    started = time.perf_counter()
    create_user(EMAIL, PASSWORD, team_slug="bench")
    team = Team.get(Team.slug == "bench")
    epoch = datetime(2026, 1, 1)
    with database.atomic():
        for rows in chunked(
            ({"team": team.id, "slug": f"app-{n:04d}", "image": f"registry.local/app-{n}:1"}
             for n in range(apps)), BATCH,
        ):  # fmt: skip
            App.insert_many(rows).execute()
        app_ids = [app.id for app in App.select(App.id).order_by(App.id)]
        releases = (
            {"app": app_id, "number": n, "image": f"registry.local/app:{n}", "created_at": epoch}
            for app_id in app_ids
            for n in range(1, per_app + 1)
        )
        for rows in chunked(releases, BATCH):
            Release.insert_many(rows).execute()
        release_ids = {
            (r.app_id, r.number): r.id
            for r in Release.select(Release.id, Release.app, Release.number)
        }
        deployments = (
            {
                "app": app_id,
                "release": release_ids[(app_id, n)],
                "status": STATUSES[(app_id + n) % len(STATUSES)],
                "requested_at": (at := epoch + timedelta(minutes=n * apps + app_id)),
                "started_at": at,
                "finished_at": at + timedelta(seconds=40),
            }
            for n in range(1, per_app + 1)
            for app_id in app_ids
        )
        for rows in chunked(deployments, BATCH):
            Deployment.insert_many(rows).execute()
    elapsed = time.perf_counter() - started
    assert Deployment.select().count() == apps * per_app
    database.close()
    # What a worker does within the hour on an installation this size: give SQLite's planner
    # statistics about the tables (without them it picks the wrong index for the live images).
    refresh_statistics()
    return elapsed


def user_agent_of(hey: str) -> str:
    """The User-Agent `hey` sends: the session is bound to it (Flask-Login "strong" mode)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("User-Agent", ""))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        subprocess.run([hey, "-n", "1", "-c", "1", f"http://127.0.0.1:{server.server_port}/"],
                       capture_output=True, check=True, timeout=30)  # fmt: skip
    finally:
        server.shutdown()
    return seen[0]


def sign_in(url: str, user_agent: str) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
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
    return session


def time_gets(
    session: requests.Session, url: str, count: int, before: Callable[[], None] | None = None
) -> list[float]:
    """Milliseconds of ``count`` sequential GETs, after WARMUP untimed ones; ``before`` (untimed)
    runs before each."""
    for _ in range(WARMUP):
        session.get(url, timeout=30).raise_for_status()
    timings = []
    for _ in range(count):
        if before is not None:
            before()
        started = time.perf_counter()
        response = session.get(url, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def load(hey: str, url: str, cookie: str, clients: int, seconds: float) -> dict[str, float]:
    """p50 and p99 (ms) and requests/s of ``clients`` concurrent `hey` clients over ``seconds``;
    exits if any answer was not a 200."""
    answer = subprocess.run(
        [hey, "-z", f"{seconds:g}s", "-c", str(clients), "-o", "csv", "-disable-redirects",
         "-H", f"Cookie: {cookie}", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(answer.stdout)))
    statuses = {row["status-code"] for row in rows}
    if not rows or statuses != {"200"}:
        sys.exit(f"hey against {url}: statuses {sorted(statuses)}\n{answer.stderr[-2000:]}")
    timings = [float(row["response-time"]) * 1000 for row in rows]
    wall = max(float(row["offset"]) + float(row["response-time"]) for row in rows)
    return {"p50": statistics.median(timings), "p99": percentile(timings, 0.99),
            "per_s": len(rows) / wall, "count": len(rows)}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=APPS)
    parser.add_argument("--deployments-per-app", type=int, default=DEPLOYMENTS_PER_APP)
    parser.add_argument("--requests", type=int, default=REQUESTS, help="sequential, per case")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent hey clients")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="of hey load per case")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    return parse_sizes(parser, {"requests": 50, "seconds": 5.0})


def main() -> None:
    args = parse_args()
    hey = require_tool("hey", "hey")
    apps, per_app = args.apps, args.deployments_per_app
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'helios.db'}"
        seconds = seed(database_url, apps, per_app)
        print(f"seeded {apps:,} apps, {apps * per_app:,} releases and "
              f"{apps * per_app:,} deployments in {seconds:.1f} s")  # fmt: skip
        redis_proc, redis_url = start_redis(data_dir)
        panel, url = start_panel(
            data_dir, database_url, redis_url, HELIOS_WEB_WORKERS=str(args.web_workers)
        )
        try:
            session = sign_in(url, user_agent_of(hey))
            cases = [
                ("GET /healthz (floor)", "/healthz"),
                ("GET / (dashboard, page 1 of 20)", "/"),
                ("GET /?page=20 (last page)", "/?page=20"),
                ("GET /?q=app-09 (search)", "/?q=app-09"),
            ]
            results = {label: time_gets(session, url + path, args.requests)
                       for label, path in cases}  # fmt: skip
            # The panel keeps its render until something the list shows changes: here a
            # change (a write another process makes, as the worker's would) before each GET.
            writer = sqlite3.connect(data_dir / "helios.db", isolation_level=None)
            change = lambda: writer.execute("UPDATE app SET cpu_mhz = cpu_mhz WHERE id = 1")  # noqa: E731
            results[RENDERED] = time_gets(session, url + "/", args.requests, before=change)
            writer.close()
            cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
            loaded = {path: load(hey, url + path, cookie, args.clients, args.seconds)
                      for path in ("/healthz", "/")}  # fmt: skip
        finally:
            panel.terminate()
            panel.wait(timeout=30)
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    floor = statistics.median(results[cases[0][0]])
    print(f"{args.requests} sequential requests each, gunicorn with {args.web_workers} "
          "worker(s), SQLite")  # fmt: skip
    print(f"{'request':<34}{'p50 ms':>9}{'p99 ms':>9}{'p50 / floor':>13}")
    for label, timings in results.items():
        p50 = statistics.median(timings)
        print(f"{label:<34}{p50:>9.2f}{percentile(timings, 0.99):>9.2f}{p50 / floor:>12.1f}x")
    print(f"\n{args.clients} concurrent clients (hey, a separate process), {args.seconds:g} s each")
    print(f"{'request':<34}{'p50 ms':>9}{'p99 ms':>9}{'per s':>9}{'requests':>10}")
    for path, got in loaded.items():
        label = "GET /healthz (floor)" if path == "/healthz" else "GET / (dashboard)"
        print(f"{label:<34}{got['p50']:>9.2f}{got['p99']:>9.2f}{got['per_s']:>9.1f}"
              f"{got['count']:>10,}")  # fmt: skip
    dash, bare = results[cases[1][0]], results[cases[0][0]]
    report(figure="dashboard p50, sequential", value=statistics.median(dash), unit="ms",
           floor_name="GET /healthz p50, sequential", floor=floor)  # fmt: skip
    report(figure="dashboard p50 after a change (rendered)", unit="ms",
           value=statistics.median(results[RENDERED]),
           floor_name="GET /healthz p50, sequential", floor=floor)  # fmt: skip
    report(figure="dashboard p99, sequential", value=percentile(dash, 0.99), unit="ms",
           floor_name="GET /healthz p99, sequential", floor=percentile(bare, 0.99))  # fmt: skip
    under, base = loaded["/"], loaded["/healthz"]
    n = args.clients
    for key, name in (("p50", "p50"), ("p99", "p99")):
        report(figure=f"dashboard {name}, {n} clients", value=under[key], unit="ms",
               floor_name=f"GET /healthz {name}, {n} clients", floor=base[key])  # fmt: skip
    report(figure=f"dashboard throughput, {n} clients", value=under["per_s"], unit="req/s",
           floor_name=f"GET /healthz, {n} clients", floor=base["per_s"],
           better="higher")  # fmt: skip


if __name__ == "__main__":
    main()
