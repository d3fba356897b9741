"""NomadDriver against the Nomad API double: every call, every error kind, no spec violations."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
from nomad.api.base import Requester
from nomad.api.exceptions import BadRequestNomadException

from panel.drivers.nomad import NomadConnection, NomadDriver, NomadError, NomadErrorKind
from panel.render.nomad import render_job, variable_path_for
from panel.spec import AppSpec

from conftest import free_port
from nomad_double import NomadDouble, run_nomad_double

TOKEN = "0b3e7f5c-8d2a-4c61-9f1e-6a5b4c3d2e1f"
JOB = "shop"
SECRET_VALUE = "s3cr3t-never-in-a-message"
NEW = {"modify_index": 0}  # register only if the job does not exist yet


@pytest.fixture
def double() -> Iterator[NomadDouble]:
    """A double without ACLs; the test fails if the driver sent anything the spec rejects."""
    with run_nomad_double() as fake:
        yield fake
        fake.assert_no_violations()


@pytest.fixture
def driver(double: NomadDouble) -> NomadDriver:
    """A driver pointed at the double."""
    return NomadDriver(NomadConnection(address=double.url))


def app(release: int = 1, count: int = 2, **fields: Any) -> AppSpec:
    """The shop app at one release (the image tag follows the release)."""
    return AppSpec(
        slug=JOB,
        team="acme",
        image=f"registry.example.com/acme/shop:{release}",
        release=release,
        base_domain="apps.example.com",
        processes=({"name": "web", "command": "gunicorn app:app", "count": count},),
        env={"LOG_LEVEL": "info"},
        secret_keys=("DATABASE_PASSWORD",),
        **fields,
    )


def image_of(job: dict[str, Any]) -> str:
    """The docker image of the web task."""
    return job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]


def register(driver: NomadDriver, spec: AppSpec) -> dict[str, Any]:
    """Register spec with the check-and-set index of whatever runs now."""
    current = driver.read_job(JOB)
    index = current["JobModifyIndex"] if current else 0
    return driver.register_job(JOB, render_job(spec), modify_index=index)


def settle(driver: NomadDriver, version: int, polls: int = 30) -> dict[str, Any]:
    """Poll the deployment of a job version (each GET is a step of the double) until it ends."""
    for _ in range(polls):
        for deployment in driver.job_deployments(JOB):
            if deployment["JobVersion"] == version and deployment["Status"] != "running":
                return deployment
    raise AssertionError(f"the deployment of version {version} is still running")


def raises_kind(kind: str, call: Any, *args: Any, **kwargs: Any) -> NomadError:
    """Call (and drain, for generators); return the NomadError raised, checking its kind."""
    with pytest.raises(NomadError) as info:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


def test_no_address_is_unreachable_and_says_set_nomad_addr() -> None:
    """A driver cannot be built without NOMAD_ADDR; the error says so."""
    error = raises_kind(NomadErrorKind.UNREACHABLE, NomadDriver, NomadConnection(address=""))
    assert "set NOMAD_ADDR" in str(error)
    assert error.retryable


def requesters(driver: NomadDriver) -> list[Requester]:
    """Every python-nomad endpoint object of the driver (each passes verify= to requests)."""
    found = []
    for value in vars(driver._api).values():
        if isinstance(value, Requester):
            found.append(value)
        elif hasattr(value, "stream_logs"):  # nomad.api.Client holds the /client/* requesters
            found.extend(v for v in vars(value).values() if isinstance(v, Requester))
    assert len(found) > 20
    return found


def test_tls_verification_is_on_unless_skip_verify() -> None:
    """python-nomad defaults to verify=False; the driver always passes True, a CA, or False."""
    address = "https://nomad.internal:4646"
    secure = NomadDriver(NomadConnection(address=address))
    assert secure._api.verify is True
    assert all(r.verify is True for r in requesters(secure))
    with_ca = NomadDriver(NomadConnection(address=address, ca_cert="/etc/nomad/ca.pem"))
    assert all(r.verify == "/etc/nomad/ca.pem" for r in requesters(with_ca))
    insecure = NomadDriver(NomadConnection(address=address, skip_verify=True))
    assert insecure._api.verify is False
    assert all(r.verify is False for r in requesters(insecure))
    mutual = NomadDriver(
        NomadConnection(address=address, client_cert="/c/cli.pem", client_key="/c/cli-key.pem")
    )
    assert all(r.cert == ("/c/cli.pem", "/c/cli-key.pem") for r in requesters(mutual))


def test_unreachable_when_nobody_listens() -> None:
    """A closed port: unreachable, retryable, and the message says what to do."""
    address = f"http://127.0.0.1:{free_port()}"
    driver = NomadDriver(NomadConnection(address=address))
    error = raises_kind(NomadErrorKind.UNREACHABLE, driver.read_job, JOB)
    assert error.retryable
    assert f"Nomad at {address} is not answering" in str(error)
    assert "start the cluster or point NOMAD_ADDR at a server" in str(error)
    # Streaming requests fail differently inside python-nomad; same kind for the caller.
    logs = raises_kind(NomadErrorKind.UNREACHABLE, driver.stream_logs, "a1", "web")
    assert "NOMAD_ADDR" in str(logs)


def test_unreachable_after_the_cluster_stopped(double: NomadDouble, driver: NomadDriver) -> None:
    """A cluster that went away mid-session is unreachable too."""
    register(driver, app())
    double.stop()
    error = raises_kind(NomadErrorKind.UNREACHABLE, driver.job_versions, JOB)
    assert error.retryable
    assert "start the cluster" in str(error)


def test_acl_denied_names_nomad_token() -> None:
    """403 with a wrong or missing token: denied, not retryable, tells to fix NOMAD_TOKEN."""
    with run_nomad_double(token=TOKEN) as double:
        wrong = NomadDriver(NomadConnection(address=double.url, token="not-the-token"))
        body = render_job(app())
        error = raises_kind(NomadErrorKind.DENIED, wrong.register_job, JOB, body, **NEW)
        assert not error.retryable
        assert "ACL token not found" in str(error)
        assert "set NOMAD_TOKEN" in str(error)
        anonymous = NomadDriver(NomadConnection(address=double.url))
        error = raises_kind(NomadErrorKind.DENIED, anonymous.read_job, JOB)
        assert "Permission denied" in str(error) and "NOMAD_TOKEN" in str(error)
        good = NomadDriver(NomadConnection(address=double.url, token=TOKEN))
        assert good.read_job(JOB) is None
        recorded = double.requests[-1]  # the token travels as a header, never in the URL
        assert recorded.headers.get("X-Nomad-Token") == TOKEN
        assert TOKEN not in str(recorded.query)
        double.assert_no_violations()


# ---------------------------------------------------------------------------------------------
# Nomad's answers
# ---------------------------------------------------------------------------------------------


def test_bad_request_is_invalid_with_nomads_whole_reason(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """400: invalid, not retryable; every line of Nomad's multi-error reaches the message."""
    reason = (
        "1 error occurred:\n\t* Task group web validation failed: 1 error occurred:\n"
        "\t* Task web validation failed: Missing tasks for task group\n\n"
    )
    double.fail_next(1, 400, reason)
    error = raises_kind(NomadErrorKind.INVALID, driver.register_job, JOB, render_job(app()), **NEW)
    assert isinstance(error.__cause__, BadRequestNomadException)  # the library's error is kept
    assert not error.retryable
    assert "Nomad refused registering job 'shop'" in str(error)
    assert "Task web validation failed: Missing tasks for task group" in str(error)


