"""A deployment's page follows it live: Redis pub/sub → Server-Sent Events, no polling.

The stream sends the deployment's state (``event: deployment``) when it opens and after each
change the deploy actions make, then ``end`` once it is over; it answers only those who may see
the page, carries no secret, shares the per-process cap with every other stream and always lets
go of its Redis subscription. In Chromium, the page changes in place while the deployment moves
on, never asks the old JSON poll URL, and says so when live updates stop.
"""

from __future__ import annotations

import json
import re

import pytest
import redis
import requests
from playwright.sync_api import Browser, Page, expect

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.deployments import (
    claim_deployment,
    finish_deployment,
    note_deployment,
    record_submitted,
)
from panel.crypto import SecretCipher
from panel.events import CHANNEL
from panel.models import (
    App,
    Deployment,
    DeploymentStatus,
    Membership,
    ProvisionRun,
    Role,
    Team,
    User,
)
from panel.reconcile.follow import Outcome
from panel.web import deployments as deployment_pages
from panel.web import streams

from conftest import Auth, wait_until

PASSWORD = "correct horse battery"
SECRET = "s3cr3t-Value-that-no-stream-carries"
STATE_KEYS = {
    "id", "status", "terminal", "status_message", "release", "image", "requested_at",
    "started_at", "finished_at", "nomad_job_version", "failure", "waiting", "cancellable",
}  # fmt: skip
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


# ---------------------------------------------------------------------------------------------
# Fixtures: a team's app with a secret and a queued deployment; another team's
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def web(owner, settings, redis_conn) -> App:
    """The app ``web`` with a secret, and one queued deployment (no worker runs it)."""
    team = Team.get(Team.slug == "acme")
    app = create_app(actor=owner, team=team, slug="web", image="registry.local/web:1")
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=owner, app=app, key="API_KEY", value=SECRET, secret=True, cipher=cipher)
    request_deploy(actor=owner, app=App.get_by_id(app.id), settings=settings,
                   redis_conn=redis_conn)  # fmt: skip
    return App.get_by_id(app.id)


@pytest.fixture
def deployment(web) -> Deployment:
    return Deployment.select().where(Deployment.app == web.id).get()


@pytest.fixture
def theirs(db, settings, redis_conn) -> Deployment:
    """Another team's deployment."""
    team = Team.create(slug="other", name="Other")
    app = create_app(actor=None, team=team, slug="theirs-app", image="registry.local/theirs:1")
    return request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn).deployment


@pytest.fixture
def short_streams(app):
    """Streams of 20 s at most: a test waiting for a frame that never comes fails, not hangs."""
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(
        stream_lifetime=20
    )
    return app


@pytest.fixture
def signed_in(client, auth, owner, short_streams):
    assert auth.login(owner.email, PASSWORD).status_code == 302
    return client


def stream_path(deployment: Deployment, slug: str = "web") -> str:
    return f"/apps/{slug}/deployments/{deployment.id}/stream"


# ---------------------------------------------------------------------------------------------
# Reading a stream from the test client, one event at a time
# ---------------------------------------------------------------------------------------------


def parse_block(block: str) -> dict[str, str]:
    """One Server-Sent Event's fields (comments dropped)."""
    fields: dict[str, str] = {}
    for line in block.splitlines():
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return fields


class Stream:
    """An open event stream of the Flask test client, read as the events come."""

    def __init__(self, response) -> None:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""
        self.raw = ""

    def next(self) -> dict[str, str]:
        """The next event (not a comment); fails the test when the stream ends first."""
        while True:
            while "\n\n" not in self.buffer:
                try:
                    chunk = next(self.chunks)
                except StopIteration:
                    pytest.fail(f"the stream ended before the next event: {self.raw!r}")
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                self.buffer += text
                self.raw += text
            block, self.buffer = self.buffer.split("\n\n", 1)
            fields = parse_block(block)
            if fields:
                return fields

    def state(self) -> dict:
        """The next event, which must be a ``deployment`` one: its state."""
        event = self.next()
        assert event["event"] == "deployment", event
        assert int(event["id"]) >= 0
        return json.loads(event["data"])

    def rest(self) -> str:
        """Everything until the stream closes."""
        rest = "".join(c.decode() if isinstance(c, bytes) else c for c in self.chunks)
        self.raw += rest
        return self.buffer + rest

    def close(self) -> None:
        self.response.close()


def open_stream(client, path: str, **headers: str) -> Stream:
    return Stream(client.get(path, headers=headers))


def subscribers(redis_conn: redis.Redis) -> int:
    """How many connections listen on the events channel."""
    return dict(redis_conn.pubsub_numsub(CHANNEL))[CHANNEL.encode()]


