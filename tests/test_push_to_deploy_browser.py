"""End to end in headless Chromium: a signed GitHub push → the build page shows the build, then
the canary deploy of the built digest, then success, without a reload.

Real parts: gunicorn (the panel and its webhook endpoint), a `helios worker` process (build and
deploy jobs), a follower, Redis, SQLite. Nomad and GitHub are the loopback doubles. The
double's clock stands still until the page has loaded, so what the page shows after that came
over its live stream.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from playwright.sync_api import Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import App, Build, Team, User
from panel.schema.github import sign

from conftest import wait_until
from github_double import GitHubDouble, Repo

PASSWORD = "correct horse battery"
TOKEN = "gho_" + "c" * 36
REPO_ID = 90210
SHA = "d" * 40
SECRET = "hook-secret-" + "e" * 20


@pytest.fixture
def github():
    double = GitHubDouble(TOKEN, [Repo(id=REPO_ID, full_name="acme/shop")]).start()
    yield double
    double.stop()
    assert not double.problems, double.problems


@pytest.fixture
def build_env(deploy_env, github, monkeypatch, nomad_double) -> dict[str, str]:
    nomad_double.add_node("build")
    extra = {
        "HELIOS_REGISTRY": "registry.test:5000",
        "HELIOS_GITHUB_API_URL": github.url,
        "HELIOS_DEPLOY_TIMEOUT": "120",
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return {**deploy_env, **extra}


@pytest.fixture
def panel_env(build_env) -> dict[str, str]:
    return build_env


@pytest.fixture
def shop(build_env, db, redis_conn) -> App:
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    cipher = SecretCipher.from_settings(Settings.from_env())
    User.update(github_token=cipher.encrypt(TOKEN)).where(User.id == owner.id).execute()
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="shop", repo="acme/shop",
        branch="main", redis_conn=redis_conn,
    )  # fmt: skip
    App.update(
        github_repo_id=REPO_ID, webhook_secret=cipher.encrypt(SECRET), connected_by=owner
    ).where(App.id == app.id).execute()
    return App.get_by_id(app.id)


def push(url: str, body: bytes, delivery: str) -> requests.Response:
    return requests.post(
        f"{url}/webhooks/github",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(SECRET, body),
            "User-Agent": "GitHub-Hookshot/test",
        },
        timeout=10,
    )


def test_a_signed_push_builds_then_deploys_live_on_the_build_page(
    shop, live_panel, start_worker, build_env, run_follower, nomad_double, page: Page
):
    nomad_double.auto_advance = False  # the build's log collectors GET: no step until the ticker
    start_worker(**build_env)
    run_follower()
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": SHA,
            "deleted": False,
            "repository": {"id": REPO_ID, "full_name": "acme/shop"},
        }
    ).encode()
    answer = push(live_panel, body, str(uuid.uuid4()))
    assert answer.status_code == 202, answer.text
    build = wait_until(
        lambda: Build.get_or_none(Build.app == shop.id) and Build.get(Build.app == shop.id),
        what="the push's build",
    )
    wait_until(
        lambda: Build.get_by_id(build.id).nomad_job_id, timeout=30, what="the build job"
    )  # the worker registered it; the double's clock stands still, so it runs no further

    page.goto(f"{live_panel}/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_panel}/")
    page.goto(f"{live_panel}/apps/shop/builds/{build.number}")
    status = page.locator("[data-build-field=status]")
    expect(status).to_have_text("running")
    expect(page.locator("[data-live-note]")).to_contain_text("follows the build")
    page.evaluate("window.helios_loaded_once = true")  # gone if the page reloads
    deploy_card = page.locator(".deployment-of-build")
    expect(deploy_card).to_be_hidden()

    from nomad_double.controls import Ticker

    ticker = Ticker(0.05, nomad_double.cluster.step)
    ticker.start()
    try:
        expect(status).to_have_text("succeeded", timeout=30_000)
        expect(page.locator("[data-build-field=image]")).to_contain_text(
            "registry.test:5000/acme/shop@sha256:"
        )
        expect(deploy_card).to_be_visible(timeout=30_000)
        expect(page.locator("[data-deploy-field=status]")).to_have_text("succeeded", timeout=60_000)
        expect(page.locator("[data-live-note]")).to_have_text("Finished.")
    finally:
        ticker.stop()
    assert page.evaluate("window.helios_loaded_once") is True  # no reload happened
    web = nomad_double.cluster.current("acme", "shop")  # the team's own namespace
    assert web["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == Build.get_by_id(build.id).image
    assert web["TaskGroups"][0]["Update"]["Canary"] >= 1  # the canary rollout of today
