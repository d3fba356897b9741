"""The dashboard's rendered list is kept until what it shows changes: the database counts
changes (triggers, any process), the panel reuses a render only at the same count; and the
panel's pooled connections."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import peewee as pw
import pytest

from panel.actions.accounts import create_user
from panel.db import (
    CHANGE_TRACKED_TABLES,
    POOL_IDLE,
    SQLITE_PRAGMAS,
    PooledCooperativeSqliteDatabase,
    change_count,
    database,
    migrate_up,
    open_database,
)
from panel.models import (
    App,
    AppDrift,
    AppHealth,
    AppMetric,
    Deployment,
    Event,
    Host,
    Membership,
    Release,
    Team,
)
from panel.web.fragments import FragmentCache

from conftest import Auth

PASSWORD = "correct horse battery"


@pytest.fixture
def counted(any_database_url):
    """A migrated database (SQLite, then PostgreSQL) with a person, a team and an app."""
    handle = open_database(any_database_url)
    migrate_up()
    handle.connect(reuse_if_open=True)
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    yield App.create(team=Team.get(Team.slug == "acme"), slug="web", image="nginx:1")
    handle.close()


def _moves(write) -> bool:
    before = change_count()
    write()
    return change_count() > before


def test_every_change_to_what_the_dashboard_shows_moves_the_count(counted):
    app = counted
    team = Team.get(Team.slug == "acme")
    release = None

    def add_release():
        nonlocal release
        release = Release.create(app=app, number=1, image="nginx:1")

    writes = {
        "app": [
            lambda: App.create(team=team, slug="api", image="x:1"),
            lambda: App.update(cpu_mhz=300).where(App.id == app.id).execute(),
            lambda: App.delete().where(App.slug == "api").execute(),
        ],
        "team": [lambda: Team.update(name="Acme Inc").where(Team.id == team.id).execute()],
        "membership": [lambda: Membership.update(role="admin").execute()],
        "release": [add_release],
        "deployment": [
            lambda: Deployment.create(app=app, release=release, status="succeeded"),
            lambda: Deployment.update(status="failed").execute(),
        ],
        "app_health": [
            lambda: AppHealth.create(app=app, state="healthy"),
            lambda: AppHealth.update(state="down").execute(),
            lambda: AppHealth.delete().execute(),
        ],
        "app_metric": [lambda: AppMetric.create(app=app, resolution=60, bucket=0)],
        "app_drift": [lambda: AppDrift.create(app=app, state="drifted")],
    }
    assert set(writes) == set(CHANGE_TRACKED_TABLES)
    for table, changes in writes.items():
        for write in changes:
            assert _moves(write), f"a change to {table} left the count where it was"

    # What the dashboard does not show moves nothing.
    assert not _moves(lambda: Event.create(subject="v1.test", data={}))
    assert not _moves(lambda: Host.create(name="node-1", address="10.0.0.1"))

    # A change rolled back is not counted: the count commits with it, or not at all.
    before = change_count()
    with pytest.raises(RuntimeError), database.atomic():
        App.update(cpu_mhz=500).execute()
        raise RuntimeError("changed my mind")
    assert change_count() == before


def test_a_table_that_lost_its_trigger_gets_it_back_with_the_next_migration_run(counted):
    # SQLite migrations that alter a column rebuild the table, and its triggers go with it.
    if isinstance(database.obj, pw.PostgresqlDatabase):
        database.execute_sql('DROP TRIGGER count_change ON "app"')
    else:
        database.execute_sql('DROP TRIGGER "count_change_app_update"')
    assert not _moves(lambda: App.update(cpu_mhz=300).execute())
    assert migrate_up() == []
    assert _moves(lambda: App.update(cpu_mhz=400).execute())


@pytest.fixture
def user(db):
    return create_user("dev@example.com", PASSWORD, team_slug="acme")


def test_the_dashboard_reuses_its_render_until_something_it_shows_changes(
    client, auth, user, settings, app
):
    cache = app.extensions["helios.fragments"]
    acme = Team.get(Team.slug == "acme")
    App.create(team=acme, slug="web", image="nginx:1", cpu_mhz=250)
    auth.login("dev@example.com", PASSWORD)

    assert "250 MHz" in client.get("/").get_data(as_text=True)
    misses = cache.misses
    assert "250 MHz" in client.get("/").get_data(as_text=True)
    assert (cache.misses, cache.hits) == (misses, 1)

    # Another process changes the app behind the panel's back, with plain SQL.
    path = settings.effective_database_url.removeprefix("sqlite:///")
    subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute(\"UPDATE app SET cpu_mhz = 777 WHERE slug = 'web'\"); c.commit()", path],
        check=True,
    )  # fmt: skip
    page = client.get("/").get_data(as_text=True)
    assert "777 MHz" in page and "250 MHz" not in page
    assert cache.misses == misses + 1

    App.create(team=acme, slug="api", image="x:1")
    assert ">api</a>" in client.get("/").get_data(as_text=True)

    # Another page, another search, another person: renders of their own.
    assert "No app matches" in client.get("/?q=zzz").get_data(as_text=True)
    create_user("ops@example.com", PASSWORD, team_slug="ops")
    other = app.test_client()
    Auth(other).login("ops@example.com", PASSWORD)
    assert "No apps yet" in other.get("/").get_data(as_text=True)


def test_a_page_cache_of_zero_renders_every_request(settings, db, user):
    from panel.web import create_app

    flask_app = create_app(settings.replace(page_cache=0))
    client = flask_app.test_client()
    Auth(client).login("dev@example.com", PASSWORD)
    App.create(team=Team.get(Team.slug == "acme"), slug="web", image="nginx:1")
    for _ in range(3):
        assert ">web</a>" in client.get("/").get_data(as_text=True)
    cache = flask_app.extensions["helios.fragments"]
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)


def test_requests_arriving_together_share_one_render():
    cache = FragmentCache(8)
    renders = []
    started = threading.Event()

    def render() -> str:
        renders.append(1)
        started.set()
        time.sleep(0.3)  # long enough for the others to find the render under way
        return "<table>"

    answers = []
    first = threading.Thread(target=lambda: answers.append(cache.fetch("page", 1, render)))
    first.start()
    started.wait(5)
    others = [
        threading.Thread(target=lambda: answers.append(cache.fetch("page", 1, render)))
        for _ in range(6)
    ]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert answers == ["<table>"] * 7
    assert len(renders) == 1
    # A new version renders again; the oldest keys go past the size.
    assert cache.fetch("page", 2, lambda: "<new>") == "<new>"
    for n in range(10):
        cache.fetch(("other", n), 1, lambda: "x")
    assert len(cache) == 8


def test_the_pool_lends_connections_back_rolled_back_and_keeps_few_idle(tmp_path):
    path = tmp_path / "pool.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x INTEGER)").connection.commit()
    pool = PooledCooperativeSqliteDatabase(
        str(path), pragmas=SQLITE_PRAGMAS, check_same_thread=False, max_connections=None
    )
    # A transaction a request left open is rolled back when its connection comes back.
    pool.connect()
    first = pool.connection()
    pool.begin()
    pool.execute_sql("INSERT INTO t VALUES (1)")
    pool._state.transactions.clear()  # as if the request ended without closing its transaction
    pool.close()
    pool.connect()
    assert pool.connection() is first  # lent again, not opened anew
    assert pool.execute_sql("SELECT count(*) FROM t").fetchone() == (0,)
    pool.close()

    # A burst of requests, each with its own connection: only POOL_IDLE stay open after it.
    burst = POOL_IDLE + 8
    barrier = threading.Barrier(burst)

    def request() -> None:
        pool.connect()
        pool.execute_sql("SELECT 1")
        barrier.wait(10)
        pool.close()

    threads = [threading.Thread(target=request) for _ in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(pool._connections) == POOL_IDLE
    assert not pool._in_use
    pool.close_all()
