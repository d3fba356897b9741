"""Many live streams on one panel worker: the real panel (gunicorn, one gevent worker, default
settings) holds 60 build-log streams at once — the thread-based worker it replaced held 4 — while
/healthz and pages answer; each stream gets every chunk stored after it opened, and all of them
listen to Redis through one pub/sub connection, the worker's hub."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import redis
import requests

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.logs import LOG_CHANNEL, append_log
from panel.events import CHANNEL
from panel.models import Build, BuildStatus, Team

from conftest import wait_until

STREAMS = 60
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


@pytest.fixture
def build(db) -> Build:
    """A running build of a repo app whose team the signed-in user belongs to."""
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    app = create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="shop",
                     repo="acme/shop", branch="main")  # fmt: skip
    return Build.create(app=app, number=1, git_sha="a" * 40, branch="main",
                        status=BuildStatus.RUNNING.value)  # fmt: skip


def sign_in(url: str) -> requests.Session:
    session = requests.Session()
    token = CSRF_RE.search(session.get(f"{url}/login", timeout=10).text).group(1)
    response = session.post(
        f"{url}/login",
        data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token},
        timeout=10,
    )
    assert response.ok and response.url.rstrip("/") == url, response.text
    return session


class LogViewer(threading.Thread):
    """A browser tab on the build's log: opens the stream and keeps the ``log`` events."""

    def __init__(self, url: str, cookies) -> None:
        super().__init__(daemon=True)
        self.url, self.cookies = url, cookies
        self.status: int | None = None
        self.chunks: list[dict] = []
        self.response: requests.Response | None = None

    def run(self) -> None:
        try:
            self.response = requests.get(self.url, cookies=self.cookies, stream=True,
                                         timeout=(10, 120))  # fmt: skip
        except requests.RequestException:
            self.status = -1
            return
        self.status = self.response.status_code
        event = None
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):
            for line in self.response.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "log":
                    self.chunks.append(json.loads(line.removeprefix("data: ")))

    def stop(self) -> None:
        if self.response is not None:
            with contextlib.suppress(OSError, AttributeError):
                self.response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
            self.response.close()


def subscribers(redis_conn: redis.Redis, channel: str) -> int:
    return dict(redis_conn.pubsub_numsub(channel))[channel.encode()]


def test_one_worker_holds_sixty_log_streams_and_still_answers(
    live_panel, build, redis_conn, tmp_path: Path
):
    url = live_panel  # one worker
    assert "Using worker: gevent" in (tmp_path / "panel.log").read_text()
    session = sign_in(url)
    viewers = [LogViewer(f"{url}/apps/shop/builds/1/log", session.cookies) for _ in range(STREAMS)]
    for viewer in viewers:
        viewer.start()
    try:
        wait_until(lambda: all(v.status is not None for v in viewers), timeout=60,
                   what=f"an answer to each of the {STREAMS} streams")  # fmt: skip
        assert [v.status for v in viewers] == [200] * STREAMS
        wait_until(lambda: subscribers(redis_conn, LOG_CHANNEL) == 1, what="the worker's hub")

        health = [requests.get(f"{url}/healthz", timeout=10).status_code for _ in range(5)]
        assert health == [200] * 5
        assert session.get(f"{url}/apps/shop/builds/1", timeout=10).status_code == 200

        for n, text in enumerate(["Step 1/2: FROM scratch\n", "Step 2/2: COPY . /app\n"]):
            append_log(build.id, "build", "stdout", text, after=n * 100, offset=(n + 1) * 100,
                       max_bytes=1_000_000, redis_conn=redis_conn)  # fmt: skip
        wait_until(lambda: all(len(v.chunks) == 2 for v in viewers), timeout=30,
                   what="both chunks on every stream")  # fmt: skip
        for viewer in viewers:
            assert [(c["seq"], c["text"]) for c in viewer.chunks] == [
                (1, "Step 1/2: FROM scratch\n"),
                (2, "Step 2/2: COPY . /app\n"),
            ]
        # 60 streams, one pub/sub connection on each channel they follow.
        assert subscribers(redis_conn, LOG_CHANNEL) == 1
        assert subscribers(redis_conn, CHANNEL) == 1
    finally:
        for viewer in viewers:
            viewer.stop()
