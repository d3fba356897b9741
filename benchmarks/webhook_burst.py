"""A burst of 1,000 GitHub push deliveries against the real panel, next to a bare endpoint's floor.

Seeds a fresh SQLite database with one repo app connected to a repository (its hook's secret
set), starts the real panel under gunicorn with one worker plus a Redis server, then sends from
20 client threads at once: 1,000 GET /healthz (the floor: a bare Flask endpoint on the same
server, same clients), 1,000 forged deliveries (a wrong signature: refused, nothing written),
and 1,000 signed deliveries with distinct ids and commits (each recorded, each requesting a
build that supersedes the previous one). Prints the ack time percentiles next to the floor,
then what was lost or duplicated. No worker runs: builds stay queued or superseded.
Prints figures only; asserts nothing.

Usage: python benchmarks/webhook_burst.py [--deliveries N] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from support import parse_sizes, report, start_panel, start_redis

DELIVERIES = 1_000
CLIENTS = 20
WARMUP = 50
SECRET = "benchmark hook secret"
REPO_ID = 186853002  # Codertocat/Hello-World, as in GitHub's example push
REGISTRY = "registry.bench:5000"  # builds are only queued: nothing is pushed to it
EMAIL = "bench@example.com"
PASSWORD = "Granite Heron Lantern 58"
PUSH = {
    "ref": "refs/heads/master",
    "before": "0" * 40,
    "after": "",
    "created": False,
    "deleted": False,
    "forced": False,
    "repository": {"id": REPO_ID, "full_name": "Codertocat/Hello-World"},
    "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
    "head_commit": {"id": "", "message": "Update README.md", "timestamp": "2019-05-15T15:20:41Z"},
}


def seed(data_dir: Path, database_url: str) -> None:
    """Create the schema, a team and the app connected to the repository."""
    from panel.actions.accounts import create_user
    from panel.actions.apps import create_app
    from panel.config import Settings
    from panel.crypto import SecretCipher
    from panel.db import database, migrate_up, open_database
    from panel.models import App, Team

    settings = Settings.from_env(environ={}, data_dir=data_dir, database_url=database_url)
    open_database(database_url)
    migrate_up()
    create_user(EMAIL, PASSWORD, team_slug="bench")
    app = create_app(
        actor=None, team=Team.get(Team.slug == "bench"), slug="hello",
        repo="Codertocat/Hello-World", branch="master",
    )  # fmt: skip
    secret = SecretCipher.from_settings(settings).encrypt(SECRET)
    App.update(github_repo_id=REPO_ID, webhook_secret=secret).where(App.id == app.id).execute()
    database.close()


def delivery(commit: str, *, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A push of ``commit`` to master and the headers GitHub would send with it."""
    from panel.schema.github import sign

    head = {**PUSH["head_commit"], "id": commit}
    raw = json.dumps({**PUSH, "after": commit, "head_commit": head}).encode()
    return raw, {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, raw),
        "Content-Type": "application/json",
    }


def commit_of(label: str, n: int) -> str:
    return hashlib.sha1(f"{label} {n}".encode(), usedforsecurity=False).hexdigest()


def burst(send: Callable[[requests.Session, int], int], count: int) -> tuple[list, float]:
    """(status, ms) of ``count`` requests from CLIENTS threads at once; the wall time."""
    local = threading.local()

    def timed(n: int) -> tuple[int, float]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        status = send(local.session, n)
        return status, (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(timed, range(count)))
    return results, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def pick(values: list[float], fraction: float) -> float:
    """The median for 0.5 (as the table shows it), else the percentile."""
    return statistics.median(values) if fraction == 0.5 else percentile(values, fraction)