def test_server_error_is_retryable(double: NomadDouble, driver: NomadDriver) -> None:
    """5xx: server, retryable, with the status and Nomad's text; the next call works."""
    double.fail_next(1, 500, "rpc error: No cluster leader")
    error = raises_kind(NomadErrorKind.SERVER, driver.job_deployments, JOB)
    assert error.retryable
    assert "HTTP 500" in str(error) and "No cluster leader" in str(error)
    assert driver.read_job(JOB) is None


def test_validation_error_on_500_is_not_retried(double: NomadDouble, driver: NomadDriver) -> None:
    """Nomad answers job validation errors with 500: invalid, so nobody retries them."""
    double.fail_next(1, 500, "1 error occurred:\n\t* Task group web validation failed")
    error = raises_kind(NomadErrorKind.INVALID, driver.register_job, JOB, render_job(app()), **NEW)
    assert not error.retryable
    assert "Task group web validation failed" in str(error)


def test_not_found(double: NomadDouble, driver: NomadDriver) -> None:
    """read_job and read_variable answer None; other reads raise not_found."""
    assert driver.read_job(JOB) is None
    assert driver.read_variable(variable_path_for(JOB)) is None
    error = raises_kind(NomadErrorKind.NOT_FOUND, driver.deployment, "0d9e8f7a-0000")
    assert "deployment not found" in str(error)
    raises_kind(NomadErrorKind.NOT_FOUND, driver.job_versions, JOB)


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def test_register_with_check_and_set(double: NomadDouble, driver: NomadDriver) -> None:
    """modify_index 0 creates; a stale index is a conflict; the current one updates."""
    first = driver.register_job(JOB, render_job(app(1)), modify_index=0)
    assert first["EvalID"] and first["JobModifyIndex"] > 0
    sent = double.requests_to("POST", f"/v1/job/{JOB}")[-1].body
    assert sent["EnforceIndex"] is True and sent["JobModifyIndex"] == 0
    assert sent["Job"] == render_job(app(1))["Job"]
    versions = driver.job_versions(JOB)
    assert [v["Version"] for v in versions] == [0]
    assert versions[0]["Meta"]["helios.release"] == "1"

    update = render_job(app(2))
    again = raises_kind(NomadErrorKind.CONFLICT, driver.register_job, JOB, update, **NEW)
    assert "job already exists" in str(again)
    assert not again.retryable
    stale = first["JobModifyIndex"] - 1
    error = raises_kind(
        NomadErrorKind.CONFLICT, driver.register_job, JOB, update, modify_index=stale
    )
    assert f"conflicting job modify index: {first['JobModifyIndex']}" in str(error)

    second = driver.register_job(JOB, update, modify_index=first["JobModifyIndex"])
    assert second["JobModifyIndex"] > first["JobModifyIndex"]
    assert [v["Version"] for v in driver.job_versions(JOB)] == [1, 0]  # newest first
    assert image_of(driver.read_job(JOB)) == "registry.example.com/acme/shop:2"


