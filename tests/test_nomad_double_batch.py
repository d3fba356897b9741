"""Batch jobs in the Nomad double: Helios's build job, placed in the build node pool, its tasks
run in lifecycle order, followed through NomadDriver (allocations, logs, the event stream)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from panel.drivers.nomad import NomadConnection, NomadDriver, NomadError
from panel.render.build import BuildSpec, render_build_job

from conftest import wait_until
from nomad_double import NomadDouble, TaskScript, build_digest, run_nomad_double

SHA = "3f2a9c1e" * 5


def build_spec(**fields: Any) -> BuildSpec:
    """A build of release 7 of the shop app (the fields Helios's settings give by default)."""
    values: dict[str, Any] = {
        "slug": "shop",
        "team": "acme",
        "release": 7,
        "git_url": "https://github.com/acme/shop.git",
        "git_sha": SHA,
        "branch": "main",
        "tracked_branch": "main",
        "registry": "registry.internal:5000",
        "repository": "acme/shop",
    }
    values.update(fields)
    return BuildSpec(**values)


@pytest.fixture
def double() -> Iterator[NomadDouble]:
    """A double whose time moves only by tick() (two default-pool nodes); no spec violations."""
    with run_nomad_double(auto_advance=False) as fake:
        yield fake
        fake.assert_no_violations()


@pytest.fixture
def driver(double: NomadDouble) -> NomadDriver:
    """Helios's driver pointed at the double."""
    return NomadDriver(NomadConnection(address=double.url))


def register(driver: NomadDriver, spec: BuildSpec) -> dict[str, Any]:
    """Register the rendered build job as Helios does (check-and-set on a new job)."""
    return driver.register_job(spec.job_id, render_build_job(spec), modify_index=0)


def run_to_end(double: NomadDouble, driver: NomadDriver, job_id: str) -> dict[str, Any]:
    """Tick until the job's only allocation is terminal; returns it."""
    for _ in range(20):
        allocs = driver.allocations(job_id)
        if allocs and allocs[0]["ClientStatus"] in ("complete", "failed"):
            return allocs[0]
        double.tick()
    raise AssertionError("the allocation did not finish")


def events_of(alloc: dict[str, Any], task: str) -> list[str]:
    """The task's event types in order."""
    return [e["Type"] for e in alloc["TaskStates"][task]["Events"]]


def test_build_places_only_in_the_build_pool_and_succeeds(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """Prestart fetch runs to completion before build starts; the digest is in build's log;
    the allocation completes and the job is dead."""
    build_node = double.add_node("build")
    spec = build_spec()
    result = register(driver, spec)
    assert driver.evaluation(result["EvalID"])["FailedTGAllocs"] is None
    (alloc,) = driver.allocations(spec.job_id)
    assert alloc["NodeID"] == build_node["ID"]
    assert alloc["ClientStatus"] == "pending"

    with pytest.raises(NomadError, match=r'task "fetch" not started yet\. No logs available'):
        list(driver.stream_logs(alloc["ID"], "fetch"))
    double.tick()
    alloc = driver.allocations(spec.job_id)[0]
    assert alloc["ClientStatus"] == "running"
    assert alloc["TaskStates"]["fetch"]["State"] == "running"
    assert alloc["TaskStates"]["build"]["State"] == "pending"
    assert events_of(alloc, "build") == ["Received", "Task Setup"]

    alloc = run_to_end(double, driver, spec.job_id)
    fetch, build = alloc["TaskStates"]["fetch"], alloc["TaskStates"]["build"]
    assert alloc["ClientStatus"] == "complete"
    assert events_of(alloc, "fetch") == ["Received", "Task Setup", "Started", "Terminated"]
    assert events_of(alloc, "build") == ["Received", "Task Setup", "Started", "Terminated"]
    assert fetch["FinishedAt"] <= build["StartedAt"]
    assert not fetch["Failed"] and not build["Failed"]
    assert build["Events"][-1]["ExitCode"] == 0
    assert build["Events"][-1]["DisplayMessage"] == "Exit Code: 0"
    assert driver.read_job(spec.job_id)["Status"] == "dead"

    assert list(driver.stream_logs(alloc["ID"], "fetch")) == [f"fetched {SHA}"]
    lines = list(driver.stream_logs(alloc["ID"], "build"))
    digests = [m[1] for line in lines if (m := re.fullmatch(r"helios-build-digest (.+)", line))]
    assert digests == [build_digest(spec.job_id, SHA)]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digests[0])


def test_no_node_in_the_pool_blocks_with_the_reason(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """Default-pool nodes have room, yet the build never lands there: a blocked evaluation
    and FailedTGAllocs with no node evaluated; a build node added later unblocks it."""
    spec = build_spec()
    result = register(driver, spec)
    evaluation = driver.evaluation(result["EvalID"])
    metric = evaluation["FailedTGAllocs"]["build"]
    assert metric["NodesEvaluated"] == 0
    assert metric["NodesInPool"] == 0
    assert metric["NodesAvailable"] == {"dc1": 0}
    assert evaluation["BlockedEval"]
    assert driver.evaluation(evaluation["BlockedEval"])["Status"] == "blocked"
    assert evaluation["QueuedAllocations"] == {"build": 1}
    double.tick(3)
    assert driver.allocations(spec.job_id) == []
    assert driver.read_job(spec.job_id)["Status"] == "pending"

    node = double.add_node("build")
    double.tick()
    (alloc,) = driver.allocations(spec.job_id)
    assert alloc["NodeID"] == node["ID"]
    assert driver.evaluation(evaluation["BlockedEval"])["Status"] == "complete"


def test_a_node_pool_failing_the_constraint_is_filtered(double: NomadDouble) -> None:
    """The job's ${node.pool} constraint is checked too: ConstraintFiltered names it."""
    double.add_node("build")
    body = render_build_job(build_spec())
    body["Job"]["Constraints"][0]["RTarget"] = "other"
    result = double.cluster.register("default", body["Job"])
    metric = double.cluster.evals[result["EvalID"]]["FailedTGAllocs"]["build"]
    assert metric["ConstraintFiltered"] == {"${node.pool} = other": 1}


def test_exit_1_fails_the_allocation_without_restart_or_reschedule(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """build exits 1 after an error line: Terminated with the code, Not Restarting, failed."""
    double.add_node("build")
    double.add_node("build")
    spec = build_spec()
    double.set_batch_script(
        {
            "fetch": TaskScript(stdout=[f"fetched {SHA}"]),
            "build": TaskScript(stdout=["STEP 1/2"], stderr=["Error: no such file"], exit_code=1),
        },
        kind="build",
    )
    register(driver, spec)
    alloc = run_to_end(double, driver, spec.job_id)
    build = alloc["TaskStates"]["build"]
    assert alloc["ClientStatus"] == "failed"
    assert build["Failed"] is True
    assert events_of(alloc, "build")[-2:] == ["Terminated", "Not Restarting"]
    assert build["Events"][-2]["ExitCode"] == 1
    assert build["Events"][-1]["FailsTask"] is True
    assert list(driver.stream_logs(alloc["ID"], "build", stderr=True)) == ["Error: no such file"]
    double.tick(3)
    assert len(driver.allocations(spec.job_id)) == 1  # ReschedulePolicy attempts 0
    assert driver.read_job(spec.job_id)["Status"] == "dead"


def test_a_failed_prestart_task_never_starts_the_main_task(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """fetch fails: build never starts (Sibling Task Failed), the allocation fails."""
    double.add_node("build")
    spec = build_spec()
    double.set_batch_script({"fetch": TaskScript(exit_code=128)}, job_id=spec.job_id)
    register(driver, spec)
    alloc = run_to_end(double, driver, spec.job_id)
    assert alloc["ClientStatus"] == "failed"
    assert "Started" not in events_of(alloc, "build")
    sibling = alloc["TaskStates"]["build"]["Events"][-2]
    assert sibling["Type"] == "Sibling Task Failed"
    assert sibling["DisplayMessage"] == 'Task\'s sibling "fetch" failed'
    assert alloc["TaskStates"]["build"]["Failed"] is False


def test_time_limit_stops_the_task_and_fails(double: NomadDouble, driver: NomadDriver) -> None:
    """The build runs past its limit: stopped with 124 and the runner's line, failed."""
    double.add_node("build")
    spec = build_spec()
    double.set_batch_script(
        lambda job: {"build": TaskScript(stdout=["a", "b", "c", "d"], steps=8, time_limit=4)},
        kind="build",
    )
    register(driver, spec)
    alloc = run_to_end(double, driver, spec.job_id)
    build = alloc["TaskStates"]["build"]
    assert alloc["ClientStatus"] == "failed"
    assert build["Events"][-2]["Type"] == "Terminated"
    assert build["Events"][-2]["ExitCode"] == 124
    assert list(driver.stream_logs(alloc["ID"], "build")) == ["a", "b"]
    (line,) = driver.stream_logs(alloc["ID"], "build", stderr=True)
    assert "time limit of 4 s exceeded" in line


def test_stopping_a_running_build_kills_it(double: NomadDouble, driver: NomadDriver) -> None:
    """DELETE /v1/job/<id>: the running task is killed; a killed task is not failed, so the
    allocation ends complete (desired stop) and the job dead."""
    double.add_node("build")
    spec = build_spec()
    double.set_batch_script({"build": TaskScript(steps=50)}, kind="build")
    register(driver, spec)
    double.tick(3)
    assert driver.allocations(spec.job_id)[0]["TaskStates"]["build"]["State"] == "running"
    double.cluster.deregister("default", spec.job_id, purge=False)
    (alloc,) = driver.allocations(spec.job_id)
    assert alloc["DesiredStatus"] == "stop"
    assert alloc["ClientStatus"] == "complete"
    assert events_of(alloc, "build")[-3:] == ["Killing", "Terminated", "Killed"]
    assert alloc["TaskStates"]["build"]["Failed"] is False
    assert driver.read_job(spec.job_id)["Status"] == "dead"


def test_follow_streams_lines_as_the_build_writes_them() -> None:
    """stream_logs (follow) returns lines while the task runs and ends when it is dead."""
    with run_nomad_double(auto_advance=False) as double:
        double.add_node("build")
        driver = NomadDriver(NomadConnection(address=double.url))
        spec = build_spec()
        lines = [f"line {i}" for i in range(5)]
        double.set_batch_script({"build": TaskScript(stdout=lines, steps=5)}, kind="build")
        register(driver, spec)
        double.tick(3)  # fetch done, build started
        alloc_id = driver.allocations(spec.job_id)[0]["ID"]
        received: list[str] = []
        follower = threading.Thread(
            target=lambda: received.extend(driver.stream_logs(alloc_id, "build")), daemon=True
        )
        follower.start()
        double.tick(2)
        follower.join(0.5)
        assert follower.is_alive()  # still following: the task is running
        double.tick(3)
        follower.join(5)
        assert not follower.is_alive()
        assert received == lines
        double.assert_no_violations()


def test_event_stream_shows_the_allocation_transitions(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """Allocation events: pending, running (fetch first), complete; the job ends dead."""
    double.add_node("build")
    spec = build_spec()
    register(driver, spec)
    run_to_end(double, driver, spec.job_id)
    stream = driver.open_event_stream(
        index=0, topics=[f"Allocation:{spec.job_id}", f"Job:{spec.job_id}"], read_timeout=5
    )
    seen: list[tuple[str, str, str]] = []
    job_status: list[str] = []
    try:
        for frame in stream:
            for event in frame.get("Events", []):
                if event["Topic"] == "Job":
                    job_status.append(event["Payload"]["Job"]["Status"])
                    continue
                alloc = event["Payload"]["Allocation"]
                states = alloc["TaskStates"] or {}
                seen.append(
                    (
                        alloc["ClientStatus"],
                        states.get("fetch", {}).get("State", "-"),
                        states.get("build", {}).get("State", "-"),
                    )
                )
            if seen and seen[-1][0] == "complete":
                break
    finally:
        stream.close()
    assert seen[0] == ("pending", "-", "-")
    assert ("running", "running", "pending") in seen
    assert ("running", "dead", "running") in seen
    assert seen[-1] == ("complete", "dead", "dead")
    assert job_status[-1] == "dead"


def test_blocking_query_on_allocations_wakes_on_a_batch_update(double: NomadDouble) -> None:
    """A batch allocation's update moves the allocs index (blocking queries return)."""
    double.add_node("build")
    spec = build_spec()
    double.cluster.register("default", render_build_job(spec)["Job"])
    before = double.cluster.table("allocs")
    double.tick()
    assert double.cluster.table("allocs") > before


def test_service_jobs_stay_in_the_default_pool() -> None:
    """A service job (no NodePool) never lands on a build node."""
    with run_nomad_double(nodes=[]) as double:
        double.add_node("build")
        job = {
            "ID": "web",
            "Datacenters": ["dc1"],
            "TaskGroups": [
                {"Name": "web", "Tasks": [{"Name": "web", "Driver": "docker", "Config": {}}]}
            ],
        }
        result = double.cluster.register("default", job)
        assert double.cluster.evals[result["EvalID"]]["FailedTGAllocs"]["web"]
        assert not double.cluster.allocs


def test_plan_reports_the_missing_pool(double: NomadDouble, driver: NomadDriver) -> None:
    """The plan of a build with no build node says it cannot place, with no node evaluated."""
    spec = build_spec()
    plan = driver.plan_job(spec.job_id, render_build_job(spec))
    assert plan["FailedTGAllocs"]["build"]["NodesEvaluated"] == 0
    assert plan["Annotations"]["DesiredTGUpdates"]["build"]["Place"] == 1
    double.add_node("build")
    assert driver.plan_job(spec.job_id, render_build_job(spec))["FailedTGAllocs"] is None


def test_build_node_fixture_and_clock_run_a_build(
    nomad_double: NomadDouble, nomad_build_node: dict[str, Any], nomad_clock: Any
) -> None:
    """With the conftest fixtures, the double's own clock runs a build to the end."""
    driver = NomadDriver(NomadConnection(address=nomad_double.url))
    spec = build_spec()
    register(driver, spec)

    def build_started() -> str | None:
        """The allocation's ID once its build task has started."""
        alloc = driver.allocations(spec.job_id)[0]
        return (
            alloc["ID"] if (alloc["TaskStates"] or {}).get("build", {}).get("StartedAt") else None
        )

    lines = list(driver.stream_logs(wait_until(build_started, what="build to start"), "build"))
    assert lines[-1] == f"helios-build-digest {build_digest(spec.job_id, SHA)}"
    (alloc,) = driver.allocations(spec.job_id)
    assert alloc["NodeID"] == nomad_build_node["ID"]
    assert alloc["ClientStatus"] == "complete"


def test_reschedule_policy_with_attempts_places_a_replacement(double: NomadDouble) -> None:
    """ReschedulePolicy Attempts 1: one replacement (PreviousAllocation set), then dead."""
    double.add_node("build")
    job = render_build_job(build_spec())["Job"]
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 1, "Unlimited": False}
    double.set_batch_script({"build": TaskScript(exit_code=2)}, kind="build")
    double.cluster.register("default", job)
    double.tick(12)
    first, second = sorted(double.cluster.allocs.values(), key=lambda a: a["CreateIndex"])
    assert first["ClientStatus"] == second["ClientStatus"] == "failed"
    assert first["DesiredDescription"] == "alloc was rescheduled because it failed"
    assert second["PreviousAllocation"] == first["ID"]
    assert first["NextAllocation"] == second["ID"]
    assert double.cluster.current("default", job["ID"])["Status"] == "dead"
