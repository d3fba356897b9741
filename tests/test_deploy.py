"""deploy_app against the Nomad API double: outcomes, auto-revert, failures, idempotence."""

from __future__ import annotations

import pytest

from panel.actions import ActionError, create_app, request_deploy, request_rollback, set_env
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers.nomad import NomadError
from panel.models import Deployment, DeploymentStatus, Event, Team
from panel.reconcile.jobs import deploy_app, resume_unfinished

from nomad_double import run_nomad_double


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


@pytest.fixture
def app_row(team, redis_conn):
    return create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", count=2,
        redis_conn=redis_conn,
    )  # fmt: skip


def deploy(app, redis_conn, image: str | None = None) -> Deployment:
    """Request a deployment and run its job here; return the fresh row."""
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, image=image
    )
    assert requested.enqueued
    deploy_app(requested.deployment.id)
    return Deployment.get_by_id(requested.deployment.id)


def current_job(double, job_id: str = "web") -> dict:
    return double.cluster.current("default", job_id)


def image_of(job: dict) -> str:
    return job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]


def nomad_deployments(double, job_id: str = "web") -> list[dict]:
    return [d for d in double.cluster.deployments.values() if d["JobID"] == job_id]


def subjects(deployment: Deployment) -> list[str]:
    return [
        e.subject
        for e in Event.select().order_by(Event.id)
        if e.data.get("deployment_id") == deployment.id
    ]


def test_healthy_release_is_promoted_and_recorded(deploy_env, nomad_double, app_row, redis_conn):
    first = deploy(app_row, redis_conn)
    assert first.status == DeploymentStatus.SUCCEEDED, first.status_message
    assert first.nomad_job_version == 0

    second = deploy(app_row, redis_conn, image="registry.local/web:2")
    assert second.status == DeploymentStatus.SUCCEEDED, second.status_message
    assert second.nomad_job_version == first.nomad_job_version + 1
    assert second.nomad_deployment_id and second.nomad_eval_id
    assert second.started_at and second.finished_at

    job = current_job(nomad_double)
    assert image_of(job) == "registry.local/web:2"
    assert job["Meta"]["helios.deployment"] == str(second.id)
    assert job["Meta"]["helios.release"] == "2"
    nomad_dep = nomad_double.cluster.deployments[second.nomad_deployment_id]
    assert nomad_dep["Status"] == "successful"
    assert nomad_dep["TaskGroups"]["web"]["DesiredCanaries"] == 2
    assert nomad_dep["TaskGroups"]["web"]["Promoted"] is True
    assert subjects(second) == [
        "v1.deployment.requested",
        "v1.deployment.started",
        "v1.deployment.submitted",
        "v1.deployment.succeeded",
    ]
    # Every register Helios sent was checked against the spec by the double.
    assert len(nomad_double.requests_to("POST", r"/v1/job/web")) == 2


def test_failing_canary_is_auto_reverted(deploy_env, nomad_double, app_row, redis_conn):
    nomad_double.set_health(lambda job, alloc: image_of(job) != "registry.local/web:2")
    v1 = deploy(app_row, redis_conn)
    v2 = deploy(app_row, redis_conn, image="registry.local/web:2")
    nomad_double.tick(5)  # let Nomad finish the revert's own deployment

    assert v1.status == DeploymentStatus.SUCCEEDED
    assert v2.status == DeploymentStatus.REVERTED
    assert "Failed due to progress deadline - rolling back to job version 0" in v2.status_message
    assert "previous stable version runs again" in v2.status_message
    statuses = sorted(d["Status"] for d in nomad_deployments(nomad_double))
    assert statuses == ["failed", "successful", "successful"]
    job = current_job(nomad_double)
    assert image_of(job) == "registry.local/web:1"
    assert job["Meta"]["helios.deployment"] == str(v1.id)
    failed = Event.get(Event.subject == "v1.deployment.failed")
    assert failed.data["reverted_to_version"] == v1.nomad_job_version
    assert failed.data["deployment_id"] == v2.id


def test_job_too_big_fails_placement_and_registers_nothing(
    deploy_env, nomad_double, team, redis_conn
):
    huge = create_app(actor=None, team=team, slug="huge", image="big:1", memory_mb=200_000)
    result = deploy(huge, redis_conn)
    assert result.status == DeploymentStatus.FAILED
    assert result.status_message.startswith("placement failed")
    assert "memory exhausted" in result.status_message
    assert "add client nodes" in result.status_message
    assert ("default", "huge") not in nomad_double.cluster.jobs
    assert subjects(result)[-1] == "v1.deployment.failed"


