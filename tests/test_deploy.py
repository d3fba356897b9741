"""deploy_app and the follower against the Nomad API double: outcomes, auto-revert, failures,
retries counted on the row, the sweep, idempotence, namespaces."""

from __future__ import annotations

import logging

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from panel.actions.apps import ActionError, create_app, request_deploy, request_rollback, set_env
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Deployment, DeploymentStatus, Event, Team
from panel.reconcile import jobs
from panel.reconcile.jobs import deploy_app, sweep_deployments

from conftest import free_port, wait_until
from nomad_double import run_nomad_double


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


@pytest.fixture
def app_row(team, redis_conn):
    return create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", count=2,
        redis_conn=redis_conn,
    )  # fmt: skip


@pytest.fixture
def follow(run_follower, nomad_clock):
    """A follower on a thread, and the double's time passing by itself."""
    return run_follower()


def request(app, redis_conn, image: str | None = None) -> Deployment:
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, image=image
    )
    assert requested.enqueued
    return requested.deployment


def finished(deployment_id: int, timeout: float = 30.0) -> Deployment:
    """The deployment once it reached a terminal state (the follower records it)."""
    return wait_until(
        lambda: (row := Deployment.get_by_id(deployment_id))
        and DeploymentStatus(row.status).is_terminal
        and row,
        timeout=timeout, what=f"deployment #{deployment_id} to end",
    )  # fmt: skip


def deploy(app, redis_conn, image: str | None = None) -> Deployment:
    """Request a deployment, run its job here (it returns once Nomad accepted the job), then
    wait for the follower to record the outcome."""
    deployment = request(app, redis_conn, image)
    assert deploy_app(deployment.id) == "registered"
    return finished(deployment.id)


def current_job(double, job_id: str = "web", namespace: str = "default") -> dict:
    return double.cluster.current(namespace, job_id)


def image_of(job: dict) -> str:
    return job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]


def nomad_deployments(double, job_id: str = "web") -> list[dict]:
    return [d for d in double.cluster.deployments.values() if d["JobID"] == job_id]


def subjects(deployment: Deployment) -> list[str]:
    return [
        e.subject
        for e in Event.select().order_by(Event.id)
        if e.data.get("deployment_id") == deployment.id
    ]


def deploy_jobs(redis_conn) -> list[str]:
    """Ids of deploy jobs waiting in the queue or scheduled for a retry."""
    queue = Queue("deploys", connection=redis_conn)
    return queue.job_ids + ScheduledJobRegistry(queue=queue).get_job_ids()


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------


def test_healthy_release_is_promoted_and_recorded(
    deploy_env, nomad_double, follow, app_row, redis_conn
):
    first = deploy(app_row, redis_conn)
    assert first.status == DeploymentStatus.SUCCEEDED, first.status_message
    assert first.nomad_job_version == 0

    second = deploy(app_row, redis_conn, image="registry.local/web:2")
    assert second.status == DeploymentStatus.SUCCEEDED, second.status_message
    assert second.nomad_job_version == first.nomad_job_version + 1
    assert second.nomad_deployment_id and second.nomad_eval_id
    assert second.started_at and second.finished_at
    assert second.status_message == "Nomad: Deployment completed successfully"

    job = current_job(nomad_double)
    assert image_of(job) == "registry.local/web:2"
    assert job["Meta"]["helios.deployment"] == str(second.id)
    assert job["Meta"]["helios.release"] == "2"
    nomad_dep = nomad_double.cluster.deployments[second.nomad_deployment_id]
    assert nomad_dep["Status"] == "successful"
    assert nomad_dep["TaskGroups"]["web"]["DesiredCanaries"] == 2
    assert nomad_dep["TaskGroups"]["web"]["Promoted"] is True
    assert subjects(second) == [
        "v1.deployment.requested",
        "v1.deployment.started",
        "v1.deployment.submitted",
        "v1.deployment.succeeded",
    ]
    # Every register Helios sent was checked against the spec by the double.
    assert len(nomad_double.requests_to("POST", r"/v1/job/web")) == 2


