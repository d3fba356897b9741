"""Actions on hosts and provisioning: permission → validate → write → event → enqueue.

Only operators (``User.is_operator``) may add hosts or provision them; ``actor=None`` is an
operator at the server's shell. A host's SSH private key is encrypted at once and never shown
or returned again.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence

import redis

from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.events import emit
from panel.models import Host, ProvisionRun, User
from panel.queue import get_queue
from panel.render.ansible import HOST_GROUPS

__all__ = [
    "HostError",
    "add_host",
    "enqueue_provision",
    "request_provision",
    "validate_address",
    "validate_groups",
    "validate_host_name",
    "validate_private_key",
    "validate_ssh_user",
]

logger = logging.getLogger(__name__)

PROVISION_QUEUE = "default"
PROVISION_JOBS = {
    "plan": "panel.reconcile.provision.plan_hosts",
    "apply": "panel.reconcile.provision.apply_hosts",
}
KEY_MAX_BYTES = 16 * 1024  # an RSA-8192 private key in OpenSSH format is ~6.5 KB
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
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
    """An IPv4/IPv6 address or a DNS name where SSH reaches the host."""
    if isinstance(value, str) and value:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if len(value) <= 253 and _DNS_NAME_RE.fullmatch(value):
                return value.lower()
    raise HostError("invalid", "give an IP address or a DNS name, e.g. 10.0.0.5", "address")


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
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> Host:
    """Record a host to provision; its SSH key is stored encrypted (write-only)."""
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
    return host


def enqueue_provision(redis_conn: redis.Redis, run: ProvisionRun, settings: Settings) -> bool:
    """Queue the job of a run; False (logged) when Redis cannot take it now."""
    try:
        get_queue(redis_conn, PROVISION_QUEUE).enqueue(
            PROVISION_JOBS[run.kind],
            run.id,
            job_id=f"provision-{run.id}",
            job_timeout=settings.provision_timeout + 60,
            description=f"{run.kind} hosts (run #{run.id})",
        )
    except redis.RedisError as exc:
        logger.warning("provision run #%d recorded but not queued: %s", run.id, exc)
        return False
    return True


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
