"""One drift check pass over 1,000 unchanged apps: time, Nomad requests and SQL statements.

1,000 apps, each with a live release (a succeeded deployment) whose job runs in the Nomad
double as Helios rendered it (the double validates every request against Nomad's OpenAPI
description, a few ms each). A pass reads each job (GET /v1/job/<id>) and asks Nomad to plan
the live release's job with its diff (POST /v1/job/<id>/plan), one app after the other, then
records what changed. Floors measured in the same run: 1,000 plain GET /v1/job/<id> round trips,
and the same GETs and plans alone (nothing rendered, nothing recorded). The first pass writes
every app's row; later passes find nothing changed and move ``checked_at`` in one statement.
The interval a pass must fit in is HELIOS_DRIFT_INTERVAL (300 s by default).

Usage: python benchmarks/drift_check.py [--apps N] [--passes N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the double is test code

from nomad_double import run_nomad_double  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from support import live_apps_in_double, parse_sizes, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=3, help="unchanged passes timed")
    args = parse_sizes(parser, {"apps": 150, "passes": 2})
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_nomad_double(nodes=[(1_000_000, 1_000_000)], auto_advance=False) as double,
    ):
        started = time.monotonic()
        settings, driver, bodies = live_apps_in_double(args.apps, tmp, double)
        from panel.db import database
        from panel.models import AppDrift
        from panel.reconcile.drift import check_apps

        print(f"{args.apps:,} apps with a live release registered in the double "
              f"(setup {time.monotonic() - started:.0f} s)\n")  # fmt: skip

        def gets() -> float:
            begin = time.monotonic()
            for slug in bodies:
                driver.read_job(slug)
            return time.monotonic() - begin

        def gets_and_plans() -> float:
            begin = time.monotonic()
            for slug, body in bodies.items():
                driver.read_job(slug)
                driver.plan_job(slug, body)
            return time.monotonic() - begin

        statements: list[str] = []
        connection = database.connection()
        connection.set_trace_callback(statements.append)
        begin = time.monotonic()
        first = check_apps(driver, settings, None)
        first_seconds, first_sql = time.monotonic() - begin, len(statements)
        passes, get_floors, plan_floors = [], [], []
        for _ in range(args.passes):  # interleaved: the double's own speed drifts over a run
            get_floors.append(gets())
            plan_floors.append(gets_and_plans())
            statements.clear()
            begin = time.monotonic()
            counts = check_apps(driver, settings, None)
            passes.append((time.monotonic() - begin, len(statements), counts))
        connection.set_trace_callback(None)
        floor_get, floor_plan = statistics.median(get_floors), statistics.median(plan_floors)
        unchanged = statistics.median(seconds for seconds, _, _ in passes)
        n = f"{args.apps:,}"
        print(f"{'':52} {'seconds':>8} {'Nomad requests':>15} {'SQL statements':>15}")
        print(f"{'floor: ' + n + ' plain GET /v1/job/<id>':52} {floor_get:8.2f} "
              f"{args.apps:15,} {0:15,}")  # fmt: skip
        print(f"{'floor: ' + n + ' GET + plan, nothing rendered':52} {floor_plan:8.2f} "
              f"{2 * args.apps:15,} {0:15,}")  # fmt: skip
        print(f"{'first pass (' + n + ' rows written)':52} {first_seconds:8.2f} "
              f"{2 * args.apps:15,} {first_sql:15,}")  # fmt: skip
        print(f"{'drift check of ' + n + ' unchanged apps (median)':52} {unchanged:8.2f} "
              f"{2 * args.apps:15,} {passes[0][1]:15,}")  # fmt: skip
        per_app = 1000 * unchanged / args.apps
        print(f"\nratio to the GET floor: {unchanged / floor_get:.2f}x; to GET + plan: "
              f"{unchanged / floor_plan:.2f}x; per app {per_app:.1f} ms")  # fmt: skip
        states = dict(passes[-1][2])
        print(f"states: first pass {dict(first)}, last pass {states}; rows "
              f"{AppDrift.select().count():,}; interval it must fit in "
              f"(HELIOS_DRIFT_INTERVAL): {settings.drift_interval} s")  # fmt: skip
        report(figure=f"drift check, {n} unchanged apps", value=unchanged, unit="s",
               floor_name=f"{n} plain GET /v1/job/<id>", floor=floor_get)  # fmt: skip
        report(figure=f"drift check, {n} unchanged apps", value=unchanged, unit="s",
               floor_name=f"{n} GET + plan, nothing rendered", floor=floor_plan)  # fmt: skip
        report(figure=f"drift check, first pass ({n} rows written)", value=first_seconds,
               unit="s", floor_name=f"{n} GET + plan, nothing rendered",
               floor=floor_plan)  # fmt: skip


if __name__ == "__main__":
    main()
