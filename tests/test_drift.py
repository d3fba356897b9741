"""Drift: an app deployed for real through the deploy engine against the Nomad double, then its
job changed, stopped and purged behind Helios's back (through the double's HTTP API, as an
operator's `nomad job run` / `nomad job stop` would); the check names the change, emits one
event per drift, and a re-apply (a deployment of the live release) converges."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import requests
from rq import Queue

from panel.actions.accounts import create_user
from panel.actions.apps import ActionError, create_app, request_deploy, request_reapply, set_env
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers.nomad import NomadDriver
from panel.models import AppDrift, Deployment, DeploymentStatus, Event, Role, Team
from panel.reconcile.drift import SCHEDULE_LOCK, check_apps, schedule_drift_check
from panel.reconcile.jobs import deploy_app, render_deployment

from conftest import REPO_ROOT, helios_command, process_env, run_queued, wait_until

SECRET = "s3cr3t-value-that-must-not-show"
PASSWORD = "correct horse battery"


@pytest.fixture
def app_row(db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    return create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", count=2,
        redis_conn=redis_conn,
    )  # fmt: skip


@pytest.fixture
def double(deploy_env, nomad_double, run_follower):
    """The double with time frozen (the test ticks it) and a follower watching."""
    nomad_double.auto_advance = False
    run_follower()
    return nomad_double


def settle(double, deployment_id: int) -> Deployment:
    """Tick the double until the follower recorded the deployment's outcome."""

    def ended():
        double.tick()
        row = Deployment.get_by_id(deployment_id)
        return DeploymentStatus(row.status).is_terminal and row

    return wait_until(ended, timeout=30, interval=0.05, what=f"deployment #{deployment_id}")


def deployed(double, app, redis_conn) -> Deployment:
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    deploy_app(requested.deployment.id)
    done = settle(double, requested.deployment.id)
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    return done


def check(redis_conn) -> AppDrift:
    settings = Settings.from_env()
    check_apps(NomadDriver.from_settings(settings), settings, redis_conn)
    return AppDrift.get()


def drift_events() -> list[tuple[str, dict]]:
    return [
        (e.subject, e.data)
        for e in Event.select().where(Event.subject.startswith("v1.app.drift")).order_by(Event.id)
    ]


def run_by_hand(double, body: dict) -> None:
    """Register a job as `nomad job run` does: POST /v1/jobs, no check-and-set."""
    answer = requests.post(f"{double.url}/v1/jobs", json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def test_a_job_changed_by_hand_is_detected_and_reapply_converges(double, app_row, redis_conn):
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app_row, key="TOKEN", value=SECRET, secret=True, cipher=cipher)
    live = deployed(double, app_row, redis_conn)

    # (a) Converged: in sync, nothing emitted.
    row = check(redis_conn)
    assert (row.state, row.diff, row.detected_at) == ("in_sync", "", None)
    assert row.deployment_id == live.id
    assert drift_events() == []

    # (b) Another image and count, run by hand (the body of the live deployment, edited; the
    # secret's value put into an env variable to prove the diff is scrubbed).
    body = copy.deepcopy(render_deployment(live, Settings.from_env()))
    task = body["Job"]["TaskGroups"][0]["Tasks"][0]
    task["Config"]["image"] = "registry.local/web:hotfix"
    task["Env"] = {**(task.get("Env") or {}), "LEAKED": SECRET}
    body["Job"]["TaskGroups"][0]["Count"] = 5
    run_by_hand(double, body)
    double.tick(3)

    row = check(redis_conn)
    assert row.state == "drifted"
    assert "registry.local/web:hotfix" in row.diff and "registry.local/web:1" in row.diff
    assert "image" in row.diff and "Count" in row.diff
    assert SECRET not in row.diff and "[secret TOKEN]" in row.diff
    assert row.detected_at is not None
    detected = [
        ("v1.app.drift_detected",
         {"app": "web", "app_id": app_row.id, "state": "drifted", "release": 1,
          "deployment_id": live.id}),
    ]  # fmt: skip
    assert drift_events() == detected

    # A second check finds the same: no second event, the first detection time kept.
    again = check(redis_conn)
    assert (again.state, again.diff, again.detected_at) == (row.state, row.diff, row.detected_at)
    assert again.checked_at >= row.checked_at
    assert drift_events() == detected

    # (d) Re-apply: a deployment of the live release (no new release), through the engine.
    requested = request_reapply(actor=None, app=app_row, settings=Settings.from_env(),
                                redis_conn=redis_conn)  # fmt: skip
    assert requested.enqueued and requested.deployment.release_id == live.release_id
    requested_event = Event.select().where(Event.subject == "v1.deployment.requested")
    assert requested_event.order_by(Event.id.desc()).get().data["reason"] == "reapply"
    deploy_app(requested.deployment.id)
    done = settle(double, requested.deployment.id)
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message

    row = check(redis_conn)
    assert (row.state, row.diff, row.detected_at) == ("in_sync", "", None)
    assert row.deployment_id == done.id
    assert drift_events()[1:] == [
        ("v1.app.drift_resolved",
         {"app": "web", "app_id": app_row.id, "release": 1, "deployment_id": done.id}),
    ]  # fmt: skip
    # Converged: checking again changes and emits nothing.
    assert check(redis_conn).state == "in_sync"
    assert len(drift_events()) == 2


