"""Dashboard latency with 1,000 apps and 100,000 deployments, next to a bare endpoint's floor.

Seeds a fresh SQLite database (one user, one team, 1,000 apps, each with 100 releases and 100
deployments, bulk-inserted in one transaction), starts the real panel under gunicorn with one
worker plus a Redis server, signs in through the login form, then times sequential GETs of the
dashboard next to GET /healthz (a bare Flask endpoint on the same server: the floor).
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import requests
from support import start_panel, start_redis

APPS = 1_000
DEPLOYMENTS_PER_APP = 100
REQUESTS = 200
WARMUP = 10
BATCH = 500  # rows per INSERT: well under SQLite's limit of bound variables
EMAIL = "bench@example.com"
PASSWORD = "Granite Heron Lantern 58"  # strong, and free of the email
STATUSES = ["succeeded"] * 8 + ["failed", "reverted"]


def seed(database_url: str) -> float:
    """Create the schema and the rows; return the seconds the inserts took."""
    from peewee import chunked

    from panel.actions.accounts import create_user
    from panel.db import database, migrate_up, open_database
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
             for n in range(APPS)), BATCH,
        ):  # fmt: skip
            App.insert_many(rows).execute()
        app_ids = [app.id for app in App.select(App.id).order_by(App.id)]
        releases = (
            {"app": app_id, "number": n, "image": f"registry.local/app:{n}", "created_at": epoch}
            for app_id in app_ids
            for n in range(1, DEPLOYMENTS_PER_APP + 1)
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
                "requested_at": (at := epoch + timedelta(minutes=n * APPS + app_id)),
                "started_at": at,
                "finished_at": at + timedelta(seconds=40),
            }
            for n in range(1, DEPLOYMENTS_PER_APP + 1)
            for app_id in app_ids
        )
        for rows in chunked(deployments, BATCH):
            Deployment.insert_many(rows).execute()
    elapsed = time.perf_counter() - started
    assert Deployment.select().count() == APPS * DEPLOYMENTS_PER_APP
    database.close()
    return elapsed


def sign_in(url: str) -> requests.Session:
    session = requests.Session()
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


def time_gets(session: requests.Session, url: str) -> list[float]:
    """Milliseconds of REQUESTS sequential GETs, after WARMUP untimed ones."""
    for _ in range(WARMUP):
        session.get(url, timeout=30).raise_for_status()
    timings = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = session.get(url, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'helios.db'}"
        seconds = seed(database_url)
        print(f"seeded {APPS:,} apps, {APPS * DEPLOYMENTS_PER_APP:,} releases and "
              f"{APPS * DEPLOYMENTS_PER_APP:,} deployments in {seconds:.1f} s")  # fmt: skip
        redis_proc, redis_url = start_redis(data_dir)
        panel, url = start_panel(data_dir, database_url, redis_url, HELIOS_WEB_WORKERS="1")
        try:
            session = sign_in(url)
            cases = [
                ("GET /healthz (floor)", "/healthz"),
                ("GET / (dashboard, page 1 of 20)", "/"),
                ("GET /?page=20 (last page)", "/?page=20"),
                ("GET /?q=app-09 (search)", "/?q=app-09"),
            ]
            results = {label: time_gets(session, url + path) for label, path in cases}
        finally:
            panel.terminate()
            panel.wait(timeout=30)
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    floor = statistics.median(results[cases[0][0]])
    print(f"{REQUESTS} sequential requests each, gunicorn with 1 worker, SQLite")
    print(f"{'request':<34}{'p50 ms':>9}{'p99 ms':>9}{'p50 / floor':>13}")
    for label, timings in results.items():
        p50 = statistics.median(timings)
        print(f"{label:<34}{p50:>9.2f}{percentile(timings, 0.99):>9.2f}{p50 / floor:>12.1f}x")


if __name__ == "__main__":
    main()
