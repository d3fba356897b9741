"""Backups of the control plane: a consistent database snapshot and the keys, in one tar file.

SQLite is copied with its online backup API (a consistent snapshot while Helios runs and
writes); PostgreSQL with ``pg_dump`` in its custom format (one snapshot transaction). The
archive is written 0600 from its creation to a hidden file beside the target, fsynced, then
renamed into place. A restore checks everything (manifest, checksums, schema level, key)
before it writes anything, then migrates the restored database up to this Helios's level.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import peewee as pw

from panel import __version__
from panel.backup_manifest import (
    DATABASE_MEMBERS,
    KEY_MEMBERS,
    MANIFEST_NAME,
    BackupFormatError,
    Manifest,
    build_manifest,
    check_manifest,
    key_fingerprint,
    parse_manifest,
)
from panel.config import Settings
from panel.crypto import load_or_create_key
from panel.db import MIGRATIONS_DIR, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, database, open_database

__all__ = [
    "COUNTED",
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "require_installation",
    "restore_backup",
    "write_backup",
]

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes copied at a time
PG_TIMEOUT = 3600  # seconds pg_dump or pg_restore may take
# What the progress lines count: (label, table, condition).
COUNTED = (
    ("apps", "app", ""),
    ("releases", "release", ""),
    ("deployments", "deployment", ""),
    ("secrets", "env_var", " WHERE is_secret"),
    ("tokens", "api_token", ""),
    ("hosts", "host", ""),
    ("teams", "team", ""),
    ("users", "user", ""),
)
# Left in a data dir by any process, and rebuilt by Helios: not an installation.
TRANSIENT = {"metrics", "run", "ansible"}


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; ``code`` is ``conflict`` (it would replace
    something: use --force), ``invalid`` (not a usable backup), ``not_found`` or ``failed``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BackupResult:
    """A written backup: where, how big, what it holds, how long it took."""

    path: Path
    size: int
    counts: dict[str, int]
    manifest: dict[str, Any]
    seconds: float


@dataclass
class RestoreResult:
    """A finished restore: what came back, the migrations applied on top, how long it took."""

    counts: dict[str, int]
    manifest: Manifest
    migrated: list[str] = field(default_factory=list)
    keys_written: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Small helpers: private files, checksums, the database's kind and migrations
# ---------------------------------------------------------------------------------------------


def _database_kind(url: str) -> str:
    return "sqlite" if urlsplit(url).scheme == "sqlite" else "postgresql"


def _sqlite_path(url: str) -> Path:
    return Path("/" + unquote(urlsplit(url).path).lstrip("/"))


def known_migrations() -> list[str]:
    """The migrations this Helios ships, oldest first."""
    return sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.py"))


def _digest(path: Path) -> dict[str, Any]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha.hexdigest()}


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 file renamed into place."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(draft, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _query_db(db: pw.Database) -> tuple[list[str], dict[str, int]]:
    """(migrations applied, row counts) of an open database."""
    tables = set(db.get_tables())
    migrations = []
    if "migratehistory" in tables:
        rows = db.execute_sql("SELECT name FROM migratehistory ORDER BY id").fetchall()
        migrations = [row[0] for row in rows]
    counts = {}
    for label, table, where in COUNTED:
        if table in tables:
            sql = f'SELECT COUNT(*) FROM "{table}"{where}'  # noqa: S608 - COUNTED's constants
            counts[label] = db.execute_sql(sql).fetchone()[0]
    return migrations, counts


def _describe_sqlite(path: Path) -> tuple[list[str], dict[str, int]]:
    db = pw.SqliteDatabase(str(path))
    with db.connection_context():
        return _query_db(db)


def _describe_url(url: str) -> tuple[list[str], dict[str, int]]:
    from panel.db import build_database

    db = build_database(url)
    with db.connection_context():
        return _query_db(db)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: pg_dump and pg_restore with argument lists, the password in the environment
# ---------------------------------------------------------------------------------------------


def _pg_connection(url: str) -> tuple[list[str], dict[str, str]]:
    """(connection arguments, environment) for pg_dump/pg_restore: never the password in argv."""
    parts = urlsplit(url)
    args = [
        f"--host={parts.hostname or '127.0.0.1'}",
        f"--port={parts.port or 5432}",
        f"--dbname={unquote(parts.path.lstrip('/')) or 'helios'}",
        "--no-password",
    ]
    if parts.username:
        args.append(f"--username={unquote(parts.username)}")
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return args, env


def _run_pg(program: str, args: list[str], env: dict[str, str]) -> None:
    path = shutil.which(program)
    if path is None:
        raise BackupError(
            "failed",
            f"{program} is not installed: install the PostgreSQL client tools of your server's "
            "version (Debian: apt-get install postgresql-client) and run the command again",
        )
    try:
        done = subprocess.run(  # an argument list, no shell
            [path, *args], env=env, capture_output=True, text=True, timeout=PG_TIMEOUT,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BackupError("failed", f"{program} did not finish in {PG_TIMEOUT} s") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit code {done.returncode}"
        raise BackupError("failed", f"{program} failed: {said}")


# ---------------------------------------------------------------------------------------------
# Backup
# ---------------------------------------------------------------------------------------------


def _snapshot(settings: Settings, staging: Path) -> tuple[Path, list[str], dict[str, int]]:
    """The database copied into ``staging``: (file, migrations, counts)."""
    url = settings.effective_database_url
    if _database_kind(url) == "sqlite":
        source = _sqlite_path(url)
        if not source.is_file():
            raise BackupError(
                "not_found",
                f"no database at {source}: check HELIOS_DATA_DIR (or HELIOS_DATABASE_URL)",
            )
        target = staging / "helios.db"
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        # One step (pages=-1): the copy is the database as one read transaction saw it, while
        # other processes go on writing to the WAL.
        live = contextlib.closing(sqlite3.connect(source, timeout=15))
        with live as source_db, contextlib.closing(sqlite3.connect(target)) as copy:
            source_db.backup(copy)
        migrations, counts = _describe_sqlite(target)
        return target, migrations, counts
    target = staging / "helios.pgdump"
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    args, env = _pg_connection(url)
    migrations, counts = _describe_url(url)
    _run_pg("pg_dump", ["--format=custom", f"--file={target}", *args], env)
    return target, migrations, counts


def _keys(settings: Settings, staging: Path) -> tuple[dict[str, Path], str, str]:
    """The key files to pack, the encryption key and where it came from."""
    files = {}
    if settings.encryption_key:
        key, source = settings.encryption_key, "environment"
    else:
        key, source = load_or_create_key(settings.data_dir / "encryption.key"), "file"
    encryption = staging / "encryption.key"
    _write_private(encryption, (key.strip() + "\n").encode())
    files[KEY_MEMBERS["encryption"]] = encryption
    session = settings.data_dir / "session.key"
    if not settings.secret_key and session.is_file():
        files[KEY_MEMBERS["session"]] = session
    return files, key, source


def _add(archive: tarfile.TarFile, name: str, handle: IO[bytes], size: int, when: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, PRIVATE_FILE_MODE, when
    archive.addfile(info, handle)


def _unusable(path: Path, error: OSError) -> BackupError:
    return BackupError("invalid", f"{path}: {error.strerror or error}: give a usable file name")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:  # e.g. a name too long
        raise _unusable(path, exc) from None


def _check_target(target: Path, force: bool) -> None:
    try:
        _check_target_path(target, force)
    except OSError as exc:
        raise _unusable(target, exc) from None


def _check_target_path(target: Path, force: bool) -> None:
    if target.is_dir():
        raise BackupError(
            "invalid", f"{target} is a folder: give a file name, e.g. {target}/helios-backup.tar"
        )
    if not target.parent.is_dir():
        raise BackupError("not_found", f"{target.parent} does not exist: create it first")
    if target.exists() and not force:
        raise BackupError(
            "conflict", f"{target} exists: give another name, or --force to replace it"
        )


def require_installation(settings: Settings) -> None:
    """Refuse early when the configured SQLite database does not exist (nothing to back up)."""
    url = settings.effective_database_url
    if _database_kind(url) == "sqlite" and not _sqlite_path(url).is_file():
        raise BackupError(
            "not_found",
            f"no database at {_sqlite_path(url)}: check HELIOS_DATA_DIR (or HELIOS_DATABASE_URL)",
        )


def write_backup(settings: Settings, target: Path, *, force: bool = False) -> BackupResult:
    """Write a backup of this installation to ``target`` (0600), atomically."""
    started = time.monotonic()
    target = Path(os.path.abspath(target))
    _check_target(target, force)
    try:
        manifest = _write(settings, target, force)
    except (OSError, sqlite3.Error, pw.DatabaseError) as exc:
        raise BackupError(
            "failed", f"the backup failed ({exc}); {target} was not written or replaced"
        ) from exc
    size = target.stat().st_size
    return BackupResult(target, size, manifest["counts"], manifest, time.monotonic() - started)


def _write(settings: Settings, target: Path, force: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".helios-backup-") as work:
        staging = Path(work)
        snapshot, migrations, counts = _snapshot(settings, staging)
        kind = _database_kind(settings.effective_database_url)
        members = {DATABASE_MEMBERS[kind]: snapshot}
        keys, key, source = _keys(settings, staging)
        members.update(keys)
        manifest = build_manifest(
            created_at=now, helios_version=__version__, database_kind=kind,
            migrations=migrations, files={name: _digest(p) for name, p in members.items()},
            encryption_key=key, encryption_key_source=source, counts=counts,
        )  # fmt: skip
        draft = staging / "archive.tar"
        _pack(draft, manifest, members, int(now.timestamp()))
        _place(draft, target, force)
    return manifest


def _pack(draft: Path, manifest: dict[str, Any], members: dict[str, Path], when: int) -> None:
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
            raw = json.dumps(manifest, indent=2).encode() + b"\n"
            _add(archive, MANIFEST_NAME, io.BytesIO(raw), len(raw), when)
            for name, path in members.items():
                with path.open("rb") as member:
                    _add(archive, name, member, path.stat().st_size, when)
        handle.flush()
        os.fsync(handle.fileno())


def _place(draft: Path, target: Path, force: bool) -> None:
    """Move the finished archive to ``target``: never over a file unless ``force``."""
    if force:
        os.replace(draft, target)
    else:
        try:
            os.link(draft, target)  # fails if the name was taken meanwhile
        except FileExistsError:
            raise BackupError(
                "conflict", f"{target} exists: give another name, or --force to replace it"
            ) from None
    _fsync_dir(target.parent)


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_archive(source: Path) -> Iterator[tarfile.TarFile]:
    if not source.is_file():
        raise BackupError("not_found", f"{source}: no such backup file")
    try:
        with tarfile.open(source, mode="r:") as archive:
            yield archive
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(
            "invalid", f"{source} is not a readable Helios backup ({exc}): the file is damaged "
            "or not a backup; take another copy of it"
        ) from None  # fmt: skip


def _read_manifest(archive: tarfile.TarFile, source: Path) -> Manifest:
    try:
        member = archive.getmember(MANIFEST_NAME)
    except KeyError:
        raise BackupError(
            "invalid", f"{source} holds no manifest.json: not a Helios backup"
        ) from None
    handle = archive.extractfile(member) if member.isfile() else None
    if handle is None:
        raise BackupError("invalid", f"{source}: manifest.json is not a file")
    try:
        return parse_manifest(handle.read())
    except BackupFormatError as exc:
        raise BackupError("invalid", f"{source}: {exc}") from None


def _extract(archive: tarfile.TarFile, manifest: Manifest, staging: Path) -> dict[str, Path]:
    """Each listed member copied to ``staging`` (0600), its size and checksum verified."""
    found = {}
    for name, expected in manifest.files.items():
        try:
            member = archive.getmember(name)
        except KeyError:
            raise BackupError(
                "invalid",
                f"the archive lacks {name}, which its manifest lists: it is damaged or was "
                "altered; use another copy",
            ) from None
        handle = archive.extractfile(member) if member.isfile() else None
        if handle is None:
            raise BackupError("invalid", f"{name} in the archive is not a regular file")
        path = staging / name.replace("/", "_")
        sha = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
        if path.stat().st_size != expected["size"] or sha.hexdigest() != expected["sha256"]:
            raise BackupError(
                "invalid", f"{name} does not match its checksum: the archive is damaged; "
                "use another copy"
            )  # fmt: skip
        found[name] = path
    return found


def _restore_key(settings: Settings, manifest: Manifest, files: dict[str, Path]) -> str | None:
    """The encryption key to write to the data dir (None: HELIOS_ENCRYPTION_KEY serves)."""
    member = KEY_MEMBERS["encryption"]
    packed = files[member].read_text().strip() if member in files else None
    fingerprint = manifest.encryption_key_fingerprint
    if packed is not None and key_fingerprint(packed) != fingerprint:
        raise BackupError(
            "invalid", f"{member} does not match the manifest: the archive is damaged"
        )
    if settings.encryption_key:
        if key_fingerprint(settings.encryption_key) != fingerprint:
            raise BackupError(
                "invalid",
                "HELIOS_ENCRYPTION_KEY is not the key this backup's secrets were encrypted with "
                f"(its SHA-256 is {fingerprint[:16]}…): unset it to use the key in the backup, or "
                "set it to the key the backed-up installation used",
            )
        return None
    if packed is None:
        secrets = manifest.counts.get("secrets", "its")
        raise BackupError(
            "invalid",
            f"the backup holds no encryption key ({member}), and HELIOS_ENCRYPTION_KEY is not "
            f"set: without the key {secrets} secrets (and the hosts' SSH keys) cannot be "
            "decrypted. Set HELIOS_ENCRYPTION_KEY to the key the backed-up installation used "
            f"(its SHA-256 starts {fingerprint[:16]}) and restore again",
        )
    return packed


def _occupied(settings: Settings) -> list[str]:
    """What an installation left in the data dir and the database (empty: free to restore)."""
    found = []
    if settings.data_dir.is_dir():
        for entry in sorted(settings.data_dir.iterdir()):
            if entry.name in TRANSIENT or (entry.is_file() and entry.stat().st_size == 0):
                continue
            found.append(str(entry))
    url = settings.effective_database_url
    if _database_kind(url) == "postgresql":
        try:
            tables = _tables(url)
        except pw.DatabaseError as exc:
            raise BackupError("failed", f"the database cannot be opened: {exc}") from None
        if tables:
            found.append(f"{len(tables)} tables in the PostgreSQL database")
    else:
        path = _sqlite_path(url)
        if path.is_file() and path.stat().st_size and path.parent != settings.data_dir:
            found.append(str(path))
    return found


def _tables(url: str) -> list[str]:
    from panel.db import build_database

    db = build_database(url)
    with db.connection_context():
        return db.get_tables()


def restore_backup(settings: Settings, source: Path, *, force: bool = False) -> RestoreResult:
    """Restore the backup ``source`` into this installation's data dir and database."""
    started = time.monotonic()
    if not _is_file(Path(source)):
        raise BackupError("not_found", f"{source}: no such backup file")
    occupied = _occupied(settings)
    if occupied and not force:
        raise BackupError(
            "conflict",
            f"the installation is not empty ({', '.join(occupied[:4])}): restore into an empty "
            "HELIOS_DATA_DIR and database, or give --force to replace what is there "
            "(stop every Helios process first)",
        )
    kind = _database_kind(settings.effective_database_url)
    with _open_archive(Path(source)) as archive:
        manifest = _read_manifest(archive, Path(source))
        try:
            check_manifest(manifest, known_migrations=known_migrations(), database_kind=kind,
                           version=__version__)  # fmt: skip
        except BackupFormatError as exc:
            raise BackupError("invalid", str(exc)) from None
        settings.data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.data_dir, prefix=".restore-") as work:
            files = _extract(archive, manifest, Path(work))
            key = _restore_key(settings, manifest, files)
            result = RestoreResult({}, manifest)
            try:
                result.migrated = _restore_database(settings, manifest, files)
                result.keys_written = _write_keys(settings, key, files)
            except (OSError, sqlite3.Error, pw.DatabaseError) as exc:
                raise BackupError("failed", f"the restore failed while writing ({exc})") from exc
    _migrations, result.counts = _describe_url(settings.effective_database_url)
    result.seconds = time.monotonic() - started
    return result