def test_stopped_then_purged_job(double, app_row, redis_conn):
    live = deployed(double, app_row, redis_conn)
    assert check(redis_conn).state == "in_sync"

    answer = requests.delete(f"{double.url}/v1/job/web", timeout=10)
    assert answer.status_code == 200, answer.text
    double.tick(3)
    row = check(redis_conn)
    assert row.state == "stopped" and "stopped" in row.diff

    answer = requests.delete(f"{double.url}/v1/job/web", params={"purge": "true"}, timeout=10)
    assert answer.status_code == 200, answer.text
    double.tick(3)
    row = check(redis_conn)
    assert row.state == "missing" and "not in Nomad" in row.diff
    assert [(s, d["state"]) for s, d in drift_events()] == [
        ("v1.app.drift_detected", "stopped"),
        ("v1.app.drift_detected", "missing"),
    ]

    # Re-applying a purged job registers it again.
    requested = request_reapply(actor=None, app=app_row, settings=Settings.from_env(),
                                redis_conn=redis_conn)  # fmt: skip
    deploy_app(requested.deployment.id)
    assert settle(double, requested.deployment.id).status == DeploymentStatus.SUCCEEDED
    assert check(redis_conn).state == "in_sync"
    assert drift_events()[-1][0] == "v1.app.drift_resolved"
    assert live.release_id == Deployment.get_by_id(requested.deployment.id).release_id


def test_apps_with_a_deployment_under_way_are_skipped(double, app_row, redis_conn):
    deployed(double, app_row, redis_conn)
    requested = request_deploy(actor=None, app=app_row, settings=Settings.from_env(),
                               redis_conn=redis_conn, image="registry.local/web:2")  # fmt: skip
    settings = Settings.from_env()
    counts = check_apps(NomadDriver.from_settings(settings), settings, redis_conn)
    assert counts == {"busy": 1}
    assert AppDrift.select().count() == 0
    deploy_app(requested.deployment.id)
    settle(double, requested.deployment.id)
    assert check(redis_conn).state == "in_sync"


def test_reapply_needs_a_deployer_and_a_live_release(double, app_row, redis_conn):
    settings = Settings.from_env()
    viewer = create_user("viewer@example.com", PASSWORD, team_slug="acme", role=Role.VIEWER)
    with pytest.raises(ActionError) as refused:
        request_reapply(actor=None, app=app_row, settings=settings, redis_conn=redis_conn)
    assert refused.value.code == "conflict" and "deploy it first" in refused.value.message
    deployed(double, app_row, redis_conn)
    with pytest.raises(ActionError) as refused:
        request_reapply(actor=viewer, app=app_row, settings=settings, redis_conn=redis_conn)
    assert refused.value.code == "forbidden"
    assert Deployment.select().count() == 1


