"""The Nomad HTTP API double, driven through python-nomad like the Helios worker does."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
import requests
from nomad.api import exceptions as nomad_exc

from nomad_double import REPO_ROOT, NomadDouble, run_nomad_double
from nomad_double.jobspec import spec_of

TOKEN = "4f8b2c1e-2a7d-4a8e-9a59-1f0e6f3b7c11"


@pytest.fixture
def double() -> Iterator[NomadDouble]:
    """A double without ACLs; the test fails on any spec violation."""
    with run_nomad_double() as fake:
        yield fake
        fake.assert_no_violations()


@pytest.fixture
def client(double: NomadDouble) -> nomad.Nomad:
    """python-nomad pointed at the double."""
    return nomad.Nomad(address=double.url, verify=True, timeout=5)


def job_body(
    image: str = "web:1", count: int = 2, canary: int = 1, memory: int = 256, **update: Any
) -> dict[str, Any]:
    """A register body like the Helios renderer produces."""
    strategy = {
        "MaxParallel": 1,
        "Canary": canary,
        "AutoPromote": True,
        "AutoRevert": True,
        "HealthCheck": "checks",
        "MinHealthyTime": 10 * 10**9,
        "HealthyDeadline": 300 * 10**9,
        "ProgressDeadline": 0,
    }
    strategy.update(update)
    return {
        "Job": {
            "ID": "web",
            "Name": "web",
            "Type": "service",
            "Datacenters": ["dc1"],
            "Update": strategy,
            "TaskGroups": [
                {
                    "Name": "web",
                    "Count": count,
                    "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
                    "Tasks": [
                        {
                            "Name": "web",
                            "Driver": "docker",
                            "Config": {"image": image, "ports": ["http"]},
                            "Resources": {"CPU": 250, "MemoryMB": memory},
                        }
                    ],
                }
            ],
        }
    }


def image_of(job: dict[str, Any]) -> str:
    """The docker image of the job's only task."""
    return job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]


def settle(client: nomad.Nomad, version: int, polls: int = 20) -> dict[str, Any]:
    """Poll the job's deployments (each GET is one step) until version's is terminal."""
    for _ in range(polls):
        for deployment in client.job.get_deployments("web"):
            if deployment["JobVersion"] == version and deployment["Status"] != "running":
                return deployment
    raise AssertionError(f"deployment of version {version} still running")


