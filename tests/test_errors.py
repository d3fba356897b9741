"""Failures on Helios's side: a short message and a request id for the user, the details under
the same id in the server's log; reads go on while Redis is down, and nothing answers with a
traceback."""

from __future__ import annotations

import html
import json
import logging
import sqlite3

import pytest

import panel.db
from panel.actions.accounts import create_user
from panel.actions.tokens import create_token
from panel.drivers.nomad import NomadError, NomadErrorKind
from panel.run.runtime import JsonFormatter
from panel.web.errors import INTERNAL, UNAVAILABLE

from conftest import Auth, free_port

PASSWORD = "Copper Walrus Umbrella 42"
INTERNALS = ("Traceback", "/work/", "site-packages", "RuntimeError", "exploded")


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def bearer(owner) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(owner, 'test', ['admin']).secret}"}


@pytest.fixture
def broken(app):
    """Routes that fail the ways a request can fail on Helios's side."""

    def bug():
        raise RuntimeError("/work/panel/secret.py exploded")

    def nomad_down():
        raise NomadError(NomadErrorKind.UNREACHABLE, "Nomad at https://10.0.0.1:4646 is down")

    app.add_url_rule("/test-bug", "test_bug", bug)
    app.add_url_rule("/api/v1/test-bug", "test_api_bug", bug)
    app.add_url_rule("/api/v1/test-nomad-down", "test_nomad_down", nomad_down)
    return app


def test_a_bug_answers_500_with_an_id_and_logs_the_traceback_under_it(client, broken, caplog):
    page = client.get("/test-bug", headers={"Accept": "text/html"})
    api = client.get("/api/v1/test-bug")
    for answer in (page, api):
        assert answer.status_code == 500
        assert not any(text in answer.get_data(as_text=True) for text in INTERNALS)
    page_id, api_id = page.headers["X-Request-Id"], api.headers["X-Request-Id"]
    assert page_id != api_id
    assert page_id in page.get_data(as_text=True)
    assert html.unescape(page.get_data(as_text=True)).count(INTERNAL) == 1
    assert api.json == {"error": "internal_error", "message": INTERNAL, "request_id": api_id}
    logged = {r.request_id: r for r in caplog.records if r.levelno == logging.ERROR}
    for request_id in (page_id, api_id):
        record = logged[request_id]
        assert request_id in record.getMessage() and record.exc_info[0] is RuntimeError


def test_every_answer_carries_its_request_id(client, owner, bearer):
    answers = [client.get("/healthz"), client.get("/login"),
               client.get("/api/v1/me", headers=bearer),
               client.get("/api/v1/apps/nothing", headers=bearer)]  # fmt: skip
    ids = [answer.headers["X-Request-Id"] for answer in answers]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)
    assert answers[-1].json["request_id"] == ids[-1]  # a 404 names it too


def test_a_forwarded_request_id_is_kept_only_behind_a_trusted_proxy(app, client, settings):
    forwarded = {"X-Request-Id": "edge-7f3a9c21"}
    assert client.get("/healthz", headers=forwarded).headers["X-Request-Id"] != "edge-7f3a9c21"
    app.extensions["helios.settings"] = settings.replace(trusted_proxies=1)
    assert client.get("/healthz", headers=forwarded).headers["X-Request-Id"] == "edge-7f3a9c21"
    hostile = {"X-Request-Id": "<script>alert(1)</script>"}
    assert (
        client.get("/healthz", headers=hostile).headers["X-Request-Id"] != hostile["X-Request-Id"]
    )


def test_nomad_not_answering_is_a_503_that_says_so(client, broken):
    answer = client.get("/api/v1/test-nomad-down")
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json["message"] == UNAVAILABLE["cluster"]
    assert "10.0.0.1" not in answer.get_data(as_text=True)


@pytest.fixture
def short_lock_wait(monkeypatch):
    """The panel's database, opened after this, waits 50 ms for a lock instead of 15 s."""
    monkeypatch.setitem(panel.db.SQLITE_PRAGMAS, "busy_timeout", 50)


def test_a_database_locked_past_its_wait_is_a_503_not_a_traceback(
    short_lock_wait, client, bearer, settings
):
    holder = sqlite3.connect(settings.effective_database_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        answer = client.post("/api/v1/apps", json={"slug": "web", "image": "nginx:1"},
                             headers=bearer)  # fmt: skip
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.json == {"error": "unavailable", "message": UNAVAILABLE["database_busy"],
                           "request_id": answer.headers["X-Request-Id"]}  # fmt: skip


class TestRedisDown:
    """Redis not answering (nothing listens at HELIOS_REDIS_URL): pages and the API's reads
    work; writes either keep their record for later (a deployment stays queued and says why)
    or answer 503 with the request id, never 500."""

    @pytest.fixture
    def settings(self, settings):
        return settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    def test_reads_work_and_writes_never_answer_500(self, client, owner, bearer, caplog):
        created = client.post("/api/v1/apps", json={"slug": "web", "image": "nginx:1"},
                              headers=bearer)  # fmt: skip
        assert created.status_code == 201, created.json
        assert Auth(client).login("owner@example.com", PASSWORD).status_code == 302
        for path in ("/", "/apps/web", "/apps/web/deployments", "/teams", "/tokens", "/audit"):
            assert client.get(path).status_code == 200, path
        assert client.get("/api/v1/apps", headers=bearer).status_code == 200
        deploy = client.post("/api/v1/apps/web/deployments", json={}, headers=bearer)
        assert deploy.status_code == 202 and deploy.json["status"] == "queued"
        assert "queue (Redis) cannot be reached" in deploy.json["status_message"]
        writes = [
            ("PUT", "/api/v1/apps/web/env/GREETING", {"value": "hello"}),
            ("PATCH", "/api/v1/apps/web", {"count": 2}),
            ("POST", "/api/v1/apps/web/deployments", {}),
            ("POST", "/api/v1/apps/web/domains", {"hostname": "web.example.com"}),
            ("DELETE", "/api/v1/apps/web", None),
        ]
        for method, path, body in writes:
            answer = client.open(path, method=method, json=body, headers=bearer)
            assert answer.status_code != 500, (method, path, answer.json)
            if answer.status_code == 503:
                assert answer.json["message"] == UNAVAILABLE["queue"]
                assert answer.json["request_id"] == answer.headers["X-Request-Id"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_json_logs_name_the_request_id(client, broken, capsys):
    formatter = JsonFormatter()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("panel.web.errors").addHandler(keep)
    try:
        answer = client.get("/api/v1/test-bug")
    finally:
        logging.getLogger("panel.web.errors").removeHandler(keep)
    document = json.loads(formatter.format(records[-1]))
    assert document["request_id"] == answer.headers["X-Request-Id"]
    assert "RuntimeError" in document["exception"]
