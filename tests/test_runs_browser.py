"""The Run tab in a real browser (gunicorn, a real worker and follower, the Nomad double running
the command's batch job, Chromium at 1280 px in the light scheme): a command typed in the form
runs once, and its page follows the output to the exit code. Then a variable set since the
live release shows in "Changes not deployed yet", and "Deploy these changes" deploys it.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from browser_checks import check_view, save_screenshot, shown_at
from playwright.sync_api import Page, expect
from test_browser_layout import sign_in
from test_cli_run import owner, script, web  # noqa: F401 (fixtures)

from panel.actions.apps import set_env
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Deployment, OneOffRun, RunStatus

LIVE_TIMEOUT = 30_000  # ms for the worker, follower and double to run it and the page to show it


@pytest.fixture
def panel_env(deploy_env) -> dict[str, str]:
    """The panel gets the worker's settings, so it sees the Nomad double too."""
    return deploy_env


@shown_at(1280, "light")
def test_run_a_command_and_follow_it_then_deploy_the_pending_changes(
    live_panel, page: Page, artifacts, owner, web, nomad_double, nomad_clock, deploy_env,  # noqa: F811
    start_worker, start_follower, redis_conn,
):  # fmt: skip
    url = live_panel
    nomad_double.set_batch_script(script, kind="run")
    start_worker(**deploy_env)
    start_follower(**deploy_env)
    sign_in(page, url, owner.email)

    page.goto(f"{url}/apps/web/runs")
    command = page.get_by_label("Command", exact=True)
    run = page.get_by_role("button", name="Run", exact=True)
    check_view(page, "run-form", 1280, "light", artifacts, command, run)
    command.fill("echo hello from web")
    run.click()
    page.wait_for_url(re.compile(r".*/apps/web/runs/\d+$"))
    output = page.locator("[data-log]")
    expect(output).to_contain_text("hello from web", timeout=LIVE_TIMEOUT)
    expect(output).to_contain_text(
        "helios: the command exited with code 0 (succeeded)", timeout=LIVE_TIMEOUT
    )
    check_view(page, "run-output", 1280, "light", artifacts, output)
    ran = OneOffRun.get()
    assert ran.command == ["echo", "hello", "from", "web"]
    assert (ran.status, ran.exit_code) == (RunStatus.SUCCEEDED.value, 0)
    page.reload()  # the run's facts are as they were when the page was drawn
    expect(page.locator("xpath=//dt[.='Exit code']/following-sibling::dd[1]")).to_have_text("0")
    expect(page.locator(".section-head .badge")).to_have_text("succeeded")
    expect(output).to_contain_text("hello from web")
    save_screenshot(page, artifacts, "run-output", docs="run")

    # A variable set since release 1: pending, named on the app page, deployed by its button.
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=web, key="GREETING", value="hi", secret=False, cipher=cipher,
            redis_conn=redis_conn)  # fmt: skip
    page.goto(f"{url}/apps/web")
    pending = page.locator("#pending")
    expect(pending.locator("[data-pending-changes]")).to_contain_text("GREETING")
    deploy = pending.get_by_role("button", name="Deploy these changes")
    pending.scroll_into_view_if_needed()
    check_view(page, "pending", 1280, "light", artifacts, deploy)
    save_screenshot(page, artifacts, "pending-changes", docs="app-pending")
    deployments = Deployment.select().count()
    deploy.click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=LIVE_TIMEOUT)
    assert Deployment.select().count() == deployments + 1
    page.goto(f"{url}/apps/web")
    expect(page.get_by_role("heading", name="Changes not deployed yet")).to_be_hidden()
