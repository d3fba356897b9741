"""Drift in a real browser: an app deployed through the engine against the Nomad double, its job
run again by hand with another image (as `nomad job run` would), the scheduled check's pass;
the dashboard flags the app, its page shows what a re-apply would change, and the re-apply
button (after a confirmation naming what happens) deploys the live release again until the
check finds the app in sync. Screenshots land in test-artifacts/."""

from __future__ import annotations

import copy
import re

from playwright.sync_api import expect
from test_drift import app_row, check, deployed, double, run_by_hand  # noqa: F401 (fixtures)

from panel.actions.accounts import create_user
from panel.config import Settings
from panel.models import Deployment, DeploymentStatus
from panel.reconcile.jobs import deploy_app, render_deployment

from conftest import wait_until

PASSWORD = "correct horse battery"


def test_a_drifted_app_is_flagged_and_reapplied_from_its_page(
    double,  # noqa: F811 (the fixture imported above)
    app_row,  # noqa: F811
    redis_conn,
    live_panel,
    page,
    artifacts,
):
    create_user("owner@example.com", PASSWORD, team_slug="acme")
    live = deployed(double, app_row, redis_conn)
    body = copy.deepcopy(render_deployment(live, Settings.from_env()))
    body["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["image"] = "registry.local/web:hotfix"
    run_by_hand(double, body)
    double.tick(3)
    assert check(redis_conn).state == "drifted"

    page.goto(f"{live_panel}/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_panel}/")
    flag = page.get_by_role("link", name="drifted")
    expect(flag).to_be_visible()
    flag.click()
    page.wait_for_url(re.compile(r".*/apps/web#drift$"))

    card = page.locator("#drift")
    expect(card).to_contain_text("The job in Nomad was changed outside Helios.")
    expect(card.locator("pre.diff")).to_contain_text("registry.local/web:hotfix")
    expect(card.locator("pre.diff")).to_contain_text("registry.local/web:1")
    card.screenshot(path=str(artifacts / "app-drift.png"))
    page.screenshot(path=str(artifacts / "app-drifted-page.png"), full_page=True)

    confirmations: list[str] = []

    def accept(dialog) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    card.get_by_role("button", name="Re-apply release 1").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    assert confirmations == ["Deploy release 1 of web again over the job in Nomad?"]
    reapply = Deployment.get_by_id(int(page.url.rsplit("/", 1)[1]))
    assert reapply.release_id == live.release_id and reapply.id != live.id
    deploy_app(reapply.id)

    def ended():
        double.tick()
        return DeploymentStatus(Deployment.get_by_id(reapply.id).status).is_terminal

    wait_until(ended, timeout=30, interval=0.05, what="the re-apply")
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=20_000)
    job = double.cluster.current("default", "web")
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "registry.local/web:1"

    assert check(redis_conn).state == "in_sync"
    page.goto(f"{live_panel}/apps/web")
    expect(page.locator("#drift")).to_contain_text("in sync")
    page.goto(f"{live_panel}/")
    expect(page.get_by_role("link", name="drifted")).to_have_count(0)