def test_canary_flow_with_auto_promote_and_auto_revert(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """First deploy, a healthy canary release, then a bad release that reverts itself.

    Nomad numbers job versions from 0: the 1st registration is Version 0, so the revert
    of the 3rd registration (Version 2) becomes Version 3 with Version 1's spec.
    """
    double.set_health(lambda job, alloc: image_of(job) != "web:3")
    first = client.jobs.register_job(job_body("web:1"))
    assert client.evaluation.get_evaluation(first["EvalID"])["Status"] == "complete"
    deployment = settle(client, 0)
    assert deployment["Status"] == "successful"
    assert deployment["TaskGroups"]["web"]["DesiredCanaries"] == 0  # no canary on first run
    assert deployment["StatusDescription"] == "Deployment completed successfully"

    plan = client.job.plan_job("web", job_body("web:2"), diff=True)
    assert plan["Annotations"]["DesiredTGUpdates"]["web"]["Canary"] == 1
    assert plan["Annotations"]["DesiredTGUpdates"]["web"]["Ignore"] == 2
    task_diff = plan["Diff"]["TaskGroups"][0]["Tasks"][0]
    assert plan["Diff"]["Type"] == "Edited"
    assert task_diff["Annotations"] == ["forces create/destroy update"]
    config = next(o for o in task_diff["Objects"] if o["Name"] == "Config")
    field = {"Type": "Edited", "Name": "image", "Old": "web:1", "New": "web:2"}
    assert field.items() <= config["Fields"][0].items()

    client.job.register_job("web", job_body("web:2"))
    running = client.job.get_deployment("web")
    assert running["JobVersion"] == 1 and running["Status"] == "running"
    assert running["TaskGroups"]["web"]["DesiredCanaries"] == 1
    deployment = settle(client, 1)
    assert deployment["Status"] == "successful"
    assert deployment["TaskGroups"]["web"]["Promoted"] is True
    versions = {v["Version"]: v for v in client.job.get_versions("web")["Versions"]}
    assert versions[1]["Stable"] is True
    live = [a for a in client.job.get_allocations("web") if a["DesiredStatus"] == "run"]
    assert sorted(a["JobVersion"] for a in live) == [1, 1]

    client.job.register_job("web", job_body("web:3"))
    failed = settle(client, 2)
    assert failed["Status"] == "failed"
    assert failed["StatusDescription"] == (
        "Failed due to unhealthy allocations - rolling back to job version 1"
    )
    reverted = settle(client, 3)
    assert reverted["Status"] == "successful"
    versions = {v["Version"]: v for v in client.job.get_versions("web")["Versions"]}
    assert sorted(versions) == [0, 1, 2, 3]
    assert versions[2]["Stable"] is False
    assert spec_of(versions[3]) == spec_of(versions[1])
    assert image_of(client.job.get_job("web")) == "web:2"
    live = [a for a in client.job.get_allocations("web") if a["DesiredStatus"] == "run"]
    assert sorted(a["JobVersion"] for a in live) == [3, 3]  # in-place, no new allocations


def test_identical_registration_creates_no_version(client: nomad.Nomad) -> None:
    """Nomad only bumps the version when the spec changed, but always evaluates."""
    first = client.jobs.register_job(job_body())
    again = client.job.register_job("web", job_body())
    assert again["JobModifyIndex"] == first["JobModifyIndex"]
    assert again["EvalID"] != first["EvalID"]
    assert [v["Version"] for v in client.job.get_versions("web")["Versions"]] == [0]
    assert len(client.job.get_evaluations("web")) == 2
    scaled = client.job.register_job("web", job_body(count=3))
    assert scaled["JobModifyIndex"] > first["JobModifyIndex"]
    assert client.job.get_job("web")["Version"] == 1


def test_check_and_set_registration(client: nomad.Nomad) -> None:
    """EnforceIndex + JobModifyIndex: 0 means 'must not exist', else must match."""
    created = client.jobs.register_job({**job_body(), "EnforceIndex": True, "JobModifyIndex": 0})
    index = created["JobModifyIndex"]
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        client.jobs.register_job({**job_body("web:2"), "EnforceIndex": True, "JobModifyIndex": 0})
    assert info.value.nomad_resp.text == "Enforcing job modify index 0: job already exists"
    stale = {**job_body("web:2"), "EnforceIndex": True, "JobModifyIndex": index - 1}
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        client.jobs.register_job(stale)
    assert info.value.nomad_resp.text == (
        f"Enforcing job modify index {index - 1}: job exists with conflicting "
        f"job modify index: {index}"
    )
    ok = client.jobs.register_job(
        {**job_body("web:2"), "EnforceIndex": True, "JobModifyIndex": index}
    )
    assert ok["JobModifyIndex"] > index


def test_job_too_big_fails_placement() -> None:
    """No node has the memory: FailedTGAllocs, a blocked eval, and no deployment progress."""
    with run_nomad_double(nodes=[(2000, 1024)]) as double:
        client = nomad.Nomad(address=double.url, verify=True, timeout=5)
        plan = client.job.plan_job("web", job_body(memory=4096, count=1), diff=True)
        assert plan["Diff"]["Type"] == "Added"
        assert plan["FailedTGAllocs"]["web"]["DimensionExhausted"] == {"memory": 1}
        result = client.jobs.register_job(job_body(memory=4096, count=1))
        evaluation = client.evaluation.get_evaluation(result["EvalID"])
        assert evaluation["Status"] == "complete"
        metric = evaluation["FailedTGAllocs"]["web"]
        assert metric["DimensionExhausted"] == {"memory": 1}
        assert metric["NodesExhausted"] == 1
        blocked = client.evaluation.get_evaluation(evaluation["BlockedEval"])
        assert blocked["Status"] == "blocked"
        double.tick(10)
        deployment = client.job.get_deployment("web")
        assert deployment["Status"] == "running"
        assert deployment["TaskGroups"]["web"]["PlacedAllocs"] == 0
        assert client.job.get_job("web")["Status"] == "pending"
        assert client.job.get_allocations("web") == []
        assert len(client.job.get_evaluations("web")) == 2  # the register eval + blocked eval
        double.assert_no_violations()


def test_acl_token_required() -> None:
    """Without/with a wrong token Nomad answers 403; python-nomad raises URLNotAuthorized."""
    with run_nomad_double(token=TOKEN) as double:
        anonymous = nomad.Nomad(address=double.url, verify=True, timeout=5)
        with pytest.raises(nomad_exc.URLNotAuthorizedNomadException) as info:
            anonymous.jobs.get_jobs()
        assert info.value.nomad_resp.text == "Permission denied"
        wrong = nomad.Nomad(address=double.url, token="nope", verify=True, timeout=5)
        with pytest.raises(nomad_exc.URLNotAuthorizedNomadException) as info:
            wrong.jobs.register_job(job_body())
        assert info.value.nomad_resp.text == "ACL token not found"
        good = nomad.Nomad(address=double.url, token=TOKEN, verify=True, timeout=5)
        good.jobs.register_job(job_body())
        assert [j["ID"] for j in good.jobs.get_jobs()] == ["web"]
        bearer = requests.get(
            f"{double.url}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert bearer.status_code == 200
        double.assert_no_violations()


def test_invalid_requests_are_recorded_as_violations(double: NomadDouble) -> None:
    """A misspelt key sent raw is a 400 and a recorded violation."""
    body = job_body()
    body["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMb"] = 512
    response = requests.post(f"{double.url}/v1/jobs", json=body, timeout=5)
    assert response.status_code == 400
    bare = requests.post(f"{double.url}/v1/jobs", json=job_body()["Job"], timeout=5)
    assert bare.status_code == 400
    logs = requests.get(f"{double.url}/v1/client/fs/logs/x", params={"tsk": "web"}, timeout=5)
    assert logs.status_code == 400
    assert any("unknown key 'MemoryMb'" in v and "POST /v1/jobs" in v for v in double.violations)
    assert any("missing required key 'Job'" in v for v in double.violations)
    assert any("unknown query parameter 'tsk'" in v for v in double.violations)
    with pytest.raises(AssertionError, match="MemoryMb"):
        double.assert_no_violations()
    assert double.requests_to("POST", "/v1/jobs")[0].body == body
    double.violations.clear()


def test_path_id_must_match_job_id(client: nomad.Nomad) -> None:
    """POST /v1/job/{id} with another Job.ID is a 400."""
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        client.job.register_job("other", job_body())
    assert info.value.nomad_resp.text == "Job ID does not match name"


def test_semantic_errors_are_nomads_not_the_schemas(double: NomadDouble) -> None:
    """example-short-bad is schema-valid; Nomad's Job.Validate rejects it (as a 500)."""
    from nomad_double import reference_file
    from nomad_double.schema import drop_nulls

    path = reference_file("nomad-examples/cmd-testdata-example-short-bad.json")
    client = nomad.Nomad(address=double.url, verify=True, timeout=5)
    with pytest.raises(nomad_exc.BaseNomadException) as info:
        client.jobs.register_job(drop_nulls(json.loads(path.read_text())))
    assert info.value.nomad_resp.status_code == 500
    result = client.validate.validate_job(drop_nulls(json.loads(path.read_text()))).json()
    assert result["ValidationErrors"] == ["Job ID contains a space", "Missing job datacenters"]
    assert info.value.nomad_resp.text == (
        "2 errors occurred:\n\t* Job ID contains a space\n\t* Missing job datacenters\n\n"
    )


def test_manual_promotion(client: nomad.Nomad) -> None:
    """Without AutoPromote the deployment waits for /deployment/promote."""
    client.jobs.register_job(job_body(AutoPromote=False))
    settle(client, 0)
    client.job.register_job("web", job_body("web:2", AutoPromote=False))
    for _ in range(4):
        deployment = client.job.get_deployment("web")
    assert deployment["Status"] == "running"
    assert deployment["StatusDescription"] == "Deployment is running but requires manual promotion"
    result = client.deployment.promote_deployment_all(deployment["ID"])
    assert result["EvalID"]
    assert settle(client, 1)["Status"] == "successful"
    placed = client.deployment.get_deployment_allocations(deployment["ID"])
    assert len([a for a in placed if a["DesiredStatus"] == "run"]) == 2


def test_fail_deployment_by_api_reverts(double: NomadDouble, client: nomad.Nomad) -> None:
    """/deployment/fail rolls back to the last stable version when AutoRevert is set."""
    client.jobs.register_job(job_body())
    settle(client, 0)
    double.auto_advance = False
    client.job.register_job("web", job_body("web:2"))
    deployment = client.job.get_deployment("web")
    result = client.deployment.fail_deployment(deployment["ID"])
    assert result["RevertedJobVersion"] == 0
    failed = client.deployment.get_deployment(deployment["ID"])
    assert failed["StatusDescription"] == (
        "Deployment marked as failed - rolling back to job version 0"
    )
    assert client.job.get_job("web")["Version"] == 2
    assert image_of(client.job.get_job("web")) == "web:1"


def test_progress_deadline_replaces_then_fails(double: NomadDouble, client: nomad.Nomad) -> None:
    """With a progress deadline unhealthy allocations are replaced until the deadline."""
    deadline = {"ProgressDeadline": 600 * 10**9}
    client.jobs.register_job(job_body(**deadline))
    settle(client, 0)
    double.set_health(False)
    client.job.register_job("web", job_body("web:2", **deadline))
    failed = settle(client, 1)
    assert failed["StatusDescription"] == (
        "Failed due to progress deadline - rolling back to job version 0"
    )
    assert failed["TaskGroups"]["web"]["UnhealthyAllocs"] >= 2


def test_revert_endpoint(client: nomad.Nomad) -> None:
    """POST /job/{id}/revert with EnforcePriorVersion as check-and-set."""
    client.jobs.register_job(job_body())
    client.job.register_job("web", job_body("web:2"))
    with pytest.raises(nomad_exc.BaseNomadException) as info:
        client.job.revert_job("web", 0, enforce_prior_version=0)
    assert "current job has version 1; enforcing version 0" in info.value.nomad_resp.text
    result = client.job.revert_job("web", 0, enforce_prior_version=1)
    assert result["EvalID"]
    job = client.job.get_job("web")
    assert job["Version"] == 2 and image_of(job) == "web:1"


def test_stop_and_purge(client: nomad.Nomad) -> None:
    """Stopping makes a new (Stop=true) version; purging removes the job."""
    client.jobs.register_job(job_body())
    client.job.deregister_job("web")
    job = client.job.get_job("web")
    assert job["Stop"] is True and job["Version"] == 1
    assert job["Status"] == "dead"
    assert all(a["DesiredStatus"] == "stop" for a in client.job.get_allocations("web"))
    client.job.deregister_job("web", purge=True)
    with pytest.raises(nomad_exc.URLNotFoundNomadException):
        client.job.get_job("web")


def test_variables_with_cas(client: nomad.Nomad) -> None:
    """Helios keeps app secrets at nomad/jobs/<job>; cas guards concurrent writers."""
    path = "nomad/jobs/web"
    created = client.variable.create_variable(path, {"Items": {"DB": "x"}}, cas=0)
    assert created["Path"] == path
    with pytest.raises(nomad_exc.VariableConflict):
        client.variable.create_variable(path, {"Items": {"DB": "y"}}, cas=0)
    updated = client.variable.create_variable(
        path, {"Items": {"DB": "y"}}, cas=created["ModifyIndex"]
    )
    assert client.variable.get_variable(path)["Items"] == {"DB": "y"}
    with pytest.raises(nomad_exc.VariableConflict):
        client.variable.delete_variable(path, cas=created["ModifyIndex"])
    client.variable.delete_variable(path, cas=updated["ModifyIndex"])
    with pytest.raises(nomad_exc.URLNotFoundNomadException):
        client.variable.get_variable(path)


def test_client_stats_and_logs(double: NomadDouble, client: nomad.Nomad) -> None:
    """Allocation stats and logs (plain and framed base64)."""
    client.jobs.register_job(job_body(count=1))
    alloc = client.job.get_allocations("web")[0]
    assert client.allocation.get_allocation(alloc["ID"])["Job"]["ID"] == "web"
    stats = client.client.allocation.read_allocation_stats(alloc["ID"])
    assert stats["Tasks"]["web"]["ResourceUsage"]["MemoryStats"]["RSS"] > 0
    double.set_logs("line one\nline two\n", alloc_id=alloc["ID"], task="web")
    plain = client.client.stream_logs.stream(alloc["ID"], "web", "stdout", plain=True)
    assert plain == "line one\nline two\n"
    tail = client.client.stream_logs.stream(
        alloc["ID"], "web", "stdout", plain=True, origin="end", offset=9
    )
    assert tail == "line two\n"
    framed = json.loads(client.client.stream_logs.stream(alloc["ID"], "web", "stdout"))
    assert base64.b64decode(framed["Data"]).decode() == "line one\nline two\n"


def test_nodes_fail_next_and_unreachable(double: NomadDouble, client: nomad.Nomad) -> None:
    """Node listing, injected errors and a stopped server."""
    nodes = client.nodes.get_nodes(resources=True)
    assert len(nodes) == 2 and nodes[0]["NodeResources"]["Memory"]["MemoryMB"] == 8192
    assert client.node.get_node(nodes[0]["ID"])["Status"] == "ready"
    double.fail_next(1, 500, "rpc error: No cluster leader")
    with pytest.raises(nomad_exc.BaseNomadException) as info:
        client.jobs.get_jobs()
    assert info.value.nomad_resp.status_code == 500
    assert client.jobs.get_jobs() == []
    double.stop()
    with pytest.raises(nomad_exc.BaseNomadException):
        client.jobs.get_jobs()


def test_runs_as_a_separate_process(tmp_path: Any) -> None:
    """python -m tests.nomad_double prints its URL and serves until terminated."""
    url_file = tmp_path / "url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.nomad_double", "--port", "0", "--url-file", str(url_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        assert url_file.read_text().strip() == url
        client = nomad.Nomad(address=url, verify=True, timeout=5)
        client.jobs.register_job(copy.deepcopy(job_body()))
        assert [j["ID"] for j in client.jobs.get_jobs()] == ["web"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
