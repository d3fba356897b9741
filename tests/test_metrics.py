"""Prometheus metrics: /metrics under real gunicorn (two workers) with two real RQ workers and
the follower, its protection, the request timing, dead processes' files folded into the
archive, and the Prometheus job file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from flask import Response
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from rq.job import JobStatus

from panel.actions.apps import create_app, request_deploy
from panel.actions.deployments import finish_deployment
from panel.config import Settings
from panel.metrics import render_metrics
from panel.metrics_files import ARCHIVE, archive_process, reading
from panel.models import Deployment, DeploymentStatus, Team
from panel.reconcile.follow import Outcome
from panel.web import create_app as create_panel

from conftest import REPO_ROOT, free_port, helios_command, process_env, stop_child, wait_until
from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

TOKEN = "metrics-token-0123456789abcdef"
JOB_FILE = REPO_ROOT / "jobs" / "prometheus.nomad.json"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels (the parser's own)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pids_with_samples(directory: Path, kind: str) -> set[int]:
    """Processes that wrote metrics of ``kind`` (counter, histogram) to the directory (live,
    or ended and not folded into the archive yet)."""
    owners = (path.stem.split("_")[-1] for path in directory.glob(f"{kind}_*.db"))
    return {int(owner) for owner in owners if owner.isdigit()}


# ---------------------------------------------------------------------------------------------
# Under real processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def metrics_panel(settings: Settings, db, tmp_path: Path):
    """`helios panel` with two gunicorn workers and a metrics token; yields (url, process)."""
    port = free_port()
    log = open(tmp_path / "panel.log", "w")  # noqa: SIM115
    env = process_env(
        settings,
        HELIOS_BIND=f"127.0.0.1:{port}",
        HELIOS_WEB_WORKERS="2",
        HELIOS_METRICS_TOKEN=TOKEN,
    )
    proc = subprocess.Popen(
        helios_command("panel"), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"panel exited with {proc.returncode}: {Path(log.name).read_text()}")
        try:
            return requests.get(f"{url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=30, what="the panel's /readyz")
    wait_until(lambda: len(psutil.Process(proc.pid).children()) == 2, what="2 panel workers")
    yield url, proc
    stop_child(proc)


def scrape(url: str) -> dict:
    answer = requests.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return parse(answer.text)


@pytest.mark.slow
def test_metrics_add_up_every_process(
    metrics_panel, settings, redis_conn, start_worker, start_follower, deploy_env, nomad_clock
):
    url, panel = metrics_panel
    workers = [start_worker(**deploy_env), start_worker(**deploy_env)]
    start_follower(**deploy_env)
    directory = settings.data_dir / "metrics"
    panel_workers = {child.pid for child in psutil.Process(panel.pid).children()}

    # Without the token, or with another one, nothing (even from loopback).
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 30}
    assert requests.get(f"{url}/metrics", headers=wrong, timeout=10).status_code == 401

    before = scrape(url)
    # New connections until each gunicorn worker has served some (the kernel picks).
    sent = 0
    while not panel_workers <= pids_with_samples(directory, "histogram"):
        answer = requests.get(f"{url}/healthz", headers={"Connection": "close"}, timeout=10)
        assert answer.status_code == 200
        sent += 1
        assert sent < 2000, f"one worker served every request: {panel_workers}"
    assert requests.get(f"{url}/no/such/page/42", timeout=10).status_code == 404

    # Jobs through the real queue: sleeps long enough that both workers take some, and two
    # that fail.
    queue = Queue(settings.queues[0], connection=redis_conn)
    jobs = []
    while not {w.pid for w in workers} <= pids_with_samples(directory, "histogram"):
        batch = [queue.enqueue("time.sleep", 0.2) for _ in range(4)]
        wait_until(
            lambda b=batch: all(j.get_status() == JobStatus.FINISHED for j in b),
            what="the sleep jobs to finish",
        )
        jobs += batch
        assert len(jobs) < 100, "one worker took every job"
    failing = [queue.enqueue("math.sqrt", -1) for _ in range(2)]
    wait_until(lambda: all(j.get_status() == JobStatus.FAILED for j in failing), what="failed jobs")

    # A deployment through the worker and the follower.
    team = Team.create(slug="acme", name="Acme")
    app = create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", count=1,
        redis_conn=redis_conn,
    )  # fmt: skip
    request_deploy(actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn)

    def counted() -> dict | None:
        after = scrape(url)
        done = (
            value(after, "helios_job_duration_seconds_count", job="time.sleep") >= len(jobs)
            and value(after, "helios_job_failures_total", job="math.sqrt") >= 2
            and value(after, "helios_deployments_total", status="succeeded") >= 1
        )
        return after if done else None

    after = wait_until(counted, timeout=60, what="jobs and the deployment in /metrics")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    healthz = {"endpoint": "health.healthz", "method": "GET", "status": "200"}
    assert moved("helios_http_request_duration_seconds_count", **healthz) == sent
    assert moved("helios_http_request_duration_seconds_bucket", **healthz, le="+Inf") == sent
    unrouted = {"endpoint": "unrouted", "method": "GET", "status": "404"}
    assert value(after, "helios_http_request_duration_seconds_count", **unrouted) == 1
    assert not [key for key in after if "/no/such" in repr(key)]  # never the raw path
    assert value(after, "helios_http_requests_in_flight") == 1  # this scrape, in one worker
    assert value(after, "helios_job_duration_seconds_count", job="time.sleep") == len(jobs)
    assert value(after, "helios_job_failures_total", job="time.sleep") == 0
    assert value(after, "helios_job_failures_total", job="math.sqrt") == 2
    assert value(after, "helios_deployments_total", status="succeeded") == 1
    assert value(after, "helios_deployments_total", status="failed") == 0
    assert value(after, "helios_queue_jobs", queue=settings.queues[0], state="failed") >= 2
    assert Deployment.get().status == DeploymentStatus.SUCCEEDED.value
    # Each gunicorn worker, each RQ worker (the jobs) and the follower (the deployment) wrote
    # its own samples; /metrics summed them.
    assert panel_workers | {w.pid for w in workers} <= pids_with_samples(directory, "histogram")
    assert len(pids_with_samples(directory, "counter")) >= 2


def file_owners(directory: Path) -> list[str]:
    """The pid (or ``archive``) at the end of each sample file's name, one per file."""
    return [path.stem.split("_")[-1] for path in directory.glob("*.db")]


