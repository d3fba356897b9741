"""Security headers in a real browser: no page can be framed, no page breaks its own CSP.

Headless Chromium against the panel under gunicorn: another origin tries to frame the panel
(signed in, so the cookies go along) and gets nothing; then an operator visits every page,
error pages included, and the browser reports no Content-Security-Policy violation at all (a
deliberate inline script first proves violations would be seen). The provisioning run page
follows its events live across the server's bounded streams and says so when the panel is too
busy to stream.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import BrowserContext, Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.hosts import END_MARK, channel_for
from panel.crypto import SecretCipher
from panel.models import App, Deployment, Host, ProvisionEvent, ProvisionRun, Team

from conftest import free_port

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
EMAIL = "ops@example.com"
# Reported by the page itself, besides Chromium's own "Refused to …" console errors.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
}, true);
"""


@pytest.fixture
def panel_env() -> dict[str, str]:
    # One live stream per process and short streams: the run page must cope with both.
    return {"HELIOS_STREAM_MAX": "1", "HELIOS_STREAM_LIFETIME": "3"}


class Watcher:
    """CSP violations and uncaught errors of every page of a browser context."""

    def __init__(self, context: BrowserContext) -> None:
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []
        context.add_init_script(REPORT_VIOLATIONS)
        context.on("page", self.watch)
        for page in context.pages:
            self.watch(page)

    def watch(self, page: Page) -> None:
        page.on("console", functools.partial(self._console, page))
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))

    def _console(self, page: Page, message) -> None:
        self.console.append(message.text)
        if "Content Security Policy" in message.text or "CSP violation" in message.text:
            self.violations.append(f"{page.url}: {message.text}")


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def record(redis_conn: redis.Redis, run: ProvisionRun, seq: int, kind: str = "ok") -> None:
    """What the worker does with an Ansible event: store it, then publish it."""
    event = {"kind": kind, "task": f"Task {seq}", "host": "n1", "seq": seq}
    if kind == "changed":
        event["text"] = f"--- before\n+++ after\n+ line {seq}"
    ProvisionEvent.create(run=run, seq=seq, data=event)
    redis_conn.publish(channel_for(run.id), json.dumps(event))


@pytest.fixture
def world(db, settings, redis_conn) -> dict:
    """An operator with an app (a secret, a queued deployment), a host and two runs."""
    ops = create_user(EMAIL, PASSWORD, team_slug="acme", is_operator=True)
    Team.update(name="Acme").where(Team.slug == "acme").execute()
    team = Team.get(Team.slug == "acme")
    app = create_app(actor=ops, team=team, slug="web", image="registry.local/web:1")
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=ops, app=app, key="API_KEY", value="s3cret-value", secret=True, cipher=cipher)
    request_deploy(actor=ops, app=App.get_by_id(app.id), settings=settings, redis_conn=redis_conn)
    host = Host.create(name="n1", address="10.0.0.5", groups=["nomad_servers", "edge"])
    done = ProvisionRun.create(
        kind="apply", status="succeeded", host_ids=[host.id], message="Converged.",
        recap={"n1": {"ok": 12, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 2}},
    )  # fmt: skip
    for seq, kind in enumerate(("play", "ok", "changed", "recap"), start=1):
        record(redis_conn, done, seq, kind)
    running = ProvisionRun.create(kind="plan", status="running", host_ids=[host.id])
    for seq in (1, 2, 3):
        record(redis_conn, running, seq)
    return {"host": host, "done": done, "running": running,
            "deployment": Deployment.select().get()}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def other_origin(tmp_path: Path, live_panel: str) -> Iterator[str]:
    """Another web site (another port on 127.0.0.1) whose page frames the panel."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "own.html").write_text("<!doctype html><p id=own>A frame of this site's own.</p>")
    (site / "frames.html").write_text(f"""<!doctype html>
