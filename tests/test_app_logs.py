"""Deploy and runtime logs against the Nomad double, with a real follower, Redis and SQLite.

What an app's allocations print is collected while they run, scrubbed of the app's secrets
(also a secret cut between two reads of a stream) before it is stored, kept per deployment;
Nomad's task events are stored once; Helios's own steps are in the deployment's log; a failed
deploy says why (the unhealthy event and the last lines printed); the streams resume exactly
after Last-Event-ID and filter by process and stream; a restarted follower repeats nothing.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from datetime import timedelta

import pytest
from test_build_logs import frames
from test_deploy_secrets import settle, submit

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.logs import append_app_log, prune_app_logs
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import AppLog, Deployment, DeploymentStatus, Team, utcnow
from panel.web.logs import failure_reason

from conftest import wait_until

SECRET = "s3cr3t-Value_with.dots+plus/slash"
PASSWORD = "correct horse battery"
LABEL = "[secret API_KEY]"
FORMS = [
    SECRET,
    base64.b64encode(SECRET.encode()).decode(),
    base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    SECRET.encode().hex(),
    urllib.parse.quote(SECRET, safe=""),
    json.dumps(SECRET)[1:-1],
]


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch):
    """A deployment's log stream ends 1 s after the deployment (10 s in the product)."""
    monkeypatch.setattr("panel.web.logs.LOG_SETTLE", timedelta(seconds=1))


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def web(owner, redis_conn):
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", count=2, redis_conn=redis_conn,
    )  # fmt: skip
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app, key="API_KEY", value=SECRET, secret=True, cipher=cipher)
    return app


@pytest.fixture
def double(deploy_env, nomad_double, run_follower):
    """The double with time frozen (the test ticks it) and a follower watching."""
    nomad_double.auto_advance = False
    return nomad_double


def output(app_id: int, stream: str = "stdout") -> str:
    rows = AppLog.select().where((AppLog.app == app_id) & (AppLog.stream == stream))
    return "".join(row.text for row in rows.order_by(AppLog.seq))


def all_text(app_id: int) -> str:
    return "".join(row.text for row in AppLog.select().where(AppLog.app == app_id))


def test_what_allocations_print_is_stored_scrubbed_with_its_deployment(
    double, run_follower, web, redis_conn
):
    printed = "".join(f"line {i}: {form}\n" for i, form in enumerate(FORMS))
    double.set_logs("booting\n" + printed, "stdout")
    double.set_logs(f"warn: key={SECRET}\n", "stderr")
    run_follower()
    deployment = settle(double, submit(web, redis_conn))
    assert deployment.status == DeploymentStatus.SUCCEEDED

    wait_until(lambda: output(web.id).count("line 5") == 2, timeout=20,
               what="both allocations' output")  # fmt: skip
    wait_until(lambda: output(web.id, "stderr").count("warn") == 2, timeout=20, what="stderr")
    stored = all_text(web.id)
    for form in FORMS:
        assert form not in stored, form
    assert output(web.id).count(LABEL) == 2 * len(FORMS)
    rows = list(AppLog.select().where((AppLog.app == web.id) & (AppLog.stream == "stdout")))
    assert {row.deployment_id for row in rows} == {deployment.id}
    assert {row.process for row in rows} == {"web"}
    assert len({row.alloc for row in rows}) == 2  # each line tagged with its allocation


def test_task_events_are_stored_once_and_helios_steps_are_in_the_deployment_log(
    double, run_follower, web, redis_conn
):
    follower = run_follower()
    deployment = settle(double, submit(web, redis_conn))
    started = lambda: AppLog.select().where(  # noqa: E731
        (AppLog.deployment == deployment.id) & (AppLog.stream == "nomad")
        & AppLog.text.startswith("Started: Task started by client")
    ).count()  # fmt: skip
    wait_until(lambda: started() == 2, timeout=20, what="one Started event per allocation")
    follower.stop()
    run_follower()  # a new follower reads every allocation again: nothing is stored twice
    double.tick(3)
    wait_until(lambda: output(web.id).count("web started") == 2, timeout=20, what="output")
    assert started() == 2
    steps = [
        row.text
        for row in AppLog.select()
        .where((AppLog.deployment == deployment.id) & (AppLog.stream == "helios"))
        .order_by(AppLog.seq)
    ]
    assert steps[0].startswith("queued release v1")
    assert any(text.startswith("Nomad accepted job version 0") for text in steps)
    assert steps[-1].startswith("succeeded: ")