def test_a_deploy_job_reads_the_job_and_the_variable_once(
    deploy_env, nomad_double, app_row, redis_conn
):
    settings = Settings.from_env()
    set_env(actor=None, app=app_row, key="TOKEN", value="t-1", secret=True,
            cipher=SecretCipher.from_settings(settings))  # fmt: skip
    deployment = request(app_row, redis_conn)
    before = len(nomad_double.requests)
    assert deploy_app(deployment.id) == "registered"
    sent = [(r.method, r.path) for r in nomad_double.requests[before:]]
    assert sent == [
        ("GET", "/v1/job/web/versions"),
        ("POST", "/v1/job/web/plan"),
        ("GET", "/v1/var/nomad/jobs/web"),
        ("PUT", "/v1/var/nomad/jobs/web"),
        ("POST", "/v1/job/web"),
    ]


def test_failing_canary_is_auto_reverted(deploy_env, nomad_double, follow, app_row, redis_conn):
    nomad_double.set_health(lambda job, alloc: image_of(job) != "registry.local/web:2")
    v1 = deploy(app_row, redis_conn)
    v2 = deploy(app_row, redis_conn, image="registry.local/web:2")
    wait_until(
        lambda: all(d["Status"] != "running" for d in nomad_deployments(nomad_double)),
        what="Nomad to finish the revert's own deployment",
    )

    assert v1.status == DeploymentStatus.SUCCEEDED
    assert v2.status == DeploymentStatus.REVERTED
    assert "Failed due to progress deadline - rolling back to job version 0" in v2.status_message
    assert "previous stable version runs again" in v2.status_message
    statuses = sorted(d["Status"] for d in nomad_deployments(nomad_double))
    assert statuses == ["failed", "successful", "successful"]
    job = current_job(nomad_double)
    assert image_of(job) == "registry.local/web:1"
    assert job["Meta"]["helios.deployment"] == str(v1.id)
    failed = Event.get(Event.subject == "v1.deployment.failed")
    assert failed.data["reverted_to_version"] == v1.nomad_job_version
    assert failed.data["deployment_id"] == v2.id


def test_job_too_big_fails_placement_and_registers_nothing(
    deploy_env, nomad_double, team, redis_conn
):
    huge = create_app(actor=None, team=team, slug="huge", image="big:1", memory_mb=200_000)
    deployment = request(huge, redis_conn)
    assert deploy_app(deployment.id) == DeploymentStatus.FAILED
    result = Deployment.get_by_id(deployment.id)
    assert result.status_message.startswith("placement failed")
    assert "memory exhausted" in result.status_message
    assert "add client nodes" in result.status_message
    assert ("default", "huge") not in nomad_double.cluster.jobs
    assert subjects(result)[-1] == "v1.deployment.failed"


def test_running_the_job_again_changes_nothing(
    deploy_env, nomad_double, follow, app_row, redis_conn
):
    done = deploy(app_row, redis_conn)
    versions_before = len(nomad_double.cluster.versions("default", "web"))
    assert deploy_app(done.id) == DeploymentStatus.SUCCEEDED
    assert len(nomad_double.cluster.versions("default", "web")) == versions_before
    assert subjects(Deployment.get_by_id(done.id)).count("v1.deployment.submitted") == 1


def test_a_rerun_after_register_finds_its_own_version(
    deploy_env, nomad_double, run_follower, nomad_clock, app_row, redis_conn
):
    deployment = request(app_row, redis_conn)
    assert deploy_app(deployment.id) == "registered"
    # A crash right after Nomad accepted the job, before the row said so: the re-run looks first.
    Deployment.update(nomad_job_version=None).where(Deployment.id == deployment.id).execute()
    assert deploy_app(deployment.id) == "registered"
    assert Deployment.get_by_id(deployment.id).nomad_job_version == 0
    assert len(nomad_double.cluster.versions("default", "web")) == 1
    run_follower()
    assert finished(deployment.id).status == DeploymentStatus.SUCCEEDED


