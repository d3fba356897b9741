"""The panel's Run tab: the form queues a run of the command (split into words, never given to a
shell), the run's page shows its output escaped, and its stream ends once the run is over."""

from __future__ import annotations

import re

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.logs import append_app_log, end_app_stream
from panel.actions.runs import RunEnd, finish_run, record_run_submitted
from panel.models import Deployment, DeploymentStatus, OneOffRun, Role, RunStatus

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')
ALLOC = "9a8b7c6d-0000-4000-8000-000000000004"


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
    """An app whose release 1 is live, and an app never deployed."""
    team = owner.memberships[0].team
    app = create_app(actor=owner, team=team, slug="web", image="nginx:1")
    create_app(actor=owner, team=team, slug="fresh", image="nginx:1")
    requested = request_deploy(actor=owner, app=app, settings=settings, redis_conn=redis_conn)
    Deployment.update(status=DeploymentStatus.SUCCEEDED.value).where(
        Deployment.id == requested.deployment.id
    ).execute()
    return app


def sign_in(client, email: str) -> None:
    token = CSRF_RE.search(client.get("/login").get_data(as_text=True)).group(1)
    answer = client.post("/login", data={"email": email, "password": PASSWORD,
                                         "csrf_token": token})  # fmt: skip
    assert answer.status_code == 302


def submit(client, slug: str, **data: str):
    token = CSRF_RE.search(client.get(f"/apps/{slug}/runs").get_data(as_text=True)).group(1)
    return client.post(f"/apps/{slug}/runs", data={**data, "csrf_token": token})


def test_the_form_runs_the_words_of_the_command_and_shows_the_run(client, owner, web):
    sign_in(client, owner.email)
    answer = submit(client, "web", command="sh -c 'echo \"$HOME\"; ls' extra", timeout="60")
    run = OneOffRun.get()
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith(f"/apps/web/runs/{run.id}")
    assert run.command == ["sh", "-c", 'echo "$HOME"; ls', "extra"]
    assert run.timeout_s == 60 and run.requested_by_name == owner.email
    page = client.get("/apps/web/runs").get_data(as_text=True)
    assert f"/apps/web/runs/{run.id}" in page and "queued" in page


@pytest.mark.parametrize(
    ("slug", "data", "status", "says"),
    [
        ("web", {"command": "echo 'unclosed"}, 422, "cannot be split into words"),
        ("web", {"command": ""}, 422, "Give the command"),
        ("web", {"command": "ls", "timeout": "0"}, 422, "Timeout"),
        ("fresh", {"command": "ls"}, 409, "deploy it first"),
    ],
)
def test_a_refused_command_is_shown_next_to_the_form(client, owner, web, slug, data, status, says):
    sign_in(client, owner.email)
    answer = submit(client, slug, **data)
    assert answer.status_code == status
    assert says in answer.get_data(as_text=True)
    assert OneOffRun.select().count() == 0


def test_a_viewer_sees_the_runs_but_may_not_run(client, owner, web, redis_conn):
    from panel.actions.members import add_member

    viewer = create_user("viewer@example.com", PASSWORD, team_slug="elsewhere")
    add_member(actor=None, team=web.team, email=viewer.email, role=Role.VIEWER.value)
    sign_in(client, viewer.email)
    page = client.get("/apps/web/runs").get_data(as_text=True)
    assert "needs the deployer role" in page and 'name="command"' not in page
    token = CSRF_RE.search(page).group(1)
    refused = client.post("/apps/web/runs", data={"command": "ls", "csrf_token": token})
    assert refused.status_code == 403


def test_the_runs_page_shows_its_output_escaped_and_its_stream_ends(client, owner, web, redis_conn):
    sign_in(client, owner.email)
    submit(client, "web", command="cat page.html")
    run = OneOffRun.get()
    OneOffRun.update(status="running").where(OneOffRun.id == run.id).execute()
    record_run_submitted(OneOffRun.get_by_id(run.id), f"web-run-{run.id}", redis_conn)
    text = "<script>alert(1)</script>\n"
    append_app_log(
        web.id, None, alloc=ALLOC, process="run", task="run", stream="stdout", text=text,
        after=0, offset=len(text), max_bytes=10**6, run_id=run.id,
    )  # fmt: skip
    page = client.get(f"/apps/web/runs/{run.id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'data-done="false"' in page
    for stream in ("stdout", "stderr"):
        end_app_stream(web.id, None, alloc=ALLOC, process="run", task="run", stream=stream,
                       offset=len(text) if stream == "stdout" else 0, run_id=run.id)  # fmt: skip
    finish_run(run.id, RunEnd(RunStatus.FAILED, "exited 2", 2), redis_conn=redis_conn)
    stream = client.get(f"/apps/web/runs/{run.id}/log?after=0").get_data(as_text=True)
    assert stream.count("event: log") == 2 and stream.rstrip().endswith('data: {"kind": "end"}')
    assert "exited with code 2" in stream
    page = client.get(f"/apps/web/runs/{run.id}").get_data(as_text=True)
    assert 'data-done="true"' in page and "exited 2" in page
