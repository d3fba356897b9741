"""The logs of the JSON API (an app's, a deployment's, a build's): stored lines as JSON, and the
same lines live as Server-Sent Events, resumable exactly; on real SQLite and Redis, through the
Flask test client and, for live lines, a real panel under gunicorn."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta

import pytest
import requests

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.logs import append_app_log, append_log, append_task_events, log_step
from panel.actions.tokens import create_token
from panel.models import AppLog, Build, Deployment, DeploymentStatus, utcnow

PASSWORD = "correct horse battery"
API = "/api/v1"
ALLOC_WEB = "1a2b3c4d-0000-4000-8000-000000000001"
ALLOC_WORKER = "5e6f7a8b-0000-4000-8000-000000000002"
BIG = 10_000_000  # bytes a deployment may keep: nothing is pruned here


def parse_sse(lines: Iterable[str]) -> Iterator[dict]:
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


class Caller:
    """A test client that sends one bearer token (and any headers) with every request."""

    def __init__(self, client, secret: str) -> None:
        self.client = client
        self.token = {"Authorization": f"Bearer {secret}"}

    def get(self, path: str, **headers: str):
        return self.client.get(API + path, headers={**self.token, **headers})

    def events(self, path: str, **headers: str) -> list[dict]:
        """The events of a stream read to its end (``end``, or the stream's lifetime)."""
        response = self.get(path, **headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        lines = iter(response.get_data(as_text=True).splitlines())
        return [event for event in parse_sse(lines) if "event" in event]


def log_ids(events: list[dict]) -> list[int]:
    return [int(event["id"]) for event in events if event["event"] == "log"]


@pytest.fixture
def app(app):
    """The panel with streams that close after a second: an app's log stream never ends."""
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_lifetime=1)
    return app


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def api(client, owner) -> Caller:
    return Caller(client, create_token(owner, "test", ["read"]).secret)


@pytest.fixture
def stranger(client, db) -> Caller:
    """An admin token of another team's owner."""
    other = create_user("other@example.com", PASSWORD, team_slug="rival")
    return Caller(client, create_token(other, "rival", ["admin"]).secret)


@pytest.fixture
def web(owner, redis_conn):
    return create_app(actor=owner, team=owner.memberships[0].team, slug="web", image="web:1")


@pytest.fixture
def deployment(web, settings, redis_conn) -> Deployment:
    """A deployment whose log holds Helios's steps, task events and two processes' output."""
    deployment = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    deployment = deployment.deployment
    log_step(deployment, "Nomad accepted job version 0", redis_conn)
    append_task_events(
        web.id, deployment.id, alloc=ALLOC_WEB, process="web", task="web",
        events=[(1, "Received: task received by client"), (2, "Started: task started")],
        redis_conn=redis_conn,
    )  # fmt: skip
    output = [
        (ALLOC_WEB, "web", "stdout", "listening on :8080\nGET / 200\n"),
        (ALLOC_WEB, "web", "stderr", "warning: cache cold\n"),
        (ALLOC_WORKER, "worker", "stdout", "picked job 1\n"),
        (ALLOC_WORKER, "worker", "stderr", "job 1 failed\n"),
    ]
    for alloc, process, stream, text in output:
        append_app_log(
            web.id, deployment.id, alloc=alloc, process=process, task=process, stream=stream,
            text=text, after=0, offset=len(text), max_bytes=BIG, redis_conn=redis_conn,
        )  # fmt: skip
    return deployment


def rows(**where) -> list[AppLog]:
    query = AppLog.select().where(AppLog.text != "").order_by(AppLog.seq)
    for name, value in where.items():
        query = query.where(getattr(AppLog, name) == value)
    return list(query)


def finish(deployment: Deployment) -> None:
    """The deployment ended a while ago: its log is complete (a deployment's log stream ends
    once the deployment ended and what it printed had time to be stored)."""
    status, ended = DeploymentStatus.SUCCEEDED.value, utcnow() - timedelta(minutes=5)
    Deployment.update(status=status, finished_at=ended).where(
        Deployment.id == deployment.id
    ).execute()


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def test_json_answers_the_stored_lines_oldest_first(api, deployment):
    body = api.get("/apps/web/logs").json
    stored = rows()
    assert [line["seq"] for line in body["lines"]] == [row.seq for row in stored]
    assert body["after"] == stored[-1].seq
    first_output = next(line for line in body["lines"] if line["stream"] == "stdout")
    assert first_output == {
        "app_id": deployment.app_id, "deployment_id": deployment.id, "run_id": None,
        "seq": first_output["seq"], "alloc": ALLOC_WEB, "process": "web", "task": "web",
        "stream": "stdout", "text": "listening on :8080\nGET / 200\n", "final": False,
        "time": first_output["time"],
    }  # fmt: skip
    assert first_output["time"].endswith("Z")
    assert [line["stream"] for line in body["lines"]][:3] == ["helios", "helios", "nomad"]


def test_json_filters_by_process_stream_and_since(api, deployment):
    def texts(query: str) -> list[str]:
        response = api.get(f"/apps/web/logs?{query}")
        assert response.status_code == 200, response.json
        return [line["text"] for line in response.json["lines"]]

    steps = [row.text for row in rows(stream="helios")]  # a process filter keeps Helios's steps
    assert texts("process=worker") == [*steps, "picked job 1\n", "job 1 failed\n"]
    assert texts("stream=stderr") == ["warning: cache cold\n", "job 1 failed\n"]
    assert texts("process=web&stream=stdout&stream=stderr") == [
        "listening on :8080\nGET / 200\n", "warning: cache cold\n",
    ]  # fmt: skip
    assert texts("stream=nomad") == [
        "Received: task received by client\n", "Started: task started\n",
    ]  # fmt: skip
    assert texts("process=web&process=worker&stream=stderr") == [
        "warning: cache cold\n", "job 1 failed\n",
    ]  # fmt: skip
    old = [row.seq for row in rows(stream="helios")]
    AppLog.update(created_at=utcnow() - timedelta(days=2)).where(AppLog.seq.in_(old)).execute()
    assert len(texts("since=1d")) == len(rows()) - len(old)
    assert len(texts("since=3d")) == len(rows())


def test_json_pages_with_after_and_limit_without_losing_a_line(api, deployment):
    stored = [row.seq for row in rows()]
    newest = api.get("/apps/web/logs?limit=2").json
    assert [line["seq"] for line in newest["lines"]] == stored[-2:]
    seen, after = [], 0
    while True:
        page = api.get(f"/apps/web/logs?after={after}&limit=3").json
        seen += [line["seq"] for line in page["lines"]]
        if not page["lines"]:
            assert page["after"] == after
            break
        after = page["after"]
    assert seen == stored


def test_a_deployments_log_holds_its_lines_only(api, web, deployment, settings, redis_conn):
    second = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    log_step(second.deployment, "a worker started the deployment", redis_conn)
    first = api.get(f"/apps/web/deployments/{deployment.id}/log").json["lines"]
    assert [line["seq"] for line in first] == [row.seq for row in rows(deployment=deployment.id)]
    later = api.get(f"/apps/web/deployments/{second.deployment.id}/log?stream=helios").json
    assert [line["text"] for line in later["lines"]][-1] == "a worker started the deployment\n"
    assert {line["deployment_id"] for line in later["lines"]} == {second.deployment.id}
    missing = api.get(f"/apps/web/deployments/{second.deployment.id + 1}/log")
    assert missing.status_code == 404
    assert "web has no deployment" in missing.json["message"]


def test_a_builds_log_as_json(api, web):
    build = Build.create(app=web, number=1, git_sha="a" * 40, branch="main", status="running")
    for task, stream, text in [("fetch", "stdout", "Cloning into '.'...\n"),
                               ("build", "stdout", "STEP 1/2: FROM scratch\n"),
                               ("build", "stderr", "warning: no cache\n")]:  # fmt: skip
        append_log(build.id, task, stream, text, after=0, offset=len(text), max_bytes=BIG)
    body = api.get("/apps/web/builds/1/log").json
    assert body["lines"] == [
        {"seq": 1, "task": "fetch", "stream": "stdout", "text": "Cloning into '.'...\n"},
        {"seq": 2, "task": "build", "stream": "stdout", "text": "STEP 1/2: FROM scratch\n"},
        {"seq": 3, "task": "build", "stream": "stderr", "text": "warning: no cache\n"},
    ]
    assert body["after"] == 3
    assert api.get("/apps/web/builds/1/log?after=2").json["lines"][0]["seq"] == 3
    assert api.get("/apps/web/builds/1/log?after=3").json == {"lines": [], "after": 3}
    assert api.get("/apps/web/builds/2/log").status_code == 404
    assert api.get("/apps/web/builds/1/log?process=web").json["field"] == "process"


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("since=bogus", "since", "30s, 10m, 2h or 7d"),
        ("since=10y", "since", "30s, 10m, 2h or 7d"),
        ("stream=stdin", "stream", "helios, nomad, stdout, stderr"),
        ("process=web%21", "process", "letters, digits, - and _"),
        ("process=" + "a" * 65, "process", "letters, digits, - and _"),
        ("limit=0", "limit", "from 1 to 1000"),
        ("limit=1001", "limit", "from 1 to 1000"),
        ("limit=+5", "limit", "from 1 to 1000"),
        ("after=-1", "after", "a whole number from 0"),
        ("after=1.0", "after", "a whole number from 0"),
        ("after=1&after=2", "after", "give after once"),
        ("follow=yes", "follow", "true or false"),
        ("tail=5", "tail", "only after, limit, follow, process, stream, since"),
    ],
)
def test_bad_query_values_say_what_to_write(api, deployment, query, field, words):
    for path in ("/apps/web/logs", f"/apps/web/deployments/{deployment.id}/log"):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 422, response.get_data(as_text=True)
        assert response.json["error"] == "invalid"
        assert response.json["field"] == field
        assert words in response.json["message"]


