"""The panel in a real browser: gunicorn, a real worker, the Nomad double and Chromium.

One walk through what a developer does: sign in, create an app, set a secret (masked on every
page), deploy and watch the status change without a reload, roll back to release 1, create an
API token; screenshots of every main page land in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from panel.actions.accounts import create_user
from panel.models import Deployment, EnvVar, Team

PASSWORD = "correct horse battery"
SECRET = "pg-Pa55word-that-must-never-show"
DEPLOY_TIMEOUT = 60_000  # ms for a deployment to finish against the double


@pytest.fixture
def panel_env(deploy_env) -> dict[str, str]:
    """The panel gets the worker's settings, so it sees the Nomad double too."""
    return deploy_env


@pytest.fixture
def panel_url(live_panel) -> str:
    return live_panel


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"panel-{name}.png"), full_page=True)


def follow_deployment(page: Page) -> None:
    """On a deployment page: wait until it succeeds, proving the page never reloaded."""
    url = page.url
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=DEPLOY_TIMEOUT)
    expect(page.locator("[data-field=finished_at]")).not_to_have_text("—")
    assert page.url == url
    assert navigations == []
    assert page.evaluate("window.__sameDocument") is True


def test_developer_walks_through_the_panel(
    panel_url,
    page: Page,
    artifacts,
    start_worker,
    start_follower,
    deploy_env,
    nomad_double,
    nomad_clock,
):
    url = panel_url
    create_user("dev@example.com", PASSWORD, team_slug="acme", is_operator=True)
    Team.update(name="Acme").where(Team.slug == "acme").execute()

    # Sign in.
    page.goto(f"{url}/")
    page.get_by_label("Email").fill("dev@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    expect(page.get_by_role("link", name="Hosts")).to_be_visible()  # an operator

    # Create an app; a mistake first, shown next to its field.
    page.get_by_role("link", name="Create app").first.click()
    page.get_by_label("Name", exact=True).fill("Web App")
    page.get_by_label("Docker image").fill("registry.local/web:1")
    page.get_by_label("Instances").fill("2")
    page.get_by_role("button", name="Create app").click()
    expect(page.locator("#slug-error")).to_contain_text("is not allowed")
    shoot(page, artifacts, "create-app-error")
    page.get_by_label("Name", exact=True).fill("web")
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url(f"{url}/apps/web")

    # A secret and a plain variable.
    page.get_by_role("link", name="Environment").click()
    page.get_by_label("Name", exact=True).fill("DATABASE_PASSWORD")
    page.get_by_label("Value", exact=True).fill(SECRET)
    page.get_by_role("checkbox", name=re.compile("Secret")).check()
    page.get_by_role("button", name="Set variable").click()
    expect(page.get_by_text("Set secret DATABASE_PASSWORD")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("LOG_LEVEL")
    page.get_by_label("Value", exact=True).fill("info")
    page.get_by_role("button", name="Set variable").click()
    expect(page.get_by_text("Set variable LOG_LEVEL")).to_be_visible()
    assert EnvVar.get(EnvVar.key == "DATABASE_PASSWORD").is_secret
    expect(page.get_by_role("row", name=re.compile("DATABASE_PASSWORD"))).to_contain_text("••••")
    shoot(page, artifacts, "env")

    # Deploy with no worker running yet: the page shows "queued", then follows it live.
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Deploy web").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    expect(page.locator("[data-field=status]")).to_have_text("queued")
    start_worker(**deploy_env)
    start_follower(**deploy_env)
    follow_deployment(page)
    expect(page.locator("[data-field=status_message]")).not_to_be_empty()
    shoot(page, artifacts, "deployment")

    # A second release, then roll back to release 1.
    page.get_by_role("link", name="Overview").click()
    page.get_by_label("Image (optional)").fill("registry.local/web:2")
    page.get_by_role("button", name="Deploy web").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    follow_deployment(page)
    page.get_by_role("link", name="Overview").click()
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Roll back to 1").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    follow_deployment(page)
    assert asked == ["Deploy release 1 of web again, replacing release 2?"]
    last = Deployment.select().order_by(Deployment.id.desc()).get()
    assert last.release.config["rollback_of"] == 1 and last.status == "succeeded"
    job = nomad_double.cluster.current("acme", "web")  # the team's own namespace
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "registry.local/web:1"

    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("button", name="Roll back to 2")).to_be_visible()
    expect(page.get_by_text("rollback to 1")).to_be_visible()
    shoot(page, artifacts, "app")
    page.get_by_role("link", name="Deployments", exact=True).click()
    expect(page.get_by_role("row")).to_have_count(4)  # header + three deployments
    shoot(page, artifacts, "history")
    page.get_by_role("link", name="Settings").click()
    shoot(page, artifacts, "settings")

    # An API token: shown once, with a copy button.
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("laptop CLI")
    page.get_by_label("deploy").check()
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("Your new token").input_value()
    assert secret.startswith("hel_")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("[data-copy-result]")).not_to_be_empty()
    shoot(page, artifacts, "token-created")
    page.get_by_role("link", name="Done: back to API tokens").click()
    assert secret not in page.content()
    shoot(page, artifacts, "tokens")

    page.get_by_role("link", name="Teams").click()
    page.get_by_role("link", name="Acme").click()
    shoot(page, artifacts, "team")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_text("v1.deployment.succeeded").first).to_be_visible()
    shoot(page, artifacts, "audit")
    page.get_by_role("link", name="Apps", exact=True).click()
    # Health: what runs, once the worker sampled it; the last deployment's outcome before.
    expect(page.get_by_role("row", name=re.compile("web"))).to_contain_text(
        re.compile("healthy|succeeded")
    )
    shoot(page, artifacts, "dashboard")

    # The secret's value is in no page the panel serves.
    for path in ("/", "/apps/web", "/apps/web/env", "/apps/web/settings", "/apps/web/deployments",
                 f"/apps/web/deployments/{last.id}", f"/apps/web/deployments/{last.id}.json",
                 "/audit", "/teams/acme", "/tokens"):  # fmt: skip
        page.goto(f"{url}{path}")
        assert SECRET not in page.content(), path
