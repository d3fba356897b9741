"""Scale, restart, stop and start an app: an app deployed for real against the Nomad double, then
each action taken through ``panel.actions.lifecycle`` with a real `helios worker` process doing
the Nomad side (the scale endpoint, the job stop, the deployments) and a follower recording the
outcomes. Also: refusals and roles, the drift check and health of a scaled or stopped app, the
API and the CLI.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import redis
import requests
from rq import Queue

from panel.actions.accounts import create_user
from panel.actions.apps import ActionError, create_app, pending_for, request_deploy
from panel.actions.lifecycle import restart_app, scale_app, start_app, stop_app
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.drivers.nomad import NomadDriver
from panel.models import (
    App,
    AppDrift,
    AppHealth,
    Deployment,
    DeploymentStatus,
    Event,
    Role,
    Team,
)
from panel.reconcile.drift import check_apps
from panel.reconcile.jobs import deploy_app
from panel.reconcile.lifecycle import apply_lifecycle
from panel.reconcile.observe import sample

from conftest import helios_command, process_env, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


@pytest.fixture
def double(deploy_env, nomad_double, run_follower, start_worker):
    """The double with time frozen (the test ticks it), a follower and a real worker."""
    nomad_double.auto_advance = False
    run_follower()
    start_worker(**deploy_env)
    return nomad_double


def settle(double, deployment_id: int, watch=None) -> Deployment:
    """Tick the double until the deployment ended; ``watch()`` after every tick."""

    def ended():
        double.tick()
        if watch is not None:
            watch()
        row = Deployment.get_by_id(deployment_id)
        return DeploymentStatus(row.status).is_terminal and row

    done = wait_until(ended, timeout=60, interval=0.05, what=f"deployment #{deployment_id}")
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    return done


def deployed(double, team, redis_conn, count: int = 2) -> App:
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1",
                     count=count, redis_conn=redis_conn)  # fmt: skip
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    settle(double, requested.deployment.id)
    return App.get_by_id(app.id)


def job(double) -> dict:
    answer = requests.get(f"{double.url}/v1/job/web", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def running(double) -> set[str]:
    """Ids of the job's allocations that run and are meant to."""
    allocs = requests.get(f"{double.url}/v1/job/web/allocations", timeout=10).json()
    return {
        a["ID"] for a in allocs if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"
    }


def until(double, what: str, predicate):
    """Tick the double until ``predicate()`` holds (the worker acts meanwhile)."""

    def holds():
        double.tick()
        return predicate()

    return wait_until(holds, timeout=60, interval=0.05, what=what)


def drift(redis_conn) -> AppDrift:
    settings = Settings.from_env()
    check_apps(NomadDriver.from_settings(settings), settings, redis_conn)
    return AppDrift.get()


def events(subject: str) -> list[dict]:
    return [e.data for e in Event.select().where(Event.subject == subject).order_by(Event.id)]


def test_scale_changes_the_instances_without_a_release_and_is_no_drift(double, team, redis_conn):
    app = deployed(double, team, redis_conn, count=2)
    live = Deployment.get()
    version = job(double)["Version"]
    assert len(running(double)) == 2

    scaled = scale_app(actor=None, app=app, count=3, redis_conn=redis_conn)
    assert scaled.count == 3 and App.get_by_id(app.id).count == 3
    assert Deployment.get_by_id(live.id).instance_count == 3
    until(double, "3 running instances", lambda: len(running(double)) == 3)
    after = job(double)
    assert after["TaskGroups"][0]["Count"] == 3
    assert after["Version"] == version + 1  # a new job version, as Nomad's scale stores
    assert after["Meta"]["helios.deployment"] == str(live.id)  # nothing else changed
    assert events("v1.app.scaled") == [
        {"app": "web", "app_id": app.id, "from": 2, "to": 3, "deployment_id": live.id,
         "release": 1},
    ]  # fmt: skip
    assert Deployment.select().count() == 1  # no deployment, no release
    assert app.releases.count() == 1

    # The drift check renders the scaled count; the settings page has nothing pending.
    row = drift(redis_conn)
    assert (row.state, row.diff) == ("in_sync", "")
    assert pending_for(App.get_by_id(app.id)).changes == []

    # Down again: one instance keeps running; a repeated job changes nothing.
    scale_app(actor=None, app=App.get_by_id(app.id), count=1, redis_conn=redis_conn)
    until(double, "1 running instance", lambda: len(running(double)) == 1)
    assert apply_lifecycle(app.id) == "runs 1 already"
    assert drift(redis_conn).state == "in_sync"
    assert [e["to"] for e in events("v1.app.scaled")] == [3, 1]
    # The same count again: no event, no job.
    scale_app(actor=None, app=App.get_by_id(app.id), count=1, redis_conn=redis_conn)
    assert len(events("v1.app.scaled")) == 2

    # The next deploy cuts a release with the scaled count.
    requested = request_deploy(actor=None, app=App.get_by_id(app.id),
                               settings=Settings.from_env(), redis_conn=redis_conn)  # fmt: skip
    settle(double, requested.deployment.id)
    assert requested.deployment.release.config["count"] == 1
    assert job(double)["TaskGroups"][0]["Count"] == 1


