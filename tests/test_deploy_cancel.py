"""Before Nomad has it: cancelling a deployment (panel, API, CLI), the start timeout that keeps
a forgotten request from deploying, and a queued deployment's page saying why it waits.

Real parts: Redis, SQLite, `helios worker` processes, gunicorn for the CLI, the Nomad double.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta

import pytest
import redis
from rq import Queue, Worker

from panel.actions import deployments as deployment_actions
from panel.actions.accounts import create_user
from panel.actions.apps import NO_CLUSTER, ActionError, create_app, request_deploy
from panel.actions.deployments import (
    NO_WORKER,
    QUEUE_UNREACHABLE,
    cancel_deployment,
    waiting_reason,
)
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.models import Deployment, DeploymentStatus, Event, Role, Team, utcnow
from panel.reconcile import jobs
from panel.reconcile.jobs import deploy_app, sweep_deployments

from conftest import REPO_ROOT, free_port, helios_command, process_env

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')
STALE = "not started: no worker took it within 15 minutes of the request; deploy again"


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def app_row(owner, redis_conn):
    team = Team.get(Team.slug == "acme")
    return create_app(actor=None, team=team, slug="web", image="registry.local/web:1")


@pytest.fixture
def api_token(owner) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(owner, 'ci', ['deploy']).secret}"}


def request(app_row, redis_conn) -> Deployment:
    """A deployment requested with the environment's settings (deploy_env: the double)."""
    requested = request_deploy(
        actor=None, app=app_row, settings=Settings.from_env(), redis_conn=redis_conn
    )
    assert requested.enqueued
    return requested.deployment


def subjects(deployment: Deployment) -> list[str]:
    return [
        e.subject
        for e in Event.select().order_by(Event.id)
        if e.data.get("deployment_id") == deployment.id
    ]


def queued_functions(redis_conn) -> list[str]:
    queue = Queue("deploys", connection=redis_conn)
    return [job.func_name for job in queue.get_jobs()]


