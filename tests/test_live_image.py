"""Deploying another image makes it the app's image (the next plain deploy runs it too), and the
pages say which image runs now, not only which one is configured: deployments go through the
engine to the Nomad double and the follower records their end."""

from __future__ import annotations

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, request_rollback, update_app
from panel.config import Settings
from panel.models import App, Deployment, DeploymentStatus, Event, Team
from panel.reconcile.jobs import deploy_app

from conftest import wait_until

PASSWORD = "correct horse battery"


@pytest.fixture
def web(deploy_env, nomad_double, run_follower, db, redis_conn):
    """(owner, app): an image app of team acme, the double's clock in the test's hands and a
    follower recording deployments' ends."""
    nomad_double.auto_advance = False
    run_follower()
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", count=1, redis_conn=redis_conn,
    )  # fmt: skip
    return owner, app


def _deployed(double, app, redis_conn, **options) -> Deployment:
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, **options
    )
    deploy_app(requested.deployment.id)
    return _settled(double, requested.deployment.id)


def _settled(double, deployment_id: int) -> Deployment:
    def ended():
        double.tick()
        row = Deployment.get_by_id(deployment_id)
        return DeploymentStatus(row.status).is_terminal and row

    done = wait_until(ended, timeout=30, interval=0.05, what=f"deployment #{deployment_id}")
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    return done


def _header(client, slug: str) -> str:
    page = client.get(f"/apps/{slug}").get_data(as_text=True)
    start = page.index('class="app-head"')
    return " ".join(page[start : page.index("</div>", start)].split())


def test_a_deployed_image_sticks_and_the_pages_show_what_runs(
    web, nomad_double, redis_conn, client, auth
):
    owner, app = web
    auth.login("owner@example.com", PASSWORD)
    assert "registry.local/web:1</code> (not deployed yet)" in _header(client, "web")

    _deployed(nomad_double, app, redis_conn)
    hotfix = _deployed(nomad_double, app, redis_conn, image="registry.local/web:hotfix")
    assert hotfix.release.image == "registry.local/web:hotfix"
    assert App.get_by_id(app.id).image == "registry.local/web:hotfix"
    updated = Event.select().where(Event.subject == "v1.app.updated").get()
    assert updated.data == {"app": "web", "app_id": app.id, "fields": ["image"]}

    # The next plain deploy runs the hotfix, not the image the app was created with.
    plain = _deployed(nomad_double, App.get_by_id(app.id), redis_conn)
    assert plain.release.image == "registry.local/web:hotfix"
    job = nomad_double.cluster.current("acme", "web")  # the team's own namespace
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "registry.local/web:hotfix"

    # A rollback runs release 1's image; the header says so, and what the next deploy runs.
    requested = request_rollback(
        actor=None, app=App.get_by_id(app.id), release_number=1, settings=Settings.from_env(),
        redis_conn=redis_conn,
    )  # fmt: skip
    deploy_app(requested.deployment.id)
    _settled(nomad_double, requested.deployment.id)
    header = _header(client, "web")
    assert "Runs <code data-live-image>registry.local/web:1</code>" in header
    assert "the next deploy runs <code>registry.local/web:hotfix</code>" in header
    dashboard = client.get("/").get_data(as_text=True)
    assert "<code>registry.local/web:1</code>" in dashboard

    # Changing the image in the settings is not deploying it: the header still says what runs.
    update_app(actor=owner, app=App.get_by_id(app.id), image="registry.local/web:2")
    header = _header(client, "web")
    assert "Runs <code data-live-image>registry.local/web:1</code>" in header
    assert "the next deploy runs <code>registry.local/web:2</code>" in header


def test_changes_since_the_live_release_are_listed_and_deployed_from_the_app_page(
    web, nomad_double, redis_conn, client, auth
):
    from panel.actions.apps import add_domain, pending_for, set_env
    from panel.actions.tokens import create_token
    from panel.crypto import SecretCipher

    owner, app = web
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=owner, app=app, key="LOG_LEVEL", value="info", secret=False, cipher=cipher)
    set_env(actor=owner, app=app, key="TOKEN", value="s3cr3t-1", secret=True, cipher=cipher)
    assert pending_for(app) is None  # never deployed: nothing is live to compare with
    bearer = {"Authorization": f"Bearer {create_token(owner, 'cli', ['read']).secret}"}
    answer = client.get("/api/v1/apps/web/pending", headers=bearer)
    assert answer.get_json() == {"live_release": None, "changes": []}
    _deployed(nomad_double, app, redis_conn)
    assert pending_for(app).changes == []
    auth.login("owner@example.com", PASSWORD)
    assert "Changes not deployed yet" not in client.get("/apps/web").get_data(as_text=True)

    update_app(actor=owner, app=app, count=3, image="registry.local/web:2")
    set_env(actor=owner, app=app, key="LOG_LEVEL", value="debug", secret=False, cipher=cipher)
    set_env(actor=owner, app=app, key="TOKEN", value="s3cr3t-2", secret=True, cipher=cipher)
    set_env(actor=owner, app=app, key="NEW", value="1", secret=False, cipher=cipher)
    add_domain(actor=owner, app=app, hostname="shop.example.com", base_domain="apps.test")
    expected = [
        "image: registry.local/web:1 → registry.local/web:2",
        "count: 1 → 3",
        "variable LOG_LEVEL: info → debug",
        "variable NEW: added (1)",
        "secret TOKEN: set to a new value",
        "domain shop.example.com: added",
    ]
    assert pending_for(App.get_by_id(app.id)).changes == expected
    page = client.get("/apps/web").get_data(as_text=True)
    assert "Since release 1 (live)" in page
    for line in expected:
        assert f"<code>{line}</code>" in page
    assert "s3cr3t" not in page
    answer = client.get("/api/v1/apps/web/pending", headers=bearer)
    assert answer.get_json() == {"live_release": 1, "changes": expected}

    # Nomad's plan of the same deploy, on its own page: the count and the variable change.
    assert 'href="/apps/web/plan"' in page
    extensions = client.application.extensions
    panel_settings = extensions["helios.settings"]
    extensions["helios.settings"] = panel_settings.replace(nomad_addr=nomad_double.url)
    plan = client.get("/apps/web/plan").get_data(as_text=True)
    assert "Count: &#39;1&#39; =&gt; &#39;3&#39;" in plan, plan
    assert "Env[LOG_LEVEL]: &#39;info&#39; =&gt; &#39;debug&#39;" in plan, plan
    assert "s3cr3t" not in plan
    running = nomad_double.cluster.current("acme", "web")
    assert running["TaskGroups"][0]["Count"] == 1  # asking for a plan changed nothing

    # "Deploy these changes" is the plain deploy form: afterwards nothing is pending.
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/apps/web/deploy", data={"csrf_token": token})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    queued = Deployment.select().order_by(Deployment.id.desc()).get()
    deploy_app(queued.id)
    _settled(nomad_double, queued.id)
    assert pending_for(App.get_by_id(app.id)).changes == []
    assert "Changes not deployed yet" not in client.get("/apps/web").get_data(as_text=True)


def test_the_plan_page_says_when_no_cluster_is_configured(db, redis_conn, client, auth):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", redis_conn=redis_conn,
    )  # fmt: skip
    auth.login("owner@example.com", PASSWORD)
    answer = client.get("/apps/web/plan")
    assert answer.status_code == 200
    assert "No Nomad cluster is configured, so there is no plan to show: set NOMAD_ADDR" in (
        answer.get_data(as_text=True)
    )
