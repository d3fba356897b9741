"""Deleting an app in the browser: a wrong name is refused with the reason, the right one
deletes it, the dashboard says what happens next, and the app's page is gone (headless
Chromium against a live panel, 390 px wide in the light scheme: tests/browser_checks.py;
screenshots in the artifacts folder)."""

from __future__ import annotations

from pathlib import Path

from browser_checks import check_view, save_screenshot, shown_at
from playwright.sync_api import Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.models import App, Team

PASSWORD = "correct horse battery staple"


def shoot(page: Page, artifacts: Path, name: str, docs: str | None = None) -> None:
    save_screenshot(page, artifacts, f"app-deletion-{name}", docs)


@shown_at(390, "light")
def test_admin_deletes_an_app_by_typing_its_name(live_panel, page: Page, artifacts):
    url = live_panel
    create_user("admin@example.com", PASSWORD, team_slug="acme")
    create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
               image="registry.local/web:1")  # fmt: skip

    page.goto(f"{url}/")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/apps/web/settings")
    zone = page.locator("#delete")
    expect(zone.get_by_role("heading", name="Delete app")).to_be_visible()
    expect(zone).to_contain_text("Stops and purges the app's Nomad job")
    expect(zone).to_contain_text("This cannot be undone.")
    check_view(page, "app-deletion", 390, "light", artifacts,
               zone.get_by_label("Type web to confirm"),
               zone.get_by_role("button", name="Delete web"))  # fmt: skip
    zone.get_by_label("Type web to confirm").fill("wbe")
    zone.get_by_role("button", name="Delete web").click()
    expect(page.get_by_text("type the app's name, web, to confirm deleting it")).to_be_visible()
    assert App.live().where(App.slug == "web").exists()
    check_view(page, "app-deletion-refused", 390, "light", artifacts,
               page.get_by_text("type the app's name, web, to confirm deleting it"))  # fmt: skip
    shoot(page, artifacts, "refused", docs="app-delete")

    page.locator("#delete").get_by_label("Type web to confirm").fill("web")
    page.locator("#delete").get_by_role("button", name="Delete web").click()
    page.wait_for_url(f"{url}/")
    expect(page.get_by_text("Deleted web: its Nomad job is being stopped")).to_be_visible()
    shoot(page, artifacts, "deleted")
    assert not App.live().where(App.slug == "web").exists()
    assert page.goto(f"{url}/apps/web").status == 404
