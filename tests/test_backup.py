"""Backups: a seeded installation is backed up while another process writes to its database,
restored into an empty data dir, and every row, secret, token and key is back; refusals (an
installation already there, a file already there, a backup without its key, a damaged or newer
backup); the scheduled job writes and prunes; the CLI as a real process; PostgreSQL too."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest
from provision_harness import SSH_KEY

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.backups import create_backup, restore_installation
from panel.actions.hosts import add_host
from panel.actions.tokens import create_token
from panel.backup import BackupError, restore_backup, write_backup
from panel.backup_manifest import MANIFEST_NAME, to_prune
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database, migrate_up, open_database
from panel.models import EnvVar, Event, Host, Team
from panel.queue import get_queue
from panel.reconcile.backup import SCHEDULE_LOCK, schedule_backup

from conftest import (
    helios_command,
    process_env,
    run_queued,
    temporary_postgres_database,
    wait_until,
)

SECRET = "s3cr3t-value-that-must-survive"
PASSWORD = "a long enough password 123"
# Another process writing to the database during the backup: two events per transaction, so
# a snapshot taken in the middle of one would hold an odd number of them.
WRITER = """
import sqlite3, sys, time, os
db = sqlite3.connect(sys.argv[1], timeout=15, isolation_level=None)
db.execute("PRAGMA busy_timeout=15000")
n = 0
while not os.path.exists(sys.argv[2]):
    db.execute("BEGIN IMMEDIATE")
    for _ in range(2):
        db.execute("INSERT INTO event (subject, actor, data, created_at) "
                   "VALUES ('v1.writer.wrote', 'writer', '{}', '2026-01-01 00:00:00')")
    db.execute("COMMIT")
    n += 1
    if n == 20:
        open(sys.argv[2] + ".ready", "w").close()
