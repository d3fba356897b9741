"""One-off runs (`helios run`): the action, the run's job in the Nomad double, the follower.

The app has a live release with a secret; a run renders a batch job of that release (checked
against Nomad's OpenAPI by the double), whose template reads the secret from the run's own
Nomad Variable (rendered here as a Nomad client would); the double's batch script stands for
the command; the follower stores the output, scrubbed, and records the exit code.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from gotemplate import render_template
from rq import Queue

from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.common import ActionError
from panel.actions.members import add_member
from panel.actions.runs import request_run
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import AppLog, Deployment, DeploymentStatus, Event, OneOffRun, Team, utcnow
from panel.reconcile.jobs import deploy_app
from panel.reconcile.runs import start_run, sweep_runs
from panel.render.run import RUN_TIMEOUT_DEFAULT

from conftest import wait_until
from nomad_double import TaskScript

SECRET = "hunter2-s3cr3t-value"


@pytest.fixture
def double(deploy_env, nomad_double, run_follower):
    """The double with time frozen (the test ticks it) and a follower watching."""
    nomad_double.auto_advance = False
    run_follower()
    return nomad_double


def settle(double, deployment_id: int) -> Deployment:
    def ended():
        double.tick()
        row = Deployment.get_by_id(deployment_id)
        return DeploymentStatus(row.status).is_terminal and row

    return wait_until(ended, timeout=30, interval=0.05, what=f"deployment #{deployment_id}")


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


@pytest.fixture
def web(team, redis_conn, double):
    """An app with a secret and a plain variable, deployed (its live release is release 1)."""
    app = create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", redis_conn=redis_conn
    )
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app, key="DATABASE_URL", value=SECRET, secret=True, cipher=cipher)
    set_env(actor=None, app=app, key="MODE", value="plain", secret=False, cipher=cipher)
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn
    )
    deploy_app(requested.deployment.id)
    assert settle(double, requested.deployment.id).status == DeploymentStatus.SUCCEEDED
    return app


def run_to_end(double, run_id: int) -> OneOffRun:
    """Tick until the run ended and both its output streams were closed."""

    def ended():
        double.tick()
        row = OneOffRun.get_by_id(run_id)
        closed = AppLog.select().where((AppLog.run == run_id) & AppLog.final).count() == 2
        return row.finished_at is not None and closed and row

    return wait_until(ended, timeout=30, interval=0.05, what=f"run #{run_id}")


def output(run_id: int, stream: str | None = None) -> str:
    rows = AppLog.select().where(AppLog.run == run_id).order_by(AppLog.seq)
    return "".join(row.text for row in rows if stream is None or row.stream == stream)


def subjects(run_id: int) -> list[str]:
    rows = Event.select().where(Event.subject.startswith("v1.run.")).order_by(Event.id)
    return [row.subject for row in rows if row.data["run_id"] == run_id]


def test_a_run_uses_the_live_release_and_its_output_comes_back_scrubbed(double, web, redis_conn):
    double.set_batch_script(
        {"run": TaskScript(stdout=["migrating", f"connected to {SECRET}"],
                           stderr=["a warning"], steps=2)},
        kind="run",
    )  # fmt: skip
    run = request_run(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn,
        command=["python", "manage.py", "migrate", "--noinput"],
    )  # fmt: skip
    assert run.status == "queued" and run.timeout_s == RUN_TIMEOUT_DEFAULT
    assert start_run(run.id) == "registered"
    job_id = f"web-run-{run.id}"
    job = double.cluster.current("default", job_id)
    assert job["Type"] == "batch"
    assert job["Meta"]["helios.app"] == "web" and job["Meta"]["helios.run"] == str(run.id)
    assert job["Meta"]["helios.requested_by"] == "operator"
    assert job["Meta"]["helios.release"] == "1"
    group = job["TaskGroups"][0]
    assert group["RestartPolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Attempts"] == 0
    task = group["Tasks"][0]
    assert task["Config"]["image"] == "registry.local/web:1"
    assert [task["Config"]["command"], *task["Config"]["args"]] == [
        "python", "manage.py", "migrate", "--noinput",
    ]  # fmt: skip
    assert task["Env"]["MODE"] == "plain" and task["Env"]["HELIOS_RUN"] == str(run.id)
    assert SECRET not in json.dumps(job)  # the secret is in the run's variable, not the job
    variables = {path: var["Items"] for (_ns, path), var in double.cluster.variables.items()}
    assert variables[f"nomad/jobs/{job_id}"] == {"r1.DATABASE_URL": SECRET}
    template = task["Templates"][0]["EmbeddedTmpl"]
    assert render_template(template, variables) == f'DATABASE_URL="{SECRET}"\n'

    ended = run_to_end(double, run.id)
    assert (ended.status, ended.exit_code) == ("succeeded", 0)
    assert output(run.id, "stdout") == "migrating\nconnected to [secret DATABASE_URL]\n"
    assert output(run.id, "stderr") == "a warning\n"
    assert SECRET not in output(run.id)
    assert output(run.id, "helios").endswith("the command exited with code 0 (succeeded)\n")
    # The exit line comes after the command's output, as a reader expects.
    assert output(run.id).endswith("the command exited with code 0 (succeeded)\n")
    assert ("default", f"nomad/jobs/{job_id}") not in double.cluster.variables  # dropped
    assert subjects(run.id) == ["v1.run.requested", "v1.run.started", "v1.run.finished"]


def test_a_failing_command_records_its_exit_code(double, web, redis_conn):
    double.set_batch_script({"run": TaskScript(stderr=["no such table"], exit_code=3)}, kind="run")
    run = request_run(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn,
        command=["sh", "-c", "exit 3"], timeout=60,
    )  # fmt: skip
    start_run(run.id)
    ended = run_to_end(double, run.id)
    assert (ended.status, ended.exit_code) == ("failed", 3)
    assert ended.status_message == "the command exited with code 3"
    assert output(run.id, "stderr") == "no such table\n"
    finished = Event.select().where(Event.subject == "v1.run.finished").get()
    assert finished.data["exit_code"] == 3


def test_a_run_past_its_timeout_is_stopped(double, web, redis_conn):
    double.set_batch_script({"run": TaskScript(stdout=["working"], steps=100_000)}, kind="run")
    run = request_run(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn,
        command=["sleep", "infinity"], timeout=1,
    )  # fmt: skip
    start_run(run.id)
    ended = run_to_end(double, run.id)
    assert ended.status == "timed_out" and ended.exit_code is None
    assert "timeout of 1 s" in ended.status_message
    job = double.cluster.current("default", f"web-run-{run.id}")
    assert job["Stop"] is True


def test_an_app_without_a_live_release_is_refused(team, redis_conn, deploy_env):
    app = create_app(actor=None, team=team, slug="fresh", image="nginx:1.27")
    with pytest.raises(ActionError) as refused:
        request_run(
            actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn,
            command=["echo", "hi"],
        )  # fmt: skip
    assert refused.value.code == "conflict"
    assert "fresh has no live release" in refused.value.message
    assert "deploy it first" in refused.value.message
    assert OneOffRun.select().count() == 0


@pytest.mark.parametrize(
    ("command", "timeout", "fields", "says"),
    [
        ([], None, ["command"], "names no program"),
        ("echo hi", None, ["command"], "is a list of strings"),
        (["echo", 3], None, ["command"], "is a list of strings"),
        (["echo", "a\x00b"], None, ["command"], "contains NUL"),
        (["echo"] * 65, None, ["command"], "at most 64"),
        (["echo", "x" * 4096], None, ["command"], "within 4096 bytes"),
        (["", "x"], None, ["command"], "names no program"),
        (["echo"], 0, ["timeout"], "from 1 to 86400"),
        ([], 86_401, ["command", "timeout"], "names no program"),
    ],
)
def test_bad_commands_and_timeouts_are_refused_with_what_to_fix(
    web, redis_conn, command, timeout, fields, says
):
    with pytest.raises(ActionError) as refused:
        request_run(
            actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn,
            command=command, timeout=timeout,
        )  # fmt: skip
    assert refused.value.code == "invalid"
    assert [error.field for error in refused.value.errors] == fields
    assert says in refused.value.message


def test_running_a_command_takes_the_deployer_role(web, team, redis_conn):
    from panel.actions.accounts import create_user

    viewer = create_user("viewer@example.com", "correct horse battery", team_slug="elsewhere")
    add_member(actor=None, team=team, email=viewer.email, role="viewer", redis_conn=redis_conn)
    with pytest.raises(ActionError) as refused:
        request_run(
            actor=viewer, app=web, settings=Settings.from_env(), redis_conn=redis_conn,
            command=["echo", "hi"],
        )  # fmt: skip
    assert refused.value.code == "forbidden"
    assert "deployer role" in refused.value.message


def test_the_sweep_queues_a_lost_run_again_and_fails_one_whose_job_died(team, redis_conn):
    app = create_app(actor=None, team=team, slug="shop", image="nginx:1.27")
    nowhere = redis.Redis(port=1, socket_connect_timeout=0.2)
    release = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=nowhere
    ).deployment.release
    long_ago = utcnow() - timedelta(minutes=10)
    fields = {"app": app, "release": release, "command": ["ls"], "timeout_s": 60}
    lost = OneOffRun.create(**fields, requested_at=long_ago)
    fresh = OneOffRun.create(**fields)
    died = OneOffRun.create(**fields, status="running", requested_at=long_ago, started_at=long_ago)
    registered = OneOffRun.create(
        **fields, status="running", requested_at=long_ago, started_at=long_ago,
        nomad_job_id="shop-run-x",
    )  # fmt: skip
    assert sweep_runs(redis_conn) == {"queued": [lost.id], "failed": [died.id]}
    assert Queue("deploys", connection=redis_conn).fetch_job(f"run-{lost.id}") is not None
    assert OneOffRun.get_by_id(died.id).status == "failed"
    assert "run the command again" in OneOffRun.get_by_id(died.id).status_message
    assert [OneOffRun.get_by_id(r.id).status for r in (fresh, registered)] == ["queued", "running"]
    assert sweep_runs(redis_conn) == {"queued": [], "failed": []}  # its job waits in the queue
