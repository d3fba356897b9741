"""The follower: one process follows every registered deployment through Nomad's event stream.

Deploy jobs end once Nomad accepted the job version, so one app's long rollout never holds the
worker, and fifty apps deploying at once on one worker all progress. The follower keeps its
place in the stream in the database, reads every watched deployment again when it (re)connects
or Nomad says it fell out of the event buffer, reconnects when the stream breaks or goes silent,
ends a deployment Nomad never ends after HELIOS_DEPLOY_TIMEOUT, and heartbeats.

No test asserts a duration: each waits (with a generous bound) for something the old design (a
worker polling Nomad every 2 s and holding the job until the deployment ended), or a follower
without the feature under test, never does. Outcomes, auto-revert, cancellation and the
namespace of the stream are in test_deploy.py.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest

from panel.actions.apps import create_app, request_deploy
from panel.actions.deployments import FOLLOWER_ALIVE_KEY
from panel.config import Settings
from panel.follow import follower as follower_module
from panel.models import Deployment, DeploymentStatus, Event, FollowerCursor, Team, utcnow
from panel.reconcile.jobs import deploy_app, sweep_deployments

from conftest import kill_worker, wait_until

FOLLOWED_TOPICS = set(follower_module.TOPICS)
NEVER = 10**9  # steps: Nomad's progress deadline never runs out


@pytest.fixture
def nomad_double(request):
    """The conftest's double, built with the options of an indirect parameter when given
    (``event_buffer_size``, ``auto_advance``)."""
    from nomad_double import run_nomad_double

    with run_nomad_double(**getattr(request, "param", {})) as double:
        yield double
        double.assert_no_violations()


def small_buffer(size: int):
    """Parametrize the module's double: Nomad's event buffer holds ``size`` batches, and time
    passes only when the test ticks."""
    options = {"event_buffer_size": size, "auto_advance": False}
    return pytest.mark.parametrize("nomad_double", [options], indirect=True, ids=[f"buffer{size}"])


@pytest.fixture
def team(db):
    return Team.create(slug="acme", name="Acme")


def make_app(team, slug: str):
    """A small app: fifty of them fit the double's two client nodes."""
    return create_app(
        actor=None, team=team, slug=slug, image=f"registry.local/{slug}:1", count=1,
        cpu_mhz=100, memory_mb=64,
    )  # fmt: skip


def request(app, redis_conn) -> Deployment:
    """Request a deployment (its job goes to the queue)."""
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn
    )
    assert requested.enqueued
    return requested.deployment


def submit(app, redis_conn) -> Deployment:
    """Request a deployment and run its job here: it returns once Nomad accepted the job."""
    deployment = request(app, redis_conn)
    assert deploy_app(deployment.id) == "registered"
    return row(deployment.id)


def row(deployment_id: int) -> Deployment:
    return Deployment.get_by_id(deployment_id)


def terminal(deployment_id: int, timeout: float = 30.0) -> Deployment:
    """The deployment once the follower recorded how it ended."""
    return wait_until(
        lambda: (found := row(deployment_id)) and DeploymentStatus(found.status).is_terminal
        and found,
        timeout=timeout, what=f"deployment #{deployment_id} to end",
    )  # fmt: skip


def nomad_deployment(double, deployment: Deployment) -> dict:
    """Nomad's deployment of the job version a Helios deployment registered."""
    with double.cluster.lock:
        return next(
            d
            for d in double.cluster.deployments.values()
            if d["JobID"] == deployment.app.slug and d["JobVersion"] == deployment.nomad_job_version
        )


def nomad_status(double, deployment: Deployment) -> str:
    return nomad_deployment(double, deployment)["Status"]


def tick_until(double, predicate, what: str):
    """Advance the double's time one step at a time until predicate() holds."""

    def stepped():
        double.tick()
        return predicate()

    return wait_until(stepped, timeout=30, interval=0.01, what=what)


def stop_worker_now(worker) -> None:
    """SIGKILL a worker whose jobs are all done, instead of the fixture's SIGTERM at teardown.

    A SIGTERMed `helios worker` sometimes takes 60 s to exit (then the fixture's SIGKILL after
    10 s): RQ's worker stops its pub/sub thread (``get_message(timeout=60)``) after sending
    UNSUBSCRIBE, and when the thread read the reply before ``stop()`` cleared its flag, it
    blocks up to 60 s more while ``stop()`` joins it without a timeout (rq 3.0 with
    redis-py 8.2). Reported; not what these tests are about.
    """
    kill_worker(worker)


def newest_followed_batch(double) -> int:
    """Index of the newest batch in Nomad's buffer with an event of a topic the follower reads."""
    with double.broker.lock:
        return max(
            (i for i, events in double.broker.items
             if any(e["Topic"] in FOLLOWED_TOPICS for e in events)),
            default=0,
        )  # fmt: skip


