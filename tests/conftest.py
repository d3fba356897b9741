"""Fixtures with real parts: a Redis server, SQLite (and PostgreSQL), processes, Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
import redis
import requests

from panel.config import SETTINGS_DOC, Settings
from panel.db import database, migrate_up, open_database

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Debian's Chromium by default; "playwright" uses a browser installed by `playwright install`.
CHROMIUM = os.environ.get("HELIOS_TEST_CHROMIUM", "/usr/bin/chromium")
SETTING_NAMES = {spec[0] for spec in SETTINGS_DOC}
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Nomad's API description lives beside the project (../shared/reference). Where it is absent
# (e.g. a fork's CI), the tests that validate against it are not collected, and the run says
# so; .ci/run sets HELIOS_REQUIRE_REFERENCE=1 so that it can never be silently missing there.
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
_NEEDS_REFERENCE = ("nomad_double", "SPEC_PATH", "REFERENCE_DIR", "deploy_env")
collect_ignore: list[str] = []
if not (REFERENCE_DIR / "nomad-openapi.yaml").exists():
    if os.environ.get("HELIOS_REQUIRE_REFERENCE") == "1":
        raise pytest.UsageError(f"Nomad's API description is missing: {REFERENCE_DIR}")
    collect_ignore = [
        path.name
        for path in sorted(Path(__file__).parent.glob("test_*.py"))
        if any(word in path.read_text() for word in _NEEDS_REFERENCE)
    ]


def pytest_report_header(config) -> list[str]:
    """Say up front which tests cannot run here and why."""
    if not collect_ignore:
        return []
    return [f"not collected (no {REFERENCE_DIR}): {', '.join(collect_ignore)}"]


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
    from panel.redis_server import find_redis_server

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
    from panel import create_app

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
    )
    env.update(extra)
    return env


def helios_command(*args: str) -> list[str]:
    """argv running the `helios` CLI with this interpreter."""
    return [sys.executable, "-m", "panel", *args]


@pytest.fixture
def start_worker(settings: Settings, db, tmp_path: Path):
    """Start real `helios worker` processes; all are stopped by pid at teardown."""
    started: list[subprocess.Popen] = []

    def start(**extra_env: str) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(started)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            helios_command("worker"),
            env=process_env(settings, **extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        proc.log_path = log.name
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_child(proc)


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
    from nomad_double import SPEC_PATH, run_nomad_double

    if not SPEC_PATH.exists():
        reason = f"Nomad's API description is not at {SPEC_PATH}"
        if os.environ.get("HELIOS_REQUIRE_REFERENCE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with run_nomad_double() as double:
        yield double
        double.assert_no_violations()


@pytest.fixture
def deploy_env(settings: Settings, nomad_double, monkeypatch) -> dict[str, str]:
    """Environment for deploy jobs (in this process and in workers): fast polls, the double."""
    from nomad_double import SPEC_PATH

    env = {
        "HELIOS_DATA_DIR": str(settings.data_dir),
        "HELIOS_DATABASE_URL": settings.effective_database_url,
        "HELIOS_REDIS_URL": settings.effective_redis_url,
        "NOMAD_ADDR": nomad_double.url,
        "HELIOS_NOMAD_SPEC": str(SPEC_PATH),
        "HELIOS_DEPLOY_POLL_MS": "20",
        "HELIOS_DEPLOY_LOCK_TTL": "2",
        "HELIOS_DEPLOY_TIMEOUT": "60",
        "HELIOS_LOG_LEVEL": "info",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