def test_plan_returns_diff_and_annotations(double: NomadDouble, driver: NomadDriver) -> None:
    """A plan shows what would change (canaries for a new image) and registers nothing."""
    added = driver.plan_job(JOB, render_job(app(1)))
    assert added["Diff"]["Type"] == "Added"
    register(driver, app(1))
    settle(driver, 0)
    plan = driver.plan_job(JOB, render_job(app(2)))
    assert plan["Diff"]["Type"] == "Edited"
    updates = plan["Annotations"]["DesiredTGUpdates"]["web"]
    assert updates["Canary"] == 2 and updates["Ignore"] == 2
    assert double.requests_to("POST", f"/v1/job/{JOB}/plan")[-1].body["Diff"] is True
    assert [v["Version"] for v in driver.job_versions(JOB)] == [0]


def test_evaluation_and_deployments_progress(double: NomadDouble, driver: NomadDriver) -> None:
    """The register evaluation, then a canary deployment followed until it succeeds."""
    result = register(driver, app(1))
    evaluation = driver.evaluation(result["EvalID"])
    assert evaluation["Status"] == "complete" and evaluation["JobID"] == JOB
    assert settle(driver, 0)["Status"] == "successful"

    register(driver, app(2))
    double.auto_advance = False
    (latest, first) = driver.job_deployments(JOB)
    assert (latest["JobVersion"], latest["Status"]) == (1, "running")
    assert latest["TaskGroups"]["web"]["DesiredCanaries"] == 2
    assert first["Status"] == "successful"
    double.auto_advance = True
    for _ in range(30):
        deployment = driver.deployment(latest["ID"])
        if deployment["Status"] != "running":
            break
    assert deployment["Status"] == "successful"
    assert deployment["TaskGroups"]["web"]["Promoted"] is True
    assert driver.job_versions(JOB)[0]["Stable"] is True