def oldest_buffered(double) -> int:
    with double.broker.lock:
        return double.broker.items[0][0]


def following(double, follower, *deployments: Deployment) -> None:
    """Wait until an in-process follower is connected, watches these deployments and has
    handled every event Nomad buffered for it."""
    inner = follower.follower
    wait_until(
        lambda: (
            inner.connected
            and all(d.id in inner.watched for d in deployments)
            and inner.index >= newest_followed_batch(double)
        ),
        what="the follower to catch up",
    )


# ---------------------------------------------------------------------------------------------
# The worker is never held by a rollout
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_long_rollout_does_not_delay_another_apps_deploy_on_the_same_worker(
    deploy_env, nomad_double, nomad_clock, run_follower, start_worker, team, redis_conn
):
    """No more "an app waited 11 s behind another app's 10 s deploy". Nomad keeps replacing
    slow's unhealthy instance and never gives up, so its deployment runs until the test ends
    it; meanwhile the one worker deploys quick."""
    nomad_double.cluster.progress_deadline_steps = NEVER
    nomad_double.set_health(lambda job, alloc: job["ID"] != "slow")
    slow, quick = make_app(team, "slow"), make_app(team, "quick")
    run_follower()
    worker = start_worker(**deploy_env)

    long = request(slow, redis_conn)
    wait_until(lambda: row(long.id).registered, what="Nomad to accept slow's job")
    short = request(quick, redis_conn)

    done = terminal(short.id)
    assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    still = row(long.id)
    assert still.status == DeploymentStatus.RUNNING, still.status_message
    assert nomad_status(nomad_double, still) == "running"

    # slow's deployment is still followed: it ends when Nomad ends it.
    nomad_double.cluster.fail(nomad_deployment(nomad_double, still))
    ended = terminal(long.id)
    assert ended.status == DeploymentStatus.FAILED
    assert ended.status_message == "Nomad: Deployment marked as failed"
    stop_worker_now(worker)


@pytest.mark.slow
def test_fifty_apps_deploying_at_once_on_one_worker_all_progress(
    deploy_env, nomad_double, start_worker, start_follower, team, redis_conn
):
    """With Nomad's time standing still no rollout can end, yet the one worker registers all
    fifty (a worker holding each job until its rollout ended would stop at the first); then
    time runs and the one follower records all fifty outcomes."""
    from nomad_double.controls import Ticker

    nomad_double.auto_advance = False
    apps = [make_app(team, f"app-{n:02d}") for n in range(50)]
    start_follower(**deploy_env)
    worker = start_worker(**deploy_env)
    ids = [request(app, redis_conn).id for app in apps]

    def registered() -> int:
        return (
            Deployment.select()
            .where(Deployment.id.in_(ids) & Deployment.nomad_job_version.is_null(False))
            .count()
        )

    wait_until(lambda: registered() == 50, timeout=60, what="all fifty jobs registered")
    assert all(row(i).status == DeploymentStatus.RUNNING for i in ids)

    clock = Ticker(0.05, nomad_double.cluster.step)
    clock.start()
    try:
        rows = [terminal(i, timeout=60) for i in ids]
    finally:
        clock.stop()
    for app, deployment in zip(apps, rows, strict=True):
        assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.status_message
        versions = nomad_double.cluster.versions("default", app.slug)
        assert [v["Meta"]["helios.deployment"] for v in versions] == [str(deployment.id)]
        assert len(nomad_double.requests_to("POST", rf"/v1/job/{app.slug}")) == 1
    stop_worker_now(worker)


# ---------------------------------------------------------------------------------------------
# Nothing is lost: gaps in the stream, restarts
# ---------------------------------------------------------------------------------------------