def test_every_bad_parameter_is_listed_at_once(api, deployment):
    response = api.get("/apps/web/logs?since=x&limit=0&stream=y")
    assert response.status_code == 422
    assert [error["field"] for error in response.json["errors"]] == ["limit", "stream", "since"]


def test_a_bad_last_event_id_is_refused(api, deployment):
    response = api.get("/apps/web/logs", **{"Accept": "text/event-stream", "Last-Event-ID": "x"})
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json["message"]


# ---------------------------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------------------------


def test_the_stream_replays_exactly_after_last_event_id(api, deployment):
    finish(deployment)
    stored = [row.seq for row in rows()]
    path = f"/apps/web/deployments/{deployment.id}/log"
    for cut in range(len(stored) + 1):
        after = stored[cut - 1] if cut else 0
        by_header = api.events(path, **{"Accept": "text/event-stream",
                                         "Last-Event-ID": str(after)})  # fmt: skip
        by_query = api.events(f"{path}?follow=true&after={after}")
        for events in (by_header, by_query):
            assert log_ids(events) == stored[cut:]
            assert events[-1]["event"] == "end"
    first = api.events(f"{path}?follow=true&after=0")[0]
    assert json.loads(first["data"]) == api.get(f"{path}?limit=1&after=0").json["lines"][0]


