"""Actions on hosts and provisioning: permission → validate → write → event → enqueue.

Only operators (``User.is_operator``) may add hosts or provision them; ``actor=None`` is an
operator at the server's shell. A host's SSH private key is encrypted at once and never shown
or returned again.

A host's SSH host keys are pinned, never trusted on first use: the operator pastes them when
adding the host (pinned at once), or Helios scans them (``ssh-keyscan``) and shows their
fingerprints until the operator confirms them. Provisioning refuses a run that would reach a
host whose keys are not pinned.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.ansible import AnsibleError
from panel.drivers.ssh import ScanError
from panel.drivers.ssh import scan_host_keys as keyscan
from panel.events import emit
from panel.host_keys import HostKey, HostKeyError, parse_host_keys, render_known_hosts
from panel.models import Host, ProvisionRun, User, utcnow
from panel.reconcile.provision import (
    PROVISION_JOBS,
    enqueue_provision,
    load_provision_vars,
    reached_hosts,
    unpinned_message,
)
from panel.render.ansible import HOST_GROUPS, is_address

__all__ = [
    "HostError",
    "KeyScan",
    "add_host",
    "enqueue_provision",
    "host_keys",
    "pin_host_keys",
    "request_provision",
    "scan_host_keys",
    "validate_address",
    "validate_groups",
    "validate_host_keys",
    "validate_host_name",
    "validate_private_key",
    "validate_ssh_user",
]

logger = logging.getLogger(__name__)

KEY_MAX_BYTES = 16 * 1024  # an RSA-8192 private key in OpenSSH format is ~6.5 KB
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEY_RE = re.compile(
    r"-----BEGIN (?:OPENSSH|RSA|EC|DSA)? ?PRIVATE KEY-----\r?\n"
    r"[A-Za-z0-9+/=\r\n:,\- ]+"
    r"-----END (?:OPENSSH|RSA|EC|DSA)? ?PRIVATE KEY-----\r?\n?"
)


class HostError(ValueError):
    """A host or provisioning request that cannot be carried out; ``code`` is stable."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def _authorize(actor: User | None) -> None:
    # Non-operators are told nothing exists, like any page they may not see.
    if actor is not None and not actor.is_operator:
        raise HostError("not_found", "no such page")


def _actor_name(actor: User | None) -> str:
    return actor.email if actor is not None else "operator"


# ---------------------------------------------------------------------------------------------
# Validators (pure)
# ---------------------------------------------------------------------------------------------


def validate_host_name(value: object) -> str:
    """A lowercase DNS name (also the Nomad and Consul node name)."""
    if not isinstance(value, str) or len(value) > 253 or not _HOST_NAME_RE.fullmatch(value):
        raise HostError(
            "invalid", "use a lowercase DNS name for the host, e.g. node-1 or node-1.dc1", "name"
        )
    return value


def validate_address(value: object) -> str:
    """An IPv4/IPv6 address (no scope id) or a DNS name where SSH reaches the host."""
    if is_address(value):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return str(value).lower()
    raise HostError(
        "invalid", "give an IP address (without a %scope) or a DNS name, e.g. 10.0.0.5", "address"
    )


def validate_ssh_user(value: object) -> str:
    """A Unix account name."""
    if not isinstance(value, str) or not _SSH_USER_RE.fullmatch(value):
        raise HostError("invalid", "use a Unix user name such as root or debian", "ssh_user")
    return value


def validate_ssh_port(value: object) -> int:
    """A TCP port."""
    try:
        port = int(str(value))
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise HostError("invalid", "the SSH port is a number from 1 to 65535", "ssh_port")
    return port


def validate_groups(values: Iterable[object]) -> list[str]:
    """At least one of nomad_servers, nomad_clients, edge; in that order, no repeats."""
    chosen = set(values)
    if not chosen or not chosen <= set(HOST_GROUPS):
        raise HostError("invalid", f"choose at least one of {', '.join(HOST_GROUPS)}", "groups")
    return [group for group in HOST_GROUPS if group in chosen]


def validate_private_key(value: object) -> str:
    """One PEM or OpenSSH private key without a passphrase prompt in its way."""
    if not isinstance(value, str) or len(value.encode()) > KEY_MAX_BYTES:
        raise HostError("invalid", "paste one SSH private key (at most 16 KB)", "ssh_private_key")
    key = value.strip().replace("\r\n", "\n") + "\n"
    if not _KEY_RE.fullmatch(key) or "ENCRYPTED" in key:
        raise HostError(
            "invalid",
            "paste an unencrypted SSH private key, from -----BEGIN … PRIVATE KEY----- to the "
            "END line",
            "ssh_private_key",
        )
    return key


def validate_host_keys(value: object) -> list[HostKey]:
    """Public SSH host keys: known_hosts lines, ssh-keyscan output or ``*.pub`` files."""
    if not isinstance(value, str):
        raise HostError("invalid", "paste the host's public SSH host keys", "ssh_host_keys")
    try:
        return parse_host_keys(value)
    except HostKeyError as exc:
        raise HostError("invalid", str(exc), "ssh_host_keys") from None


def host_keys(host: Host) -> list[HostKey]:
    """The host keys stored for ``host`` (pinned or not); [] when there are none."""
    try:
        return parse_host_keys(host.ssh_host_keys) if host.ssh_host_keys else []
    except HostKeyError:
        logger.warning("host %s: its stored SSH host keys cannot be read", host.name)
        return []


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------