def test_manual_promote_then_fail_reverts(double: NomadDouble, driver: NomadDriver) -> None:
    """promote() releases waiting canaries; fail() rolls back to the last stable version."""
    manual = {"auto_promote": False}
    register(driver, app(1, **manual))
    settle(driver, 0)
    register(driver, app(2, **manual))
    for _ in range(10):
        waiting = driver.job_deployments(JOB)[0]
        if "manual promotion" in waiting["StatusDescription"]:
            break
    assert waiting["StatusDescription"] == "Deployment is running but requires manual promotion"
    promoted = driver.promote(waiting["ID"])
    assert promoted["EvalID"] and promoted["DeploymentModifyIndex"] > 0
    sent = double.requests_to("POST", f"/v1/deployment/promote/{waiting['ID']}")[-1].body
    assert sent["All"] is True
    assert settle(driver, 1)["Status"] == "successful"

    register(driver, app(3, **manual))
    double.auto_advance = False
    running = driver.job_deployments(JOB)[0]
    assert running["JobVersion"] == 2 and running["Status"] == "running"
    failed = driver.fail(running["ID"])
    assert failed["RevertedJobVersion"] == 1
    assert driver.deployment(running["ID"])["Status"] == "failed"
    job = driver.read_job(JOB)
    assert job["Version"] == 3 and image_of(job) == "registry.example.com/acme/shop:2"


# ---------------------------------------------------------------------------------------------
# Allocations, stats and logs
# ---------------------------------------------------------------------------------------------


def test_allocations_and_stats(double: NomadDouble, driver: NomadDriver) -> None:
    """Allocations of the job; stats from the client (or whatever the double is told)."""
    register(driver, app(1, count=2))
    allocations = driver.allocations(JOB)
    assert len(allocations) == 2
    assert {a["JobID"] for a in allocations} == {JOB}
    alloc_id = allocations[0]["ID"]
    stats = driver.allocation_stats(alloc_id)
    assert stats["Tasks"]["web"]["ResourceUsage"]["MemoryStats"]["RSS"] > 0
    double.stats_override[alloc_id] = {"ResourceUsage": None, "Tasks": {}, "Timestamp": 1}
    assert driver.allocation_stats(alloc_id)["Tasks"] == {}
    raises_kind(NomadErrorKind.NOT_FOUND, driver.allocation_stats, "no-such-alloc")


def test_stream_logs_yields_lines_until_the_stream_ends(
    double: NomadDouble, driver: NomadDriver
) -> None:
    """Plain, followed logs from the end, split into lines; stderr on request. A running
    task's followed log stays open (lines as they come); it ends once the task is dead."""
    register(driver, app(1, count=1))
    alloc_id = driver.allocations(JOB)[0]["ID"]
    double.set_logs("booting\nlistening on :8080\n", alloc_id=alloc_id, task="web")
    double.set_logs("warning: debug mode\n", type_="stderr", alloc_id=alloc_id, task="web")

    def first(count: int, **options) -> list[str]:
        lines = driver.stream_logs(alloc_id, "web", **options)
        try:
            return list(itertools.islice(lines, count))
        finally:
            lines.close()

    assert first(2) == ["booting", "listening on :8080"]
    query = double.requests_to("GET", f"/v1/client/fs/logs/{alloc_id}")[-1].query
    assert query["follow"] == ["true"] and query["plain"] == ["true"]
    assert query["origin"] == ["end"] and query["type"] == ["stdout"]
    assert first(1, offset=19) == ["listening on :8080"]
    assert first(1, stderr=True) == ["warning: debug mode"]
    driver.stop_job(JOB)  # its allocations stop: the followed log ends
    double.tick(3)
    assert list(driver.stream_logs(alloc_id, "web", offset=19)) == ["listening on :8080"]
    error = raises_kind(NomadErrorKind.INVALID, driver.stream_logs, alloc_id, "nope")
    assert "does not have task with name 'nope'" in str(error)