"""


@pytest.fixture
def seed(settings, db, redis_conn):
    """A team, an operator with a token, an app with a secret, its release and deployment, a
    host with an encrypted SSH key."""
    operator = create_user("ops@example.com", PASSWORD, team_slug="acme", is_operator=True)
    team = Team.get(Team.slug == "acme")
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1",
                     redis_conn=redis_conn)  # fmt: skip
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=None, app=app, key="TOKEN", value=SECRET, secret=True, cipher=cipher)
    request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    token = create_token(operator, "ci", ["deploy"], 30)
    add_host(actor=None, name="n1", address="10.0.0.5", groups=["nomad_servers"],
             ssh_private_key=SSH_KEY, cipher=cipher)  # fmt: skip
    yield token.secret
    database.initialize(db)


def empty_settings(base: Settings, where: Path, **changes) -> Settings:
    """Settings of a fresh installation in ``where`` (SQLite under it unless changed)."""
    return base.replace(data_dir=where, database_url="", **changes)


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite file."""
    with closing(sqlite3.connect(path)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {name: sorted(db.execute(f'SELECT * FROM "{name}"').fetchall(),  # noqa: S608
                             key=repr)
                for name in names if not name.startswith("sqlite_")}  # fmt: skip


def rewrite(source: Path, target: Path, *, drop=(), edit=None, damage=None) -> None:
    """A copy of a backup with members dropped (and unlisted), the manifest edited, or a
    member's bytes changed after its checksum was taken."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        manifest = json.loads(old.extractfile(MANIFEST_NAME).read())
        for name in drop:
            manifest["files"].pop(name)
        if edit:
            edit(manifest)
        raw = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = len(raw)
        new.addfile(info, io.BytesIO(raw))
        for member in old.getmembers():
            if member.name == MANIFEST_NAME or member.name in drop:
                continue
            data = old.extractfile(member).read()
            if member.name == damage:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            new.addfile(member, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# The round trip
# ---------------------------------------------------------------------------------------------


def test_a_backup_taken_while_another_process_writes_restores_everything(
    settings, db, seed, tmp_path, app
):
    source = Path(settings.effective_database_url.removeprefix("sqlite:///"))
    before = rows(source)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(stop)])
    try:
        wait_until(lambda: Path(f"{stop}.ready").exists(), what="the writer to start writing")
        target = tmp_path / "backups" / "one.tar"
        target.parent.mkdir()
        result = create_backup(actor=None, target=target, settings=settings)
        assert writer.poll() is None, "the writer was still writing during the backup"
    finally:
        stop.touch()
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert result.counts["apps"] == 1 and result.counts["secrets"] == 1
    assert result.counts["tokens"] == 1 and result.counts["hosts"] == 1
    assert Event.select().where(Event.subject == "v1.backup.created").count() == 1

    restored = empty_settings(settings, tmp_path / "restored")
    done = restore_installation(actor=None, source=target, settings=restored)
    assert done.counts == result.counts
    assert done.keys_written == ["encryption.key", "session.key"]  # the panel made the second
    data_dir = tmp_path / "restored"
    assert (data_dir / "session.key").read_text() == (settings.data_dir / "session.key").read_text()
    for name in ("helios.db", "encryption.key", "session.key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    after = rows(data_dir / "helios.db")
    for table, seeded in before.items():
        if table == "event":  # the writer's events and the backup's own are there too
            assert set(seeded) <= set(after[table])
            wrote = [r for r in after[table] if r[1] == "v1.writer.wrote"]
            assert wrote and len(wrote) % 2 == 0, "the snapshot cut a transaction in two"
        else:
            assert after[table] == seeded, table

    # The secret and the host's SSH key decrypt with the restored key; the token signs in.
    open_database(restored.effective_database_url)
    with database.connection_context():
        cipher = SecretCipher.from_settings(restored)
        assert cipher.decrypt(EnvVar.get(EnvVar.key == "TOKEN").value) == SECRET
        assert cipher.decrypt(Host.get(Host.name == "n1").ssh_private_key) == SSH_KEY
        assert Event.select().where(Event.subject == "v1.backup.restored").count() == 1
    from panel.web import create_app as create_panel

    panel = create_panel(restored)
    panel.config["TESTING"] = True
    answer = panel.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {seed}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["user"]["email"] == "ops@example.com"
    assert answer.json["token"]["name"] == "ci"


def test_a_backup_from_the_environment_key_carries_it(settings, db, seed, tmp_path):
    env_key = (settings.data_dir / "encryption.key").read_text().strip()
    (settings.data_dir / "encryption.key").unlink()
    with_env = settings.replace(encryption_key=env_key)
    target = tmp_path / "env.tar"
    result = write_backup(with_env, target)
    assert result.manifest["encryption_key"]["source"] == "environment"
    restored = empty_settings(settings, tmp_path / "restored")
    restore_backup(restored, target)
    assert (tmp_path / "restored" / "encryption.key").read_text().strip() == env_key
    # A restore where HELIOS_ENCRYPTION_KEY is another key is refused before writing.
    other = empty_settings(settings, tmp_path / "other",
                           encryption_key="A" * 43 + "=")  # fmt: skip
    with pytest.raises(BackupError, match="not the key this backup's secrets"):
        restore_backup(other, target)
    assert not any((tmp_path / "other").iterdir())


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def made(settings, seed, tmp_path) -> Path:
    target = tmp_path / "made.tar"
    write_backup(settings, target)
    return target


def test_restoring_over_an_installation_needs_force(settings, made, tmp_path):
    with pytest.raises(BackupError, match="not empty") as refused:
        restore_backup(settings, made)
    assert refused.value.code == "conflict"
    done = restore_backup(settings, made, force=True)
    assert done.counts["apps"] == 1


def test_an_existing_backup_file_is_not_replaced_without_force(settings, made):
    before, inode = made.read_bytes(), made.stat().st_ino
    with pytest.raises(BackupError, match="exists: give another name") as refused:
        write_backup(settings, made)
    assert refused.value.code == "conflict"
    assert made.read_bytes() == before and made.stat().st_ino == inode
    write_backup(settings, made, force=True)
    assert made.stat().st_ino != inode  # a new file renamed over it
    assert [p.name for p in made.parent.iterdir() if p.name.startswith(".")] == []


def test_a_backup_without_its_key_is_refused_with_what_to_do(settings, made, tmp_path):
    keyless = tmp_path / "keyless.tar"
    rewrite(made, keyless, drop={"keys/encryption.key"})
    restored = empty_settings(settings, tmp_path / "restored")
    with pytest.raises(BackupError, match="holds no encryption key") as refused:
        restore_backup(restored, keyless)
    assert "HELIOS_ENCRYPTION_KEY" in str(refused.value)
    assert "1 secrets" in str(refused.value)
    assert list((tmp_path / "restored").iterdir()) == []
    # With the key given by the operator, the same backup restores.
    key = (settings.data_dir / "encryption.key").read_text().strip()
    restore_backup(restored.replace(encryption_key=key), keyless)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "not a readable Helios backup|lacks|checksum"),
        ("flipped", "does not match its checksum"),
        ("not a tar", "not a readable Helios backup"),
        ("member missing", "lacks keys/encryption.key"),
        ("newer schema", "schema is newer than this Helios"),
        ("unknown format", "backup format 2 is not one this Helios reads"),
    ],
)
def test_a_damaged_or_foreign_backup_fails_cleanly(settings, made, tmp_path, how, message):
    bad = tmp_path / "bad.tar"
    if how == "truncated":
        bad.write_bytes(made.read_bytes()[: made.stat().st_size // 2])
    elif how == "flipped":
        rewrite(made, bad, damage="database/helios.db")
    elif how == "not a tar":
        bad.write_bytes(os.urandom(4096))
    elif how == "member missing":
        with tarfile.open(made) as old, tarfile.open(bad, "w") as new:
            for member in old.getmembers():
                if member.name != "keys/encryption.key":
                    new.addfile(member, old.extractfile(member))
    elif how == "newer schema":
        rewrite(made, bad, edit=lambda m: m["database"]["migrations"].append("099_future"))
    else:
        rewrite(made, bad, edit=lambda m: m.update(format_version=2))
    restored = empty_settings(settings, tmp_path / "restored")
    with pytest.raises(BackupError, match=message) as refused:
        restore_backup(restored, bad)
    assert refused.value.code == "invalid"
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())


# ---------------------------------------------------------------------------------------------
# Scheduled backups
# ---------------------------------------------------------------------------------------------


def test_retention_keeps_the_newest_and_never_touches_other_files():
    names = ["helios-backup-20260101T000000Z.tar", "notes.txt",
             "helios-backup-20260103T000000Z.tar", "helios-backup-20260102T000000Z.tar",
             "helios-backup-latest.tar"]  # fmt: skip
    assert to_prune(names, 2) == ["helios-backup-20260101T000000Z.tar"]
    assert to_prune(names, 5) == []


def test_the_worker_queues_one_backup_per_interval_and_the_job_prunes(
    settings, db, seed, redis_conn, monkeypatch, tmp_path
):
    folder = tmp_path / "scheduled"
    folder.mkdir()
    old = ["helios-backup-20200101T000000Z.tar", "helios-backup-20200102T000000Z.tar",
           "helios-backup-20200103T000000Z.tar"]  # fmt: skip
    for name in [*old, "notes.txt"]:
        (folder / name).write_text("x")
    scheduled = settings.replace(backup_dir=str(folder), backup_keep=2)
    for name, value in process_env(scheduled, HELIOS_BACKUP_DIR=str(folder),
                                   HELIOS_BACKUP_KEEP="2").items():  # fmt: skip
        monkeypatch.setenv(name, value)
    redis_conn.delete(SCHEDULE_LOCK)
    assert schedule_backup(redis_conn, settings) is False  # off without HELIOS_BACKUP_DIR
    assert schedule_backup(redis_conn, scheduled) is True
    assert schedule_backup(redis_conn, scheduled) is False  # once per interval, all workers
    queue = get_queue(redis_conn, "default")
    assert [job.func_name for job in queue.jobs] == ["panel.reconcile.backup.run_scheduled_backup"]
    run_queued(redis_conn, queue)
    left = sorted(p.name for p in folder.iterdir())
    written = [n for n in left if n.startswith("helios-backup-2026")]
    assert len(written) == 1
    assert left == sorted([old[-1], written[0], "notes.txt"])
    assert stat.S_IMODE((folder / written[0]).stat().st_mode) == 0o600
    restored = empty_settings(settings, tmp_path / "restored")
    assert restore_backup(restored, folder / written[0]).counts["secrets"] == 1
    redis_conn.delete(SCHEDULE_LOCK)


def test_real_workers_write_scheduled_backups(settings, seed, redis_conn, start_worker, tmp_path):
    folder = tmp_path / "scheduled"
    redis_conn.delete(SCHEDULE_LOCK)
    env = {"HELIOS_BACKUP_DIR": str(folder), "HELIOS_BACKUP_KEEP": "1"}
    workers = [start_worker(**env), start_worker(**env)]

    def recorded():
        with database.connection_context():
            made = Event.select().where(Event.subject == "v1.backup.created")
            return [event.data for event in made]

    events = wait_until(recorded, timeout=60, what="a scheduled backup recorded")
    assert all(worker.poll() is None for worker in workers)
    # Two workers, one lock in Redis: one backup per HELIOS_BACKUP_INTERVAL (a day here).
    assert [event["scheduled"] for event in events] == [True]
    written = sorted(folder.glob("helios-backup-*.tar"))
    assert [path.name for path in written] == [events[0]["file"]]
    restored = empty_settings(settings, tmp_path / "restored")
    assert restore_backup(restored, written[0]).counts["secrets"] == 1
    redis_conn.delete(SCHEDULE_LOCK)


# ---------------------------------------------------------------------------------------------
# The CLI, as a real process
# ---------------------------------------------------------------------------------------------


def test_the_cli_backs_up_and_restores(settings, seed, tmp_path):
    target = tmp_path / "cli.tar"
    env = process_env(settings, HELIOS_LOG_LEVEL="warning")
    done = subprocess.run(helios_command("backup", str(target)), env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {target}" in done.stdout
    assert "1 apps, 1 releases, 1 deployments, 1 secrets, 1 tokens, 1 hosts" in done.stdout
    assert "keep it encrypted, off this machine" in done.stderr
    again = subprocess.run(helios_command("backup", str(target)), env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2 and "--force" in again.stderr

    fresh = {**env, "HELIOS_DATA_DIR": str(tmp_path / "restored"), "HELIOS_DATABASE_URL": ""}
    nothing = subprocess.run(helios_command("backup", str(tmp_path / "none.tar")), env=fresh,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert nothing.returncode == 4 and "no database at" in nothing.stderr
    assert not (tmp_path / "restored").exists() and not (tmp_path / "none.tar").exists()
    done = subprocess.run(helios_command("restore", str(target)), env=fresh,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 apps, 1 releases, 1 deployments, 1 secrets, 1 tokens, 1 hosts" in done.stdout
    again = subprocess.run(helios_command("restore", str(target)), env=fresh,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2 and "not empty" in again.stderr and "--force" in again.stderr
    missing = subprocess.run(helios_command("restore", str(tmp_path / "nope.tar")), env=fresh,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 4 and "no such backup file" in missing.stderr
    assert "Traceback" not in again.stderr + missing.stderr


# ---------------------------------------------------------------------------------------------
# SQLite and PostgreSQL
# ---------------------------------------------------------------------------------------------


def test_a_round_trip_on_each_database(settings, any_database_url, redis_conn, tmp_path):
    source = settings.replace(database_url=any_database_url, data_dir=tmp_path / "source")
    handle = open_database(source.effective_database_url)
    migrate_up()
    with handle.connection_context():
        operator = create_user("ops@example.com", PASSWORD, team_slug="acme", is_operator=True)
        app = create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web",
                         image="registry.local/web:1")  # fmt: skip
        set_env(actor=None, app=app, key="TOKEN", value=SECRET, secret=True,
                cipher=SecretCipher.from_settings(source))  # fmt: skip
        create_token(operator, "ci", ["deploy"], 30)
    target = tmp_path / "round.tar"
    written = write_backup(source, target)
    assert written.manifest["database"]["kind"] == (
        "sqlite" if any_database_url.startswith("sqlite") else "postgresql"
    )
    if any_database_url.startswith("sqlite"):
        _restore_and_check(source, target, tmp_path, "")
    else:
        with temporary_postgres_database() as url:
            _restore_and_check(source, target, tmp_path, url)


def _restore_and_check(source: Settings, target: Path, tmp_path: Path, url: str) -> None:
    restored = source.replace(data_dir=tmp_path / "restored", database_url=url)
    done = restore_backup(restored, target)
    assert done.counts["apps"] == 1 and done.counts["secrets"] == 1 and done.counts["tokens"] == 1
    with database.connection_context():
        value = EnvVar.get(EnvVar.key == "TOKEN").value
    assert SecretCipher.from_settings(restored).decrypt(value) == SECRET
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(restored, target)
    assert restore_backup(restored, target, force=True).counts == done.counts