def add_host(
    *,
    actor: User | None,
    name: str,
    address: str,
    groups: Sequence[str],
    ssh_user: str = "root",
    ssh_port: int | str = 22,
    ssh_private_key: str | None = None,
    ssh_host_keys: str | None = None,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> Host:
    """Record a host to provision; its SSH key is stored encrypted (write-only).

    Host keys given here are the operator's own: they are pinned at once. Without them, call
    :func:`scan_host_keys` and have the operator confirm what it found.
    """
    _authorize(actor)
    fields = {
        "name": validate_host_name(name),
        "address": validate_address(address),
        "ssh_user": validate_ssh_user(ssh_user),
        "ssh_port": validate_ssh_port(ssh_port),
        "groups": validate_groups(groups),
    }
    if ssh_private_key:
        fields["ssh_private_key"] = cipher.encrypt(validate_private_key(ssh_private_key))
    keys = validate_host_keys(ssh_host_keys) if ssh_host_keys else []
    with database.atomic():
        if Host.select().where(Host.name == fields["name"]).exists():
            raise HostError("conflict", f"a host named {name!r} exists already", "name")
        host = Host.create(**fields)
        emit(
            "v1.host.added",
            {"host": host.name, "host_id": host.id, "groups": fields["groups"]},
            actor=_actor_name(actor),
            redis_conn=redis_conn,
        )
        if keys:
            _pin(host, keys, "operator", actor, redis_conn)
    return host


@dataclass(frozen=True)
class KeyScan:
    """What a scan found: the keys now offered and the ones pinned before (if any)."""

    keys: list[HostKey]
    pinned: list[HostKey]

    @property
    def changed(self) -> bool:
        """True when keys were pinned and the host now offers others."""
        return bool(self.pinned) and self.keys != self.pinned


def scan_host_keys(
    *, actor: User | None, host: Host, redis_conn: redis.Redis | None = None
) -> KeyScan:
    """Read the host's SSH host keys over the network (``ssh-keyscan``).

    Keys of a host with none pinned are stored, waiting for the operator to pin them. Pinned
    keys are never replaced by a scan: the caller shows both and the operator decides.
    """
    _authorize(actor)
    try:
        keys = keyscan(host.address, host.ssh_port)
    except ScanError as exc:
        raise HostError("unreachable", str(exc), "ssh_host_keys") from None
    pinned = host_keys(host) if host.ssh_host_keys_pinned_at else []
    scan = KeyScan(keys=keys, pinned=pinned)
    with database.atomic():
        if not pinned:
            host.ssh_host_keys = render_known_hosts(keys, host.address, host.ssh_port)
            host.ssh_host_keys_pinned_at = None
            host.save()
        emit(
            "v1.host.keys_scanned",
            {"host": host.name, "host_id": host.id, "fingerprints": [k.label for k in keys],
             "pinned": bool(pinned), "changed": scan.changed},
            actor=_actor_name(actor),
            redis_conn=redis_conn,
        )  # fmt: skip
    return scan


def pin_host_keys(
    *,
    actor: User | None,
    host: Host,
    ssh_host_keys: str,
    scanned: bool,
    redis_conn: redis.Redis | None = None,
) -> list[HostKey]:
    """Trust exactly these keys for ``host`` from now on.

    ``scanned``: they are what a scan found and the operator confirmed (else the operator
    gave them).
    """
    _authorize(actor)
    keys = validate_host_keys(ssh_host_keys)
    with database.atomic():
        _pin(host, keys, "scan" if scanned else "operator", actor, redis_conn)
    return keys


def _pin(host: Host, keys: list[HostKey], source: str, actor: User | None, redis_conn) -> None:
    before = host_keys(host) if host.ssh_host_keys_pinned_at else []
    host.ssh_host_keys = render_known_hosts(keys, host.address, host.ssh_port)
    host.ssh_host_keys_pinned_at = utcnow()
    host.save()
    data = {"host": host.name, "host_id": host.id, "fingerprints": [k.label for k in keys],
            "source": source}  # fmt: skip
    if before and before != keys:
        data["replaced"] = [key.label for key in before]
    emit("v1.host.keys_pinned", data, actor=_actor_name(actor), redis_conn=redis_conn)


def request_provision(
    *,
    actor: User | None,
    kind: str,
    settings: Settings,
    redis_conn: redis.Redis,
    host_ids: Sequence[int] | None = None,
) -> ProvisionRun:
    """Record a plan (check mode with diff) or an apply over some or all hosts, and queue it."""
    _authorize(actor)
    if kind not in PROVISION_JOBS:
        raise HostError("invalid", "kind is plan or apply", "kind")
    hosts = Host.select(Host.id).order_by(Host.id)
    if host_ids is not None:
        hosts = hosts.where(Host.id.in_(list(host_ids)))
    ids = [host.id for host in hosts]
    if not ids:
        raise HostError("invalid", "add a host first: there is nothing to provision", "hosts")
    try:
        common, _ = load_provision_vars(settings)
    except AnsibleError as exc:
        raise HostError("invalid", str(exc), "hosts") from None
    problem = unpinned_message(reached_hosts(list(Host.select().order_by(Host.id)), ids, common))
    if problem:
        raise HostError("unpinned", problem, "hosts")
    with database.atomic():
        run = ProvisionRun.create(kind=kind, host_ids=ids, requested_by=actor)
        emit(
            "v1.provision.requested",
            {"run_id": run.id, "kind": kind, "host_ids": ids},
            actor=_actor_name(actor),
            redis_conn=redis_conn,
        )
    enqueue_provision(redis_conn, run, settings)
    return run
