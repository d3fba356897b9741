"""Deleting an app: an app deployed for real against the Nomad double is deleted; its job and
variable are purged from the double, its name and domain are free at once, its history stays
readable, and the tombstone is removed after the retention period. Also: refusals (wrong name,
a deployment under way, a deployer, another team), Nomad unreachable (retried, then done), the
API and the CLI."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest
import redis
import requests
from rq import Queue

from panel.actions.accounts import create_user
from panel.actions.apps import ActionError, add_domain, create_app, request_deploy, set_env
from panel.actions.deletion import delete_app, remove_tombstones
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import (
    App,
    Deployment,
    DeploymentStatus,
    Domain,
    EnvVar,
    Event,
    Role,
    Team,
    utcnow,
)
from panel.reconcile.deletion import purge_app, resume_deletions, sweep_deletions
from panel.reconcile.jobs import deploy_app

from conftest import helios_command, process_env, run_queued, wait_until

SECRET = "s3cr3t-value-of-a-deleted-app"


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


@pytest.fixture
def double(deploy_env, nomad_double, run_follower):
    nomad_double.auto_advance = False
    run_follower()
    return nomad_double


def settle(double, deployment_id: int) -> Deployment:
    def ended():
        double.tick()
        row = Deployment.get_by_id(deployment_id)
        return DeploymentStatus(row.status).is_terminal and row

    return wait_until(ended, timeout=30, interval=0.05, what=f"deployment #{deployment_id}")


def deployed_app(double, team, redis_conn) -> App:
    settings = Settings.from_env()
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1",
                     redis_conn=redis_conn)  # fmt: skip
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=None, app=app, key="TOKEN", value=SECRET, secret=True, cipher=cipher)
    add_domain(actor=None, app=app, hostname="web.example.com", base_domain=settings.base_domain)
    requested = request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    deploy_app(requested.deployment.id)
    assert settle(double, requested.deployment.id).status == DeploymentStatus.SUCCEEDED
    return App.get_by_id(app.id)


def in_double(double, path: str) -> int:
    return requests.get(f"{double.url}{path}", timeout=10).status_code


def test_delete_purges_nomad_frees_name_and_keeps_history(double, team, redis_conn):
    app = deployed_app(double, team, redis_conn)
    assert in_double(double, "/v1/job/web") == 200
    assert in_double(double, "/v1/var/nomad/jobs/web") == 200

    with pytest.raises(ActionError) as wrong:
        delete_app(actor=None, app=app, confirm="wbe", settings=Settings.from_env())
    assert (wrong.value.code, wrong.value.field) == ("invalid", "confirm")
    assert "type the app's name, web" in wrong.value.message
    assert App.get_by_id(app.id).deleted_at is None

    tombstone = delete_app(actor=None, app=app, confirm="web", settings=Settings.from_env(),
                           redis_conn=redis_conn)  # fmt: skip
    assert tombstone.deleted_at is not None and tombstone.deleted_by == "operator"
    assert Domain.select().where(Domain.app == app.id).count() == 0
    assert EnvVar.select().where(EnvVar.app == app.id).count() == 0
    snapshots = [r.config for r in tombstone.releases]
    assert snapshots and all(c["secrets"] == {"TOKEN": ""} for c in snapshots)

    assert purge_app(app.id) == "purged"
    double.tick(3)
    assert in_double(double, "/v1/job/web") == 404
    assert in_double(double, "/v1/var/nomad/jobs/web") == 404
    row = App.get_by_id(app.id)
    assert row.purged_at is not None and "stopped and purged" in row.purge_note
    assert purge_app(app.id) == "purged"  # idempotent

    # History readable; the audit event is listed with the team's.
    assert Deployment.select().where(Deployment.app == app.id).count() == 1
    event = Event.get(Event.subject == "v1.app.deleted")
    assert event.data == {"app": "web", "app_id": app.id, "team": "acme", "by": "operator",
                          "retention_days": 30}  # fmt: skip
    assert event.team_id == team.id

    # Name and domain are free at once.
    again = create_app(actor=None, team=team, slug="web", image="registry.local/web:2")
    add_domain(actor=None, app=again, hostname="web.example.com",
               base_domain=Settings.from_env().base_domain)  # fmt: skip
    assert App.live().where(App.slug == "web").get().id == again.id

    # Retention: kept within the period, removed (with its deployments) after it.
    assert remove_tombstones(utcnow() - timedelta(days=30)) == []
    App.update(deleted_at=utcnow() - timedelta(days=31)).where(App.id == app.id).execute()
    assert remove_tombstones(utcnow() - timedelta(days=30)) == [f"web (#{app.id})"]
    assert App.get_or_none(App.id == app.id) is None
    assert Deployment.select().where(Deployment.app == app.id).count() == 0
    assert Event.select().where(Event.subject == "v1.app.deleted").count() == 1
    assert App.get_by_id(again.id).deleted_at is None


def test_a_new_app_of_the_same_name_keeps_its_job(double, team, redis_conn):
    old = deployed_app(double, team, redis_conn)
    delete_app(actor=None, app=old, confirm="web", settings=Settings.from_env())
    new = create_app(actor=None, team=team, slug="web", image="registry.local/web:2")
    requested = request_deploy(actor=None, app=new, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    deploy_app(requested.deployment.id)
    assert settle(double, requested.deployment.id).status == DeploymentStatus.SUCCEEDED

    assert purge_app(old.id) == "purged"
    assert in_double(double, "/v1/job/web") == 200  # the new app's job: left alone
    assert "now belongs to the new app" in App.get_by_id(old.id).purge_note


def test_refused_while_a_deployment_is_under_way_and_by_role(db, team, settings):
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1")
    deployer = create_user("dev@example.com", "a long password 1", team_slug="acme",
                           role=Role.DEPLOYER)  # fmt: skip
    outsider = create_user("rival@example.com", "a long password 1", team_slug="rival",
                           role=Role.ADMIN)  # fmt: skip
    with pytest.raises(ActionError) as refused:
        delete_app(actor=deployer, app=app, confirm="web", settings=settings)
    assert refused.value.code == "forbidden"
    with pytest.raises(ActionError) as hidden:
        delete_app(actor=outsider, app=app, confirm="web", settings=settings)
    assert hidden.value.code == "not_found"

    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # recorded, not queued
    deployment = request_deploy(actor=None, app=app, settings=settings, redis_conn=dead).deployment
    with pytest.raises(ActionError) as busy:
        delete_app(actor=None, app=app, confirm="web", settings=settings)
    assert busy.value.code == "conflict"
    assert f"deployment #{deployment.id} of web is queued" in busy.value.message
    assert App.get_by_id(app.id).deleted_at is None  # rolled back
    assert Event.select().where(Event.subject == "v1.app.deleted").count() == 0

    # Once deleted, a request holding the app as loaded before cannot deploy it again.
    Deployment.update(status=DeploymentStatus.CANCELLED.value).where(
        Deployment.id == deployment.id
    ).execute()
    delete_app(actor=None, app=app, confirm="web", settings=settings)
    with pytest.raises(ActionError) as stale:
        request_deploy(actor=None, app=app, settings=settings, redis_conn=dead)
    assert (stale.value.code, stale.value.message) == (
        "not_found",
        "web was deleted: there is nothing to deploy",
    )
    assert Deployment.select().where(Deployment.app == app.id).count() == 1


def test_nomad_unreachable_is_retried_until_done(deploy_env, nomad_double, team, redis_conn,
                                                monkeypatch):  # fmt: skip
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1")
    delete_app(actor=None, app=app, confirm="web", settings=Settings.from_env())
    monkeypatch.setenv("NOMAD_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("HELIOS_DEPLOY_RETRY_DELAYS", "0")
    assert purge_app(app.id) == "retrying"
    row = App.get_by_id(app.id)
    assert row.purged_at is None and row.purge_attempts == 1
    assert "not answering" in row.purge_note and "attempt 2" in row.purge_note
    queue = Queue("deploys", connection=redis_conn)
    assert f"delete-app-{app.id}-2" in queue.job_ids

    # Redis lost the job: the sweep queues it again (once), and the worker finishes it.
    queue.empty()
    App.update(deleted_at=utcnow() - timedelta(minutes=5)).where(App.id == app.id).execute()
    assert sweep_deletions(redis_conn) == [app.id]
    assert sweep_deletions(redis_conn) == []
    monkeypatch.setenv("NOMAD_ADDR", deploy_env["NOMAD_ADDR"])
    run_queued(redis_conn, queue)
    assert App.get_by_id(app.id).purged_at is not None

    # Past the retention period, the worker's maintenance removes it.
    App.update(deleted_at=utcnow() - timedelta(days=31)).where(App.id == app.id).execute()
    redis_conn.delete("helios:prune:tombstones")
    done = resume_deletions(redis_conn, Settings.from_env())
    assert done["removed"] == [f"web (#{app.id})"]


def test_api_and_cli(live_panel, settings, team, redis_url):
    owner = create_user("owner@example.com", "a long password 1", team_slug="acme")
    web = create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
                     image="registry.local/web:1")  # fmt: skip
    create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="api",
               image="registry.local/api:1")  # fmt: skip
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # recorded, not queued
    old = request_deploy(actor=None, app=web, settings=settings, redis_conn=dead).deployment
    token = create_token(owner, "cli", ["admin"], days=1).secret
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{live_panel}/api/v1/apps/web"
    busy = requests.delete(url, json={"confirm": "web"}, headers=headers, timeout=10)
    assert busy.status_code == 409, busy.text
    assert f"deployment #{old.id} of web is queued" in busy.text
    Deployment.update(status=DeploymentStatus.FAILED.value).where(Deployment.id == old.id).execute()
    wrong = requests.delete(url, json={"confirm": "api"}, headers=headers, timeout=10)
    assert wrong.status_code == 422 and "type the app's name, web" in wrong.text
    done = requests.delete(url, json={"confirm": "web"}, headers=headers, timeout=10)
    assert done.status_code == 202, done.text
    assert done.json()["app"] == "web" and done.json()["retention_days"] == 30
    assert requests.get(url, headers=headers, timeout=10).status_code == 404
    # Its history stays readable by id through the API for the retention period.
    history = requests.get(f"{live_panel}/api/v1/deployments/{old.id}", headers=headers,
                           timeout=10)  # fmt: skip
    assert history.status_code == 200 and history.json()["app"] == "web", history.text
    assert requests.delete(url, json={"confirm": "web"}, headers=headers,
                           timeout=10).status_code == 404  # fmt: skip

    env = process_env(settings, HELIOS_URL=live_panel, HELIOS_TOKEN=token)
    typo = subprocess.run(helios_command("apps", "delete", "api"), input="apj\n", env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert typo.returncode == 2, typo.stderr
    assert "nothing deleted" in typo.stderr + typo.stdout
    cli = subprocess.run(helios_command("apps", "delete", "api", "--json"), input="api\n",
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout[cli.stdout.index("{") :])["app"] == "api"
    gone = subprocess.run(helios_command("apps", "delete", "api", "--yes"), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert gone.returncode == 4, gone.stderr