def test_a_secret_cut_between_two_reads_and_lines_added_later_arrive_once(
    double, run_follower, web, redis_conn
):
    follower = run_follower()
    double.set_logs("first\n", "stdout")
    deployment = settle(double, submit(web, redis_conn))
    wait_until(lambda: output(web.id).count("first") == 2, timeout=20, what="the first lines")
    half = len(SECRET) // 2
    double.set_logs("first\ntoken=" + SECRET[:half], "stdout")
    wait_until(lambda: double.cluster.steps > 0, timeout=5, what="the double")
    double.tick()
    follower.stop()  # the cut half was read by a follower that is now gone
    double.set_logs("first\ntoken=" + SECRET + "\nlast\n", "stdout")
    run_follower()
    double.tick()
    wait_until(lambda: output(web.id).count("last") == 2, timeout=20, what="the later lines")
    text = output(web.id)
    assert SECRET[:half] not in text and SECRET[half:] not in text
    assert text.count(f"token={LABEL}") == 2
    assert text.count("first") == 2  # nothing read twice
    assert {row.deployment_id for row in AppLog.select().where(AppLog.stream == "stdout")} == {
        deployment.id
    }


def test_a_failed_deploy_says_which_check_failed_and_what_the_app_printed(
    double, run_follower, web, redis_conn, client, auth
):
    double.set_health(False)
    double.set_logs("Traceback (most recent call last):\nKeyError: 'DATABASE_URL'\n", "stderr")
    run_follower()
    deployment = settle(double, submit(web, redis_conn))
    assert deployment.status in (DeploymentStatus.FAILED, DeploymentStatus.REVERTED)
    wait_until(
        lambda: "KeyError: 'DATABASE_URL'"
        in (failure_reason(Deployment.get_by_id(deployment.id)) or {}).get("output", []),
        timeout=20, what="the failing allocation's output",
    )  # fmt: skip
    reason = failure_reason(Deployment.get_by_id(deployment.id))
    assert any(e["text"].startswith("Alloc Unhealthy: Task not running") for e in reason["events"])
    assert "KeyError: 'DATABASE_URL'" in reason["output"]

    auth.login("owner@example.com", PASSWORD)
    page = client.get(f"/apps/web/deployments/{deployment.id}").get_data(as_text=True)
    assert "Why it failed" in page
    assert "Alloc Unhealthy: Task not running for min_healthy_time" in page
    assert "KeyError: &#39;DATABASE_URL&#39;" in page


# -- readers ------------------------------------------------------------------------------------


@pytest.fixture
def seeded(web, redis_conn):
    """A finished deployment with output of two processes on both streams."""
    deployment = Deployment.create(
        app=web, release=_release(web), status="succeeded", finished_at=utcnow()
    )
    offsets: dict[tuple[str, str], int] = {}
    for i in range(30):
        process = ("web", "worker")[i % 2]
        stream = ("stdout", "stderr")[i % 3 == 0]
        text = f"{process} {stream} {i}\n"
        after = offsets.get((process, stream), 0)
        offsets[(process, stream)] = after + len(text)
        append_app_log(
            web.id, deployment.id, alloc=f"{process}-alloc-0000-0000-000000000000"[:36],
            process=process, task=process, stream=stream, text=text, after=after,
            offset=after + len(text), max_bytes=1_000_000, redis_conn=redis_conn,
        )  # fmt: skip
    return deployment


def _release(app):
    from panel.models import Release

    return Release.select().where(Release.app == app.id).first() or Release.create(
        app=app, number=1, image=app.image, config={}
    )


def test_the_deployment_log_streams_then_ends_and_resumes_after_last_event_id(seeded, client, auth):
    auth.login("owner@example.com", PASSWORD)
    path = f"/apps/web/deployments/{seeded.id}/log"
    first = frames(client.get(path).get_data(as_text=True))
    assert first[-1][1] == "end"
    logs = [data for _, event, data in first if event == "log"]
    assert [row["text"] for row in logs] == [
        row.text for row in AppLog.select().where(AppLog.deployment == seeded.id)
        .order_by(AppLog.seq)
    ]  # fmt: skip
    middle = logs[11]["seq"]
    again = frames(client.get(path, headers={"Last-Event-ID": str(middle)}).get_data(as_text=True))
    assert [d["seq"] for _, e, d in again if e == "log"] == [r["seq"] for r in logs[12:]]
    download = client.get(path + ".txt").get_data(as_text=True)
    assert download.count("\n") == 30 and "stderr worker/worker-a | worker stderr 3" in download


