"""SIGKILL whatever runs a job, at ten points of deploy and provisioning jobs; SIGKILL Redis.

Three kinds of kill, each on a fresh stage (a private redis-server, the Nomad double, a fresh
database, real `helios worker` and `helios follower` processes; see tests/kill_support.py):

- the work horse: every point is set up at once, one job per worker, each stopped exactly at
  its point (a request held by the double, the app's lock, a FIFO, a sleeping playbook task);
  then the process running each job (RQ's work horse, found through RQ's worker registry and
  checked in /proc) is SIGKILLed. Its worker lives on; the sweep must notice;
- the worker's process group: the same points, then each worker's whole group is SIGKILLed
  (the horse, in a group of its own, and the scheduler must die with it) and fresh workers
  start;
- Redis: deploys held in flight and more queued behind them, then redis-server is SIGKILLed and
  restarted empty on the same port.

For every point: each deployment ends (those whose job was killed succeed, after another
attempt), exactly one Nomad job version carries each deployment's ``helios.deployment``; each
provisioning run ends failed with the reason; no process the killed ones started survives;
no workspace is left. Recovery time (kill → end) is recorded as the test's property
``recovery_seconds`` and printed; benchmarks/kill_recovery.py reports it over ten rounds.

Each round of a kind runs once, when its first point's test asks for it; the other points of
the round read its results. HELIOS_KILL_ROUNDS (default 1) sets how many rounds run.
"""

from __future__ import annotations

import os

import pytest
from kill_support import POINT_NAMES, REDIS_IN_FLIGHT, CampaignError, PointResult, run_round

ROUNDS = int(os.environ.get("HELIOS_KILL_ROUNDS", "1"))
REDIS_POINTS = (*(f"in-flight {name}" for name in REDIS_IN_FLIGHT), "queued")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def cases(points: tuple[str, ...]) -> list:
    return [
        pytest.param(number, point, id=f"round{number}-{point.replace(' ', '-')}")
        for number in range(1, ROUNDS + 1)
        for point in points
    ]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """``results(kind, number)``: the results per point of that round, run on first use."""
    done: dict[tuple[str, int], dict[str, PointResult] | Exception] = {}

    def results(kind: str, number: int) -> dict[str, PointResult]:
        key = (kind, number)
        if key not in done:
            try:
                done[key] = run_round(tmp_path_factory.mktemp(f"{kind}-{number}"), kind)
            except Exception as exc:  # the round could not run: each of its points fails so
                done[key] = exc
        found = done[key]
        if isinstance(found, Exception):
            raise CampaignError(f"the {kind} round {number} could not run: {found!r}") from found
        return found

    return results


def check(result: PointResult, record_property) -> None:
    record_property("recovery_seconds", result.recovery)
    if result.recovery is not None:
        print(f"{result.point}: recovered {result.recovery:.2f} s after the kill")
    assert result.passed, f"{result.point}:\n" + "\n".join(result.problems)


@pytest.mark.parametrize(("number", "point"), cases(POINT_NAMES))
def test_sigkill_of_the_process_running_the_job(campaign, number, point, record_property):
    check(campaign("horse", number)[point], record_property)


@pytest.mark.parametrize(("number", "point"), cases(POINT_NAMES))
def test_sigkill_of_the_workers_process_group(campaign, number, point, record_property):
    check(campaign("group", number)[point], record_property)


@pytest.mark.parametrize(("number", "point"), cases(REDIS_POINTS))
def test_sigkill_of_redis_with_deploys_in_flight_and_queued(
    campaign, number, point, record_property
):
    check(campaign("redis", number)[point], record_property)