def live_tree(*roots: int) -> set[str]:
    """The pids of processes alive now under (and including) ``roots``."""
    found = set()
    for root in roots:
        with_children = psutil.Process(root)
        found |= {str(p.pid) for p in [with_children, *with_children.children(recursive=True)]}
    return found


@pytest.mark.slow
def test_files_of_ended_processes_are_folded_and_nothing_is_lost(
    metrics_panel, settings, redis_conn, start_worker
):
    url, panel = metrics_panel
    workers = [start_worker(), start_worker()]
    directory = settings.data_dir / "metrics"
    queue = Queue(settings.queues[0], connection=redis_conn)

    # Each work horse records a deployment's end itself: it writes files of its own, which the
    # worker folds into the archive once it reaped the horse.
    jobs = [queue.enqueue("panel.metrics.count_deployment", "succeeded") for _ in range(40)]
    wait_until(
        lambda: all(j.get_status() == JobStatus.FINISHED for j in jobs),
        timeout=60, what="the 40 jobs to finish",
    )  # fmt: skip

    # Gunicorn workers killed after serving requests: the master starts others and folds the
    # dead ones' files.
    sent = 0
    for _round in range(3):
        victim = psutil.Process(panel.pid).children()[0]
        while victim.pid not in pids_with_samples(directory, "histogram"):
            answer = requests.get(f"{url}/healthz", headers={"Connection": "close"}, timeout=10)
            assert answer.status_code == 200
            sent += 1
            assert sent < 3000, "one gunicorn worker served every request"
        victim.send_signal(signal.SIGKILL)
        wait_until(
            lambda v=victim: str(v.pid) not in file_owners(directory)
            and len(psutil.Process(panel.pid).children()) == 2,
            timeout=30, what=f"gunicorn worker {victim.pid} replaced and its files folded",
        )  # fmt: skip

    def settled() -> list[str] | None:
        owners = file_owners(directory)
        alive = live_tree(panel.pid, *(w.pid for w in workers))
        return owners if set(owners) <= alive | {ARCHIVE} else None

    owners = wait_until(settled, timeout=30, what="only live processes' files and the archive")
    assert sorted(path.name for path in directory.glob(f"*_{ARCHIVE}.db")) == [
        f"counter_{ARCHIVE}.db",
        f"histogram_{ARCHIVE}.db",
    ]
    # At most one file per kind (counter, histogram, live gauges) per live process, whatever
    # the number of jobs and of replaced workers.
    assert len(owners) <= 3 * len(set(owners)) and len(set(owners)) <= 2 + 2 + 1

    after = scrape(url)
    assert value(after, "helios_deployments_total", status="succeeded") == 40
    job = "panel.metrics.count_deployment"
    assert value(after, "helios_job_duration_seconds_count", job=job) == 40
    healthz = {"endpoint": "health.healthz", "method": "GET", "status": "200"}
    assert value(after, "helios_http_request_duration_seconds_count", **healthz) == sent


