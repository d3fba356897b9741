"""GitHub deliveries against the real panel under gunicorn: copies at once, a burst, the size cap.

GitHub may deliver one delivery more than once, and a busy organisation pushes many times a
second from a few addresses. Against gunicorn (one worker, its threads) with real SQLite and
Redis: 20 simultaneous copies of one delivery are handled once; 1,000 distinct deliveries sent
by 20 clients at once are each recorded once and acknowledged with a 2xx (none refused by any
rate limit), and their builds supersede each other down to one. Ack times are printed, never
asserted.
"""

from __future__ import annotations

import hashlib
import json
import socket
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.crypto import SecretCipher
from panel.models import App, Build, BuildStatus, Team, WebhookDelivery
from panel.schema.github import MAX_BODY_BYTES, sign

from nomad_double.reference import reference_file

SECRET = "burst hook secret"
HELLO_WORLD_ID = 186853002  # the repository of push_with-new-branch.json
REGISTRY = "registry.test:5000"
COPIES = 20
BURST = 1_000
CLIENTS = 20


@pytest.fixture
def settings(settings):
    return settings.replace(registry=REGISTRY)


@pytest.fixture
def panel_env() -> dict[str, str]:
    return {"HELIOS_REGISTRY": REGISTRY, "HELIOS_LOG_LEVEL": "warning"}


@pytest.fixture
def hello(db, settings) -> App:
    """A repo app tracking master of Codertocat/Hello-World, its hook's secret set."""
    create_user("owner@example.com", "correct horse battery", team_slug="acme")
    app = create_app(
        actor=None, team=Team.get(Team.slug == "acme"), slug="hello",
        repo="Codertocat/Hello-World", branch="master",
    )  # fmt: skip
    secret = SecretCipher.from_settings(settings).encrypt(SECRET)
    App.update(github_repo_id=HELLO_WORLD_ID, webhook_secret=secret).where(
        App.id == app.id
    ).execute()
    return app


def push_of(commit: str) -> bytes:
    """GitHub's real push body, for another commit of master."""
    payload = json.loads(reference_file("github-webhooks/push_with-new-branch.json").read_bytes())
    payload["after"] = payload["head_commit"]["id"] = commit
    return json.dumps(payload).encode()


def headers_for(raw: bytes, delivery: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, raw),
        "Content-Type": "application/json",
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def test_twenty_copies_at_once_are_handled_once(live_panel, hello):
    raw = push_of(hashlib.sha1(b"copies", usedforsecurity=False).hexdigest())
    headers = headers_for(raw, str(uuid.uuid4()))
    start = threading.Barrier(COPIES)

    def send(_n: int) -> requests.Response:
        start.wait()
        return requests.post(f"{live_panel}/webhooks/github", data=raw, headers=headers, timeout=30)

    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(send, range(COPIES)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * (COPIES - 1) + [202], [a.text for a in answers]
    copies = [a.json()["message"] for a in answers if a.status_code == 200]
    assert copies == ["already received"] * (COPIES - 1)
    assert WebhookDelivery.select().count() == 1
    assert Build.select().count() == 1


def test_a_burst_of_deliveries_is_each_recorded_once(live_panel, hello):
    commits = [
        hashlib.sha1(f"commit {n}".encode(), usedforsecurity=False).hexdigest()
        for n in range(BURST)
    ]
    deliveries = [str(uuid.uuid4()) for _ in range(BURST)]
    local = threading.local()

    def send(n: int) -> tuple[int, float]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        raw = push_of(commits[n])
        headers = headers_for(raw, deliveries[n])
        started = time.perf_counter()
        answer = local.session.post(
            f"{live_panel}/webhooks/github", data=raw, headers=headers, timeout=60
        )
        return answer.status_code, (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(send, range(BURST)))
    elapsed = time.perf_counter() - started
    acks = [ms for _status, ms in results]
    print(
        f"\n{BURST} deliveries from {CLIENTS} clients in {elapsed:.1f} s "
        f"({BURST / elapsed:.0f}/s): ack p50 {statistics.median(acks):.1f} ms, "
        f"p99 {percentile(acks, 0.99):.1f} ms"
    )
    refused = [status for status, _ms in results if not 200 <= status < 300]
    assert refused == []
    rows = list(WebhookDelivery.select())
    assert len(rows) == BURST  # none lost
    assert sorted(row.delivery for row in rows) == sorted(deliveries)  # none twice
    assert {row.outcome for row in rows} == {"accepted"}
    builds = list(Build.select())
    assert sorted(build.git_sha for build in builds) == sorted(commits)
    assert sorted(build.number for build in builds) == list(range(1, BURST + 1))
    by_status = {status: 0 for status in BuildStatus}
    for build in builds:
        by_status[BuildStatus(build.status)] += 1
    assert by_status[BuildStatus.QUEUED] == 1  # exactly one unfinished: the others gave way
    assert by_status[BuildStatus.SUPERSEDED] == BURST - 1


def test_gunicorn_refuses_an_announced_body_over_25_mb_unread(live_panel, hello):
    # A Content-Length over the cap and only a few bytes sent: the answer comes at once,
    # without the server waiting for (or reading) the rest.
    address = urlsplit(live_panel)
    head = (
        "POST /webhooks/github HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\n"
        "Content-Type: application/json\r\n"
        "X-GitHub-Event: push\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(head.encode() + b'{"repository": ')
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    message = json.loads(rest.partition(b"\r\n\r\n")[2])["message"]
    assert "25 MB" in message
    assert WebhookDelivery.select().count() == 0
