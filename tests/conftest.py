"""Fixtures with real parts: a Redis server, SQLite (and PostgreSQL), processes, Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee as pw
import psutil
import pytest
import redis
import requests
from rq import Queue, SimpleWorker

from panel.config import SETTINGS_DOC, Settings
from panel.db import database, migrate_up, open_database

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Debian's Chromium by default; "playwright" uses a browser installed by `playwright install`.
CHROMIUM = os.environ.get("HELIOS_TEST_CHROMIUM", "/usr/bin/chromium")
SETTING_NAMES = {spec[0] for spec in SETTINGS_DOC}
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


_REFERENCES = pytest.StashKey[dict[str, Path]]()


def pytest_configure(config) -> None:
    """Find (or download, once) every pinned test input before any xdist worker starts; when
    one cannot be had, stop the run with how to provide it: no test skips for want of it."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it already
        return
    from nomad_double.reference import ReferenceMissingError, ensure_references

    try:
        config.stash[_REFERENCES] = ensure_references()
    except ReferenceMissingError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config) -> list[str]:
    """Say where the pinned test inputs came from."""
    found = config.stash.get(_REFERENCES, {})
    sources = {str(path).removesuffix(f"/{name}") for name, path in found.items()}
    return [f"pinned test inputs: {len(found)}, SHA-256 checked, from {', '.join(sorted(sources))}"]


# python-nomad reads NOMAD_* from the environment: no test may talk to a real cluster by
# accident, nor pick up an operator's HELIOS_* settings.
for _name in [n for n in os.environ if n.startswith("NOMAD_") or n in SETTING_NAMES]:
    del os.environ[_name]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class _BurstWorker(SimpleWorker):
    """RQ's in-process worker without its command listener: a burst run takes no commands,
    and RQ's teardown joins that listener, which sleeps up to 60 s between looks (on a loaded
    machine the join waited the whole minute)."""

    def subscribe(self) -> None:
        pass


def run_queued(redis_conn, *queues) -> None:
    """Run every job queued on ``queues`` (Queue objects or names) in this process, with a
    real RQ worker, until they are empty."""
    found = [q if isinstance(q, Queue) else Queue(q, connection=redis_conn) for q in queues]
    _BurstWorker(found, connection=redis_conn).work(burst=True)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process by pid, then SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a child process and reap it; SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Redis: one real server per test session
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """URL of a real redis-server started for this session on a free port (no persistence)."""
    from panel.run.redis_server import find_redis_server

    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    pidfile = workdir / "redis.pid"
    argv = [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "yes",
        "--pidfile", str(pidfile),
        "--logfile", str(workdir / "redis.log"),
        "--dir", str(workdir),
    ]  # fmt: skip
    subprocess.run(argv, check=True)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, what="redis-server to answer PING")
    yield url
    stop_pid(int(pidfile.read_text()))


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def redis_conn(redis_url: str) -> redis.Redis:
    """A client of the test's Redis."""
    return redis.Redis.from_url(redis_url)


# ---------------------------------------------------------------------------------------------
# Databases: a temporary SQLite file per test; PostgreSQL where the machine runs it
# ---------------------------------------------------------------------------------------------


def postgres_available() -> str | None:
    """None when PostgreSQL answers on 127.0.0.1:5432, else the reason it cannot be used."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    try:
        psycopg2.connect(PG_ADMIN_URL, connect_timeout=2).close()
    except psycopg2.Error as exc:
        return f"no PostgreSQL on 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]})"
    return None


@contextlib.contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """Create a throw-away PostgreSQL database; drop it afterwards."""
    import psycopg2

    name = f"helios_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_database_url(request, tmp_path) -> Iterator[str]:
    """An empty database: SQLite, then PostgreSQL (skipped with the reason where absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'helios.db'}"
        return
    reason = postgres_available()
    if reason:
        if os.environ.get("HELIOS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but unusable: {reason}")
        pytest.skip(reason)
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """Settings for one test: its own data dir and SQLite file, the session's Redis."""
    return Settings.from_env(
        environ={},
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'var' / 'helios.db'}",
        redis_url=redis_url,
        log_level="warning",
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[pw.Database]:
    """The test's database, migrated and connected."""
    handle = open_database(settings.effective_database_url)
    migrate_up()
    handle.connect(reuse_if_open=True)
    yield handle
    if not handle.is_closed():
        handle.close()


# ---------------------------------------------------------------------------------------------
# The Flask app and its test client
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings, db: pw.Database):
    """The panel app on the test's database and Redis."""
    from panel.web import create_app

    flask_app = create_app(settings)
    flask_app.config["TESTING"] = True
    yield flask_app
    database.initialize(db)


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


