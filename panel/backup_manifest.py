"""What a backup archive says about itself, checked before anything is restored (pure).

A backup is one tar file: ``manifest.json`` first, then the database snapshot and the key
files, each listed in the manifest with its size and SHA-256. The manifest names the schema
level (the migrations applied), so a restore can refuse a backup newer than the Helios running
it, and the fingerprint of the encryption key, so a restore can tell a missing or wrong key
before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "BACKUP_FORMAT",
    "BACKUP_NAME_RE",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SENSITIVE",
    "BackupFormatError",
    "Manifest",
    "backup_file_name",
    "build_manifest",
    "check_manifest",
    "key_fingerprint",
    "parse_manifest",
    "to_prune",
]

BACKUP_FORMAT = "helios-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024  # a manifest is a few kilobytes; more is not one of ours
DATABASE_KINDS = ("sqlite", "postgresql")
# The members a backup may hold: nothing else is ever extracted.
DATABASE_MEMBERS = {"sqlite": "database/helios.db", "postgresql": "database/helios.pgdump"}
KEY_MEMBERS = {"encryption": "keys/encryption.key", "session": "keys/session.key"}
# Scheduled backups: the UTC time in the name, so that sorting names sorts by time.
BACKUP_NAME_RE = re.compile(r"helios-backup-\d{8}T\d{6}Z\.tar")
SENSITIVE = (
    "SENSITIVE: this archive holds the key that decrypts every secret of every app (and the "
    "SSH keys Helios provisions hosts with) next to the encrypted values. Anyone who reads it "
    "reads them all. Keep it encrypted, off this machine, readable by the operators only."
)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MIGRATION_RE = re.compile(r"[0-9]{3}_[A-Za-z0-9_]{1,60}")


class BackupFormatError(ValueError):
    """An archive that is not a usable Helios backup; the message says what to do."""


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: what the archive holds and how it was made."""

    created_at: str
    helios_version: str
    database_kind: str
    migrations: tuple[str, ...]
    files: Mapping[str, Mapping[str, Any]]  # member name → {"size", "sha256"}
    encryption_key_fingerprint: str
    encryption_key_source: str  # "file" or "environment"
    counts: Mapping[str, int]

    @property
    def database_member(self) -> str:
        """The archive member holding the database."""
        return DATABASE_MEMBERS[self.database_kind]

    def has(self, member: str) -> bool:
        """True when the archive lists ``member``."""
        return member in self.files


def key_fingerprint(key: str) -> str:
    """A SHA-256 of the encryption key: tells keys apart without revealing them."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def backup_file_name(when: datetime) -> str:
    """``helios-backup-20261206T104500Z.tar`` for a UTC time."""
    return f"helios-backup-{when.strftime('%Y%m%dT%H%M%SZ')}.tar"


def to_prune(names: Iterable[str], keep: int) -> list[str]:
    """The scheduled backups to remove so that the newest ``keep`` stay (oldest first); names
    that are not scheduled backups are never chosen."""
    ours = sorted(name for name in names if BACKUP_NAME_RE.fullmatch(name))
    return ours[: max(len(ours) - keep, 0)]


def build_manifest(
    *,
    created_at: datetime,
    helios_version: str,
    database_kind: str,
    migrations: Iterable[str],
    files: Mapping[str, Mapping[str, Any]],
    encryption_key: str,
    encryption_key_source: str,
    counts: Mapping[str, int],
) -> dict[str, Any]:
    """The manifest document of a new backup."""
    return {
        "format": BACKUP_FORMAT,
        "format_version": FORMAT_VERSION,
        "sensitive": SENSITIVE,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "helios_version": helios_version,
        "database": {"kind": database_kind, "migrations": list(migrations)},
        "files": {name: dict(entry) for name, entry in sorted(files.items())},
        "encryption_key": {
            "fingerprint_sha256": key_fingerprint(encryption_key),
            "source": encryption_key_source,
        },
        "counts": dict(counts),
    }


def parse_manifest(raw: bytes) -> Manifest:
    """Read and check a manifest's JSON; BackupFormatError says what is wrong."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BackupFormatError("manifest.json is too large: this is not a Helios backup")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupFormatError("manifest.json is not JSON: the archive is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
        raise BackupFormatError("manifest.json does not describe a Helios backup")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise BackupFormatError(
            f"backup format {version!r} is not one this Helios reads (it reads "
            f"{FORMAT_VERSION}): restore it with the Helios version that made it "
            f"({doc.get('helios_version', 'unknown')}) or a newer one"
        )
    try:
        return _manifest(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BackupFormatError(f"manifest.json is incomplete or damaged ({exc})") from None


def _manifest(doc: dict[str, Any]) -> Manifest:
    database, key = doc["database"], doc["encryption_key"]
    kind = database["kind"]
    if kind not in DATABASE_KINDS:
        raise ValueError(f"unknown database kind {kind!r}")
    migrations = tuple(str(name) for name in database["migrations"])
    if not all(_MIGRATION_RE.fullmatch(name) for name in migrations):
        raise ValueError("a migration name is not one Helios writes")
    allowed = {DATABASE_MEMBERS[kind], *KEY_MEMBERS.values()}
    files = {}
    for name, entry in doc["files"].items():
        if name not in allowed:
            raise ValueError(f"unexpected member {name!r}")
        size, digest = int(entry["size"]), str(entry["sha256"])
        if size < 0 or not _SHA256_RE.fullmatch(digest):
            raise ValueError(f"bad size or checksum of {name!r}")
        files[name] = {"size": size, "sha256": digest}
    if DATABASE_MEMBERS[kind] not in files:
        raise ValueError("no database in the archive")
    fingerprint = str(key["fingerprint_sha256"])
    if not _SHA256_RE.fullmatch(fingerprint):
        raise ValueError("bad encryption key fingerprint")
    counts = {str(name): int(n) for name, n in dict(doc.get("counts") or {}).items()}
    return Manifest(
        created_at=str(doc["created_at"]),
        helios_version=str(doc["helios_version"]),
        database_kind=kind,
        migrations=migrations,
        files=files,
        encryption_key_fingerprint=fingerprint,
        encryption_key_source=str(key["source"]),
        counts=counts,
    )


def check_manifest(
    manifest: Manifest, *, known_migrations: Iterable[str], database_kind: str, version: str
) -> None:
    """Refuse a backup this Helios cannot restore into the configured database."""
    unknown = [name for name in manifest.migrations if name not in set(known_migrations)]
    if unknown:
        raise BackupFormatError(
            f"the backup's schema is newer than this Helios knows (migrations not known here: "
            f"{', '.join(unknown[:3])}{' …' if len(unknown) > 3 else ''}): it was made by Helios "
            f"{manifest.helios_version}, this is {version}; install that version or a newer "
            "one, then restore again"
        )
    if manifest.database_kind != database_kind:
        raise BackupFormatError(
            f"the backup holds a {manifest.database_kind} database and this Helios is set up for "
            f"{database_kind}: set HELIOS_DATABASE_URL to a {manifest.database_kind} database "
            "(empty for SQLite under HELIOS_DATA_DIR) and restore again"
        )