def test_restart_replaces_every_instance_while_one_keeps_running(double, team, redis_conn):
    app = deployed(double, team, redis_conn, count=2)
    scale_app(actor=None, app=app, count=3, redis_conn=redis_conn)
    until(double, "3 running instances", lambda: len(running(double)) == 3)
    before = running(double)
    live = Deployment.get()

    requested = restart_app(actor=None, app=App.get_by_id(app.id), settings=Settings.from_env(),
                            redis_conn=redis_conn)  # fmt: skip
    restart = requested.deployment
    assert restart.release_id == live.release_id and restart.id != live.id
    assert restart.instance_count == 3  # the scaled count carried over
    lowest = []
    settle(double, restart.id, watch=lambda: lowest.append(len(running(double))))
    assert min(lowest) >= 1  # the app was never without a running instance
    now = running(double)
    assert len(now) == 3 and not now & before  # every allocation replaced
    assert job(double)["Meta"]["helios.deployment"] == str(restart.id)
    reasons = [e["reason"] for e in events("v1.deployment.requested")]
    assert reasons == ["deploy", "restart"]
    assert drift(redis_conn).state == "in_sync"


def test_stop_then_start(double, team, redis_conn):
    app = deployed(double, team, redis_conn, count=2)
    sample(Settings.from_env(), redis_conn)
    assert AppHealth.get().state == "healthy"
    stopped = stop_app(actor=None, app=app, redis_conn=redis_conn)
    assert stopped.stopped_at is not None and stopped.stopped_by == "operator"
    until(double, "no running instance", lambda: not running(double))
    assert job(double)["Stop"] is True
    assert events("v1.app.stopped") == [
        {"app": "web", "app_id": app.id, "by": "operator", "release": 1}
    ]
    assert apply_lifecycle(app.id) == "stopped already"

    # Stopped is no drift and no outage: the health says why nothing runs.
    assert drift(redis_conn).state == "in_sync"
    sample(Settings.from_env(), redis_conn)
    health = AppHealth.get()
    assert (health.state, health.reason) == ("not_running", "stopped")
    assert not events("v1.app.down")

    # Refusals while stopped; a scale is kept for the start.
    app = App.get_by_id(app.id)
    with pytest.raises(ActionError, match="stopped already"):
        stop_app(actor=None, app=app, redis_conn=redis_conn)
    with pytest.raises(ActionError, match="start it instead"):
        restart_app(actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn)
    scale_app(actor=None, app=app, count=3, redis_conn=redis_conn)
    assert job(double)["Stop"] is True

    requested = start_app(actor=None, app=App.get_by_id(app.id), settings=Settings.from_env(),
                          redis_conn=redis_conn)  # fmt: skip
    assert App.get_by_id(app.id).stopped_at is None
    settle(double, requested.deployment.id)
    until(double, "3 running instances", lambda: len(running(double)) == 3)
    assert job(double)["Stop"] is False
    assert events("v1.app.started") == [
        {"app": "web", "app_id": app.id, "deployment_id": requested.deployment.id,
         "release": 1, "reason": "start"},
    ]  # fmt: skip
    assert drift(redis_conn).state == "in_sync"
    with pytest.raises(ActionError, match="is not stopped"):
        start_app(actor=None, app=App.get_by_id(app.id), settings=Settings.from_env(),
                  redis_conn=redis_conn)  # fmt: skip