class Auth:
    """Signs in through the real login form, CSRF token included."""

    def __init__(self, client) -> None:
        self.client = client

    def login(self, email: str, password: str):
        page = self.client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        return self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": token}
        )


@pytest.fixture
def auth(client) -> Auth:
    """Helper to sign in as a user."""
    return Auth(client)


# ---------------------------------------------------------------------------------------------
# Real processes: workers, the panel under gunicorn
# ---------------------------------------------------------------------------------------------


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a Helios child process gets in tests (no NOMAD_*, no stray HELIOS_*)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update(
        HELIOS_DATA_DIR=str(settings.data_dir),
        HELIOS_DATABASE_URL=settings.effective_database_url,
        HELIOS_REDIS_URL=settings.effective_redis_url,
        HELIOS_LOG_LEVEL="info",
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        # Workers do not check domains unless a test asks: no lookups or TLS beyond the test.
        HELIOS_DOMAIN_CHECK_INTERVAL="0",
    )
    env.update(extra)
    return env


def helios_command(*args: str) -> list[str]:
    """argv running the `helios` CLI with this interpreter."""
    return [sys.executable, "-m", "panel", *args]


def _process_starter(role: str, settings: Settings, tmp_path: Path):
    """A function starting real `helios <role>` processes, and the list of those started.

    Each runs in a session (and process group) of its own, so a test can kill the whole group.
    """
    started: list[subprocess.Popen] = []

    def start(**extra_env: str) -> subprocess.Popen:
        log = open(tmp_path / f"{role}-{len(started)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            helios_command(role),
            env=process_env(settings, **extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        proc.log_path = log.name
        started.append(proc)
        return proc

    return start, started


@pytest.fixture
def start_worker(settings: Settings, db, tmp_path: Path):
    """Start real `helios worker` processes; all are stopped by pid at teardown."""
    start, started = _process_starter("worker", settings, tmp_path)
    yield start
    for proc in started:
        stop_child(proc)


@pytest.fixture
def start_follower(settings: Settings, db, tmp_path: Path):
    """Start real `helios follower` processes; all are stopped by pid at teardown."""
    start, started = _process_starter("follower", settings, tmp_path)
    yield start
    for proc in started:
        stop_child(proc)


def worker_children(worker: subprocess.Popen) -> list[psutil.Process]:
    """The processes a `helios worker` forked: its work horse (while a job runs) and the
    scheduler. RQ puts the work horse in a process group of its own; the scheduler stays in
    the worker's."""
    return psutil.Process(worker.pid).children()


def work_horse_pid(worker: subprocess.Popen, timeout: float = 30.0) -> int:
    """The pid of the process running the worker's current job (RQ's forked work horse)."""

    def horse() -> int | None:
        for child in worker_children(worker):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(child.pid) == child.pid:
                    return child.pid
        return None

    return wait_until(horse, timeout=timeout, what=f"a work horse of worker {worker.pid}")


def scheduler_pid(worker: subprocess.Popen, timeout: float = 30.0) -> int:
    """The pid of the RQ scheduler process a `helios worker` started."""

    def scheduler() -> int | None:
        for child in worker_children(worker):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(child.pid) == os.getpgid(worker.pid):
                    return child.pid
        return None

    return wait_until(scheduler, timeout=timeout, what=f"the scheduler of worker {worker.pid}")


def kill_worker(worker: subprocess.Popen) -> list[int]:
    """SIGKILL a worker's whole process group and its work horse (which has a group of its own);
    the pids killed."""
    pids = [child.pid for child in worker_children(worker)] + [worker.pid]
    for child in worker_children(worker):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(child.pid) == child.pid:
                os.kill(child.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    psutil.wait_procs(_existing(pids), timeout=10)
    return pids


def _existing(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


@pytest.fixture
def panel_env() -> dict[str, str]:
    """Extra environment for `live_panel`; override it in a test module to add settings."""
    return {}


@pytest.fixture
def live_panel(settings: Settings, db, tmp_path: Path, panel_env) -> Iterator[str]:
    """The panel under real gunicorn on a free port; yields its base URL."""
    port = free_port()
    log = open(tmp_path / "panel.log", "w")  # noqa: SIM115
    env = {**panel_env, "HELIOS_BIND": f"127.0.0.1:{port}", "HELIOS_WEB_WORKERS": "1"}
    proc = subprocess.Popen(
        helios_command("panel"),
        env=process_env(settings, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
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
    yield url
    stop_child(proc)


# ---------------------------------------------------------------------------------------------
# Browser: the system Chromium through Playwright
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's Chromium; Playwright's own browser downloads cannot work here."""
    if CHROMIUM == "playwright":
        return browser_type_launch_args
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture
def artifacts() -> Path:
    """Folder for screenshots a person can look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# ---------------------------------------------------------------------------------------------
# Nomad: the spec-validating API double, and settings that point a deploy at it
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def nomad_double():
    """A running Nomad API double; the test fails if Helios sent anything the spec forbids."""
    from nomad_double import run_nomad_double

    with run_nomad_double() as double:
        yield double
        double.assert_no_violations()


@pytest.fixture
def consul_double(nomad_double):
    """A running Consul API double whose services follow the Nomad double's allocations; the
    test fails if Helios asked for anything it does not model."""
    from consul_double import run_consul_double

    with run_consul_double(nomad_double) as double:
        yield double
        assert double.violations == []


@pytest.fixture
def deploy_env(settings: Settings, nomad_double, monkeypatch) -> dict[str, str]:
    """Environment for deploy jobs and followers (in this process and in child processes):
    the double, short locks, retries and stall bounds. The double's event streams send a
    heartbeat every 0.2 s (Nomad: 30 s)."""
    nomad_double.heartbeat_interval = 0.2
    env = {
        "HELIOS_DATA_DIR": str(settings.data_dir),
        "HELIOS_DATABASE_URL": settings.effective_database_url,
        "HELIOS_REDIS_URL": settings.effective_redis_url,
        "NOMAD_ADDR": nomad_double.url,
        "HELIOS_DEPLOY_LOCK_TTL": "2",
        "HELIOS_DEPLOY_TIMEOUT": "60",
        "HELIOS_DEPLOY_RETRY_DELAYS": "1,1,1,1,1",
        "HELIOS_FOLLOW_STALL_TIMEOUT": "2",
        "HELIOS_LOG_LEVEL": "info",
        # Workers do not sample by themselves: each GET moves the double's clock, and tests
        # count requests. Tests of the sampler call it (or set an interval) themselves.
        "HELIOS_SAMPLE_INTERVAL": "0",
        "HELIOS_DRIFT_INTERVAL": "0",  # the same for drift checks
        "HELIOS_DOMAIN_CHECK_INTERVAL": "0",  # and for domain checks
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def nomad_clock(nomad_double) -> Iterator[Callable[[float], None]]:
    """Let the double's time pass by itself (a step every 0.05 s, or as set) until teardown."""
    from nomad_double.controls import Ticker

    tickers: list[Ticker] = []

    def run(interval: float = 0.05) -> None:
        for ticker in tickers:
            ticker.stop()
        tickers.append(Ticker(interval, nomad_double.cluster.step))
        tickers[-1].start()

    run()
    yield run
    for ticker in tickers:
        ticker.stop()


@pytest.fixture
def nomad_build_node(nomad_double) -> dict:
    """A ready client node in the double's "build" node pool (where build jobs place)."""
    return nomad_double.add_node("build")


class InProcessFollower:
    """A follower running on a thread of the test process."""

    def __init__(self) -> None:
        from panel.follow import Follower
        from panel.queue import connect_redis

        settings = Settings.from_env()
        self.stop_event = threading.Event()
        self.follower = Follower(settings, connect_redis(settings), self.stop_event)
        self.thread = threading.Thread(target=self.follower.run, name="follower", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop it and wait for its thread (its event index is saved)."""
        self.stop_event.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the follower did not stop"
        self.follower.builds.logs.join(10)  # its log collectors, before the database goes


@pytest.fixture
def run_follower(deploy_env, db) -> Iterator[Callable[[], InProcessFollower]]:
    """Start followers on threads of this process (with deploy_env); stopped at teardown."""
    started: list[InProcessFollower] = []

    def start() -> InProcessFollower:
        started.append(InProcessFollower())
        return started[-1]

    yield start
    for follower in started:
        if follower.thread.is_alive():
            follower.stop()


def run_service_job(double, slug: str, count: int) -> None:
    """Register a rendered service job of ``count`` allocations (with Helios's migrate block)
    for app ``slug`` of team acme in the double, which places them on client-1 first."""
    from panel.drivers.nomad import NomadConnection, NomadDriver
    from panel.render.nomad import render_job
    from panel.spec import AppSpec

    spec = AppSpec(slug=slug, team="acme", image=f"registry.example.com/acme/{slug}:1",
                   release=1, base_domain="apps.example.com",
                   processes=({"name": "web", "command": "serve", "count": count},))  # fmt: skip
    NomadDriver(NomadConnection(address=double.url)).register_job(
        slug, render_job(spec), modify_index=0
    )
    double.tick(2)