@small_buffer(8)
def test_events_that_aged_out_while_no_follower_ran_are_read_again(
    deploy_env, nomad_double, run_follower, team, redis_conn
):
    """Nomad's buffer keeps 8 batches here; while the follower is stopped far more happen.
    A subscriber whose index aged out resumes silently at the oldest one still buffered: the
    follower must read every watched deployment again, and then keep following."""
    nomad_double.cluster.progress_deadline_steps = NEVER
    nomad_double.set_health(lambda job, alloc: job["ID"] != "sick")
    ok, bad, sick = (make_app(team, slug) for slug in ("ok", "bad", "sick"))
    fillers = [make_app(team, f"filler-{n}") for n in range(3)]

    first = run_follower()
    watched = [submit(app, redis_conn) for app in (ok, bad, sick)]
    following(nomad_double, first, *watched)
    first.stop()
    saved = FollowerCursor.get().event_index
    assert saved == first.follower.index

    # While no follower runs: ok succeeds, an operator fails bad, sick keeps being replaced,
    # and three other apps deploy: far more than the buffer holds.
    done, failed, running = watched
    nomad_double.cluster.fail(nomad_deployment(nomad_double, failed))
    tick_until(nomad_double, lambda: nomad_status(nomad_double, done) == "successful", "ok")
    succeeded_at = nomad_deployment(nomad_double, done)["ModifyIndex"]
    others = [submit(app, redis_conn) for app in fillers]
    tick_until(
        nomad_double,
        lambda: all(nomad_status(nomad_double, d) == "successful" for d in others),
        "the other apps",
    )
    assert oldest_buffered(nomad_double) > succeeded_at > saved, "no gap: the test is wrong"

    opened = len(nomad_double.requests_to("GET", r"/v1/event/stream"))
    second = run_follower()
    assert terminal(done.id).status == DeploymentStatus.SUCCEEDED
    bad_row = terminal(failed.id)
    assert bad_row.status == DeploymentStatus.FAILED
    assert bad_row.status_message == "Nomad: Deployment marked as failed"
    assert all(terminal(d.id).status == DeploymentStatus.SUCCEEDED for d in others)
    resumed = nomad_double.requests_to("GET", r"/v1/event/stream")[opened]
    assert resumed.query["index"] == [str(saved + 1)]  # where the first one stopped
    following(nomad_double, second, running)
    assert row(running.id).status == DeploymentStatus.RUNNING  # Nomad still rolls it out

    # Through the stream again, after the gap.
    resyncs = second.follower.counters["resyncs"]
    nomad_double.cluster.fail(nomad_deployment(nomad_double, running))
    assert terminal(running.id).status == DeploymentStatus.FAILED
    assert second.follower.counters["resyncs"] == resyncs


@small_buffer(8)
def test_a_follower_that_fell_out_of_nomads_buffer_reads_every_deployment_again(
    deploy_env, nomad_double, run_follower, team, redis_conn, monkeypatch
):
    """A connected follower that does not read for a while (here: the stream is held silent)
    falls out of Nomad's buffer; Nomad ends its stream with "event dropped from buffer"."""
    monkeypatch.setenv("HELIOS_FOLLOW_STALL_TIMEOUT", "60")  # the silence is not a broken stream
    web = make_app(team, "web")
    fillers = [make_app(team, f"filler-{n}") for n in range(3)]
    follower = run_follower()
    deployment = submit(web, redis_conn)
    following(nomad_double, follower, deployment)
    seen = follower.follower.index

    nomad_double.stall_streams(600)
    tick_until(nomad_double, lambda: nomad_status(nomad_double, deployment) == "successful", "web")
    others = [submit(app, redis_conn) for app in fillers]
    tick_until(
        nomad_double,
        lambda: all(nomad_status(nomad_double, d) == "successful" for d in others),
        "the other apps",
    )
    succeeded_at = nomad_deployment(nomad_double, deployment)["ModifyIndex"]
    assert oldest_buffered(nomad_double) > succeeded_at > seen, "no gap: the test is wrong"
    assert row(deployment.id).status == DeploymentStatus.RUNNING
    nomad_double.stall_streams(0)  # the stream moves again: Nomad says the follower fell behind

    result = terminal(deployment.id)
    assert result.status == DeploymentStatus.SUCCEEDED, result.status_message
    assert follower.follower.counters["gaps"] == 1
    assert all(terminal(d.id).status == DeploymentStatus.SUCCEEDED for d in others)


@pytest.mark.slow
def test_a_killed_follower_resumes_where_it_was_and_loses_nothing(
    deploy_env, nomad_double, start_follower, team, redis_conn
):
    """SIGKILL: the index saved in the database is where the next follower resumes; one
    deployment ended while none ran, another was registered then (its notice went nowhere)."""
    nomad_double.auto_advance = False
    web, api = make_app(team, "web"), make_app(team, "api")
    first = start_follower(**deploy_env)
    followed = submit(web, redis_conn)
    wait_until(
        lambda: (c := FollowerCursor.get_or_none()) and c.event_index >= newest_followed_batch(
            nomad_double
        ),
        what="the follower to save its place in the stream",
    )  # fmt: skip
    first.kill()
    first.wait(timeout=10)
    saved = FollowerCursor.get().event_index

    tick_until(nomad_double, lambda: nomad_status(nomad_double, followed) == "successful", "web")
    unseen = submit(api, redis_conn)
    tick_until(nomad_double, lambda: nomad_status(nomad_double, unseen) == "successful", "api")
    assert row(followed.id).status == row(unseen.id).status == DeploymentStatus.RUNNING

    opened = len(nomad_double.requests_to("GET", r"/v1/event/stream"))
    start_follower(**deploy_env)
    for deployment in (followed, unseen):
        result = terminal(deployment.id)
        assert result.status == DeploymentStatus.SUCCEEDED, result.status_message
    streams = nomad_double.requests_to("GET", r"/v1/event/stream")
    assert streams[0].query["index"] == ["0"]  # a new follower: Nomad's whole buffer
    assert streams[opened].query["index"] == [str(saved + 1)]  # where the killed one was