FORK_AND_COUNT = """
import os, sys
from prometheus_client import Counter, Histogram
counter = Counter("helios_test_events", "Events.", ["kind"])
histogram = Histogram("helios_test_seconds", "Seconds.", ["kind"], buckets=(1, 2))
pids = []
for n in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        counter.labels(kind="a").inc()
        histogram.labels(kind="a").observe(1.5)
        os._exit(0)
    os.waitpid(pid, 0)
    pids.append(pid)
print(" ".join(map(str, pids)))
"""


def totals(directory: Path) -> tuple[float, float]:
    """The events counter and the histogram's +Inf bucket, read as a scrape reads them."""
    with reading(directory):
        metrics = list(MultiProcessCollector(None, str(directory)).collect())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics
               for s in m.samples}  # fmt: skip
    return (
        samples.get(("helios_test_events_total", (("kind", "a"),)), 0.0),
        samples.get(("helios_test_seconds_bucket", (("kind", "a"), ("le", "+Inf"))), 0.0),
    )


def test_folding_never_shows_a_count_twice_or_lower(tmp_path: Path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    out = subprocess.run(
        [sys.executable, "-c", FORK_AND_COUNT, "60"], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    pids = [int(pid) for pid in out.stdout.split()]
    assert len(file_owners(directory)) == 2 * 60  # a counter and a histogram file per process
    assert totals(directory) == (60, 60)

    seen: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape_meanwhile() -> None:
        try:
            while not done.is_set():
                seen.append(totals(directory))
        except BaseException as exc:  # a file removed under the reader's feet
            errors.append(exc)

    reader = threading.Thread(target=scrape_meanwhile)
    reader.start()
    wait_until(lambda: seen or errors, what="a first scrape")
    try:
        assert sum(archive_process(pid, directory) for pid in pids) == 2 * 60
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert set(seen) == {(60, 60)}, "a scrape saw a count twice or lost"
    assert sorted(file_owners(directory)) == [ARCHIVE, ARCHIVE]
    assert totals(directory) == (60, 60)
    assert archive_process(pids[0], directory) == 0  # already folded: nothing changes
    assert totals(directory) == (60, 60)


# ---------------------------------------------------------------------------------------------
# In this process: protection, request timing, outcomes
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def timed_app(settings, db):
    """The panel with a live stream route of its own, added before its first request."""
    flask_app = create_panel(settings)
    flask_app.config["TESTING"] = True

    def stream():
        return Response(iter(["data: one\n\n"]), mimetype="text/event-stream")

    flask_app.add_url_rule("/test-stream", "test_stream", stream)
    return flask_app


def test_without_a_token_only_direct_loopback_requests_are_served(client):
    assert client.get("/metrics").status_code == 200
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 404
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 404
    assert client.get("/metrics", headers={"Forwarded": "for=203.0.113.9"}).status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_with_a_token_the_bearer_is_required_from_everywhere(settings, db):
    flask_app = create_panel(settings.replace(metrics_token=TOKEN))
    client = flask_app.test_client()
    denied = client.get("/metrics")
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in denied.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", headers=good, environ_base=outside).status_code == 200


def test_streams_are_counted_open_not_timed(timed_app):
    client = timed_app.test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))
    answer = client.get("/test-stream")
    assert answer.get_data(as_text=True) == "data: one\n\n"
    opened = parse(client.get("/metrics").get_data(as_text=True))
    answer.close()
    closed = parse(client.get("/metrics").get_data(as_text=True))
    streams = "helios_http_streams_open"
    assert value(opened, streams) - value(before, streams) == 1
    assert value(closed, streams) == value(before, streams)
    stream = {"endpoint": "test_stream", "method": "GET", "status": "200"}
    assert value(closed, "helios_http_request_duration_seconds_count", **stream) == 0
    metrics = {"endpoint": "metrics.metrics", "method": "GET", "status": "200"}
    assert (
        value(closed, "helios_http_request_duration_seconds_count", **metrics)
        - value(before, "helios_http_request_duration_seconds_count", **metrics)
        == 2
    )