def test_newer_request_supersedes_a_queued_one(
    deploy_env, nomad_double, follow, app_row, redis_conn
):
    older = request(app_row, redis_conn)
    newer = request(app_row, redis_conn)
    assert deploy_app(older.id) == DeploymentStatus.SUPERSEDED
    assert deploy_app(newer.id) == "registered"
    assert finished(newer.id).status == DeploymentStatus.SUCCEEDED
    old = Deployment.get_by_id(older.id)
    assert f"superseded by deployment #{newer.id}" in old.status_message
    assert old.nomad_job_version is None
    assert len(nomad_double.cluster.versions("default", "web")) == 1


def tick_until(double, predicate, what: str, steps: int = 200):
    """Advance the double one step at a time until predicate() holds (the follower watches)."""

    def stepped():
        double.tick()
        return predicate()

    return wait_until(stepped, timeout=30, interval=0.05, what=what)


def test_a_newer_deployment_cancels_the_one_nomad_was_rolling_out(
    deploy_env, nomad_double, run_follower, app_row, redis_conn
):
    nomad_double.auto_advance = False  # time passes only when the test ticks
    run_follower()
    first = request(app_row, redis_conn)
    assert deploy_app(first.id) == "registered"
    tick_until(nomad_double, lambda: Deployment.get_by_id(first.id).status == "succeeded",
               "the first deployment")  # fmt: skip
    second = request(app_row, redis_conn, image="registry.local/web:2")
    assert deploy_app(second.id) == "registered"
    third = request(app_row, redis_conn, image="registry.local/web:3")
    assert deploy_app(third.id) == "registered"  # Nomad cancels the second's deployment
    cancelled = finished(second.id)
    assert cancelled.status == DeploymentStatus.CANCELLED, cancelled.status_message
    assert "Cancelled due to newer version of job" in cancelled.status_message
    tick_until(nomad_double, lambda: Deployment.get_by_id(third.id).status == "succeeded",
               "the third deployment")  # fmt: skip


def test_rollback_deploys_an_earlier_release(deploy_env, nomad_double, follow, app_row, redis_conn):
    deploy(app_row, redis_conn)
    deploy(app_row, redis_conn, image="registry.local/web:2")
    requested = request_rollback(
        actor=None, app=app_row, release_number=1, settings=Settings.from_env(),
        redis_conn=redis_conn,
    )  # fmt: skip
    assert deploy_app(requested.deployment.id) == "registered"
    row = finished(requested.deployment.id)
    assert row.status == DeploymentStatus.SUCCEEDED
    assert (row.release.number, row.release.config["rollback_of"]) == (3, 1)
    assert image_of(current_job(nomad_double)) == "registry.local/web:1"
    assert Deployment.select().count() == 3
    with pytest.raises(ActionError, match="has no release 9"):
        request_rollback(
            actor=None, app=app_row, release_number=9, settings=Settings.from_env(),
            redis_conn=redis_conn,
        )  # fmt: skip


def test_secrets_go_to_nomad_variables_never_into_the_job(
    deploy_env, nomad_double, follow, app_row, redis_conn
):
    settings = Settings.from_env()
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=None, app=app_row, key="DATABASE_URL", value="postgres://u:pw-9f3k@db/x",
            secret=True, cipher=cipher)  # fmt: skip
    set_env(actor=None, app=app_row, key="LOG_LEVEL", value="debug", secret=False, cipher=cipher)
    result = deploy(app_row, redis_conn)
    assert result.status == DeploymentStatus.SUCCEEDED
    job = current_job(nomad_double)
    assert "pw-9f3k" not in repr(job)
    assert job["TaskGroups"][0]["Tasks"][0]["Env"]["LOG_LEVEL"] == "debug"
    variable = nomad_double.cluster.variables[("default", "nomad/jobs/web")]
    assert variable["Items"] == {"r1.DATABASE_URL": "postgres://u:pw-9f3k@db/x"}
    sent = [r.body for r in nomad_double.requests if r.path.startswith("/v1/job")]
    assert "pw-9f3k" not in repr(sent)
    assert "pw-9f3k" not in repr([(e.subject, e.data) for e in Event.select()])


