"""Where Helios's connection to Nomad comes from: the environment, else provisioning.

NOMAD_ADDR (with NOMAD_TOKEN, NOMAD_CACERT...) in the environment always wins. Without it, the
credentials the last provisioning run handed over (:mod:`panel.actions.cluster`) are used (and
the registry it handed over when HELIOS_REGISTRY is not set, :func:`with_stored_registry`): every
process reads them from the database (cached for ``CACHE_SECONDS``), so a newly provisioned
cluster is used without a restart. The certificates and the key are written for requests into
``<data dir>/nomad-tls`` (0700), files 0600 named after their content, so a process never reads
a file another one is rewriting.

:func:`install` hands :func:`stored_connection` to :mod:`panel.drivers.nomad`; every process
calls it when it starts (``panel.run.runtime.start_process``, ``panel.web.create_app``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import peewee as pw

from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.db import database
from panel.drivers import nomad as nomad_driver
from panel.drivers.nomad import NomadConnection
from panel.models import ClusterCredentials

__all__ = [
    "CACHE_SECONDS",
    "ConnectionSource",
    "connection_source",
    "forget_cached",
    "install",
    "mask",
    "stored_connection",
    "with_stored_registry",
]

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5.0  # how long a process reuses what it read from the database
TLS_DIR = "nomad-tls"  # under the data dir

_lock = threading.Lock()
_cache: dict[str, tuple[float, NomadConnection | None]] = {}


def forget_cached() -> None:
    """Read the stored credentials again at the next call (tests, and after storing them)."""
    with _lock:
        _cache.clear()


def _private_file(folder: Path, suffix: str, content: str) -> str:
    """A 0600 file in ``folder`` holding ``content``, named after it; its path."""
    digest = hashlib.sha256(content.encode()).hexdigest()[:32]
    path = folder / f"{digest}{suffix}"
    if not path.exists():
        temporary = folder / f".{digest}{suffix}.{os.getpid()}.{threading.get_ident()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(temporary, flags, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.replace(temporary, path)
    return str(path)


def _tls_dir(settings: Settings) -> Path:
    folder = settings.data_dir / TLS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        folder.chmod(0o700)
    return folder


def _latest_row() -> ClusterCredentials | None:
    """The stored credentials, or None (also when the database cannot be read, logged); a
    connection opened here is closed again, one in use is kept."""

    def latest() -> ClusterCredentials | None:
        return ClusterCredentials.select().order_by(ClusterCredentials.id.desc()).first()

    try:
        if database.is_closed():
            with database.connection_context():
                return latest()
        return latest()
    except (pw.PeeweeException, AttributeError) as exc:  # AttributeError: no database opened
        logger.warning("cluster credentials not read: %s", exc)
        return None


def _read(settings: Settings) -> NomadConnection | None:
    row = _latest_row()
    if row is None:
        return None
    try:
        cipher = SecretCipher.from_settings(settings)
        token = cipher.decrypt(row.token)
        key = cipher.decrypt(row.client_key) if row.client_key else ""
        management = cipher.decrypt(row.management_token) if row.management_token else ""
    except SecretKeyError as exc:
        logger.warning("cluster credentials not usable: %s", exc)
        return None
    folder = _tls_dir(settings) if row.ca_cert or row.client_cert else None
    return NomadConnection(
        address=row.address,
        token=token,
        namespace=settings.nomad_namespace,
        region=settings.nomad_region or row.region,
        ca_cert=_private_file(folder, "-ca.pem", row.ca_cert) if folder and row.ca_cert else "",
        client_cert=(_private_file(folder, "-cert.pem", row.client_cert) if folder and key else ""),
        client_key=_private_file(folder, "-key.pem", key) if folder and key else "",
        management_token=management,
    )


def stored_connection(settings: Settings) -> NomadConnection | None:
    """The connection provisioning handed over, or None when there is none (cached briefly)."""
    place = str(settings.data_dir)
    now = time.monotonic()
    with _lock:
        cached = _cache.get(place)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    connection = _read(settings)
    with _lock:
        _cache[place] = (now, connection)
    return connection


def with_stored_registry(settings: Settings) -> Settings:
    """``settings`` with the registry provisioning handed over (address, account, the cluster's
    CA as HELIOS_REGISTRY_CA_FILE) when HELIOS_REGISTRY is not set; else unchanged: the
    environment always wins."""
    if settings.registry:
        return settings
    row = _latest_row()
    if row is None or not row.registry:
        return settings
    try:
        cipher = SecretCipher.from_settings(settings)
        password = cipher.decrypt(row.registry_password) if row.registry_password else ""
    except SecretKeyError as exc:
        logger.warning("the registry's account is not usable: %s", exc)
        return settings
    ca_file = _private_file(_tls_dir(settings), "-ca.pem", row.ca_cert) if row.ca_cert else ""
    return settings.replace(
        registry=row.registry,
        registry_username=row.registry_username,
        registry_password=password,
        registry_ca_file=ca_file or settings.registry_ca_file,
        registry_insecure=False,
    )


def install() -> None:
    """Let NomadConnection.from_settings fall back on the stored credentials."""
    nomad_driver.use_stored_connection(stored_connection)


def mask(secret: str) -> str:
    """A secret as people may see it: its last four characters only."""
    return f"****{secret[-4:]}" if len(secret) > 8 else "****"


@dataclass(frozen=True)
class ConnectionSource:
    """Where the connection comes from, for pages and ``helios config`` (no secret in it)."""

    origin: str  # "environment", "provisioning" or "none"
    address: str = ""
    token: str = ""  # masked
    run_id: int | None = None
    received_at: datetime | None = None
    client_certificate: bool = False

    def describe(self) -> str:
        """One line saying where the connection comes from."""
        if self.origin == "environment":
            return f"from the environment (NOMAD_ADDR={self.address}, token {self.token or 'none'})"
        if self.origin == "provisioning":
            run = f"run #{self.run_id}" if self.run_id else "a run since removed"
            when = f"{self.received_at:%Y-%m-%d %H:%M:%S} UTC" if self.received_at else "?"
            tls = ", client certificate" if self.client_certificate else ""
            return (
                f"from provisioning ({run} at {when}): {self.address}, token {self.token}{tls}; "
                "NOMAD_ADDR in the environment overrides it"
            )
        return "none: set NOMAD_ADDR, or provision the cluster (Hosts → Apply)"


def connection_source(settings: Settings) -> ConnectionSource:
    """Where Helios's connection to Nomad comes from now."""
    if settings.nomad_addr:
        return ConnectionSource(
            "environment",
            settings.nomad_addr,
            mask(settings.nomad_token) if settings.nomad_token else "",
        )
    row = _latest_row()
    if row is None:
        return ConnectionSource("none")
    try:
        shown = mask(SecretCipher.from_settings(settings).decrypt(row.token))
    except SecretKeyError:
        shown = "(cannot be decrypted with this installation's key)"
    return ConnectionSource(
        "provisioning",
        row.address,
        shown,
        run_id=row.run_id,
        received_at=row.received_at,
        client_certificate=bool(row.client_cert),
    )