def unsubscribed(redis_conn: redis.Redis) -> None:
    """Wait until Redis saw every stream's pub/sub connection go (it learns so by itself)."""
    wait_until(lambda: subscribers(redis_conn) == 0, what="no subscriber left on the channel")


# ---------------------------------------------------------------------------------------------
# The deployment stream: state, changes, end
# ---------------------------------------------------------------------------------------------


def test_the_stream_sends_the_state_then_each_change_then_end(signed_in, deployment, redis_conn):
    stream = open_stream(signed_in, stream_path(deployment))
    assert stream.next() == {"retry": "2000"}
    first = stream.state()
    assert first["id"] == deployment.id and first["status"] == "queued"
    assert first["terminal"] is False and first["started_at"] is None
    assert set(first) == STATE_KEYS

    # Each change the deploy engine records reaches the open stream, as it happens.
    assert claim_deployment(deployment.id, redis_conn)
    running = stream.state()
    assert running["status"] == "running" and running["started_at"].endswith("Z")

    record_submitted(Deployment.get_by_id(deployment.id), version=4, eval_id=None,
                     redis_conn=redis_conn)  # fmt: skip
    assert stream.state()["nomad_job_version"] == 4

    outcome = Outcome(DeploymentStatus.SUCCEEDED, "Deployed: 1 of 1 instances healthy.")
    assert finish_deployment(deployment.id, outcome, redis_conn)
    done = stream.state()
    assert done["status"] == "succeeded" and done["terminal"] is True
    assert done["status_message"] == outcome.message and done["finished_at"].endswith("Z")
    assert stream.next() == {"event": "end", "data": '{"kind": "end"}'}
    assert stream.rest() == ""  # the stream closes after ``end``
    stream.close()
    assert SECRET not in stream.raw
    unsubscribed(redis_conn)


def test_a_newer_deployment_supersedes_this_one_live(
    signed_in, web, deployment, theirs, owner, settings, redis_conn
):
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    assert stream.state()["status"] == "queued"
    # Another team's deployment moves on, then a new deployment of the same app supersedes
    # this one: only the latter is about this deployment.
    claim_deployment(theirs.id, redis_conn)
    newer = request_deploy(actor=owner, app=web, settings=settings, redis_conn=redis_conn)
    superseded = stream.state()
    assert superseded["status"] == "superseded" and superseded["terminal"] is True
    assert f"#{newer.deployment.id}" in superseded["status_message"]
    assert stream.next()["event"] == "end"
    stream.close()


def test_a_change_made_while_the_snapshot_is_read_is_not_lost(
    signed_in, deployment, redis_conn, monkeypatch
):
    # The stream subscribes before it reads the state: a change published just after the
    # snapshot was read still arrives (it would be lost, were the order the other way round).
    read_state = deployment_pages._DeploymentFeed.snapshot

    def snapshot_then_claim(feed):
        frames = read_state(feed)
        assert claim_deployment(deployment.id, redis_conn)
        return frames

    monkeypatch.setattr(deployment_pages._DeploymentFeed, "snapshot", snapshot_then_claim)
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    assert stream.state()["status"] == "queued"
    assert stream.state()["status"] == "running"
    stream.close()


def test_progress_notes_reach_the_stream_without_an_event(signed_in, deployment, redis_conn):
    # The deploy job notes its progress without a stored event: a transient notice tells the
    # stream, which sends the state only when it changed (nothing polls the row).
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    assert stream.state()["status_message"] == ""
    assert claim_deployment(deployment.id, redis_conn)
    assert stream.state()["status"] == "running"
    assert note_deployment(deployment.id, "Waiting for 2 allocations to be healthy", redis_conn)
    noted = stream.state()
    assert noted["status"] == "running"
    assert noted["status_message"] == "Waiting for 2 allocations to be healthy"
    stream.close()


def test_a_finished_deployment_streams_its_state_and_ends(signed_in, deployment, redis_conn):
    claim_deployment(deployment.id, redis_conn)
    finish_deployment(deployment.id, Outcome(DeploymentStatus.FAILED, "Unhealthy."), redis_conn)
    body = signed_in.get(stream_path(deployment)).get_data(as_text=True)
    events = [parse_block(block) for block in body.split("\n\n") if parse_block(block)]
    assert [e.get("event") for e in events] == [None, "deployment", "end"]
    assert json.loads(events[1]["data"])["status"] == "failed"
    unsubscribed(redis_conn)


def test_a_reconnecting_browser_gets_the_state_now_first(signed_in, deployment, redis_conn):
    first = open_stream(signed_in, stream_path(deployment))
    first.next()
    seen = first.next()
    assert json.loads(seen["data"])["status"] == "queued"
    first.close()  # the stream's lifetime is over; meanwhile the deployment started
    claim_deployment(deployment.id, redis_conn)
    again = open_stream(signed_in, stream_path(deployment), **{"Last-Event-ID": seen["id"]})
    again.next()
    resumed = again.next()
    assert resumed["event"] == "deployment" and int(resumed["id"]) > int(seen["id"])
    assert json.loads(resumed["data"])["status"] == "running"
    again.close()