def count_rows(database_url: str) -> dict[str, int]:
    """What the deliveries left behind: rows, distinct ids and commits, builds by status."""
    from peewee import fn

    from panel.db import database, open_database
    from panel.models import Build, WebhookDelivery

    open_database(database_url)
    with database.connection_context():
        counts = {
            "deliveries": WebhookDelivery.select().count(),
            "distinct ids": WebhookDelivery.select(
                fn.COUNT(WebhookDelivery.delivery.distinct())
            ).scalar(),
            "builds": Build.select().count(),
            "distinct commits": Build.select(fn.COUNT(Build.git_sha.distinct())).scalar(),
        }
        for row in Build.select(Build.status, fn.COUNT(Build.id).alias("n")).group_by(Build.status):
            counts[f"builds {row.status}"] = row.n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=DELIVERIES, help="requests per case")
    deliveries = parse_sizes(parser, {"deliveries": 300}).deliveries
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'helios.db'}"
        seed(data_dir, database_url)
        redis_proc, redis_url = start_redis(data_dir)
        panel, url = start_panel(
            data_dir,
            database_url,
            redis_url,
            HELIOS_REGISTRY=REGISTRY,
            HELIOS_WEB_WORKERS="1",
            HELIOS_LOG_LEVEL="error",  # forged deliveries are logged at warning: not timed here
        )
        hook = f"{url}/webhooks/github"
        signed = [delivery(commit_of("push", n)) for n in range(deliveries)]
        forged = [delivery(commit_of("forged", n), secret="a guess") for n in range(deliveries)]
        try:
            burst(lambda s, n: s.get(f"{url}/healthz", timeout=60).status_code, WARMUP)
            floor, floor_wall = burst(
                lambda s, n: s.get(f"{url}/healthz", timeout=60).status_code, deliveries
            )
            refused, refused_wall = burst(
                lambda s, n: s.post(hook, data=forged[n][0], headers=forged[n][1],
                                    timeout=60).status_code, deliveries,
            )  # fmt: skip
            forged_rows = count_rows(database_url)["deliveries"]
            accepted, accepted_wall = burst(
                lambda s, n: s.post(hook, data=signed[n][0], headers=signed[n][1],
                                    timeout=60).status_code, deliveries,
            )  # fmt: skip
        finally:
            panel.terminate()
            panel.wait(timeout=30)
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        rows = count_rows(database_url)

    cases = [
        ("GET /healthz (floor)", floor, floor_wall),
        ("forged delivery (401)", refused, refused_wall),
        ("signed push delivery (202)", accepted, accepted_wall),
    ]
    base = statistics.median([ms for _status, ms in floor])
    print(f"{deliveries:,} requests per case from {CLIENTS} client threads at once, "
          "gunicorn with 1 worker, SQLite + Redis")  # fmt: skip
    print(f"{'case':<30}{'p50 ms':>9}{'p99 ms':>9}{'p50 / floor':>13}{'wall s':>9}{'per s':>8}"
          f"{'statuses':>22}")  # fmt: skip
    for label, results, wall in cases:
        acks = [ms for _status, ms in results]
        seen = sorted({status for status, _ms in results})
        tally = ", ".join(f"{sum(1 for st, _ms in results if st == s)} x {s}" for s in seen)
        p50 = statistics.median(acks)
        print(f"{label:<30}{p50:>9.2f}{percentile(acks, 0.99):>9.2f}{p50 / base:>12.1f}x"
              f"{wall:>9.2f}{deliveries / wall:>8.0f}{tally:>22}")  # fmt: skip
    not_2xx = sum(1 for status, _ms in accepted if not 200 <= status < 300)
    lost = deliveries - (rows["deliveries"] - forged_rows)
    duplicated = (rows["deliveries"] - rows["distinct ids"]) + (
        rows["builds"] - rows["distinct commits"]
    )
    unfinished = rows.get("builds queued", 0) + rows.get("builds running", 0)
    print(
        f"forged deliveries recorded: {forged_rows}; signed deliveries recorded: "
        f"{rows['deliveries'] - forged_rows:,}, lost {lost}, duplicated {duplicated}, "
        f"answered other than 2xx {not_2xx}"
    )
    print(
        f"builds: {rows['builds']:,} requested, {rows.get('builds superseded', 0):,} superseded, "
        f"{unfinished} unfinished (expected 1)"
    )
    floor_acks = [ms for _status, ms in floor]
    for label, results, _wall in cases[1:]:
        acks = [ms for _status, ms in results]
        for q in (0.5, 0.99):
            report(figure=f"{label} ack p{q * 100:.0f}, {CLIENTS} clients",
                   value=pick(acks, q), unit="ms",
                   floor_name=f"GET /healthz p{q * 100:.0f}, same load",
                   floor=pick(floor_acks, q))  # fmt: skip
    report(figure=f"signed push deliveries per s, {CLIENTS} clients",
           value=deliveries / accepted_wall, unit="req/s",
           floor_name="GET /healthz per s, same load", floor=deliveries / floor_wall,
           better="higher")  # fmt: skip


if __name__ == "__main__":
    main()