def test_the_app_log_filters_by_process_and_stream_and_refuses_bad_filters(
    seeded, client, auth, app, redis_conn
):
    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(
        stream_lifetime=1
    )  # the app's log has no end: the stream closes after its lifetime
    auth.login("owner@example.com", PASSWORD)
    body = client.get("/apps/web/logs/stream?process=worker&stream=stderr").get_data(as_text=True)
    texts = [d["text"] for _, e, d in frames(body) if e == "log"]
    assert texts and all(t.startswith("worker stderr") for t in texts)
    assert client.get("/apps/web/logs/stream?since=forever").status_code == 400
    assert client.get("/apps/web/logs/stream?stream=syslog").status_code == 400
    assert client.get("/apps/web/logs/stream?process=../x").status_code == 400
    page = client.get("/apps/web/logs").get_data(as_text=True)
    assert 'value="worker"' in page and 'value="web"' in page


def test_retention_removes_old_rows_but_keeps_where_collectors_resume(seeded):
    AppLog.update(created_at=utcnow().replace(year=2000)).execute()
    removed = prune_app_logs(utcnow())
    kept = list(AppLog.select())
    assert removed == 30 - len(kept)
    assert len(kept) == 4  # the newest row of each (allocation, task, stream)


def test_a_deployment_keeps_its_newest_output_within_the_cap(web, redis_conn):
    deployment = Deployment.create(app=web, release=_release(web))
    after = 0
    for i in range(200):
        text = f"{i:04d} " + "x" * 95 + "\n"
        append_app_log(
            web.id, deployment.id, alloc="a" * 36, process="web", task="web", stream="stdout",
            text=text, after=after, offset=after + len(text), max_bytes=5_000,
            redis_conn=redis_conn,
        )  # fmt: skip
        after += len(text)
    rows = list(AppLog.select().where(AppLog.deployment == deployment.id).order_by(AppLog.seq))
    assert sum(row.size for row in rows) <= 5_000
    assert rows[-1].text.startswith("0199")
    assert rows[0].text > "0150"  # the oldest went first


def follows(double, stream: str = "stdout") -> int:
    """Followed log requests for ``stream`` the double received so far."""
    return sum(
        1
        for r in double.requests_to("GET", r"/v1/client/fs/logs/.+")
        if r.query.get("type") == [stream] and r.query.get("follow") == ["true"]
    )


def test_output_follows_through_a_broken_connection_and_a_quiet_minute(
    double, run_follower, web, redis_conn
):
    double.set_logs("one\n", "stdout")
    run_follower()
    settle(double, submit(web, redis_conn))
    wait_until(lambda: output(web.id).count("one") == 2, timeout=20, what="the first lines")
    opened = follows(double)
    assert opened == 2  # one follow per allocation

    double.break_log_streams()
    double.set_logs("one\ntwo\n", "stdout")
    wait_until(lambda: output(web.id).count("two") == 2, timeout=20, what="lines after the cut")
    reopened = follows(double)
    assert reopened > opened  # the cut follows were opened again, from where they were

    time.sleep(65)  # a quiet minute: the follows stay open, nothing is opened again
    double.set_logs("one\ntwo\nthree\n", "stdout")
    wait_until(lambda: output(web.id).count("three") == 2, timeout=20, what="the last lines")
    assert follows(double) == reopened
    assert [output(web.id).count(word) for word in ("one", "two", "three")] == [2, 2, 2]


def test_a_live_deployment_log_shows_each_step_then_ends_when_the_deployment_does(
    web, client, auth, app, redis_conn
):
    from test_live_deployments import open_stream

    from panel.actions.deployments import claim_deployment, finish_deployment
    from panel.reconcile.follow import Outcome

    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(
        stream_lifetime=20
    )  # a stream waiting for an event that never comes fails the test, not hangs it
    deployment = request_deploy(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn
    ).deployment
    auth.login("owner@example.com", PASSWORD)
    stream = open_stream(client, f"/apps/web/deployments/{deployment.id}/log")
    assert stream.next() == {"retry": "2000"}
    assert json.loads(stream.next()["data"])["text"].startswith("queued release v1")
    assert claim_deployment(deployment.id, redis_conn)
    step = stream.next()
    assert json.loads(step["data"])["text"] == "a worker started the deployment\n"
    assert finish_deployment(deployment.id, Outcome(DeploymentStatus.CANCELLED, "stopped"),
                             redis_conn)  # fmt: skip
    assert json.loads(stream.next()["data"])["text"] == "cancelled: stopped\n"
    assert stream.next()["event"] == "end"  # once it settled, not after the stream's lifetime
    assert stream.rest() == ""
    stream.close()