def test_the_apps_stream_starts_with_the_newest_lines_and_filters(api, deployment):
    stored = [row.seq for row in rows()]
    accept = {"Accept": "text/event-stream"}
    assert log_ids(api.events("/apps/web/logs", **accept)) == stored
    assert log_ids(api.events("/apps/web/logs?limit=3", **accept)) == stored[-3:]
    resumed = api.events("/apps/web/logs?limit=3", **accept, **{"Last-Event-ID": str(stored[1])})
    assert log_ids(resumed) == stored[2:]
    stderr = api.events("/apps/web/logs?follow=true&stream=stderr")
    assert [json.loads(e["data"])["text"] for e in stderr] == [
        "warning: cache cold\n", "job 1 failed\n",
    ]  # fmt: skip
    assert all(event["event"] == "log" for event in stderr)  # the app's log never ends
    json_anyway = api.get("/apps/web/logs?follow=false", **accept)
    assert json_anyway.mimetype == "application/json"


def test_a_finished_builds_stream_ends(api, web):
    finished = utcnow() - timedelta(hours=1)  # long enough ago: its log is complete
    build = Build.create(app=web, number=1, git_sha="a" * 40, branch="main", status="failed",
                         finished_at=finished)  # fmt: skip
    append_log(build.id, "fetch", "stderr", "fatal: no such ref\n", after=0, offset=19,
               max_bytes=BIG)  # fmt: skip
    events = api.events("/apps/web/builds/1/log?follow=true")
    assert [(e["event"], e.get("id")) for e in events] == [("log", "1"), ("end", None)]
    assert json.loads(events[0]["data"])["text"] == "fatal: no such ref\n"
    assert [e["event"] for e in api.events("/apps/web/builds/1/log?follow=true&after=1")] == ["end"]


