"""The panel's gevent worker waits for SQLite's write lock without stalling: while another
process holds the lock, a sign-in (which writes) waits for it, and meanwhile the same worker
still answers /healthz and pages; once the lock is free the sign-in completes.

Without the cooperative wait, SQLite's own busy wait (in C) holds the whole worker: /healthz
would answer only after the lock is released, and this test would fail on its first check."""

from __future__ import annotations

import re
import sqlite3
import threading
from urllib.parse import unquote, urlsplit

import pytest
import requests

from panel.actions.accounts import create_user

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


@pytest.fixture
def panel_env() -> dict[str, str]:
    return {"HELIOS_WEB_WORKERS": "1"}


def test_a_write_waiting_for_the_lock_does_not_stall_the_worker(settings, db, live_panel):
    if not settings.database_url.startswith("sqlite"):
        pytest.fail("this test needs the SQLite database: unset HELIOS_DATABASE_URL")
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    session = requests.Session()
    token = CSRF_RE.search(session.get(f"{live_panel}/login", timeout=10).text).group(1)

    holder = sqlite3.connect(unquote(urlsplit(settings.database_url).path), timeout=10)
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
    answers: dict[str, int] = {}

    def sign_in() -> None:
        response = session.post(
            f"{live_panel}/login",
            data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token},
            timeout=60, allow_redirects=False,
        )  # fmt: skip
        answers["sign-in"] = response.status_code

    signer = threading.Thread(target=sign_in)
    try:
        signer.start()
        signer.join(1.0)  # the sign-in is in, waiting for the lock
        assert signer.is_alive(), answers  # it cannot have written anything yet
        # The same (single) worker answers while the sign-in waits.
        for _ in range(5):
            assert requests.get(f"{live_panel}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{live_panel}/login", timeout=5).status_code == 200
        assert signer.is_alive()  # still waiting: the answers above came during the wait
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    signer.join(30)
    assert answers.get("sign-in") == 302
