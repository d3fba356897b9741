"""Live provisioning streams: a cap per process, a bounded lifetime, resuming by Last-Event-ID,
and the hub: one Redis subscriber per process feeding every stream in it.

Open streams must never starve ordinary requests: under real gunicorn, 40 streams against a run
that never ends leave /healthz and the pages answering, the streams beyond the cap get 503, and
a client that reconnects after each bounded stream gets every event exactly once. A stream whose
messages Redis may have dropped (it reconnected) or that fell too far behind closes without
``end``, so the browser reconnects and starts from the stored state again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from panel.actions.accounts import create_user
from panel.actions.hosts import END_MARK, channel_for
from panel.config import ConfigError, Settings
from panel.models import ProvisionEvent, ProvisionRun

from conftest import REPO_ROOT, free_port, helios_command, process_env, stop_child, wait_until

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


@pytest.fixture
def panel_env(request) -> dict[str, str]:
    """Settings of `live_panel`, per test through indirect parametrization."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def operator(db):
    return create_user("ops@example.com", PASSWORD, is_operator=True)


@pytest.fixture
def running(db) -> ProvisionRun:
    """A provisioning run that never ends unless the test says so."""
    return ProvisionRun.create(kind="plan", status="running", host_ids=[])


def record(redis_conn: redis.Redis, run: ProvisionRun, seq: int) -> dict:
    """What the worker does with an Ansible event: store it, then publish it."""
    event = {"kind": "task", "task": f"Task {seq}", "host": "n1", "seq": seq}
    ProvisionEvent.create(run=run, seq=seq, data=event)
    redis_conn.publish(channel_for(run.id), json.dumps(event))
    return event


def subscribers(redis_conn: redis.Redis, run: ProvisionRun) -> int:
    """How many connections listen on the run's channel."""
    channel = channel_for(run.id)
    return dict(redis_conn.pubsub_numsub(channel))[channel.encode()]


def finish(redis_conn: redis.Redis, run: ProvisionRun) -> None:
    ProvisionRun.update(status="succeeded").where(ProvisionRun.id == run.id).execute()
    redis_conn.publish(channel_for(run.id), json.dumps(END_MARK))


def parse_sse(lines: Iterator[str]) -> Iterator[dict]:
    """Server-Sent Events from text lines: {'id', 'event', 'data', 'retry'} per event."""
    fields: dict = {}
    for line in lines:
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    if fields:
        yield fields


# ---------------------------------------------------------------------------------------------
# The Flask test client: lifetime, resuming, the cap
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def operator_client(app, client, auth, operator):
    auth.login("ops@example.com", PASSWORD)
    return client


def _read(client, path: str, **headers: str) -> list[dict]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(parse_sse(iter(response.get_data(as_text=True).splitlines())))


def test_a_stream_closes_after_its_lifetime_without_end_and_resumes_after_last_event_id(
    app, operator_client, running, redis_conn
):
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_lifetime=1)
    for seq in (1, 2, 3):
        record(redis_conn, running, seq)
    path = f"/hosts/runs/{running.id}/events"

    first = _read(operator_client, path)
    assert first[0] == {"retry": "2000"}  # the browser reconnects 2 s after the stream closes
    assert [(e["id"], e["event"]) for e in first[1:]] == [(str(n), "task") for n in (1, 2, 3)]

    assert [e["id"] for e in _read(operator_client, path, **{"Last-Event-ID": "2"})[1:]] == ["3"]
    assert [e["id"] for e in _read(operator_client, f"{path}?after=1")[1:]] == ["2", "3"]

    finish(redis_conn, running)
    last = _read(operator_client, path, **{"Last-Event-ID": "3"})
    assert [e.get("event") for e in last[1:]] == ["end"]


