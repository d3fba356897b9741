"""Headless Chromium against the real panel under gunicorn, a follower, Redis and SQLite, with the
Nomad double: the deployment page shows its log arriving live and, once the deploy failed, why
(the unhealthy allocation and what it printed); the Logs tab follows a running app, pauses
without losing lines and filters by stream. The double's clock stands still until the page
loaded, so what the page shows afterwards came over its live streams. The app page shows what
runs (instances with their Consul checks, charts, health) and follows its health live."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Deployment, DeploymentStatus, Team
from panel.reconcile.jobs import deploy_app

from conftest import wait_until

PASSWORD = "correct horse battery"
SECRET = "p4ss-" + "q" * 20


@pytest.fixture
def web(deploy_env, db, redis_conn):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", count=1, redis_conn=redis_conn,
    )  # fmt: skip
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app, key="DB_PASSWORD", value=SECRET, secret=True, cipher=cipher)
    return app


def sign_in(page, url: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def submit(app, redis_conn) -> Deployment:
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn
    )
    deploy_app(requested.deployment.id)
    return Deployment.get_by_id(requested.deployment.id)


def test_the_deployment_page_shows_its_log_live_and_why_it_failed(
    web, redis_conn, nomad_double, run_follower, live_panel, page, artifacts
):
    from nomad_double.controls import Ticker

    nomad_double.auto_advance = False
    nomad_double.set_health(False)
    nomad_double.set_logs(
        f"connecting with password {SECRET}\nTraceback (most recent call last):\n"
        "KeyError: 'DATABASE_URL'\n", "stderr",
    )  # fmt: skip
    run_follower()
    deployment = submit(web, redis_conn)
    sign_in(page, live_panel)
    page.goto(f"{live_panel}/apps/web/deployments/{deployment.id}")
    log = page.locator(".deploy-log pre")
    expect(log).to_contain_text("queued release v1")
    expect(log).not_to_contain_text("KeyError")
    expect(page.locator("[data-failure]")).to_be_hidden()
    page.evaluate("window.helios_loaded_once = true")  # gone if the page reloads
    ticker = Ticker(0.05, nomad_double.cluster.step)
    ticker.start()
    try:
        expect(log).to_contain_text("Started: Task started by client", timeout=30_000)
        expect(log).to_contain_text("stderr: KeyError: 'DATABASE_URL'", timeout=30_000)
        expect(log).to_contain_text("[secret DB_PASSWORD]", timeout=30_000)
        failure = page.locator("[data-failure]")
        expect(failure).to_be_visible(timeout=60_000)
        expect(failure).to_contain_text("Alloc Unhealthy: Task not running for min_healthy_time")
        expect(failure).to_contain_text("KeyError: 'DATABASE_URL'")
    finally:
        ticker.stop()
    row = Deployment.get_by_id(deployment.id)
    assert row.status in (DeploymentStatus.FAILED, DeploymentStatus.REVERTED)
    page.screenshot(path=str(artifacts / "deployment-failed.png"), full_page=True)
    assert page.evaluate("window.helios_loaded_once") is True
    assert SECRET not in page.content()


def test_the_logs_tab_follows_a_running_app_pauses_and_filters(
    web, redis_conn, nomad_double, run_follower, live_panel, page, artifacts
):
    nomad_double.auto_advance = False
    nomad_double.set_logs("GET / 200 1ms\n", "stdout")
    nomad_double.set_logs("warming up\n", "stderr")
    run_follower()
    deployment = submit(web, redis_conn)

    def done():
        nomad_double.tick()
        return DeploymentStatus(Deployment.get_by_id(deployment.id).status).is_terminal

    wait_until(done, timeout=30, interval=0.05, what="the deploy")
    sign_in(page, live_panel)
    page.goto(f"{live_panel}/apps/web/logs")
    log = page.locator(".app-log pre")
    expect(log).to_contain_text("web/", timeout=20_000)
    expect(log).to_contain_text("GET / 200 1ms", timeout=20_000)
    expect(log).to_contain_text("warming up")
    page.evaluate("window.helios_loaded_once = true")

    nomad_double.set_logs("GET / 200 1ms\nGET /about 200 2ms\n", "stdout")
    expect(log).to_contain_text("GET /about 200 2ms", timeout=20_000)

    page.get_by_role("button", name="Pause").click()
    nomad_double.set_logs("GET / 200 1ms\nGET /about 200 2ms\nGET /held 200 3ms\n", "stdout")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(log).to_contain_text("GET /held 200 3ms", timeout=20_000)

    page.get_by_label("stderr").uncheck()
    expect(log).to_contain_text("GET /held 200 3ms", timeout=20_000)
    expect(log).not_to_contain_text("warming up")
    expect(log).to_contain_text("helios: queued release v1")  # steps belong to no process
    page.screenshot(path=str(artifacts / "logs.png"), full_page=True)
    assert page.evaluate("window.helios_loaded_once") is True
    shown = log.inner_text()
    assert shown.count("GET /held 200 3ms") == 1


def test_the_app_page_shows_instances_charts_and_health_live(
    web, redis_conn, nomad_double, run_follower, live_panel, page, artifacts
):
    from panel.reconcile.observe import sample

    nomad_double.auto_advance = False
    run_follower()
    deployment = submit(web, redis_conn)

    def done():
        nomad_double.tick()
        return DeploymentStatus(Deployment.get_by_id(deployment.id).status).is_terminal

    wait_until(done, timeout=30, interval=0.05, what="the deploy")
    settings = Settings.from_env()
    for at in range(1_000, 0, -30):  # half an hour of samples, the last one now
        sample(settings, redis_conn, now=time.time() - at)
    sign_in(page, live_panel)
    page.goto(f"{live_panel}/apps/web")
    live = page.locator(".live-state")
    expect(live.locator("[data-health-state]")).to_have_text("healthy")
    expect(live).to_contain_text("1 of 1 instances healthy")
    expect(live.locator("tbody[data-instances] tr")).to_have_count(1)
    expect(live.locator("polyline.chart-line")).to_have_count(2)
    expect(live.locator("polyline.chart-limit")).to_have_count(2)
    page.evaluate("window.helios_loaded_once = true")
    with nomad_double.cluster.lock:  # the instance crashes, as its client reports it
        for alloc in nomad_double.cluster.allocs.values():
            if alloc["DesiredStatus"] == "run":
                alloc["TaskStates"]["web"]["State"] = "pending"
                alloc["TaskStates"]["web"]["Restarts"] = 1
                alloc["TaskStates"]["web"]["Events"].append(
                    {"Type": "Terminated", "Time": time.time_ns(),
                     "DisplayMessage": "Exit Code: 137, Exit Message: \"OOM Killed\""}
                )  # fmt: skip
                nomad_double.cluster.touch("allocs", alloc)
        nomad_double.cluster.commit("AllocationUpdated")
    sample(settings, redis_conn)
    expect(live.locator("[data-health-state]")).to_have_text("down", timeout=20_000)
    expect(live).to_contain_text("OOM Killed")
    assert page.evaluate("window.helios_loaded_once") is True
    page.screenshot(path=str(artifacts / "app-live.png"), full_page=True)


def test_the_app_page_shows_each_consul_check_and_follows_it_live(
    web, redis_conn, nomad_double, consul_double, run_follower, live_panel, page
):
    """A check that goes critical in Consul reaches the open page: its badge, its output on
    hover, and the app down with the check named."""
    from panel.reconcile.observe import sample

    nomad_double.auto_advance = False
    run_follower()
    deployment = submit(web, redis_conn)

    def done():
        nomad_double.tick()
        return DeploymentStatus(Deployment.get_by_id(deployment.id).status).is_terminal

    wait_until(done, timeout=30, interval=0.05, what="the deploy")
    settings = Settings.from_env(consul_addr=consul_double.url)
    sample(settings, redis_conn)
    sign_in(page, live_panel)
    page.goto(f"{live_panel}/apps/web")
    live = page.locator(".live-state")
    expect(live.locator(".badge.check-passing")).to_have_text("alive: passing")
    page.evaluate("window.helios_loaded_once = true")
    (alloc_id,) = [a["ID"] for a in nomad_double.cluster.allocs.values()
                   if a["DesiredStatus"] == "run"]  # fmt: skip
    said = "HTTP GET http://10.0.0.10:20001/healthz: 503 Service Unavailable Output: <b>no db</b>"
    consul_double.set_check(alloc_id, "critical", said)
    sample(settings, redis_conn)
    expect(live.locator("[data-health-state]")).to_have_text("down", timeout=20_000)
    critical = live.locator("tbody[data-instances] .badge.check-critical")
    expect(critical).to_have_text("alive: critical")
    expect(critical).to_have_attribute("title", said)  # as text, never as markup
    expect(live.locator("[data-health-reason]")).to_contain_text(f"check 'alive' critical: {said}")
    assert page.evaluate("window.helios_loaded_once") is True  # it came over the live stream