def test_refusals_and_roles(db, team, settings, redis_conn):
    viewer = create_user("viewer@example.com", PASSWORD, team_slug="acme", role=Role.VIEWER)
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1")

    with pytest.raises(ActionError) as never:
        scale_app(actor=None, app=app, count=2)
    assert never.value.code == "conflict" and "no live release to scale" in never.value.message
    with pytest.raises(ActionError) as never:
        stop_app(actor=None, app=app)
    assert never.value.code == "conflict"

    live = request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    Deployment.update(status="succeeded").where(Deployment.id == live.deployment.id).execute()
    for count in (0, 51, "two"):
        with pytest.raises(ActionError) as bad:
            scale_app(actor=None, app=app, count=count)
        assert (bad.value.code, bad.value.field) == ("invalid", "count")
    with pytest.raises(ActionError) as role:
        scale_app(actor=viewer, app=app, count=2)
    assert role.value.code == "forbidden"
    with pytest.raises(ActionError) as role:
        stop_app(actor=viewer, app=app)
    assert role.value.code == "forbidden"

    queued = request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    busy = f"deployment #{queued.deployment.id} of web is queued"
    with pytest.raises(ActionError, match=busy):
        scale_app(actor=None, app=app, count=2)
    with pytest.raises(ActionError, match=busy):
        stop_app(actor=None, app=app)
    with pytest.raises(ActionError, match=busy):
        restart_app(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    assert App.get_by_id(app.id).stopped_at is None  # the refused stop left no mark
    assert not events("v1.app.scaled") and not events("v1.app.stopped")


def test_api_and_cli(live_panel, settings, team, redis_url):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    web = create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
                     image="registry.local/web:1", count=2)  # fmt: skip
    conn = redis.Redis.from_url(redis_url)
    first = request_deploy(actor=None, app=web, settings=settings, redis_conn=conn).deployment
    Deployment.update(status="succeeded").where(Deployment.id == first.id).execute()
    token = create_token(owner, "cli", ["deploy"], days=1).secret
    headers = {"Authorization": f"Bearer {token}"}
    api = f"{live_panel}/api/v1/apps/web"

    bad = requests.post(f"{api}/scale", json={"count": 0}, headers=headers, timeout=10)
    assert bad.status_code == 422 and bad.json()["field"] == "count", bad.text
    scaled = requests.post(f"{api}/scale", json={"count": 3}, headers=headers, timeout=10)
    assert scaled.status_code == 200, scaled.text
    assert scaled.json()["count"] == 3 and scaled.json()["stopped_at"] is None
    assert requests.post(f"{api}/start", headers=headers, timeout=10).status_code == 409
    restarted = requests.post(f"{api}/restart", headers=headers, timeout=10)
    assert restarted.status_code == 202, restarted.text
    assert restarted.headers["Location"].endswith(f"/deployments/{restarted.json()['id']}")
    assert restarted.json()["release"] == 1
    # A restart under way: stop refuses, saying which deployment.
    busy = requests.post(f"{api}/stop", headers=headers, timeout=10)
    assert busy.status_code == 409 and f"#{restarted.json()['id']}" in busy.text
    Deployment.update(status="succeeded").where(Deployment.id == restarted.json()["id"]).execute()
    read_only = create_token(owner, "read", ["read"], days=1).secret
    assert requests.post(f"{api}/stop", headers={"Authorization": f"Bearer {read_only}"},
                         timeout=10).status_code == 403  # fmt: skip

    env = process_env(settings, HELIOS_URL=live_panel, HELIOS_TOKEN=token)

    def helios(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(helios_command("apps", *args), input=stdin, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert helios("scale", "web", "0").returncode == 2  # checked before any request
    assert helios("scale", "nope", "2").returncode == 4
    done = helios("scale", "web", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 2
    declined = helios("stop", "web", stdin="n\n")
    assert declined.returncode == 2 and "not stopped" in declined.stderr
    assert App.get(App.slug == "web").stopped_at is None
    stopped = helios("stop", "web", "--yes", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped_by"] == "owner@example.com"
    assert helios("stop", "web", "--yes").returncode == 2  # stopped already
    assert helios("restart", "web").returncode == 2  # stopped: start it
    started = helios("start", "web", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "queued"
    assert App.get(App.slug == "web").stopped_at is None
    for command in ("scale", "restart", "stop", "start"):
        shown = helios(command, "--help")
        assert shown.returncode == 0 and "APP" in shown.stdout


def test_a_scale_nomad_refuses_during_a_deployment_is_tried_again(
    deploy_env, nomad_double, team, redis_conn
):
    nomad_double.auto_advance = False
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1", count=2)
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    deploy_app(requested.deployment.id)  # registered; Nomad's deployment runs (time frozen)
    Deployment.update(status="succeeded").where(Deployment.id == requested.deployment.id).execute()

    unknown = requests.post(f"{nomad_double.url}/v1/job/web/scale", timeout=10,
                            json={"Count": 2, "Target": {"Group": "nope"}})  # fmt: skip
    assert unknown.status_code == 400
    assert unknown.text == 'task group "nope" specified for scaling does not exist in job'

    scale_app(actor=None, app=app, count=3, redis_conn=redis_conn)
    assert apply_lifecycle(app.id) == "retrying"
    queue = Queue("deploys", connection=redis_conn)
    assert f"lifecycle-{app.id}-2" in queue.scheduled_job_registry.get_job_ids()
    assert job(nomad_double)["TaskGroups"][0]["Count"] == 2

    until(nomad_double, "the deployment's end", lambda: job(nomad_double)["Stable"])
    assert apply_lifecycle(app.id, attempt=2) == "scaled to 3"
    assert job(nomad_double)["TaskGroups"][0]["Count"] == 3