def test_a_method_outside_the_list_is_labelled_other(timed_app):
    client = timed_app.test_client()
    client.open("/healthz", method="BREW")
    samples = parse(client.get("/metrics").get_data(as_text=True))
    methods = {dict(labels).get("method") for (name, labels) in samples if "http" in name}
    assert "BREW" not in methods and "other" in methods


def test_a_finished_deployment_counts_once(settings, db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    app = create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", redis_conn=redis_conn
    )
    deployment = request_deploy(
        actor=None, app=app, settings=settings, redis_conn=redis_conn
    ).deployment
    before = parse(render_metrics(redis_conn, settings.queues).decode())
    failed = Outcome(DeploymentStatus.FAILED, "the canary never became healthy")
    assert finish_deployment(deployment.id, failed, redis_conn)
    assert not finish_deployment(deployment.id, failed, redis_conn)  # a replay: not again
    after = parse(render_metrics(redis_conn, settings.queues).decode())
    name = "helios_deployments_total"
    assert value(after, name, status="failed") - value(before, name, status="failed") == 1


def test_prometheus_client_is_imported_after_the_multiprocess_dir_is_chosen():
    # The CLI and start_process must not import it: its mode is fixed when first imported.
    code = (
        "import sys, panel.cli.commands, panel.run.runtime, panel.run.web_server; "
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# The Prometheus job
# ---------------------------------------------------------------------------------------------


def test_prometheus_job_is_strictly_valid_and_its_config_parses():
    body = json.loads(JOB_FILE.read_text())
    spec = load_strict_spec(reference_file(NOMAD_SPEC))
    assert validate_body(body, "JobRegisterRequest", spec) == []
    task = body["Job"]["TaskGroups"][0]["Tasks"][0]
    templates = {t["DestPath"]: t for t in task["Templates"]}
    config = yaml.safe_load(templates["local/prometheus.yml"]["EmbeddedTmpl"])
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    assert set(jobs) == {"helios", "nomad", "consul", "prometheus"}
    helios = jobs["helios"]
    assert helios["metrics_path"] == "/metrics"
    assert helios["authorization"]["credentials_file"] == "/secrets/helios_metrics_token"
    assert helios["consul_sd_configs"][0]["services"] == ["helios-panel"]
    assert jobs["nomad"]["consul_sd_configs"][0]["services"] == ["nomad", "nomad-client"]
    # Secrets come from the job's Nomad Variable into secrets/, readable by Prometheus only.
    token = templates["secrets/helios_metrics_token"]
    assert 'nomadVar "nomad/jobs/prometheus"' in token["EmbeddedTmpl"]
    assert (token["Perms"], token["Uid"]) == ("0400", 65534)
    assert TOKEN not in JOB_FILE.read_text()