# ---------------------------------------------------------------------------------------------
# A broken stream
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("breakage", ["silent", "dropped"])
def test_a_broken_stream_is_reopened_and_the_outcome_still_recorded(
    deploy_env, nomad_double, run_follower, team, redis_conn, monkeypatch, breakage
):
    """silent: nothing at all, heartbeats included, for longer than HELIOS_FOLLOW_STALL_TIMEOUT
    (the stream stays silent until the follower opened another one); dropped: the connection
    is cut."""
    monkeypatch.setenv("HELIOS_FOLLOW_STALL_TIMEOUT", "1")
    nomad_double.auto_advance = False
    web = make_app(team, "web")
    follower = run_follower()
    deployment = submit(web, redis_conn)
    following(nomad_double, follower, deployment)
    opened = nomad_double.streams_opened

    if breakage == "silent":
        nomad_double.stall_streams(600)
    else:
        assert nomad_double.drop_streams() == 1
    tick_until(nomad_double, lambda: nomad_status(nomad_double, deployment) == "successful", "web")
    wait_until(
        lambda: nomad_double.streams_opened > opened, what="the follower to open another stream"
    )
    if breakage == "silent":
        nomad_double.stall_streams(0)  # Nomad answers again

    result = terminal(deployment.id)
    assert result.status == DeploymentStatus.SUCCEEDED, result.status_message


# ---------------------------------------------------------------------------------------------
# The bound, and the follower's signs of life
# ---------------------------------------------------------------------------------------------


def test_a_deployment_nomad_never_ends_fails_after_helios_deploy_timeout(
    deploy_env, nomad_double, run_follower, team, redis_conn, monkeypatch
):
    """The bound counts from the deployment's start, also for a follower that first sees it
    later (restarted, say): this one started 9 s before the follower did."""
    monkeypatch.setenv("HELIOS_DEPLOY_TIMEOUT", "10")  # the least allowed
    nomad_double.auto_advance = False  # Nomad's deployment stays running
    deployment = submit(make_app(team, "web"), redis_conn)
    Deployment.update(started_at=utcnow() - timedelta(seconds=9)).where(
        Deployment.id == deployment.id
    ).execute()
    run_follower()

    result = terminal(deployment.id)
    assert result.status == DeploymentStatus.FAILED
    assert result.status_message == (
        "Nomad's deployment did not finish within 10 s of the start (HELIOS_DEPLOY_TIMEOUT); "
        "it may still be running: see `nomad job status web`"
    )
    assert nomad_status(nomad_double, result) == "running"
    failed = Event.get(Event.subject == "v1.deployment.failed")
    assert failed.data["deployment_id"] == deployment.id
    assert failed.data["reason"] == result.status_message


def test_the_follower_heartbeats_what_it_watches_and_itself(
    deploy_env, nomad_double, run_follower, team, redis_conn, monkeypatch
):
    """A liveness key in Redis that expires, and the heartbeat of every watched deployment:
    the worker's sweep tells a deployment nobody follows by both."""
    monkeypatch.setattr(follower_module, "HEARTBEAT_INTERVAL", 0.2)
    nomad_double.auto_advance = False  # the deployment stays running
    deployment = submit(make_app(team, "web"), redis_conn)
    follower = run_follower()

    alive = wait_until(lambda: redis_conn.get(FOLLOWER_ALIVE_KEY), what="the liveness key")
    assert alive.decode() == f"{socket.gethostname()}:{os.getpid()}"
    assert 0 < redis_conn.ttl(FOLLOWER_ALIVE_KEY) <= follower_module.ALIVE_TTL
    beats = [row(deployment.id).heartbeat_at]
    for _ in range(2):
        beats.append(
            wait_until(
                lambda: (at := row(deployment.id).heartbeat_at) > beats[-1] and at,
                what="the deployment's heartbeat to move",
            )
        )

    # While a follower lives, the worker's sweep says nothing about an old heartbeat...
    settings = Settings.from_env()
    old = utcnow() - timedelta(minutes=5)
    Deployment.update(heartbeat_at=old).where(Deployment.id == deployment.id).execute()
    assert sweep_deployments(redis_conn, settings)["noted"] == []
    # ...once none does (its key expired), it tells on the deployment.
    follower.stop()
    redis_conn.delete(FOLLOWER_ALIVE_KEY)  # what its expiry does ALIVE_TTL seconds later
    Deployment.update(heartbeat_at=old).where(Deployment.id == deployment.id).execute()
    assert sweep_deployments(redis_conn, settings)["noted"] == [deployment.id]
    assert "no follower is running" in row(deployment.id).status_message
