"""Creating a team in a real browser (gunicorn, Chromium at 390 px in the dark scheme): a slug
that is not allowed is refused next to its field with how to write it; a good one creates the
team, whose page names its new owner. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from browser_checks import check_view, save_screenshot, shown_at
from playwright.sync_api import Page, expect
from test_browser_layout import PASSWORD, sign_in

from panel.actions.accounts import create_user
from panel.models import Membership, Team


@shown_at(390, "dark")
def test_create_a_team_from_the_teams_page(live_panel, page: Page, artifacts):
    url = live_panel
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    sign_in(page, url, "dev@example.com")

    page.goto(f"{url}/teams")
    form = page.locator("form", has=page.get_by_role("heading", name="Create a team"))
    slug, name = form.get_by_label("Slug"), form.get_by_label("Name")
    create = form.get_by_role("button", name="Create team")
    check_view(page, "teams", 390, "dark", artifacts, slug, name, create)

    slug.fill("Platform Team")
    create.click()
    refusal = page.locator("#slug-error")
    expect(refusal).to_contain_text("slug 'Platform Team' is not allowed: use 1-63 lowercase")
    expect(slug).to_have_attribute("aria-invalid", "true")
    assert not Team.select().where(Team.slug != "acme").exists()
    check_view(page, "teams-refused", 390, "dark", artifacts, refusal)

    slug.fill("platform")  # the locators find the form of the page shown now
    name.fill("Platform")
    create.click()
    page.wait_for_url(f"{url}/teams/platform")
    expect(page.get_by_text("Created the team platform: you are its owner.")).to_be_visible()
    expect(page.get_by_role("cell", name="dev@example.com (you)", exact=True)).to_be_visible()
    check_view(page, "team-created", 390, "dark", artifacts)
    save_screenshot(page, artifacts, "team-created", docs="team-created")
    platform = Team.get(Team.slug == "platform")
    assert platform.name == "Platform"
    owner = Membership.get(Membership.team == platform)
    assert (owner.user.email, owner.role) == ("dev@example.com", "owner")