def test_streams_beyond_the_cap_are_refused_until_one_closes(
    app, operator_client, running, redis_conn
):
    from panel.web import streams

    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_max=2)
    streams.init_app(app)  # the allowance of the changed settings
    path = f"/hosts/runs/{running.id}/events"
    held = [operator_client.get(path, buffered=False) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    assert held[0].headers["Content-Type"].startswith("text/event-stream")
    assert held[0].headers["Content-Security-Policy"].startswith("default-src 'none'")

    refused = operator_client.get(path)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "15"
    assert "tries again by itself" in refused.get_data(as_text=True)
    assert refused.headers["X-Frame-Options"] == "DENY"

    held[0].close()  # the server closes what it sent; the slot is free again
    again = operator_client.get(path, buffered=False)
    assert again.status_code == 200
    again.close()
    held[1].close()
    assert operator_client.get(f"{path}?after=x").status_code == 400


# ---------------------------------------------------------------------------------------------
# Real gunicorn: 40 streams, /healthz, reconnects
# ---------------------------------------------------------------------------------------------


def sign_in(url: str) -> requests.Session:
    session = requests.Session()
    token = CSRF_RE.search(session.get(f"{url}/login", timeout=10).text).group(1)
    response = session.post(
        f"{url}/login",
        data={"email": "ops@example.com", "password": PASSWORD, "csrf_token": token},
        timeout=10,
    )
    assert response.ok and response.url.rstrip("/") == url, response.text
    return session


class StreamClient(threading.Thread):
    """Opens one stream and reads it until told to stop; keeps its status and events."""

    def __init__(self, url: str, cookies) -> None:
        super().__init__(daemon=True)
        self.url, self.cookies = url, cookies
        self.status: int | None = None
        self.headers: dict = {}
        self.events: list[dict] = []
        self.response: requests.Response | None = None

    def run(self) -> None:
        try:
            response = requests.get(self.url, cookies=self.cookies, stream=True, timeout=(10, 120))
        except requests.RequestException:
            self.status = -1
            return
        self.response, self.status, self.headers = response, response.status_code, response.headers
        if response.status_code != 200:
            response.close()
            return
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):
            lines = response.iter_lines(chunk_size=None, decode_unicode=True)
            self.events.extend(e for e in parse_sse(lines) if "id" in e)

    def stop(self) -> None:
        if self.response is not None:
            # The tab goes away: shut the socket down under the reading thread.
            with contextlib.suppress(OSError, AttributeError):
                self.response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
            self.response.close()


