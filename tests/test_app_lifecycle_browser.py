"""The app page's Instances card in a real browser (gunicorn, Chromium): Scale with a count,
Restart and Stop each confirmed with what will happen, Start back. The Nomad side is
tests/test_app_lifecycle.py's; here the jobs are only queued. At 390 px in the dark scheme
(tests/browser_checks.py); screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import redis
from browser_checks import check_view, save_screenshot, shown_at
from playwright.sync_api import Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.models import App, Deployment, Event, Team

PASSWORD = "correct horse battery"


def shoot(page: Page, artifacts: Path, name: str, docs: str | None = None) -> None:
    save_screenshot(page, artifacts, f"lifecycle-{name}", docs)


@shown_at(390, "dark")
def test_scale_restart_stop_and_start_from_the_app_page(
    live_panel, page: Page, artifacts, settings, redis_url
):
    url = live_panel
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    web = create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
                     image="registry.local/web:1", count=2)  # fmt: skip
    first = request_deploy(actor=None, app=web, settings=settings,
                           redis_conn=redis.Redis.from_url(redis_url)).deployment  # fmt: skip
    Deployment.update(status="succeeded").where(Deployment.id == first.id).execute()

    page.goto(f"{url}/login")
    page.get_by_label("Email").fill("dev@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/apps/web")
    card = page.locator("[data-lifecycle]")
    expect(card.locator("[data-instance-count]")).to_have_text("2")
    card.get_by_label("Instances").fill("3")
    card.get_by_role("button", name="Scale").click()
    page.wait_for_url(f"{url}/apps/web")
    expect(page.get_by_text("web runs 3 instance(s) from now on.")).to_be_visible()
    expect(card.locator("[data-instance-count]")).to_have_text("3")
    expect(card.locator("[data-instance-changes]")).to_contain_text("scaled from 2 to 3")
    card.scroll_into_view_if_needed()
    buttons = [card.get_by_role("button", name=name) for name in ("Scale", "Restart", "Stop")]
    check_view(page, "lifecycle-scaled", 390, "dark", artifacts, card.get_by_label("Instances"),
               *buttons)  # fmt: skip
    shoot(page, artifacts, "scaled", docs="app-instances")

    # Out of range: said on the page, nothing changed.
    card.get_by_label("Instances").fill("99")
    card.get_by_role("button", name="Scale").click()
    expect(page.get_by_text("count 99 is out of range")).to_be_visible()
    assert App.get(App.slug == "web").count == 3

    # Restart asks first, saying what happens; dismissed, nothing is queued.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    card.get_by_role("button", name="Restart").click()
    assert asked and asked[0].startswith("Restart web? Each of its 3 instance(s) is replaced")
    assert "the app stays up" in asked[0]
    assert Deployment.select().count() == 1

    # Stop, confirmed: the card says it is stopped and offers Start.
    asked.clear()
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    card.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("web is stopped: its instances stop now.")).to_be_visible()
    assert asked[0].startswith("Stop web? All 3 instance(s) stop")
    expect(card.locator("[data-app-stopped]")).to_have_text("stopped")
    expect(card.get_by_role("button", name="Restart")).to_be_hidden()
    check_view(page, "lifecycle-stopped", 390, "dark", artifacts,
               card.get_by_role("button", name="Start web"))  # fmt: skip
    shoot(page, artifacts, "stopped")

    card.get_by_role("button", name="Start web").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    assert App.get(App.slug == "web").stopped_at is None
    started = Event.get(Event.subject == "v1.app.started")
    assert started.data["reason"] == "start" and started.actor == "dev@example.com"
