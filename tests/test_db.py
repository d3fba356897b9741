"""The SQLite files and the data dir are private to the service user, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from panel.db import open_database
from panel.run.runtime import start_process


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    """The common default umask 022, under which new files are world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path, loose_umask):
    path = tmp_path / "data" / "helios.db"
    database = open_database(f"sqlite:///{path}")
    with database.connection_context():
        database.execute_sql("CREATE TABLE t (x INTEGER)")
        database.execute_sql("INSERT INTO t VALUES (1)")
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(file.exists() for file in files)
        assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}
    assert mode(path.parent) == 0o700


def test_files_an_older_release_left_readable_are_tightened(tmp_path, loose_umask):
    path = tmp_path / "helios.db"
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        file.touch(mode=0o644)
    open_database(f"sqlite:///{path}")
    assert [mode(path), mode(Path(f"{path}-wal")), mode(Path(f"{path}-shm"))] == [0o600] * 3


def test_the_data_dir_is_0700(settings, loose_umask):
    settings.data_dir.mkdir(mode=0o755)
    settings.data_dir.chmod(0o755)
    process = start_process("test", settings)
    process.database.close()
    assert mode(settings.data_dir) == 0o700


def test_planner_statistics_steer_the_newest_image_per_app_to_the_apps_index(db, redis_conn):
    """Without statistics SQLite's planner took the status index (most rows match it) to find
    each app's newest succeeded deployment; the hourly refresh gives it the facts."""
    from panel.actions.accounts import create_user
    from panel.actions.drift import live_images
    from panel.models import App, Deployment, Release, Team
    from panel.run.worker import STATISTICS_LOCK, refresh_planner_statistics

    create_user("owner@example.com", "Copper Walrus Umbrella 42", team_slug="acme")
    team = Team.get(Team.slug == "acme")
    apps = [App.create(team=team, slug=f"app-{n}", image="nginx:1") for n in range(20)]
    for app in apps:
        releases = [Release.create(app=app, number=n, image=f"nginx:{n}") for n in range(1, 31)]
        Deployment.insert_many(
            {"app": app.id, "release": release.id, "status": "succeeded"} for release in releases
        ).execute()
    assert live_images([apps[3].id]) == {apps[3].id: "nginx:30"}

    redis_conn.delete(STATISTICS_LOCK)
    assert refresh_planner_statistics(redis_conn) is True
    assert refresh_planner_statistics(redis_conn) is False  # once an hour across the workers
    tables = {row[0] for row in db.execute_sql("SELECT tbl FROM sqlite_stat1").fetchall()}
    assert {"deployment", "app", "release"} <= tables
    plan = db.execute_sql(
        "EXPLAIN QUERY PLAN SELECT id FROM deployment WHERE app_id = ? AND status = ? "
        "ORDER BY id DESC LIMIT 1", (apps[3].id, "succeeded"),
    ).fetchall()  # fmt: skip
    assert "deployment_status" not in str(plan), plan
    assert live_images([a.id for a in apps]) == {a.id: "nginx:30" for a in apps}