def test_nomad_unreachable_is_a_clear_failure(deploy_env, app_row, redis_conn, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("NOMAD_ADDR", f"http://127.0.0.1:{free_port()}")
    requested = request_deploy(
        actor=None, app=app_row, settings=Settings.from_env(), redis_conn=redis_conn
    )
    with pytest.raises(NomadError) as caught:
        deploy_app(requested.deployment.id)
    assert caught.value.retryable
    row = Deployment.get_by_id(requested.deployment.id)
    assert row.status == DeploymentStatus.FAILED
    assert "not reachable" in row.status_message
    assert "NOMAD_ADDR" in row.status_message


def test_acl_denied_is_a_clear_failure(deploy_env, app_row, redis_conn, monkeypatch):
    with run_nomad_double(token="the-right-token") as guarded:
        monkeypatch.setenv("NOMAD_ADDR", guarded.url)
        monkeypatch.setenv("NOMAD_TOKEN", "a-wrong-token")
        requested = request_deploy(
            actor=None, app=app_row, settings=Settings.from_env(), redis_conn=redis_conn
        )
        with pytest.raises(NomadError):
            deploy_app(requested.deployment.id)
        guarded.assert_no_violations()
    row = Deployment.get_by_id(requested.deployment.id)
    assert row.status == DeploymentStatus.FAILED
    assert "denied" in row.status_message
    assert "set NOMAD_TOKEN" in row.status_message
    assert "a-wrong-token" not in row.status_message


def test_running_the_job_again_changes_nothing(deploy_env, nomad_double, app_row, redis_conn):
    done = deploy(app_row, redis_conn)
    versions_before = len(nomad_double.cluster.versions("default", "web"))
    assert deploy_app(done.id) == DeploymentStatus.SUCCEEDED
    assert len(nomad_double.cluster.versions("default", "web")) == versions_before
    assert subjects(Deployment.get_by_id(done.id)).count("v1.deployment.submitted") == 1


def test_newer_request_supersedes_a_queued_one(deploy_env, nomad_double, app_row, redis_conn):
    settings = Settings.from_env()
    older = request_deploy(actor=None, app=app_row, settings=settings, redis_conn=redis_conn)
    newer = request_deploy(actor=None, app=app_row, settings=settings, redis_conn=redis_conn)
    assert deploy_app(older.deployment.id) == DeploymentStatus.SUPERSEDED
    assert deploy_app(newer.deployment.id) == DeploymentStatus.SUCCEEDED
    old = Deployment.get_by_id(older.deployment.id)
    assert f"superseded by deployment #{newer.deployment.id}" in old.status_message
    assert old.nomad_job_version is None
    assert len(nomad_double.cluster.versions("default", "web")) == 1


def test_rollback_deploys_an_earlier_release(deploy_env, nomad_double, app_row, redis_conn):
    deploy(app_row, redis_conn)
    deploy(app_row, redis_conn, image="registry.local/web:2")
    requested = request_rollback(
        actor=None, app=app_row, release_number=1, settings=Settings.from_env(),
        redis_conn=redis_conn,
    )  # fmt: skip
    assert deploy_app(requested.deployment.id) == DeploymentStatus.SUCCEEDED
    row = Deployment.get_by_id(requested.deployment.id)
    assert (row.release.number, row.release.config["rollback_of"]) == (3, 1)
    assert image_of(current_job(nomad_double)) == "registry.local/web:1"
    assert Deployment.select().count() == 3
    with pytest.raises(ActionError, match="has no release 9"):
        request_rollback(
            actor=None, app=app_row, release_number=9, settings=Settings.from_env(),
            redis_conn=redis_conn,
        )  # fmt: skip


def test_secrets_go_to_nomad_variables_never_into_the_job(
    deploy_env, nomad_double, app_row, redis_conn
):
    settings = Settings.from_env()
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=None, app=app_row, key="DATABASE_URL", value="postgres://u:pw-9f3k@db/x",
            secret=True, cipher=cipher)  # fmt: skip
    set_env(actor=None, app=app_row, key="LOG_LEVEL", value="debug", secret=False, cipher=cipher)
    result = deploy(app_row, redis_conn)
    assert result.status == DeploymentStatus.SUCCEEDED
    job = current_job(nomad_double)
    assert "pw-9f3k" not in repr(job)
    assert job["TaskGroups"][0]["Tasks"][0]["Env"]["LOG_LEVEL"] == "debug"
    variable = nomad_double.cluster.variables[("default", "nomad/jobs/web")]
    assert variable["Items"] == {"DATABASE_URL": "postgres://u:pw-9f3k@db/x"}
    sent = [r.body for r in nomad_double.requests if r.path.startswith("/v1/job")]
    assert "pw-9f3k" not in repr(sent)


def test_unfinished_deployments_are_queued_again(deploy_env, app_row, redis_conn):
    settings = Settings.from_env()
    requested = request_deploy(actor=None, app=app_row, settings=settings, redis_conn=redis_conn)
    redis_conn.flushall()  # a Redis restart without persistence loses the queue
    assert resume_unfinished(redis_conn, settings) == [requested.deployment.id]
    from rq import Queue

    assert Queue("deploys", connection=redis_conn).job_ids == [f"deploy-{requested.deployment.id}"]
