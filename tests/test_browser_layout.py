"""Every main page in a real browser at desk and phone widths, in light and dark, and the buttons
that ask first.

At 1280x800 and 390x844, in the light and the dark colour scheme (the OS setting the browser
passes on as prefers-color-scheme): the document never scrolls sideways (wide tables scroll in
their own box), the body's text stands out from its background (dark in the dark scheme), and
badges and chart lines stay readable against what is behind them. Screenshots land in
test-artifacts/layout-<page>-<width>-<scheme>.png for a person to look at.

Roll back and "Apply to all hosts" ask first, naming what will happen; dismissing the question
sends nothing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from test_drift import app_row, double, settle  # noqa: F401 (fixtures)

from panel.actions.accounts import create_user
from panel.actions.apps import request_deploy
from panel.actions.hosts import add_host
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Deployment, DeploymentStatus, Host, ProvisionRun
from panel.reconcile.jobs import deploy_app
from panel.reconcile.observe import sample

PASSWORD = "correct horse battery"
OPERATOR = "ops@example.com"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
WIDTHS = {1280: 800, 390: 844}  # viewport width: height, in CSS pixels
SCHEMES = ("light", "dark")
MIN_TEXT_CONTRAST = 7.0  # body text on the page background (WCAG AAA)
MIN_BADGE_CONTRAST = 4.5  # a badge's small bold text on its own background (WCAG AA)
MIN_LINE_CONTRAST = 3.0  # chart lines and sparklines on what is behind them (non-text, AA)

# What the page measures: its overflow, and the colours of text, badges and chart lines.
MEASURE = """() => {
  const rgb = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const [r, g, b, a] = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r, g, b, a: a === undefined ? 1 : a};
  };
  const backdrop = (element) => {  // the first opaque background behind an element
    for (let el = element; el; el = el.parentElement) {
      const colour = rgb(getComputedStyle(el).backgroundColor);
      if (colour && colour.a > 0.5) return colour;
    }
    const page = rgb(getComputedStyle(document.documentElement).backgroundColor);
    return page && page.a > 0.5 ? page : {r: 255, g: 255, b: 255, a: 1};
  };
  const shown = (el) => el.getClientRects().length > 0;
  const badges = [...document.querySelectorAll('.badge')].filter(shown).map((el) => ({
    text: el.textContent.trim(), classes: el.className,
    fg: rgb(getComputedStyle(el).color), bg: backdrop(el)}));
  const lines = [...document.querySelectorAll('.chart-line, .chart-limit, svg.spark polyline')]
    .filter(shown).map((el) => {
      const svg = el.closest('svg');
      const box = svg.querySelector('.chart-bg');
      return {classes: el.getAttribute('class') || 'spark', fg: rgb(getComputedStyle(el).stroke),
              bg: box ? rgb(getComputedStyle(box).fill) : backdrop(svg)};
    });
  const clipped = (el) => {  // inside a box that scrolls or clips its overflow (roughly)
    if (['absolute', 'fixed'].includes(getComputedStyle(el).position)) return false;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== 'visible') return true;
    }
    return false;
  };
  const wide = [...document.body.querySelectorAll('*')]
    .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5 && !clipped(el))
    .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${el.className} ` +
      `(${Math.round(el.getBoundingClientRect().right)} px)`);
  const body = getComputedStyle(document.body);
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    fg: rgb(body.color), bg: rgb(body.backgroundColor), badges, lines, wide,
    charts: document.querySelectorAll('.chart-line').length,
    sparks: document.querySelectorAll('svg.spark polyline').length,
  };
}"""


def luminance(colour: dict) -> float:
    """Relative luminance (WCAG 2) of an sRGB colour."""

    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    return (
        0.2126 * channel(colour["r"])
        + 0.7152 * channel(colour["g"])
        + 0.0722 * channel(colour["b"])
    )


def contrast(one: dict, other: dict) -> float:
    """WCAG contrast ratio of two colours (1 to 21)."""
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def sign_in(page: Page, url: str, email: str = OPERATOR) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def deploy(double, app, redis_conn, image: str | None = None) -> Deployment:  # noqa: F811
    """Deploy through the engine against the Nomad double; the deployment once it succeeded."""
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn, image=image)  # fmt: skip
    deploy_app(requested.deployment.id)
    done = settle(double, requested.deployment.id)
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    return done


@pytest.fixture
def deployed_twice(double, app_row, redis_conn) -> Deployment:  # noqa: F811
    """web with releases 1 and 2 (2 live), sampled a few times so its charts have lines, and
    four hosts with pinned keys; the operator is an owner of web's team."""
    create_user(OPERATOR, PASSWORD, team_slug="acme", is_operator=True)
    deploy(double, app_row, redis_conn)
    live = deploy(double, app_row, redis_conn, image="registry.local/web:2")
    settings = Settings.from_env()
    now = time.time()
    for back in range(3500, -1, -250):  # points of CPU and memory use across the last hour
        sample(settings, redis_conn, now=now - back)
    cipher = SecretCipher.from_settings(settings)
    for number, name in enumerate(("edge-1", "node-1", "node-2", "node-3"), start=1):
        add_host(actor=None, name=name, address=f"10.0.0.{number}", cipher=cipher,
                 groups=["edge"] if name.startswith("edge") else ["nomad_clients"],
                 ssh_host_keys=HOST_KEY, redis_conn=redis_conn)  # fmt: skip
    return live


@pytest.fixture
def panel_env(deploy_env) -> dict[str, str]:
    """The panel gets the worker's settings, so it sees the Nomad double too."""
    return deploy_env


def check_page(page: Page, name: str, width: int, scheme: str, artifacts: Path) -> dict:
    """Measure the page as shown; save its screenshot; fail on anything unreadable or wide."""
    page.screenshot(path=str(artifacts / f"layout-{name}-{width}-{scheme}.png"), full_page=True)
    seen = page.evaluate(MEASURE)
    where = f"{name} at {width} px, {scheme}"
    assert seen["innerWidth"] == width, where
    assert seen["scrollWidth"] <= seen["innerWidth"], (
        f"{where}: the page scrolls sideways, past the edge: {seen['wide']}"
    )
    background = luminance(seen["bg"])
    assert background < 0.2 if scheme == "dark" else background > 0.8, (where, seen["bg"])
    assert contrast(seen["fg"], seen["bg"]) >= MIN_TEXT_CONTRAST, (where, seen["fg"], seen["bg"])
    for badge in seen["badges"]:
        assert contrast(badge["fg"], badge["bg"]) >= MIN_BADGE_CONTRAST, (where, badge)
    for line in seen["lines"]:
        assert contrast(line["fg"], line["bg"]) >= MIN_LINE_CONTRAST, (where, line)
    return seen


def test_every_page_fits_a_phone_and_reads_in_dark(
    deployed_twice, live_panel, browser: Browser, artifacts
):
    url, live = live_panel, deployed_twice
    pages = {
        "dashboard": "/",
        "app": "/apps/web",
        "deployment": f"/apps/web/deployments/{live.id}",
        "logs": "/apps/web/logs",
        "env": "/apps/web/env",
        "settings": "/apps/web/settings",
        "team": "/teams/acme",
        "tokens": "/tokens",
        "audit": "/audit",
        "hosts": "/hosts/",
        "add-host": "/hosts/new",
    }
    signing_in = browser.new_context()
    sign_in(signing_in.new_page(), url)
    signed_in = signing_in.storage_state()
    signing_in.close()

    contexts: list[BrowserContext] = []
    try:
        for width, height in WIDTHS.items():
            for scheme in SCHEMES:
                mode = {"viewport": {"width": width, "height": height}, "color_scheme": scheme}
                anonymous = browser.new_context(**mode)
                contexts.append(anonymous)
                page = anonymous.new_page()
                page.goto(f"{url}/login")
                expect(page.get_by_role("button", name="Sign in")).to_be_visible()
                check_page(page, "login", width, scheme, artifacts)

                operator = browser.new_context(**mode, storage_state=signed_in)
                contexts.append(operator)
                page = operator.new_page()
                for name, path in pages.items():
                    response = page.goto(f"{url}{path}")
                    assert response is not None and response.status == 200, (name, path)
                    assert page.url == f"{url}{path}", f"{name}: sent to {page.url}"
                    seen = check_page(page, name, width, scheme, artifacts)
                    if name == "app":  # the charts are drawn and measured above
                        assert seen["charts"] == 2 and seen["lines"], seen
                    if name == "dashboard":
                        assert seen["sparks"] >= 1, seen
                    if name == "hosts":
                        assert {"edge", "nomad_clients"} <= {b["text"] for b in seen["badges"]}
    finally:
        for context in contexts:
            context.close()


def test_roll_back_and_apply_to_all_hosts_ask_first(
    deployed_twice, live_panel, page: Page, artifacts
):
    url = live_panel
    sign_in(page, url)
    questions: list[str] = []

    def dismiss(dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    def accept(dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    def stays(path: str) -> None:
        """Nothing was sent: the same document, at the same address."""
        assert page.url == f"{url}{path}"
        assert page.evaluate("window.__stayed") is True

    # Roll back: the question names the app and both releases; "Cancel" deploys nothing.
    page.goto(f"{url}/apps/web")
    page.evaluate("window.__stayed = true")
    deployments = Deployment.select().count()
    page.once("dialog", dismiss)
    page.get_by_role("button", name="Roll back to 1").click()
    stays("/apps/web")
    assert questions == ["Deploy release 1 of web again, replacing release 2?"]
    page.once("dialog", accept)  # "OK" rolls back: one deployment, not two
    page.get_by_role("button", name="Roll back to 1").click()
    page.wait_for_url(re.compile(r".*/apps/web/deployments/\d+$"))
    assert Deployment.select().count() == deployments + 1
    assert (
        Deployment.select().order_by(Deployment.id.desc()).get().release.config["rollback_of"] == 1
    )

    # Apply to all hosts: the question names every host; "Cancel" starts no run.
    questions.clear()
    page.goto(f"{url}/hosts/")
    page.evaluate("window.__stayed = true")
    page.once("dialog", dismiss)
    page.get_by_role("button", name="Apply to all hosts").click()
    stays("/hosts/")
    assert questions == [
        "Run the playbooks on all 4 hosts (edge-1, node-1, node-2, node-3) now? This changes "
        "them; Plan shows what would change first."
    ]
    assert ProvisionRun.select().count() == 0
    page.once("dialog", accept)
    page.get_by_role("button", name="Apply to all hosts").click()
    page.wait_for_url(re.compile(r".*/hosts/runs/\d+$"))
    run = ProvisionRun.get()
    assert run.kind == "apply" and sorted(run.host_ids) == sorted(h.id for h in Host.select())

    # One host's Apply asks too, naming it.
    questions.clear()
    node = Host.get(Host.name == "node-2")
    page.goto(f"{url}/hosts/{node.id}")
    page.evaluate("window.__stayed = true")
    page.once("dialog", dismiss)
    page.get_by_role("button", name="Apply", exact=True).click()
    stays(f"/hosts/{node.id}")
    assert questions == [
        "Run the playbooks on node-2 now? This changes it; Plan shows what would change first."
    ]
    assert ProvisionRun.select().count() == 1
    # Maintain asks first, naming the host and what happens to it; "Cancel" starts nothing.
    questions.clear()
    page.once("dialog", dismiss)
    page.get_by_role("button", name="Maintain", exact=True).click()
    stays(f"/hosts/{node.id}")
    assert len(questions) == 1 and questions[0].startswith(
        "Maintain node-2 now? Its Nomad node stops taking allocations and drains"
    )
    assert ProvisionRun.select().count() == 1
    page.screenshot(path=str(artifacts / "layout-host-asked.png"), full_page=True)
