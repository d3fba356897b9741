"""Crash recovery: the kill campaign of tests/test_deploy_kill.py, ten rounds per kill point.

Kinds: ``horse`` SIGKILLs the process that runs the job (RQ's work horse), ``group`` the
worker's whole process group (fresh workers then start), ``redis`` the Redis server with
deploys in flight and queued (restarted empty). Each round sets every point up on a fresh
stage (tests/kill_support.py: a private redis-server, the Nomad double, a fresh SQLite
database, real `helios worker` and `helios follower` processes), kills, and waits until every
deployment and provisioning run ended.

Per kind and point it prints the rounds that passed every check (each deployment ended, those
whose job was killed succeeded, one Nomad job version per deployment, runs failed with the
reason, nothing the killed processes started survives, no workspace left) and the recovery
time (kill → last end) median and max, next to its floor measured in the same run: an
un-killed deploy (or provisioning run) from enqueue to its end, on the same kind of stage.
The recovery of a killed deploy job cannot be faster than the heartbeat staleness plus up to
one sweep interval (printed as the bound). Prints figures only; asserts nothing.

Usage: python benchmarks/kill_recovery.py [--rounds N] [--kinds horse,group,redis] [--quick]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from kill_support import (  # noqa: E402
    POINT_NAMES,
    POINTS,
    REDIS_IN_FLIGHT,
    CampaignError,
    PointResult,
    Stage,
    run_round,
    wait_for,
)
from support import parse_sizes, report  # noqa: E402

KINDS = ("horse", "group", "redis")
REDIS_POINTS = (*(f"in-flight {name}" for name in REDIS_IN_FLIGHT), "queued")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per kind (default 10)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kill kinds")
    parser.add_argument("--floor-deploys", type=int, default=10, help="un-killed deploys timed")
    parser.add_argument("--floor-runs", type=int, default=3, help="un-killed runs timed")
    return parse_sizes(parser, {"rounds": 1, "floor_deploys": 3, "floor_runs": 1})


def measure_floors(workdir: Path, deploys: int, runs: int) -> dict[str, list[float]]:
    """Enqueue → end of un-killed deploys and provisioning runs, one at a time."""
    from panel.models import Deployment, DeploymentStatus, ProvisionRun, ProvisionStatus

    floors: dict[str, list[float]] = {"deploy": [], "provision": []}
    with Stage(workdir) as stage:
        stage.provision_site()
        stage.start("follower")
        stage.start_workers(1, HELIOS_PLAYBOOKS_DIR=str(stage.playbooks),
                            HELIOS_PROVISION_VARS=str(stage.vars))  # fmt: skip
        app = stage.create_app("k-floor")
        for _ in range(deploys):
            started = time.monotonic()
            deployment = stage.deploy(app)
            row = wait_for(
                lambda deployment=deployment: (d := Deployment.get_by_id(deployment))
                and DeploymentStatus(d.status).is_terminal and d,
                60, f"deployment #{deployment} to end",
            )  # fmt: skip
            floors["deploy"].append(time.monotonic() - started)
            if row.status != DeploymentStatus.SUCCEEDED:
                raise CampaignError(f"an un-killed deploy ended {row.status}: {row.status_message}")
        for _ in range(runs):
            started = time.monotonic()
            run = stage.request_run("n3")  # n3 never stops: both tasks end at once
            row = wait_for(
                lambda run=run: (r := ProvisionRun.get_by_id(run))
                and ProvisionStatus(r.status).is_terminal and r,
                120, f"run #{run} to end",
            )  # fmt: skip
            floors["provision"].append(time.monotonic() - started)
            if row.status != ProvisionStatus.SUCCEEDED:
                raise CampaignError(f"an un-killed run ended {row.status}: {row.message}")
        problems = stage.close()
    if problems:
        raise CampaignError("; ".join(problems))
    return floors


def summary(values: list[float]) -> str:
    if not values:
        return f"{'-':>8}{'-':>8}"
    return f"{statistics.median(values):>8.2f}{max(values):>8.2f}"


def figure_of_kind(kind: str, outcomes: dict, jobs: dict, floors: dict) -> None:
    """One figure per kill kind: the slowest point's median recovery, next to the un-killed
    median of that point's kind of job, with the point-rounds that passed every check."""
    passed = sum(r.passed for results in outcomes.values() for r in results)
    total = sum(len(results) for results in outcomes.values())
    medians = {}
    for point, results in outcomes.items():
        recoveries = [r.recovery for r in results if r.recovery is not None]
        if recoveries:
            medians[point] = statistics.median(recoveries)
    if not medians:
        print(f"{kind}: no recovery measured")
        return
    point = max(medians, key=medians.get)
    job = "provision" if jobs.get(point) == "provision" else "deploy"
    report(figure=f"kill {kind}: slowest recovery ({point}), {passed}/{total} passed",
           value=medians[point], unit="s", floor_name=f"un-killed {job}, enqueue to end",
           floor=statistics.median(floors[job]))  # fmt: skip


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds: every stage stops what it started


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args()
    kinds = [kind for kind in args.kinds.split(",") if kind]
    from panel.config import Settings
    from panel.reconcile.jobs import REQUEUE_AFTER, stale_after
    from panel.run.worker import SWEEP_INTERVAL

    with tempfile.TemporaryDirectory(prefix="helios-kill-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        floors = measure_floors(root / "floor", args.floor_deploys, args.floor_runs)
        stale = stale_after(Settings.from_env(environ={"HELIOS_DEPLOY_LOCK_TTL": "2"}))
        outcomes: dict[tuple[str, str], list[PointResult]] = defaultdict(list)
        for kind in kinds:
            points = REDIS_POINTS if kind == "redis" else POINT_NAMES
            for number in range(1, args.rounds + 1):
                timings: dict[str, float] = {}
                try:
                    results = run_round(root / f"{kind}-{number}", kind, timings=timings)
                except CampaignError as exc:
                    results = {p: PointResult(p, problems=[f"round not set up: {exc}"])
                               for p in points}  # fmt: skip
                passed = sum(r.passed for r in results.values())
                took = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in timings.items())
                print(f"{kind} round {number}: {passed}/{len(results)} points passed ({took})",
                      file=sys.stderr, flush=True)  # fmt: skip
                for point in points:
                    outcomes[(kind, point)].append(results[point])
        total = time.monotonic() - began

    jobs = {point.name: point.job for point in POINTS}
    print(f"{args.rounds} rounds per kind, {total / 60:.1f} min in all")
    print(f"bound for a killed deploy job: heartbeat stale after {stale} s, then a sweep within "
          f"{SWEEP_INTERVAL} s; a lost queued job: {REQUEUE_AFTER} s after its request, then a "
          "sweep")  # fmt: skip
    print(f"{'kind':<7}{'point':<27}{'passed':>8}{'recovery s':>16}{'floor s':>16}  floor")
    print(f"{'':<7}{'':<27}{'':>8}{'median':>8}{'max':>8}{'median':>8}{'max':>8}")
    for (kind, point), results in outcomes.items():
        passed = sum(r.passed for r in results)
        recoveries = [r.recovery for r in results if r.recovery is not None]
        job = "provision" if jobs.get(point) == "provision" else "deploy"
        floor_name = f"un-killed {job} {'run' if job == 'provision' else ''}".strip()
        print(f"{kind:<7}{point:<27}{f'{passed}/{len(results)}':>8}{summary(recoveries)}"
              f"{summary(floors[job])}  {floor_name}, enqueue to end")  # fmt: skip
    failures: dict[str, set[str]] = defaultdict(set)
    for (kind, point), results in outcomes.items():
        for result in results:
            for problem in result.problems:
                failures[f"{kind} {point}"].add(problem.split(":", 1)[0][:110])
    for kind in kinds:
        figure_of_kind(kind, {p: r for (k, p), r in outcomes.items() if k == kind}, jobs, floors)
    if failures:
        print("\nwhy rounds failed (distinct reasons, abridged):")
        for where, reasons in failures.items():
            for reason in sorted(reasons):
                print(f"  {where}: {reason}")


if __name__ == "__main__":
    main()
