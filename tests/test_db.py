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