# ---------------------------------------------------------------------------------------------
# Variables
# ---------------------------------------------------------------------------------------------


def test_variables_with_check_and_set(double: NomadDouble, driver: NomadDriver) -> None:
    """cas 0 creates; a stale cas is a conflict that never echoes the stored values."""
    path = variable_path_for(JOB)
    created = driver.write_variable(path, {"DATABASE_PASSWORD": SECRET_VALUE}, cas=0)
    assert created["Path"] == path
    assert driver.read_variable(path)["Items"] == {"DATABASE_PASSWORD": SECRET_VALUE}

    error = raises_kind(NomadErrorKind.CONFLICT, driver.write_variable, path, {"A": "b"}, cas=0)
    assert f"writing variable {path!r}" in str(error)
    assert "changed meanwhile" in str(error)
    assert SECRET_VALUE not in str(error)  # Nomad's 409 body carries the current values

    updated = driver.write_variable(path, {"DATABASE_PASSWORD": "v2"}, cas=created["ModifyIndex"])
    assert updated["ModifyIndex"] > created["ModifyIndex"]
    stale = raises_kind(
        NomadErrorKind.CONFLICT, driver.delete_variable, path, cas=created["ModifyIndex"]
    )
    assert "v2" not in str(stale)
    assert driver.read_variable(path)["Items"] == {"DATABASE_PASSWORD": "v2"}
    driver.delete_variable(path, cas=updated["ModifyIndex"])
    assert driver.read_variable(path) is None


# ---------------------------------------------------------------------------------------------
# Validation by Nomad itself (POST /v1/validate/job)
# ---------------------------------------------------------------------------------------------


def test_validate_job_returns_nomads_errors(double: NomadDouble, driver: NomadDriver) -> None:
    """A valid body: no errors; Job.Validate's errors one by one; nothing gets registered."""
    assert driver.validate_job(render_job(app())) == []
    bad = render_job(app())
    bad["Job"].update(ID="my shop", Datacenters=[])
    assert driver.validate_job(bad) == ["Job ID contains a space", "Missing job datacenters"]
    assert len(double.requests_to("POST", "/v1/validate/job")) == 2
    assert driver.read_job(JOB) is None


def test_validate_job_checks_in_the_configured_namespace(double: NomadDouble) -> None:
    """Nomad validates in the job's namespace, not the query's: the driver names it in both."""
    driver = NomadDriver(NomadConnection(address=double.url, namespace="prod"))
    missing = driver.validate_job(render_job(app()))
    assert missing == ['job "shop" is in nonexistent namespace "prod"']
    (sent,) = double.requests_to("POST", "/v1/validate/job")
    assert sent.body["Job"]["Namespace"] == "prod"
    assert sent.query["namespace"] == ["prod"]
    nomad.Nomad(address=double.url, verify=True, timeout=5).namespace.create_namespace(
        {"Name": "prod"}
    )
    assert driver.validate_job(render_job(app())) == []


def test_validate_job_errors_are_not_validation_results(double: NomadDouble) -> None:
    """A refused token or a stopped cluster raise NomadError: they say nothing about the job."""
    token = double.add_token(name="helios", deny=[("POST", "/v1/validate/job")])["SecretID"]
    denied = NomadDriver(NomadConnection(address=double.url, token=token))
    raises_kind(NomadErrorKind.DENIED, denied.validate_job, render_job(app()))
    double.stop()
    raises_kind(NomadErrorKind.UNREACHABLE, denied.validate_job, render_job(app()))