<title>Another site</title><h1>Another site framing the panel</h1>
<iframe id="apps" src="{live_panel}/" width="480" height="240"></iframe>
<iframe id="settings" src="{live_panel}/apps/web/settings" width="480" height="240"></iframe>
<iframe id="own" src="own.html" width="480" height="80"></iframe>
""")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_another_site_cannot_frame_the_panel(live_panel, other_origin, world, page, artifacts):
    url = live_panel
    watcher = Watcher(page.context)
    sign_in(page, url)  # the frames below would show the signed-in panel, were they allowed
    fetched: list[tuple[str, int]] = []
    page.on("response", lambda r: fetched.append((r.url, r.status)))

    page.goto(f"{other_origin}/frames.html")
    own = page.frame_locator("#own")
    expect(own.locator("#own")).to_have_text("A frame of this site's own.")  # frames do work
    for frame_id, path in (("apps", "/"), ("settings", "/apps/web/settings")):
        frame = page.locator(f"#{frame_id}").element_handle().content_frame()
        frame.wait_for_load_state()
        assert frame.url.startswith("chrome-error://"), frame.url
        content = frame.content()
        assert "Helios" not in content and EMAIL not in content, content[:300]
        # The browser did get the panel's page, and refused to show it.
        assert (f"{url}{path}", 200) in fetched, fetched
    refusals = [m for m in watcher.console if "frame-ancestors 'none'" in m]
    assert len(refusals) == 2, watcher.console
    page.screenshot(path=str(artifacts / "security-framing-refused.png"), full_page=True)


# ---------------------------------------------------------------------------------------------
# Content-Security-Policy: every page, no violation
# ---------------------------------------------------------------------------------------------


def test_no_page_violates_the_content_security_policy(live_panel, world, page, artifacts):
    url = live_panel
    watcher = Watcher(page.context)

    # The detector works: an injected inline script is refused and reported.
    page.goto(f"{url}/login")
    page.evaluate("""() => {
        const s = document.createElement("script");
        s.textContent = "window.injected = true";
        document.body.appendChild(s);
        document.body.setAttribute("style", "background: red");
    }""")
    expect(page.get_by_role("heading", name="Sign in to Helios")).to_be_visible()
    page.wait_for_function("() => document.readyState === 'complete'")
    assert page.evaluate("window.injected") is None
    page.wait_for_timeout(300)  # violation events are dispatched asynchronously
    assert any("script-src" in v for v in watcher.violations), watcher.console
    assert any("style-src" in v for v in watcher.violations), watcher.console
    watcher.violations.clear()

    sign_in(page, url)
    deployment, host = world["deployment"], world["host"]
    done, running = world["done"], world["running"]
    visited = []
    for path in (
        "/",
        "/?q=web",
        "/apps/new",
        "/apps/web",
        "/apps/web/settings",
        "/apps/web/env",
        "/apps/web/deployments",
        f"/apps/web/deployments/{deployment.id}",
        "/teams",
        "/teams/acme",
        "/account",
        "/tokens",
        "/audit",
        "/hosts/",
        "/hosts/new",
        f"/hosts/{host.id}",
        f"/hosts/runs/{done.id}",
        f"/hosts/runs/{running.id}",
        "/no-such-page",
        "/apps/no-such-app",
        f"/hosts/runs/{running.id}/events?after=x",
    ):
        response = page.goto(f"{url}{path}")
        page.wait_for_load_state("load")
        visited.append((path, response.status))
        if path == f"/apps/web/deployments/{deployment.id}":
            page.wait_for_timeout(1500)  # it polls its JSON twin every second
        if path == f"/hosts/runs/{running.id}":
            expect(page.locator("#run-events li")).to_have_count(3)
    assert [status for _, status in visited[:-3]] == [200] * (len(visited) - 3), visited
    assert [status for _, status in visited[-3:]] == [404, 404, 400], visited

    # A page answered to a form post: the new token, shown once.
    page.goto(f"{url}/tokens")
    page.get_by_label("Name").fill("laptop CLI")
    page.get_by_label("deploy").check()
    page.get_by_role("button", name="Create token").click()
    assert page.get_by_label("Your new token").input_value().startswith("hel_")

    # A form that only allows POST, asked with GET; then signing out back to the login page.
    assert page.goto(f"{url}/logout").status == 405
    page.goto(f"{url}/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login"))
    page.wait_for_timeout(300)
    assert watcher.violations == []
    assert watcher.errors == []


# ---------------------------------------------------------------------------------------------
# The run page: live across bounded streams, and when the panel is too busy to stream
# ---------------------------------------------------------------------------------------------


def test_run_page_follows_events_across_reconnects_and_when_busy(
    live_panel, world, page, redis_conn, artifacts
):
    url = live_panel
    watcher = Watcher(page.context)
    run = world["running"]
    stream_requests: list = []
    page.context.on("request", lambda r: stream_requests.append(r) if "/events" in r.url else None)
    sign_in(page, url)
    page.goto(f"{url}/hosts/runs/{run.id}")
    items = page.locator("#run-events li")
    expect(items).to_have_count(3)
    page.evaluate("window.sameDocument = true")  # gone, were the page reloaded

    # Events arrive live while the panel closes each stream after 3 s and the browser
    # reconnects: every one shows once, in order.
    for seq in range(4, 31):
        record(redis_conn, run, seq, "changed" if seq % 10 == 0 else "ok")
        page.wait_for_timeout(300)
    expect(items).to_have_count(30, timeout=15_000)
    tasks = items.locator(".task").all_inner_texts()
    assert tasks == [f"Task {seq}" for seq in range(1, 31)]
    # It reconnected by itself, without a reload, resuming after the last event it had.
    streams = [r.all_headers().get("last-event-id") for r in stream_requests]
    assert streams[0] is None and len(streams) >= 2, streams
    assert all(int(seen) > 3 for seen in streams[1:]), streams
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=str(artifacts / "security-run-live.png"), full_page=True)

    # One stream per process here: a second tab of the same run and the first one compete;
    # the one refused says so (and tries again later), the other keeps following.
    second = page.context.new_page()
    second.goto(f"{url}/hosts/runs/{run.id}")
    busy = "Live updates paused: the panel is busy"

    def tab_told_busy() -> Page | None:
        for tab in (page, second):
            if busy in tab.locator("#run-live-note").inner_text():
                return tab
        return None

    for _ in range(60):  # 15 s at most
        if tab_told_busy():
            break
        page.wait_for_timeout(250)
    refused = tab_told_busy()
    assert refused is not None, "neither tab was told the panel is busy"
    following = second if refused is page else page
    expect(refused.locator("#run-live-note")).to_be_visible()
    refused.screenshot(path=str(artifacts / "security-run-busy.png"), full_page=True)

    # The run ends: the tab that follows it reloads and shows the outcome.
    ProvisionRun.update(status="succeeded").where(ProvisionRun.id == run.id).execute()
    redis_conn.publish(channel_for(run.id), json.dumps(END_MARK))
    expect(following.locator("#run-status")).to_have_text("succeeded", timeout=15_000)
    assert watcher.violations == []
    assert watcher.errors == []