def test_the_stream_lets_go_of_redis_when_the_client_goes(signed_in, deployment, redis_conn):
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    stream.state()
    assert subscribers(redis_conn) == 1
    stream.close()  # what the server does when the browser goes away
    unsubscribed(redis_conn)


def test_a_stream_ends_without_end_after_its_lifetime(app, signed_in, deployment, redis_conn):
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_lifetime=1)
    body = signed_in.get(stream_path(deployment)).get_data(as_text=True)
    events = [parse_block(block) for block in body.split("\n\n") if parse_block(block)]
    assert [e.get("event") for e in events] == [None, "deployment"]  # the browser reconnects
    unsubscribed(redis_conn)


def test_without_redis_a_stream_closes_at_once_for_the_browser_to_retry(
    app, signed_in, deployment, caplog
):
    app.extensions["helios.redis"] = redis.Redis(port=1, socket_connect_timeout=0.2)
    response = signed_in.get(stream_path(deployment))
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body == "retry: 2000\n\n: live updates are unavailable right now\n\n"
    assert "live stream not started: Redis is unreachable" in caplog.text


# ---------------------------------------------------------------------------------------------
# Who may follow, what is sent, the cap
# ---------------------------------------------------------------------------------------------


def test_only_those_who_may_see_the_page_may_follow_it(
    app, owner, deployment, theirs, redis_conn, short_streams
):
    path = stream_path(deployment)
    anonymous = app.test_client().get(path)
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")

    # A viewer of the team may follow it, as they may see the page.
    viewer = create_user("viewer@example.com", PASSWORD, team_slug="home-viewer")
    Membership.create(user=viewer, team=Team.get(Team.slug == "acme"), role=Role.VIEWER.value)
    client = app.test_client()
    assert Auth(client).login("viewer@example.com", PASSWORD).status_code == 302
    watched = client.get(path, buffered=False)
    assert watched.status_code == 200
    watched.close()

    # Another team's deployment, under its app or under one of mine, or none: 404 as the page.
    client = app.test_client()
    assert Auth(client).login(owner.email, PASSWORD).status_code == 302
    others = [
        stream_path(theirs, "theirs-app"),
        stream_path(theirs, "web"),  # their deployment's id under my app
        "/apps/web/deployments/999999/stream",
        "/apps/nope/deployments/1/stream",
    ]
    for other in others:
        refused = client.get(other)
        assert refused.status_code == 404, other
        assert refused.mimetype == "text/html"
        page = other.removesuffix("/stream")
        assert client.get(page).status_code == 404, page
    unsubscribed(redis_conn)


def test_the_events_filter_keeps_one_deployments_events():
    about = streams.events_about("v1.deployment.", deployment_id=7)
    assert about({"subject": "v1.deployment.started", "data": {"deployment_id": 7}})
    assert not about({"subject": "v1.deployment.started", "data": {"deployment_id": 8}})
    assert not about({"subject": "v1.app.updated", "data": {"deployment_id": 7}})
    assert not about({"subject": "v1.deployment.started"})
    assert not about(["v1.deployment.started"])


def test_the_state_sent_is_the_json_twin_and_carries_no_secret(signed_in, deployment):
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    assert stream.state() == signed_in.get(f"/apps/web/deployments/{deployment.id}.json").json
    stream.close()
    assert SECRET not in stream.raw and "API_KEY" not in stream.raw


def test_deployment_and_provisioning_streams_share_the_cap(
    app, signed_in, owner, deployment, redis_conn
):
    User.update(is_operator=True).where(User.id == owner.id).execute()
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_max=1)
    streams.init_app(app)
    run = ProvisionRun.create(kind="plan", status="running", host_ids=[])
    held = signed_in.get(f"/hosts/runs/{run.id}/events", buffered=False)
    assert held.status_code == 200
    refused = signed_in.get(stream_path(deployment))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "15"
    held.close()
    stream = open_stream(signed_in, stream_path(deployment))
    stream.next()
    assert stream.state()["status"] == "queued"
    stream.close()


def test_the_page_renders_the_state_and_names_its_stream(signed_in, deployment, redis_conn):
    claim_deployment(deployment.id, redis_conn)
    page = signed_in.get(f"/apps/web/deployments/{deployment.id}").get_data(as_text=True)
    assert 'class="badge running"' in page  # the state now, for browsers without JavaScript
    assert f'data-stream="/apps/web/deployments/{deployment.id}/stream"' in page
    assert "data-poll" not in page and f"/deployments/{deployment.id}.json" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/helios.js" defer>']