# ---------------------------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------------------------


def test_job_and_variable_go_to_the_configured_namespace(
    deploy_env, nomad_double, nomad_clock, run_follower, app_row, redis_conn, monkeypatch
):
    """NOMAD_NAMESPACE=prod (a team not moved to its own namespace): the job and its variable
    use prod; the event stream watches every namespace."""
    import requests

    monkeypatch.setenv("NOMAD_NAMESPACE", "prod")
    requests.post(f"{nomad_double.url}/v1/namespace/prod", json={"Name": "prod"}, timeout=5)
    run_follower()
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app_row, key="API_KEY", value="k-1", secret=True, cipher=cipher)
    result = deploy(app_row, redis_conn)
    assert result.status == DeploymentStatus.SUCCEEDED, result.status_message
    assert ("prod", "web") in nomad_double.cluster.jobs
    assert ("default", "web") not in nomad_double.cluster.jobs
    assert set(nomad_double.cluster.variables) == {("prod", "nomad/jobs/web")}
    var_calls = [r for r in nomad_double.requests if r.path.startswith("/v1/var/")]
    assert var_calls and all(r.query.get("namespace") == ["prod"] for r in var_calls)
    streams = nomad_double.requests_to("GET", r"/v1/event/stream")
    assert streams and streams[-1].query.get("namespace") == ["*"]


# ---------------------------------------------------------------------------------------------
# Failures end, with a reason, within a bound
# ---------------------------------------------------------------------------------------------


def test_nomad_unreachable_is_retried_then_fails_with_a_human_reason(
    deploy_env, app_row, redis_conn, monkeypatch
):
    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NOMAD_ADDR", address)
    deployment = request(app_row, redis_conn)
    Queue("deploys", connection=redis_conn).empty()  # this test runs the jobs itself
    assert deploy_app(deployment.id) == "retrying"
    row = Deployment.get_by_id(deployment.id)
    assert row.status == DeploymentStatus.RUNNING and row.attempts == 1
    assert row.status_message == (
        f"Nomad at {address} is not answering (connection refused): start the cluster or point "
        "NOMAD_ADDR at a server — trying again in 1 s (attempt 1 of 6)"
    )
    assert deploy_jobs(redis_conn) == [f"deploy-{deployment.id}-2"]
    for attempt in range(2, 6):  # what the scheduled retries do
        assert deploy_app(deployment.id) == "retrying"
        assert Deployment.get_by_id(deployment.id).attempts == attempt
    assert deploy_app(deployment.id) == DeploymentStatus.FAILED
    row = Deployment.get_by_id(deployment.id)
    assert row.status_message == (
        f"Nomad at {address} is not answering (connection refused): start the cluster or point "
        "NOMAD_ADDR at a server — gave up after 6 attempts"
    )
    assert "urllib3" not in row.status_message and "HTTPConnection" not in row.status_message
    assert subjects(row)[-1] == "v1.deployment.failed"


def test_acl_denial_fails_at_once_in_one_line_without_traceback_or_retry(
    deploy_env, app_row, redis_conn, monkeypatch, caplog
):
    with run_nomad_double(token="the-right-token") as guarded:
        monkeypatch.setenv("NOMAD_ADDR", guarded.url)
        monkeypatch.setenv("NOMAD_TOKEN", "a-wrong-token")
        deployment = request(app_row, redis_conn)
        with caplog.at_level(logging.INFO):
            assert deploy_app(deployment.id) == DeploymentStatus.FAILED
        guarded.assert_no_violations()
        assert len(guarded.requests) == 1  # nothing more was tried
    row = Deployment.get_by_id(deployment.id)
    assert row.status == DeploymentStatus.FAILED and row.attempts == 0
    assert "denied" in row.status_message
    assert "set NOMAD_TOKEN" in row.status_message
    assert "a-wrong-token" not in row.status_message
    about = [r for r in caplog.records if f"#{deployment.id}" in r.getMessage()]
    assert len(about) == 1 and about[0].levelno == logging.WARNING
    assert all(r.exc_info is None for r in caplog.records)
    assert deploy_jobs(redis_conn) == [f"deploy-{deployment.id}"]  # the request's own, only
    assert sweep_deployments(redis_conn, Settings.from_env())["requeued"] == []