def test_the_schedule_queues_one_pass_per_interval_and_the_worker_runs_it(
    double, app_row, redis_conn, monkeypatch
):
    monkeypatch.setenv("HELIOS_DRIFT_INTERVAL", "300")  # tests' workers do not check by default
    deployed(double, app_row, redis_conn)
    settings = Settings.from_env()
    assert schedule_drift_check(redis_conn, settings)
    assert not schedule_drift_check(redis_conn, settings)  # the interval has not passed
    queue = Queue("default", connection=redis_conn)
    assert [job.func_name for job in queue.jobs] == ["panel.reconcile.drift.check_drift"]
    run_queued(redis_conn, queue)
    assert AppDrift.get().state == "in_sync"
    monkeypatch.setenv("HELIOS_DRIFT_INTERVAL", "0")
    redis_conn.delete(SCHEDULE_LOCK)
    assert not schedule_drift_check(redis_conn, Settings.from_env())  # 0: off


def bearer(user, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user, 'drift', [scope], days=1).secret}"}


def reapply_status(client, user, scope: str) -> int:
    return client.post("/api/v1/apps/web/reapply", headers=bearer(user, scope)).status_code


def helios(settings, url: str, token: str, *args: str) -> subprocess.CompletedProcess:
    env = process_env(settings, HELIOS_URL=url, HELIOS_TOKEN=token)
    return subprocess.run(helios_command(*args), capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=60)  # fmt: skip


def test_api_pages_and_cli_show_drift_and_reapply(
    client, auth, live_panel, settings, double, app_row, redis_conn
):
    # The Flask app (client) opens the database before the follower's thread starts (double).
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    viewer = create_user("viewer@example.com", PASSWORD, team_slug="acme", role=Role.VIEWER)
    other = create_user("other@example.com", PASSWORD, team_slug="rival")
    answer = client.get("/api/v1/apps/web/drift", headers=bearer(owner, "read"))
    assert answer.status_code == 200 and answer.json["state"] is None, answer.json
    live = deployed(double, app_row, redis_conn)
    body = copy.deepcopy(render_deployment(live, Settings.from_env()))
    body["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = "registry.local/web:hotfix"
    run_by_hand(double, body)
    check(redis_conn)

    # The API: the state and diff for a reader; re-apply refused to a viewer, hidden from others.
    answer = client.get("/api/v1/apps/web/drift", headers=bearer(owner, "read"))
    assert answer.status_code == 200
    assert (answer.json["state"], answer.json["release"]) == ("drifted", 1)
    assert "registry.local/web:hotfix" in answer.json["diff"] and answer.json["detected_at"]
    assert client.get("/api/v1/apps/web/drift", headers=bearer(other, "admin")).status_code == 404
    assert reapply_status(client, viewer, "admin") == 403
    assert reapply_status(client, other, "admin") == 404
    assert reapply_status(client, owner, "read") == 403
    assert Deployment.select().count() == 1

    # The panel: a badge on the dashboard, the diff and the button on the app's page.
    auth.login(owner.email, PASSWORD)
    dashboard = client.get("/").get_data(as_text=True)
    assert 'class="badge drift-drifted"' in dashboard
    page = client.get("/apps/web").get_data(as_text=True)
    assert '<pre class="diff">' in page and "registry.local/web:hotfix" in page
    assert "Re-apply release 1" in page and "data-confirm=" in page

    # The CLI, through the API of the panel under gunicorn.
    token = create_token(owner, "cli", ["deploy"], days=1).secret
    shown = helios(settings, live_panel, token, "apps", "drift", "web")
    assert shown.returncode == 0, shown.stderr
    assert "drifted" in shown.stdout and "registry.local/web:hotfix" in shown.stdout
    asked = helios(settings, live_panel, token, "apps", "drift", "web", "--reapply", "--json")
    assert asked.returncode == 0, asked.stderr
    deployment = json.loads(asked.stdout)
    assert (deployment["release"], deployment["status"]) == (1, "queued")
    deploy_app(deployment["id"])
    assert settle(double, deployment["id"]).status == DeploymentStatus.SUCCEEDED
    check(redis_conn)
    shown = helios(settings, live_panel, token, "apps", "drift", "web")
    assert "in sync" in shown.stdout, shown.stdout
    assert 'class="badge drift-' not in client.get("/").get_data(as_text=True)
