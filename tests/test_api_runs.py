"""One-off runs through the JSON API: queue one, read it, read and follow its output; on real
SQLite and Redis through the Flask test client (the run's Nomad side: tests/test_runs.py)."""

from __future__ import annotations

import json

import pytest
from rq import Queue
from test_api_logs import Caller, log_ids

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.logs import append_app_log, end_app_stream
from panel.actions.runs import RunEnd, finish_run, record_run_submitted
from panel.actions.tokens import create_token
from panel.models import Deployment, DeploymentStatus, OneOffRun, RunStatus

PASSWORD = "correct horse battery"
API = "/api/v1"
ALLOC = "9a8b7c6d-0000-4000-8000-000000000003"


@pytest.fixture
def app(app):
    """The panel with streams that close after a second."""
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(stream_lifetime=1)
    return app


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def web(owner, settings, redis_conn):
    """An app whose release 1 is live."""
    app = create_app(actor=owner, team=owner.memberships[0].team, slug="web", image="nginx:1")
    requested = request_deploy(actor=owner, app=app, settings=settings, redis_conn=redis_conn)
    Deployment.update(status=DeploymentStatus.SUCCEEDED.value).where(
        Deployment.id == requested.deployment.id
    ).execute()
    return app


def caller(client, owner, scope: str) -> Caller:
    return Caller(client, create_token(owner, scope, [scope]).secret)


def post(api: Caller, path: str, body) -> object:
    return api.client.post(API + path, json=body, headers=api.token)


def test_a_run_is_queued_and_answered_with_where_to_follow_it(client, owner, web, redis_conn):
    api = caller(client, owner, "deploy")
    answer = post(api, "/apps/web/runs", {"command": ["python", "manage.py", "migrate"],
                                          "timeout": 120})  # fmt: skip
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    run = OneOffRun.get_by_id(body["id"])
    assert answer.headers["Location"] == f"{API}/apps/web/runs/{run.id}"
    assert body["command"] == ["python", "manage.py", "migrate"] == run.command
    assert (body["status"], body["release"], body["timeout"]) == ("queued", 1, 120)
    assert body["exit_code"] is None and body["requested_by"] == "owner@example.com"
    assert body["log_url"] == f"{API}/apps/web/runs/{run.id}/log"
    queued = Queue("deploys", connection=redis_conn).fetch_job(f"run-{run.id}")
    assert queued is not None and queued.args == (run.id,)


def test_reading_a_run_gives_its_exit_code_once_it_ended(client, owner, web, redis_conn):
    api = caller(client, owner, "deploy")
    run_id = post(api, "/apps/web/runs", {"command": ["false"]}).get_json()["id"]
    finish_run(
        run_id, RunEnd(RunStatus.FAILED, "the command exited with code 1", 1),
        redis_conn=redis_conn,
    )  # fmt: skip
    body = caller(client, owner, "read").get(f"/apps/web/runs/{run_id}").get_json()
    assert (body["status"], body["exit_code"]) == ("failed", 1)
    assert body["finished_at"].endswith("Z")
    assert caller(client, owner, "read").get("/apps/web/runs/999").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"command": []}, "command", ""),
        ({"command": "echo hi"}, "command", ""),
        ({"command": ["echo", "a\x00"]}, "command", "NUL"),
        ({"command": ["echo"], "timeout": 0}, "timeout", ""),
        ({"command": ["echo"], "shell": True}, "shell", ""),
        ({}, "command", ""),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(client, owner, web, body, field, says):
    answer = post(caller(client, owner, "deploy"), "/apps/web/runs", body)
    assert answer.status_code == 422, answer.get_json()
    assert answer.get_json()["field"] == field
    assert says in answer.get_json()["message"]
    assert OneOffRun.select().count() == 0


def test_without_a_live_release_it_is_a_409_saying_deploy_first(client, owner, redis_conn):
    create_app(actor=owner, team=owner.memberships[0].team, slug="fresh", image="nginx:1")
    answer = post(caller(client, owner, "deploy"), "/apps/fresh/runs", {"command": ["ls"]})
    assert answer.status_code == 409
    assert "deploy it first" in answer.get_json()["message"]


def test_a_read_token_cannot_run_a_command(client, owner, web):
    answer = post(caller(client, owner, "read"), "/apps/web/runs", {"command": ["ls"]})
    assert answer.status_code == 403
    assert OneOffRun.select().count() == 0


def test_the_log_as_json_and_as_a_stream_that_ends_after_the_exit_code(
    client, owner, web, settings, redis_conn
):
    run_id = post(
        caller(client, owner, "deploy"), "/apps/web/runs", {"command": ["ls"]}
    ).get_json()["id"]
    run = OneOffRun.get_by_id(run_id)
    OneOffRun.update(status="running").where(OneOffRun.id == run_id).execute()
    record_run_submitted(OneOffRun.get_by_id(run_id), f"web-run-{run_id}", redis_conn)
    for stream, text in (("stdout", "file-a\nfile-b\n"), ("stderr", "warn\n")):
        append_app_log(
            web.id, None, alloc=ALLOC, process="run", task="run", stream=stream, text=text,
            after=0, offset=len(text), max_bytes=1_000_000, run_id=run.id,
        )  # fmt: skip
    api = caller(client, owner, "read")
    stored = api.get(f"/apps/web/runs/{run_id}/log").get_json()
    assert [(line["stream"], line["text"]) for line in stored["lines"]] == [
        ("stdout", "file-a\nfile-b\n"), ("stderr", "warn\n"),
    ]  # fmt: skip
    assert all(line["run_id"] == run_id for line in stored["lines"])

    # Still running: the stream sends what is stored and closes without `end` (its lifetime).
    events = api.events(f"/apps/web/runs/{run_id}/log?follow=true")
    assert [e["event"] for e in events] == ["log", "log"]

    for stream, size in (("stdout", 14), ("stderr", 5)):
        end_app_stream(web.id, None, alloc=ALLOC, process="run", task="run", stream=stream,
                       offset=size, run_id=run_id)  # fmt: skip
    finish_run(run_id, RunEnd(RunStatus.SUCCEEDED, "exited 0", 0), redis_conn=redis_conn)
    events = api.events(f"/apps/web/runs/{run_id}/log", Accept="text/event-stream")
    assert [e["event"] for e in events] == ["log", "log", "log", "end"]
    last = json.loads(events[2]["data"])
    assert last["stream"] == "helios" and "exited with code 0" in last["text"]
    resumed = api.events(f"/apps/web/runs/{run_id}/log?follow=true",
                         **{"Last-Event-ID": str(log_ids(events)[1])})  # fmt: skip
    assert [e["event"] for e in resumed] == ["log", "end"]