def test_an_unexpected_error_fails_the_deployment_with_a_reason_and_no_requeue(
    deploy_env, nomad_double, app_row, redis_conn, monkeypatch
):
    def broken(spec):
        raise KeyError("a bug")

    monkeypatch.setattr(jobs, "render_job", broken)
    deployment = request(app_row, redis_conn)
    Queue("deploys", connection=redis_conn).empty()
    with pytest.raises(KeyError):
        deploy_app(deployment.id)
    row = Deployment.get_by_id(deployment.id)
    assert row.status == DeploymentStatus.FAILED
    assert row.status_message.startswith(
        "Helios stopped on an unexpected error (KeyError: 'a bug'): see the worker's log"
    )
    assert subjects(row)[-1] == "v1.deployment.failed"
    Deployment.update(requested_at=row.requested_at.replace(year=2000)).execute()
    assert not any(sweep_deployments(redis_conn, Settings.from_env()).values())
    assert deploy_jobs(redis_conn) == []


def test_a_changed_encryption_key_fails_with_what_to_do(
    deploy_env, nomad_double, app_row, redis_conn, monkeypatch
):
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app_row, key="TOKEN", value="t-1", secret=True, cipher=cipher)
    deployment = request(app_row, redis_conn)
    from cryptography.fernet import Fernet

    monkeypatch.setenv("HELIOS_ENCRYPTION_KEY", Fernet.generate_key().decode())
    assert deploy_app(deployment.id) == DeploymentStatus.FAILED
    row = Deployment.get_by_id(deployment.id)
    assert "restore the HELIOS_ENCRYPTION_KEY" in row.status_message
    assert nomad_double.cluster.variables == {}


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


def _age(deployment_id: int, **fields) -> None:
    """Move a deployment's timestamps into the past."""
    Deployment.update(**fields).where(Deployment.id == deployment_id).execute()


def _requested_a_while_ago():
    """Older than the sweep's requeue delay, younger than HELIOS_DEPLOY_START_TIMEOUT (after
    which a queued deployment fails instead: see test_deploy_cancel.py)."""
    from datetime import timedelta

    from panel.models import utcnow

    return utcnow() - timedelta(seconds=jobs.REQUEUE_AFTER + 60)


def test_a_deployment_whose_job_was_lost_is_queued_again(deploy_env, app_row, redis_conn):
    settings = Settings.from_env()
    deployment = request(app_row, redis_conn)
    redis_conn.flushall()  # a Redis restart without persistence loses the queue
    assert sweep_deployments(redis_conn, settings)["queued"] == []  # too young to tell
    _age(deployment.id, requested_at=_requested_a_while_ago())
    assert sweep_deployments(redis_conn, settings)["queued"] == [deployment.id]
    assert deploy_jobs(redis_conn) == [f"deploy-{deployment.id}"]
    assert sweep_deployments(redis_conn, settings)["queued"] == []
    assert deploy_jobs(redis_conn) == [f"deploy-{deployment.id}"]