def _restore_database(settings: Settings, manifest: Manifest, files: dict[str, Path]) -> list[str]:
    """Put the database in place and migrate it up; the migrations applied."""
    from panel.db import migrate_up

    url = settings.effective_database_url
    dump = files[manifest.database_member]
    if manifest.database_kind == "postgresql":
        args, env = _pg_connection(url)
        extra = ["--clean", "--if-exists"] if _tables(url) else []
        _run_pg("pg_restore", [*extra, "--no-owner", "--no-privileges", "--exit-on-error",
                               "--single-transaction", *args, str(dump)], env)  # fmt: skip
        open_database(url)
        return migrate_up()
    _check_sqlite(dump)
    staged = f"sqlite:///{dump}"
    open_database(staged)
    try:
        applied = migrate_up()
    finally:
        if not database.obj.is_closed():
            database.obj.close()
    target = _sqlite_path(url)
    target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    for stale in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        stale.unlink(missing_ok=True)
    os.replace(dump, target)
    _fsync_dir(target.parent)
    open_database(url)
    return applied


def _check_sqlite(path: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        raise BackupError("invalid", f"the database in the backup is damaged ({verdict})")


def _write_keys(settings: Settings, key: str | None, files: dict[str, Path]) -> list[str]:
    written = []
    if key is not None:
        _write_private(settings.data_dir / "encryption.key", (key + "\n").encode())
        written.append("encryption.key")
    session = files.get(KEY_MEMBERS["session"])
    if session is not None and not settings.secret_key:
        _write_private(settings.data_dir / "session.key", session.read_bytes())
        written.append("session.key")
    _fsync_dir(settings.data_dir)
    return written