def timed_get(session, url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = session.get(url, timeout=10)
    return response.status_code, time.monotonic() - started


@pytest.mark.parametrize("panel_env", [{"HELIOS_STREAM_MAX": "4"}], indirect=True)
def test_forty_streams_leave_the_panel_answering(live_panel, operator, running, redis_conn):
    url = live_panel  # one worker, 4 streams at most
    session = sign_in(url)
    events_url = f"{url}/hosts/runs/{running.id}/events"
    clients = [StreamClient(events_url, session.cookies) for _ in range(40)]
    for client in clients:
        client.start()
    wait_until(lambda: all(c.status is not None for c in clients), timeout=60,
               what="an answer to each of the 40 streams")  # fmt: skip
    statuses = Counter(c.status for c in clients)
    assert statuses == {200: 4, 503: 36}, statuses
    refused = next(c for c in clients if c.status == 503)
    assert refused.headers["Retry-After"] == "15"
    assert refused.headers["Content-Security-Policy"].startswith("default-src 'none'")

    # 4 streams open, 36 refused: the panel answers everyone else.
    health = [timed_get(requests, f"{url}/healthz") for _ in range(5)]
    assert [status for status, _ in health] == [200] * 5
    assert timed_get(session, f"{url}/hosts/")[0] == 200
    print(f"\n/healthz with 4 streams open: {max(s for _, s in health) * 1000:.0f} ms at most")

    open_streams = [c for c in clients if c.status == 200]
    record(redis_conn, running, 1)
    wait_until(lambda: all(c.events for c in open_streams), timeout=15,
               what="the live event on every open stream")  # fmt: skip
    assert all([e["id"] for e in c.events] == ["1"] for c in open_streams)
    assert subscribers(redis_conn, running) == 1  # 4 streams, one pub/sub connection: the hub

    # Tabs closed: the server notices at its next write and frees their slots.
    for client in open_streams:
        client.stop()

    def a_stream_is_accepted() -> bool:
        record(redis_conn, running, ProvisionEvent.select().count() + 1)
        response = session.get(events_url, stream=True, timeout=10)
        response.close()
        return response.status_code == 200

    wait_until(a_stream_is_accepted, timeout=40, interval=1, what="a free stream slot")


@pytest.mark.parametrize("panel_env", [{"HELIOS_STREAM_LIFETIME": "2"}], indirect=True)
def test_reconnecting_streams_get_every_event_once(live_panel, operator, running, redis_conn):
    url = live_panel
    session = sign_in(url)
    for seq in range(1, 6):  # before anyone watches
        record(redis_conn, running, seq)

    def publish() -> None:
        for seq in range(6, 41):
            record(redis_conn, running, seq)
            time.sleep(0.15)
        finish(redis_conn, running)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    received: list[dict] = []
    connections = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # Like EventSource: the first request says ?after=0, reconnects send Last-Event-ID.
        headers = {"Last-Event-ID": received[-1]["id"]} if received else {}
        query = "" if received else "?after=0"
        with session.get(f"{url}/hosts/runs/{running.id}/events{query}", headers=headers,
                         stream=True, timeout=(10, 30)) as response:  # fmt: skip
            assert response.status_code == 200
            connections += 1
            events = list(parse_sse(response.iter_lines(chunk_size=None, decode_unicode=True)))
        received += [e for e in events if "id" in e]
        if any(e.get("event") == "end" for e in events):
            break
        time.sleep(0.5)  # events published meanwhile reach no subscriber: they come from rows
    publisher.join(timeout=30)
    assert [int(e["id"]) for e in received] == list(range(1, 41))
    assert [json.loads(e["data"])["seq"] for e in received] == list(range(1, 41))
    assert connections >= 3, connections


def test_stopping_the_panel_ends_open_streams_at_once(settings, db, operator, running, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "panel.log", "w")  # noqa: SIM115
    env = {"HELIOS_BIND": f"127.0.0.1:{port}", "HELIOS_WEB_WORKERS": "1",
           "HELIOS_GRACEFUL_TIMEOUT": "120"}  # fmt: skip
    proc = subprocess.Popen(helios_command("panel"), env=process_env(settings, **env),
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)  # fmt: skip
    try:
        wait_until(lambda: _answers(f"{url}/readyz"), timeout=30, what="the panel")
        session = sign_in(url)
        client = StreamClient(f"{url}/hosts/runs/{running.id}/events", session.cookies)
        client.start()
        wait_until(lambda: client.status == 200, timeout=15, what="the stream")
        proc.terminate()
        # The stream would stay open 60 s and the drain could wait 120 s: both end promptly.
        client.join(timeout=20)
        assert not client.is_alive(), "the stream stayed open after SIGTERM"
        assert proc.wait(timeout=20) == 0
        assert all(e.get("event") != "end" for e in client.events)  # the browser reconnects
    finally:
        stop_child(proc)
    assert "Traceback" not in Path(log.name).read_text()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


# ---------------------------------------------------------------------------------------------
# The hub: one Redis subscriber per process, nothing lost, streams that may have lost end
# ---------------------------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads one stream of the Flask test client in a thread of its own, as a browser would;
    after ``pause_after`` events it stops reading until ``resume`` is set (a slow client)."""

    def __init__(self, response, pause_after: int | None = None) -> None:
        super().__init__(daemon=True)
        assert response.status_code == 200
        self.response, self.pause_after = response, pause_after
        self.events: list[dict] = []
        self.resume = threading.Event()

    def run(self) -> None:
        chunks = (c.decode() if isinstance(c, bytes) else c for c in self.response.response)
        for event in parse_sse(line for chunk in chunks for line in chunk.split("\n")):
            self.events.append(event)
            if len(self.events) == self.pause_after:
                self.resume.wait(30)

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events if "id" in e]

    def ended(self) -> bool:
        return any(e.get("event") == "end" for e in self.events)


@pytest.fixture
def short_lived(app):
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_lifetime=3)


def test_the_streams_of_a_process_share_one_subscriber(
    app, operator_client, running, redis_conn, short_lived
):
    path = f"/hosts/runs/{running.id}/events"
    readers = [Reader(operator_client.get(path)) for _ in range(5)]
    for reader in readers:
        reader.start()
    wait_until(lambda: subscribers(redis_conn, running) == 1, what="the hub on the run's channel")
    record(redis_conn, running, 1)
    wait_until(lambda: all(r.ids() == ["1"] for r in readers), what="the event on each stream")
    assert subscribers(redis_conn, running) == 1
    for reader in readers:
        reader.join(timeout=15)
    assert not any(r.ended() for r in readers)  # the run goes on: they closed at their lifetime
    wait_until(lambda: subscribers(redis_conn, running) == 0, what="the hub to unsubscribe")


def test_what_is_published_while_the_snapshot_is_read_is_sent(
    app, operator_client, running, redis_conn, short_lived, monkeypatch
):
    from panel.web import hosts

    read_snapshot = hosts._RunFeed.snapshot

    def publish_during_the_snapshot(feed):
        # Not stored: only the subscription can bring it, so it must already be confirmed.
        redis_conn.publish(channel_for(running.id), json.dumps({"kind": "task", "seq": 1}))
        return read_snapshot(feed)

    monkeypatch.setattr(hosts._RunFeed, "snapshot", publish_during_the_snapshot)
    reader = Reader(operator_client.get(f"/hosts/runs/{running.id}/events"))
    reader.start()
    reader.join(timeout=15)
    assert reader.ids() == ["1"]


def test_a_stream_that_falls_behind_closes_and_resumes_from_the_rows(
    app, operator_client, running, redis_conn, short_lived, monkeypatch
):
    from panel.web import streams

    monkeypatch.setattr(streams, "BACKLOG", 3)
    path = f"/hosts/runs/{running.id}/events"
    slow = Reader(operator_client.get(path), pause_after=2)  # retry, then the first event
    slow.start()
    wait_until(lambda: subscribers(redis_conn, running) == 1, what="the hub on the run's channel")
    # The first event only, until the stream sent it: published all at once, the hub may
    # overfill the backlog before a loaded stream got out of its join, which is refused then.
    record(redis_conn, running, 1)
    wait_until(lambda: slow.ids() == ["1"], what="the first event")
    for seq in range(2, 7):
        record(redis_conn, running, seq)
    hub = app.extensions[streams._HUB]

    def dropped() -> bool:  # the hub handed the other five to the paused stream: 2 too many
        with hub._lock:
            followers = [s for subs in hub._followers.values() for s in subs]
        return any(s.lost for s in followers)

    wait_until(dropped, what="the paused stream to fall behind")
    slow.resume.set()
    slow.join(timeout=15)
    assert not slow.is_alive() and not slow.ended()
    # It closed rather than skip what did not fit: what it sent is a gapless start (the
    # first event, and at most what its backlog held when it fell behind), and a reconnect
    # from there gets exactly the rest.
    seen = slow.ids()
    assert seen == [str(n) for n in range(1, len(seen) + 1)], seen
    assert 1 <= len(seen) <= 1 + streams.BACKLOG, seen
    again = Reader(operator_client.get(path, headers={"Last-Event-ID": seen[-1]}))
    again.start()
    again.join(timeout=15)
    assert again.ids() == [str(n) for n in range(len(seen) + 1, 7)]


@pytest.mark.parametrize("retries", [0, 3], ids=["the panel's client", "a retrying client"])
def test_streams_end_when_redis_drops_the_subscriber(
    app, operator_client, running, redis_conn, redis_url, short_lived, caplog, retries
):
    # A retrying client reconnects and subscribes again by itself: the streams must end all
    # the same, since what was published in between never reached them.
    caplog.set_level(logging.INFO, logger="panel.web.streams")
    app.extensions["helios.redis"] = redis.Redis.from_url(
        redis_url, retry=Retry(NoBackoff(), retries)
    )
    reader = Reader(operator_client.get(f"/hosts/runs/{running.id}/events"))
    reader.start()
    wait_until(lambda: subscribers(redis_conn, running) == 1, what="the hub on the run's channel")
    redis_conn.client_kill_filter(_type="pubsub")  # what was published meanwhile is gone
    reader.join(timeout=15)
    assert not reader.is_alive() and not reader.ended()  # the browser reconnects
    assert "live stream closed: Redis" in caplog.text
    record(redis_conn, running, 1)
    again = Reader(operator_client.get(f"/hosts/runs/{running.id}/events"))
    again.start()
    again.join(timeout=15)
    assert again.ids() == ["1"]


def test_stopping_ends_the_streams_of_the_process(app, operator_client, running, redis_conn):
    from panel.web import streams

    reader = Reader(operator_client.get(f"/hosts/runs/{running.id}/events"))
    reader.start()
    wait_until(lambda: subscribers(redis_conn, running) == 1, what="the hub on the run's channel")
    streams.stop_streams()
    try:
        reader.join(timeout=10)  # its lifetime is 60 s
        assert not reader.is_alive() and not reader.ended()
    finally:
        streams._stopping.clear()
    wait_until(lambda: subscribers(redis_conn, running) == 0, what="the hub to unsubscribe")


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_stream_settings_keep_connections_for_ordinary_requests():
    defaults = Settings.from_env(environ={})
    assert (defaults.web_connections, defaults.stream_max) == (1000, 900)  # 500 viewers fit
    assert defaults.stream_lifetime == 60
    assert Settings.from_env(environ={"HELIOS_WEB_CONNECTIONS": "100"}).stream_max == 90
    assert Settings.from_env(environ={"HELIOS_WEB_CONNECTIONS": "2"}).stream_max == 1
    assert Settings.from_env(environ={"HELIOS_STREAM_MAX": "0"}).stream_max == 0  # no streams
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ={"HELIOS_STREAM_MAX": "1000"})
    assert str(caught.value) == (
        "HELIOS_STREAM_MAX=1000 leaves no connection for other requests: "
        "use a number below HELIOS_WEB_CONNECTIONS=1000"
    )
    with pytest.raises(ConfigError, match="HELIOS_WEB_CONNECTIONS=1 is out of range"):
        Settings.from_env(environ={"HELIOS_WEB_CONNECTIONS": "1"})
    with pytest.raises(ConfigError, match="HELIOS_STREAM_LIFETIME"):
        Settings.from_env(environ={"HELIOS_STREAM_LIFETIME": "0"})