def test_the_sweep_never_queues_a_second_copy_of_a_queued_or_started_job(
    deploy_env, app_row, redis_conn
):
    settings = Settings.from_env()
    queued = request(app_row, redis_conn)
    _age(queued.id, requested_at=_requested_a_while_ago())
    for _ in range(3):
        assert not any(sweep_deployments(redis_conn, settings).values())
    assert deploy_jobs(redis_conn) == [f"deploy-{queued.id}"]

    # Now a worker runs it: RQ says started and the job's heartbeat is fresh.
    from rq.job import Job

    job = Job.fetch(f"deploy-{queued.id}", connection=redis_conn)
    Queue("deploys", connection=redis_conn).remove(job)
    job.set_status("started")
    from panel.models import utcnow

    _age(queued.id, status="running", started_at=utcnow(), heartbeat_at=utcnow())
    for _ in range(3):
        assert not any(sweep_deployments(redis_conn, settings).values())
    assert deploy_jobs(redis_conn) == []
    assert Deployment.get_by_id(queued.id).attempts == 0


def test_workers_sweeping_at_once_queue_a_dead_run_again_once(deploy_env, app_row, redis_conn):
    """Ten workers sweep every few seconds: a run whose worker died is counted and queued
    again by one of them, whether their sweeps overlap or read the same row at once."""
    import threading

    from panel.models import utcnow
    from panel.reconcile import jobs

    settings = Settings.from_env()
    dead = request(app_row, redis_conn)
    Queue("deploys", connection=redis_conn).empty()  # its job died with its worker
    long_ago = utcnow().replace(year=2000)
    _age(dead.id, status="running", started_at=long_ago, heartbeat_at=long_ago)

    # Sweeps that overlap in time: one holds the sweep, the others find it taken.
    start = threading.Barrier(10)
    results: list[dict[str, list[int]]] = []

    def sweep() -> None:
        from panel.db import database

        start.wait()
        with database.connection_context():
            results.append(sweep_deployments(redis_conn, settings))

    threads = [threading.Thread(target=sweep) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(r.get("requeued", [])) for r in results) == 1
    assert Deployment.get_by_id(dead.id).attempts == 1
    assert deploy_jobs(redis_conn) == [f"deploy-{dead.id}-2"]

    # Two sweeps that read the row before either wrote (the sweep lock expired meanwhile).
    Queue("deploys", connection=redis_conn).empty()
    _age(dead.id, heartbeat_at=long_ago)
    row = Deployment.get_by_id(dead.id)
    stale = utcnow()
    assert jobs._revive(row, redis_conn, settings, stale) == "requeued"
    assert jobs._revive(row, redis_conn, settings, stale) is None
    assert Deployment.get_by_id(dead.id).attempts == 2
    assert deploy_jobs(redis_conn) == [f"deploy-{dead.id}-3"]


def test_retries_are_counted_on_the_row_and_survive_the_sweep(
    deploy_env, app_row, redis_conn, monkeypatch
):
    """A sweep (or a restart) never resets the count: the deployment still ends after six."""
    monkeypatch.setenv("NOMAD_ADDR", f"http://127.0.0.1:{free_port()}")
    settings = Settings.from_env()
    deployment = request(app_row, redis_conn)
    Queue("deploys", connection=redis_conn).empty()  # this test runs the jobs itself
    assert deploy_app(deployment.id) == "retrying"
    assert not any(sweep_deployments(redis_conn, settings).values())  # its retry is scheduled
    from panel.models import utcnow

    stale = utcnow().replace(year=2000)
    for expected in (2, 3, 4, 5):
        redis_conn.flushall()  # the scheduled retry is lost (e.g. Redis restarted)
        _age(deployment.id, heartbeat_at=stale)
        assert sweep_deployments(redis_conn, settings)["requeued"] == [deployment.id]
        row = Deployment.get_by_id(deployment.id)
        assert row.attempts == expected
        assert f"(attempt {expected + 1} of 6)" in row.status_message
        assert deploy_jobs(redis_conn) == [f"deploy-{deployment.id}-{expected + 1}"]
    assert deploy_app(deployment.id) == DeploymentStatus.FAILED
    assert "gave up after 6 attempts" in Deployment.get_by_id(deployment.id).status_message
