"""Cancelling a deployment in a real browser: gunicorn, real workers, the Nomad double, Chromium.

A deploy with no worker running says so at once; a worker that cannot reach Nomad keeps
retrying, and the page follows it live with its Cancel button still there; Cancel (confirmed)
ends it. A second deployment's button goes away by itself once Nomad accepted its job.
At 1280 px in the dark scheme (tests/browser_checks.py); screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_checks import check_view, save_screenshot, shown_at
from playwright.sync_api import Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.models import Deployment, DeploymentStatus, Team

from conftest import free_port, stop_child

PASSWORD = "correct horse battery"
LIVE_TIMEOUT = 30_000  # ms for a worker to take a deployment and the page to show it


@pytest.fixture
def panel_env(deploy_env) -> dict[str, str]:
    """The panel gets the workers' settings: it knows the cluster, so only workers may lack."""
    return deploy_env


def shoot(page: Page, artifacts: Path, name: str, docs: str | None = None) -> None:
    save_screenshot(page, artifacts, f"cancel-{name}", docs)


@shown_at(1280, "dark")
def test_cancel_a_retrying_deployment_then_watch_the_button_go(
    live_panel, page: Page, artifacts, start_worker, deploy_env, nomad_double
):
    url = live_panel
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
               image="registry.local/web:1")  # fmt: skip
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill("dev@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")

    # No worker runs: the deployment page says so at once, and offers to cancel.
    page.goto(f"{url}/apps/web")
    page.get_by_role("button", name="Deploy web").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    expect(page.locator("[data-field=status]")).to_have_text("queued")
    message = page.locator("[data-field=status_message]")
    expect(message).to_contain_text("No worker is running to take it: start one with")
    cancel = page.get_by_role("button", name="Cancel deployment")
    check_view(page, "cancel-no-worker", 1280, "dark", artifacts, cancel)
    shoot(page, artifacts, "no-worker")

    # A worker whose Nomad does not answer: it retries, the page follows, the button stays.
    retrying = start_worker(**{**deploy_env, "NOMAD_ADDR": f"http://127.0.0.1:{free_port()}",
                               "HELIOS_DEPLOY_RETRY_DELAYS": "60,60"})  # fmt: skip
    expect(page.locator("[data-field=status]")).to_have_text("running", timeout=LIVE_TIMEOUT)
    expect(message).to_contain_text("trying again in 60 s", timeout=LIVE_TIMEOUT)
    expect(cancel).to_be_visible()

    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    cancel.click()
    expect(page.locator("[data-field=status]")).to_have_text("cancelled")
    assert asked and asked[0].startswith("Cancel deployment #")
    assert "nothing of it reaches Nomad" in asked[0]
    expect(page.get_by_text("cancelled: nothing of it reached Nomad.")).to_be_visible()
    expect(message).to_have_text("cancelled by dev@example.com before it reached Nomad")
    expect(page.get_by_role("button", name="Cancel deployment")).to_be_hidden()
    check_view(page, "cancel-cancelled", 1280, "dark", artifacts)
    shoot(page, artifacts, "cancelled", docs="deployment-cancelled")
    first = Deployment.select().order_by(Deployment.id).first()
    assert first.status == DeploymentStatus.CANCELLED and first.nomad_job_version is None
    assert nomad_double.requests_to("POST", r"/v1/job/web") == []
    stop_child(retrying)

    # Another deployment, followed live: once Nomad accepted its job, Cancel goes away.
    page.goto(f"{url}/apps/web")
    page.get_by_role("button", name="Deploy web").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    expect(page.get_by_role("button", name="Cancel deployment")).to_be_visible()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    start_worker(**deploy_env)
    expect(page.locator("[data-field=nomad_job_version]")).to_have_text("0", timeout=LIVE_TIMEOUT)
    expect(page.get_by_role("button", name="Cancel deployment")).to_be_hidden()
    assert navigations == []  # hidden by the live stream, not by a reload
    shoot(page, artifacts, "registered")