def test_another_teams_token_gets_404(stranger, deployment, web):
    Build.create(app=web, number=1, git_sha="a" * 40, branch="main", status="failed")
    for path in ("/apps/web/logs", f"/apps/web/deployments/{deployment.id}/log",
                 "/apps/web/builds/1/log"):  # fmt: skip
        for headers in ({}, {"Accept": "text/event-stream"}):
            response = stranger.get(path, **headers)
            assert response.status_code == 404
            assert response.json["error"] == "not_found"
            assert "warning" not in response.get_data(as_text=True)


def test_a_line_stored_after_subscribing_arrives_live(live_panel, owner, deployment, redis_conn):
    token = create_token(owner, "live", ["read"]).secret
    stored = [row.seq for row in rows()]
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with requests.get(f"{live_panel}{API}/apps/web/logs", headers=headers, stream=True,
                      timeout=(10, 60)) as response:  # fmt: skip
        assert response.status_code == 200
        events = parse_sse(response.iter_lines(chunk_size=None, decode_unicode=True))
        received = []
        for event in events:
            if event.get("event") != "log":
                continue
            received.append(int(event["id"]))
            if received == stored:  # the stored lines are in: now one written live
                log_step(deployment, "live: a line after subscribing", redis_conn)
            if len(received) > len(stored):
                live = json.loads(event["data"])
                break
    assert received == [*stored, stored[-1] + 1]
    assert live["text"] == "live: a line after subscribing\n"
    assert live["stream"] == "helios"


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def test_the_document_describes_both_forms_and_the_query(client):
    document = client.get(f"{API}/openapi.json").json
    for path in ("/apps/{slug}/logs", "/apps/{slug}/deployments/{deployment_id}/log",
                 "/apps/{slug}/builds/{number}/log"):  # fmt: skip
        spec = document["paths"][path]["get"]
        assert set(spec["responses"]["200"]["content"]) == {"application/json",
                                                            "text/event-stream"}  # fmt: skip
        query = {p["name"]: p for p in spec["parameters"] if p["in"] == "query"}
        assert {"after", "limit", "follow"} <= set(query)
        assert query["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000,
                                            "default": 200}  # fmt: skip
    app_query = {p["name"]: p["schema"] for p in
                 document["paths"]["/apps/{slug}/logs"]["get"]["parameters"]}  # fmt: skip
    assert app_query["stream"]["items"]["enum"] == ["helios", "nomad", "stdout", "stderr"]
    assert app_query["since"]["pattern"] == "^[0-9]{1,7}[smhd]$"