# ---------------------------------------------------------------------------------------------
# Chromium: the page changes in place, never polls, and says when live updates stop
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def panel_env(request) -> dict[str, str]:
    """Settings of `live_panel`, per test through indirect parametrization."""
    return dict(getattr(request, "param", {}))


def sign_in_page(page: Page, url: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def test_the_page_follows_the_deployment_without_reload_or_polling(
    live_panel, page: Page, deployment, redis_conn, artifacts
):
    url = live_panel
    requests_seen: list[str] = []
    page.on("request", lambda request: requests_seen.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in_page(page, url)
    page.goto(f"{url}/apps/web/deployments/{deployment.id}")
    status = page.locator("[data-field=status]")
    note = page.locator("[data-live-note]")
    expect(status).to_have_text("queued")
    expect(note).to_have_text("This page follows the deployment as it happens.")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.sameDocument = true")  # gone, were the page reloaded

    assert claim_deployment(deployment.id, redis_conn)
    expect(status).to_have_text("running")
    expect(status).to_have_class("badge running")
    expect(page.locator("[data-field=started_at]")).to_have_text(re.compile(r"UTC$"))
    record_submitted(Deployment.get_by_id(deployment.id), version=7, eval_id=None,
                     redis_conn=redis_conn)  # fmt: skip
    expect(page.locator("[data-field=nomad_job_version]")).to_have_text("7")
    finish_deployment(deployment.id, Outcome(DeploymentStatus.SUCCEEDED, "All healthy."),
                      redis_conn)  # fmt: skip
    expect(status).to_have_text("succeeded")
    expect(page.locator("[data-field=status_message]")).to_have_text("All healthy.")
    expect(page.locator("[data-field=finished_at]")).to_have_text(re.compile(r"UTC$"))
    expect(note).to_have_text("Finished.")
    page.screenshot(path=str(artifacts / "live-deployment.png"), full_page=True)

    assert page.evaluate("window.sameDocument") is True
    assert navigations == []
    stream_url = f"{url}/apps/web/deployments/{deployment.id}/stream"
    assert stream_url in requests_seen
    assert not [seen for seen in requests_seen if seen.endswith(".json")], requests_seen
    assert errors == []


def test_without_event_source_the_page_says_live_updates_stopped(
    live_panel, page: Page, deployment
):
    page.add_init_script("delete window.EventSource;")
    sign_in_page(page, live_panel)
    page.goto(f"{live_panel}/apps/web/deployments/{deployment.id}")
    expect(page.locator("[data-field=status]")).to_have_text("queued")
    note = page.locator("[data-live-note]")
    expect(note).to_contain_text("Live updates stopped")
    expect(note.get_by_role("link", name="reload")).to_have_attribute(
        "href", f"{live_panel}/apps/web/deployments/{deployment.id}"
    )


def test_without_javascript_the_page_shows_the_state_now(
    live_panel, browser: Browser, deployment, redis_conn
):
    claim_deployment(deployment.id, redis_conn)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in_page(page, live_panel)
        page.goto(f"{live_panel}/apps/web/deployments/{deployment.id}")
        expect(page.locator("[data-field=status]")).to_have_text("running")
        expect(page.locator("[data-live-note]")).to_contain_text("reload to see how it goes on")
    finally:
        context.close()


def sign_in_requests(url: str) -> requests.Session:
    session = requests.Session()
    token = CSRF_RE.search(session.get(f"{url}/login", timeout=10).text).group(1)
    answer = session.post(f"{url}/login", timeout=10, data={
        "email": "owner@example.com", "password": PASSWORD, "csrf_token": token,
    })  # fmt: skip
    assert answer.ok and answer.url.rstrip("/") == url
    return session


@pytest.mark.parametrize("panel_env", [{"HELIOS_STREAM_MAX": "1"}], indirect=True)
def test_a_refused_stream_says_live_updates_stopped(live_panel, page: Page, deployment):
    # Another tab holds the panel's only stream: this page's is refused (503), for good.
    session = sign_in_requests(live_panel)
    holder = session.get(f"{live_panel}/apps/web/deployments/{deployment.id}/stream",
                         stream=True, timeout=(10, 60))  # fmt: skip
    assert holder.status_code == 200
    for line in holder.iter_lines(decode_unicode=True):
        if line == "event: deployment":  # the other tab follows the deployment
            break
    try:
        sign_in_page(page, live_panel)
        page.goto(f"{live_panel}/apps/web/deployments/{deployment.id}")
        expect(page.locator("[data-field=status]")).to_have_text("queued")
        expect(page.locator("[data-live-note]")).to_contain_text(
            "Live updates stopped — reload the page to see the latest state."
        )
    finally:
        holder.close()