def run_worker_burst(settings, **env: str) -> subprocess.CompletedProcess:
    """A real `helios worker --burst`: it runs what the deploys queue holds, then exits."""
    return subprocess.run(
        helios_command("worker", "--burst"), capture_output=True, text=True,
        env=process_env(settings, HELIOS_QUEUES="deploys", **env), cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip


def sign_in(client, email: str = "owner@example.com") -> None:
    page = client.get("/login").get_data(as_text=True)
    token = CSRF_RE.search(page).group(1)
    answer = client.post("/login", data={"email": email, "password": PASSWORD,
                                         "csrf_token": token})  # fmt: skip
    assert answer.status_code == 302


def csrf_of(client, path: str) -> str:
    return CSRF_RE.search(client.get(path).get_data(as_text=True)).group(1)


# ---------------------------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------------------------


def test_a_queued_deployment_cancelled_through_the_api_never_reaches_nomad(
    deploy_env, nomad_double, settings, client, app_row, api_token, redis_conn
):
    deployment = request(app_row, redis_conn)
    path = f"/api/v1/apps/web/deployments/{deployment.id}/cancel"
    answer = client.post(path, headers=api_token)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "cancelled" and body["id"] == deployment.id
    assert body["status_message"] == "cancelled by owner@example.com before it reached Nomad"
    assert body["finished_at"] is not None
    cancelled = Event.get(Event.subject == "v1.deployment.cancelled")
    assert cancelled.actor == "owner@example.com"
    assert cancelled.data["reason"] == body["status_message"]
    assert subjects(deployment) == ["v1.deployment.requested", "v1.deployment.cancelled"]
    # Its deploy job still waits in the queue, and a prune of the app's secrets joined it.
    assert queued_functions(redis_conn) == [
        "panel.reconcile.jobs.deploy_app",
        "panel.reconcile.jobs.prune_secrets",
    ]

    # A worker that comes along later runs both: the deploy job does nothing at all.
    ran = run_worker_burst(settings, **deploy_env)
    assert ran.returncode == 0, ran.stderr
    assert queued_functions(redis_conn) == []
    assert Deployment.get_by_id(deployment.id).status == DeploymentStatus.CANCELLED
    assert Deployment.get_by_id(deployment.id).started_at is None
    assert subjects(deployment) == ["v1.deployment.requested", "v1.deployment.cancelled"]
    assert nomad_double.requests_to("POST", r"/v1/job/web") == []
    assert nomad_double.requests_to("POST", r"/v1/var/.*") == []
    assert nomad_double.cluster.jobs == {}
    assert deploy_app(deployment.id) == DeploymentStatus.CANCELLED  # and again: still nothing

    again = client.post(path, headers=api_token)
    assert again.status_code == 409
    assert "ended already (cancelled): there is nothing to cancel" in again.get_json()["message"]
    missing = client.post("/api/v1/apps/web/deployments/999999/cancel", headers=api_token)
    assert missing.status_code == 404
    assert "web has no deployment #999999" in missing.get_json()["message"]


def test_a_deployer_cancels_from_the_deployment_page(client, owner, app_row, redis_conn, settings):
    deployer = create_user("dev@example.com", PASSWORD, team_slug="acme", role=Role.DEPLOYER)
    deployment = request_deploy(
        actor=deployer, app=app_row, settings=settings, redis_conn=redis_conn
    ).deployment
    sign_in(client, "dev@example.com")
    page_path = f"/apps/web/deployments/{deployment.id}"
    page = client.get(page_path).get_data(as_text=True)
    assert "data-cancel >" in page or "data-cancel>" in page  # shown, not hidden
    assert 'data-confirm="Cancel deployment #' in page
    token = csrf_of(client, page_path)

    answer = client.post(f"{page_path}/cancel", data={"csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"].endswith(page_path)
    shown = client.get(page_path).get_data(as_text=True)
    assert f"Deployment #{deployment.id} cancelled: nothing of it reached Nomad." in shown
    assert "cancelled by dev@example.com before it reached Nomad" in shown
    assert "data-cancel hidden" in shown
    state = client.get(f"{page_path}.json").get_json()
    assert state["status"] == "cancelled" and state["cancellable"] is False

    refused = client.post(f"{page_path}/cancel", data={"csrf_token": token},
                          follow_redirects=True)  # fmt: skip
    assert "Not cancelled: deployment #" in refused.get_data(as_text=True)
    event = Event.get(Event.subject == "v1.deployment.cancelled")
    assert event.actor == "dev@example.com"
    assert Event.select().where(Event.subject == "v1.deployment.cancelled").count() == 1


def test_cancel_while_retrying_an_unreachable_nomad(
    deploy_env, app_row, owner, redis_conn, monkeypatch
):
    monkeypatch.setenv("NOMAD_ADDR", f"http://127.0.0.1:{free_port()}")
    deployment = request(app_row, redis_conn)
    Queue("deploys", connection=redis_conn).empty()  # this test runs the attempts itself
    assert deploy_app(deployment.id) == "retrying"
    row = Deployment.get_by_id(deployment.id)
    assert row.status == DeploymentStatus.RUNNING and row.attempts == 1
    assert "trying again in 1 s" in row.status_message

    ended = cancel_deployment(owner, row, redis_conn, Settings.from_env())
    assert ended.status == DeploymentStatus.CANCELLED
    assert ended.status_message == "cancelled by owner@example.com before it reached Nomad"
    assert "panel.reconcile.jobs.prune_secrets" in queued_functions(redis_conn)
    # The scheduled retry runs: it ends at once, counting no attempt.
    assert deploy_app(deployment.id) == DeploymentStatus.CANCELLED
    assert Deployment.get_by_id(deployment.id).attempts == 1
    assert subjects(deployment)[-1] == "v1.deployment.cancelled"


def test_cancel_waits_for_a_worker_holding_the_app_then_refuses(
    deploy_env, app_row, owner, redis_conn, monkeypatch
):
    monkeypatch.setattr(deployment_actions, "CANCEL_LOCK_WAIT", 0.3)
    settings = Settings.from_env()
    deployment = request(app_row, redis_conn)
    # The lock a deploy job holds while it submits (the worker's own context manager).
    with jobs._holding(redis_conn, app_row.id, settings, deployment.id) as held:
        assert held
        with pytest.raises(ActionError) as refused:
            cancel_deployment(owner, deployment, redis_conn, settings)
    assert refused.value.code == "conflict"
    assert str(refused.value) == (
        "a worker is submitting it to Nomad right now: try again in a few seconds"
    )
    assert Deployment.get_by_id(deployment.id).status == DeploymentStatus.QUEUED
    # Once the worker let go, the same cancel goes through.
    assert cancel_deployment(owner, deployment, redis_conn, settings).status == "cancelled"


def test_cancel_is_refused_once_nomad_accepted_the_job(
    deploy_env, nomad_double, client, app_row, owner, api_token, redis_conn
):
    deployment = request(app_row, redis_conn)
    assert deploy_app(deployment.id) == "registered"
    registered = Deployment.get_by_id(deployment.id)
    with pytest.raises(ActionError) as refused:
        cancel_deployment(owner, registered, redis_conn, Settings.from_env())
    assert refused.value.code == "conflict"
    assert str(refused.value).endswith("Nomad is rolling it out already: roll back or deploy again")
    answer = client.post(f"/api/v1/apps/web/deployments/{deployment.id}/cancel",
                         headers=api_token)  # fmt: skip
    assert answer.status_code == 409
    assert "roll back or deploy again" in answer.get_json()["message"]
    assert Deployment.get_by_id(deployment.id).status == DeploymentStatus.RUNNING
    assert "v1.deployment.cancelled" not in subjects(deployment)


def test_a_viewer_may_not_cancel(app_row, redis_conn, settings):
    viewer = create_user("look@example.com", PASSWORD, team_slug="acme", role=Role.VIEWER)
    deployment = request_deploy(
        actor=None, app=app_row, settings=settings, redis_conn=redis_conn
    ).deployment
    with pytest.raises(ActionError) as refused:
        cancel_deployment(viewer, deployment, redis_conn, settings)
    assert refused.value.code == "forbidden"
    assert Deployment.get_by_id(deployment.id).status == DeploymentStatus.QUEUED


# ---------------------------------------------------------------------------------------------
# Nothing deploys long after it was asked for
# ---------------------------------------------------------------------------------------------


def backdate(deployment: Deployment, seconds: int) -> None:
    Deployment.update(requested_at=utcnow() - timedelta(seconds=seconds)).where(
        Deployment.id == deployment.id
    ).execute()


def test_a_deployment_no_worker_took_in_time_fails_instead_of_running(
    deploy_env, nomad_double, app_row, redis_conn
):
    old = request(app_row, redis_conn)
    backdate(old, 901)
    assert deploy_app(old.id) == DeploymentStatus.FAILED
    row = Deployment.get_by_id(old.id)
    assert row.status == DeploymentStatus.FAILED and row.status_message == STALE
    assert row.started_at is None
    assert subjects(row) == ["v1.deployment.requested", "v1.deployment.failed"]
    assert nomad_double.requests == []  # not a single call to Nomad

    # One requested just now runs as usual.
    fresh = request(app_row, redis_conn)
    backdate(fresh, 899)
    assert deploy_app(fresh.id) == "registered"


def test_the_sweep_fails_stale_queued_deployments_and_revives_the_others(
    deploy_env, app_row, redis_conn, monkeypatch
):
    monkeypatch.setenv("HELIOS_DEPLOY_START_TIMEOUT", "600")
    settings = Settings.from_env()
    stale = request(app_row, redis_conn)
    backdate(stale, 601)
    Queue("deploys", connection=redis_conn).empty()  # its job was lost: no worker took it
    done = sweep_deployments(redis_conn, settings)
    assert done["failed"] == [stale.id] and done["queued"] == []
    row = Deployment.get_by_id(stale.id)
    assert row.status_message == (
        "not started: no worker took it within 10 minutes of the request; deploy again"
    )

    lost = request(app_row, redis_conn)
    backdate(lost, 30)  # older than the requeue delay, well within the start timeout
    Queue("deploys", connection=redis_conn).empty()
    done = sweep_deployments(redis_conn, settings)
    assert done["queued"] == [lost.id] and done["failed"] == []
    assert Deployment.get_by_id(lost.id).status == DeploymentStatus.QUEUED


# ---------------------------------------------------------------------------------------------
# Saying at once why it waits
# ---------------------------------------------------------------------------------------------


def test_a_queued_deployment_says_why_it_waits(client, app_row, settings, redis_conn):
    sign_in(client)
    token = csrf_of(client, "/apps/web")
    deployed = client.post("/apps/web/deploy", data={"image": "", "csrf_token": token},
                           follow_redirects=True)  # fmt: skip
    page = deployed.get_data(as_text=True)
    assert NO_CLUSTER in page  # the flash right after Deploy (no NOMAD_ADDR here)
    deployment = Deployment.select().order_by(Deployment.id.desc()).get()
    state = client.get(f"/apps/web/deployments/{deployment.id}.json").get_json()
    assert state["status"] == "queued" and state["cancellable"] is True
    assert state["waiting"] == f"{NO_WORKER} {NO_CLUSTER}"
    assert "start one with `helios worker` (`helios up` runs one)" in page

    # A worker registered on the deploy queue (RQ's own registration): only the cluster lacks.
    worker = Worker([Queue("deploys", connection=redis_conn)], connection=redis_conn)
    worker.register_birth()
    try:
        state = client.get(f"/apps/web/deployments/{deployment.id}.json").get_json()
        assert state["waiting"] == NO_CLUSTER
        configured = settings.replace(nomad_addr="http://127.0.0.1:4646")
        assert waiting_reason(deployment, configured, redis_conn) == ""
    finally:
        worker.register_death()

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    assert waiting_reason(deployment, settings, dead) == f"{QUEUE_UNREACHABLE} {NO_CLUSTER}"
    # A note of the worker's takes the place of any reason.
    deployment.status_message = "waiting for the previous run of this app to stop"
    assert waiting_reason(deployment, settings, redis_conn) == ""


def test_the_api_answers_a_deploy_without_a_cluster_with_the_reason(
    client, app_row, api_token, redis_conn
):
    answer = client.post("/api/v1/apps/web/deployments", json={}, headers=api_token)
    assert answer.status_code == 202
    body = answer.get_json()
    # Neither a worker nor a cluster here: the answer says both at once.
    assert body["status_message"] == f"{NO_WORKER} {NO_CLUSTER}"
    again = client.get(f"/api/v1/deployments/{body['id']}", headers=api_token).get_json()
    assert again == body  # the deployment as its location reads it
    assert Deployment.get_by_id(body["id"]).status_message == ""  # told, not stored
    worker = Worker([Queue("deploys", connection=redis_conn)], connection=redis_conn)
    worker.register_birth()
    try:
        listed = client.get("/api/v1/apps/web/deployments", headers=api_token).get_json()
        assert listed["items"][0]["status_message"] == NO_CLUSTER
    finally:
        worker.register_death()


# ---------------------------------------------------------------------------------------------
# The CLI, against a real panel
# ---------------------------------------------------------------------------------------------


def test_helios_cancel(settings, live_panel, owner, app_row, tmp_path):
    token = create_token(owner, "laptop", ["deploy"]).secret
    env = process_env(settings, HELIOS_URL=live_panel, HELIOS_TOKEN=token, HOME=str(tmp_path))

    def helios(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(helios_command(*args), capture_output=True, text=True, env=env,
                                cwd=REPO_ROOT, timeout=120)  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        return result

    deployed = helios("deploy", "web")
    assert deployed.returncode == 0, deployed.stderr
    assert "queued: web release 1" in deployed.stdout
    assert NO_CLUSTER in deployed.stderr  # the panel has no cluster: said at once
    number = re.search(r"Deployment #(\d+)", deployed.stdout).group(1)

    cancelled = helios("cancel", "web", number)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Deployment #{number} cancelled: web release 1 will not be deployed." in (
        cancelled.stdout
    )
    assert Deployment.get_by_id(int(number)).status == DeploymentStatus.CANCELLED

    again = helios("cancel", "web", number)
    assert again.returncode == 2  # 409, as every refused request
    assert "ended already (cancelled)" in again.stderr
    missing = helios("cancel", "web", "424242")
    assert missing.returncode == 4
    assert "web has no deployment #424242" in missing.stderr
    assert helios("cancel", "web", "0").returncode == 2
