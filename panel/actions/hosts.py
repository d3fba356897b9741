"""Actions on hosts and provisioning: permission → validate → write → event → enqueue.

They are also the only writers of a provisioning run once it is queued: the job in
:mod:`panel.reconcile.provision` claims it, moves its heartbeat, stores its Ansible events and
records how it ended (with the hosts' states) through the functions at the end of this module.

Only operators (``User.is_operator``) may add hosts or provision them; ``actor=None`` is an
operator at the server's shell. A host's SSH private key is encrypted at once and never shown
or returned again.

A host's SSH host keys are pinned, never trusted on first use: the operator pastes them when
adding the host (pinned at once), or Helios scans them (``ssh-keyscan``) and shows their
fingerprints until the operator confirms them. Provisioning refuses a run that would reach a
host whose keys are not pinned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from panel.actions.common import ActionError, FieldError, actor_name, authorize_operator
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.ansible import AnsibleError, RunResult
from panel.drivers.nomad import NomadDriver, NomadError, nomad_configured
from panel.drivers.ssh import ScanError
from panel.drivers.ssh import scan_host_keys as keyscan
from panel.events import emit
from panel.host_keys import HostKey, HostKeyError, parse_host_keys, render_known_hosts
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus, User, utcnow
from panel.queue import get_queue
from panel.render.ansible import hosts_reached
from panel.schema.base import Problems, check
from panel.schema.hosts import HostIn, validate_host_keys
from panel.validation import ValidationError

__all__ = [
    "DRAIN_DEADLINE",
    "PROVISION_JOBS",
    "PROVISION_QUEUE",
    "KeyScan",
    "NodeLoad",
    "add_host",
    "beat_provision_run",
    "claim_provision_run",
    "drain_job_id",
    "end_provision_run",
    "enqueue_drain",
    "enqueue_provision",
    "fail_host_drain",
    "finish_host_drain",
    "finish_provision_run",
    "host_keys",
    "host_load",
    "load_provision_vars",
    "pin_host_keys",
    "reached_hosts",
    "record_provision_event",
    "removal_refusal",
    "remove_host",
    "request_provision",
    "scan_host_keys",
    "unpinned_message",
]

logger = logging.getLogger(__name__)

PROVISION_QUEUE = "default"
PROVISION_JOBS = {
    "plan": "panel.reconcile.provision.plan_hosts",
    "apply": "panel.reconcile.provision.apply_hosts",
}


# ---------------------------------------------------------------------------------------------
# Checks (the rules are HostIn's, in panel.schema.hosts)
# ---------------------------------------------------------------------------------------------


def _check_host(values: dict[str, Any]) -> HostIn:
    """``values`` checked by :class:`HostIn`; an ``invalid`` ActionError listing every field
    at fault."""
    try:
        return check(HostIn, values)
    except Problems as exc:
        raise ActionError.invalid([FieldError(p.field, p.message) for p in exc.problems]) from None


def _checked_keys(text: object) -> list[HostKey]:
    """Pasted or scanned SSH host keys; an ``invalid`` ActionError saying what to paste."""
    try:
        return validate_host_keys(text)
    except ValidationError as exc:
        raise ActionError("invalid", exc.message, exc.field) from None


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
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
    **values: Any,
) -> Host:
    """Record a host to provision; its SSH key is stored encrypted (write-only).

    ``values`` are the fields of :class:`~panel.schema.hosts.HostIn` (name, address, groups,
    ssh_user, ssh_port, ssh_private_key, ssh_host_keys; defaults for the ones left out), every
    one at fault reported at once ('' or None: no private key, no host keys). Host keys given
    here are the operator's own: they are pinned at once. Without them, call
    :func:`scan_host_keys` and have the operator confirm what it found.
    """
    authorize_operator(actor)
    given = _check_host(values)
    fields: dict[str, Any] = given.model_dump(exclude={"ssh_private_key", "ssh_host_keys"})
    if given.ssh_private_key:
        fields["ssh_private_key"] = cipher.encrypt(given.ssh_private_key)
    keys = parse_host_keys(given.ssh_host_keys) if given.ssh_host_keys else []
    with database.atomic():
        if Host.select().where(Host.name == fields["name"]).exists():
            raise ActionError("conflict", f"a host named {given.name!r} exists already", "name")
        host = Host.create(**fields)
        emit(
            "v1.host.added",
            {"host": host.name, "host_id": host.id, "groups": fields["groups"]},
            actor=actor_name(actor),
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
    authorize_operator(actor)
    try:
        keys = keyscan(host.address, host.ssh_port)
    except ScanError as exc:
        raise ActionError("unreachable", str(exc), "ssh_host_keys") from None
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
            actor=actor_name(actor),
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
    authorize_operator(actor)
    keys = _checked_keys(ssh_host_keys)
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
    emit("v1.host.keys_pinned", data, actor=actor_name(actor), redis_conn=redis_conn)


# ---------------------------------------------------------------------------------------------
# Removing a host: at once when its Nomad node runs nothing, else drained first
# ---------------------------------------------------------------------------------------------

DRAIN_DEADLINE = 600  # seconds Nomad gives a drain before it stops what is left on the node
DRAIN_QUEUE = "default"
DRAIN_JOB = "panel.reconcile.host_drain.await_drain"
DRAIN_JOB_TIMEOUT = DRAIN_DEADLINE + 180  # seconds: the wait, plus room to record its end
_LIVE = frozenset({"pending", "running"})  # client statuses of an allocation still on its node


@dataclass(frozen=True)
class NodeLoad:
    """What runs on a host's Nomad node (system jobs aside): nothing when it has no node."""

    node_id: str | None
    allocations: int
    apps: tuple[str, ...]

    def describe(self) -> str:
        """``2 allocations of shop, web``."""
        noun = "allocation" if self.allocations == 1 else "allocations"
        return f"{self.allocations} {noun} of {', '.join(self.apps)}"


def host_load(host: Host, settings: Settings) -> NodeLoad:
    """Read from Nomad what runs on the client node named after ``host`` (its hostname);
    an ``unreachable`` ActionError when Nomad cannot say."""
    if not nomad_configured(settings):
        return NodeLoad(None, 0, ())
    try:
        driver = NomadDriver.from_settings(settings)
        node = driver.node_by_name(host.name)
        allocs = driver.node_allocations(node["ID"]) if node is not None else []
    except NomadError as exc:
        raise ActionError("unreachable", f"cannot tell what runs on {host.name}: {exc}") from None
    running = [
        a for a in allocs
        if a.get("DesiredStatus") == "run" and a.get("ClientStatus") in _LIVE
        and a.get("JobType") != "system"
    ]  # fmt: skip
    apps = tuple(sorted({str(a.get("JobID", "")) for a in running}))
    return NodeLoad(node["ID"] if node is not None else None, len(running), apps)


def removal_refusal(host: Host, load: NodeLoad) -> str:
    """Why ``host`` is not removed at once, and how to drain it first."""
    return (
        f"{host.name} runs {load.describe()} on its Nomad node: drain it first: "
        f"`helios hosts remove {host.name} --drain`, or the Drain and remove button"
    )


def remove_host(
    *,
    actor: User | None,
    host: Host,
    settings: Settings,
    redis_conn: redis.Redis | None = None,
    drain: bool = False,
) -> str:
    """Remove ``host`` (its row and keys): ``removed`` at once when its Nomad node runs no
    allocations (or it has none); else, with ``drain``, start Nomad's drain of the node and
    queue the job that removes the host once it completes (``draining``); without, a
    ``conflict`` saying what runs there and how to drain it."""
    authorize_operator(actor)
    if host.state == "draining":
        raise ActionError("conflict", f"{host.name} is draining already: it goes once that ends")
    load = host_load(host, settings)
    if not load.allocations:
        with database.atomic():
            _delete_host(host, drained=False, actor=actor_name(actor), redis_conn=redis_conn)
        return "removed"
    if not drain:
        raise ActionError("conflict", removal_refusal(host, load))
    meta = {"helios.reason": f"remove host {host.name}", "helios.requested_by": actor_name(actor)}
    try:
        NomadDriver.from_settings(settings).drain_node(
            str(load.node_id), deadline=DRAIN_DEADLINE, meta=meta
        )
    except NomadError as exc:
        raise ActionError("unreachable", f"{host.name} not drained: {exc}") from None
    with database.atomic():
        host.state_before_drain, host.state, host.note = host.state, "draining", ""
        host.save()
        emit(
            "v1.host.draining",
            {"host": host.name, "host_id": host.id, "node_id": load.node_id,
             "allocations": load.allocations, "apps": list(load.apps),
             "deadline": DRAIN_DEADLINE},
            actor=actor_name(actor),
            redis_conn=redis_conn,
        )  # fmt: skip
    if redis_conn is not None:
        enqueue_drain(redis_conn, host.id)
    return "draining"


def _delete_host(host: Host, *, drained: bool, actor: str, redis_conn) -> None:
    host.delete_instance()
    emit(
        "v1.host.removed",
        {"host": host.name, "host_id": host.id, "address": host.address, "drained": drained},
        actor=actor,
        redis_conn=redis_conn,
    )


def drain_job_id(host_id: int) -> str:
    """The RQ id of the job removing a draining host (one per host)."""
    return f"host-drain-{host_id}"


def enqueue_drain(redis_conn: redis.Redis, host_id: int) -> bool:
    """Queue the job that removes a draining host once its drain completes (one per host);
    False (logged) when Redis cannot take it now."""
    try:
        get_queue(redis_conn, DRAIN_QUEUE).enqueue(
            DRAIN_JOB,
            host_id,
            job_id=drain_job_id(host_id),
            job_timeout=DRAIN_JOB_TIMEOUT,
            description=f"remove host #{host_id} once drained",
        )
    except redis.RedisError as exc:
        logger.warning("host #%d draining but its removal not queued: %s", host_id, exc)
        return False
    return True


def finish_host_drain(host_id: int, redis_conn: redis.Redis | None) -> bool:
    """The drain of a host being removed completed: remove it; False when it was not
    draining any more."""
    with database.atomic():
        host = Host.get_or_none((Host.id == host_id) & (Host.state == "draining"))
        if host is None:
            return False
        _delete_host(host, drained=True, actor="system", redis_conn=redis_conn)
    return True


def fail_host_drain(host_id: int, reason: str, redis_conn: redis.Redis | None) -> bool:
    """The drain failed or timed out: the host stays, back in its former state, with
    ``reason`` on its page; False when it was not draining any more."""
    with database.atomic():
        host = Host.get_or_none((Host.id == host_id) & (Host.state == "draining"))
        if host is None:
            return False
        host.state = host.state_before_drain or "ready"
        host.state_before_drain, host.note = None, reason[:2000]
        host.save()
        emit(
            "v1.host.drain_failed",
            {"host": host.name, "host_id": host.id, "reason": host.note, "state": host.state},
            redis_conn=redis_conn,
        )
    return True


# ---------------------------------------------------------------------------------------------
# Provisioning: what a run reaches, and queueing its job
# ---------------------------------------------------------------------------------------------


def load_provision_vars(settings: Settings) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(variables for every host, variables per host name) from HELIOS_PROVISION_VARS."""
    if not settings.provision_vars:
        return {}, {}
    path = Path(settings.provision_vars)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AnsibleError(
            f"cannot read HELIOS_PROVISION_VARS={path}: {exc} — fix the file or unset it"
        ) from exc
    if not isinstance(document, dict) or set(document) - {"vars", "hosts"}:
        raise AnsibleError(f"{path}: use the keys `vars:` and `hosts:` only")
    return dict(document.get("vars") or {}), dict(document.get("hosts") or {})


def reached_hosts(
    hosts: Sequence[Host], chosen_ids: Sequence[int], group_vars: dict[str, Any]
) -> list[Host]:
    """The hosts a run over ``chosen_ids`` connects to: those and the ones it delegates to."""
    chosen = {host.name for host in hosts if host.id in chosen_ids}
    names = set(hosts_reached({host.name: host.groups for host in hosts}, chosen, group_vars))
    return [host for host in hosts if host.name in names]


def unpinned_message(hosts: Sequence[Host]) -> str | None:
    """What to do when some of ``hosts`` have no pinned SSH host keys; None when all have."""
    names = [host.name for host in hosts if not host.ssh_host_keys_pinned_at]
    if not names:
        return None
    if len(names) == 1:
        return f"confirm the SSH host key of {names[0]} first: Hosts → {names[0]}"
    where = ", ".join(f"Hosts → {name}" for name in names)
    return f"confirm the SSH host keys of {', '.join(names)} first: {where}"


def enqueue_provision(redis_conn: redis.Redis, run: ProvisionRun, settings: Settings) -> bool:
    """Queue the job of a run (a plan, an apply or a maintenance); False (logged) when Redis
    cannot take it now."""
    timeout = settings.provision_timeout + 60
    job = PROVISION_JOBS.get(run.kind)
    if job is None:  # a maintenance (panel.actions.maintenance)
        from panel.actions.maintenance import MAINTAIN_JOB, maintenance_job_timeout

        job, timeout = MAINTAIN_JOB, maintenance_job_timeout(run, settings)
    try:
        get_queue(redis_conn, PROVISION_QUEUE).enqueue(
            job,
            run.id,
            job_id=f"provision-{run.id}",
            job_timeout=timeout,
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
    authorize_operator(actor)
    if kind not in PROVISION_JOBS:
        raise ActionError("invalid", "kind is plan or apply", "kind")
    hosts = Host.select(Host.id).order_by(Host.id)
    if host_ids is not None:
        hosts = hosts.where(Host.id.in_(list(host_ids)))
    ids = [host.id for host in hosts]
    if not ids:
        raise ActionError("invalid", "add a host first: there is nothing to provision", "hosts")
    try:
        common, _ = load_provision_vars(settings)
    except AnsibleError as exc:
        raise ActionError("invalid", str(exc), "hosts") from None
    problem = unpinned_message(reached_hosts(list(Host.select().order_by(Host.id)), ids, common))
    if problem:
        raise ActionError("unpinned", problem, "hosts")
    with database.atomic():
        run = ProvisionRun.create(kind=kind, host_ids=ids, requested_by=actor)
        emit(
            "v1.provision.requested",
            {"run_id": run.id, "kind": kind, "host_ids": ids},
            actor=actor_name(actor),
            redis_conn=redis_conn,
        )
    enqueue_provision(redis_conn, run, settings)
    return run


# ---------------------------------------------------------------------------------------------
# A provisioning run in flight (called by its job in panel.reconcile.provision)
# ---------------------------------------------------------------------------------------------


def claim_provision_run(run_id: int, redis_conn: redis.Redis | None = None) -> ProvisionRun | None:
    """queued → running (v1.provision.started); None when the run was not queued any more."""
    now = utcnow()
    with database.atomic():
        claimed = (
            ProvisionRun.update(
                status=ProvisionStatus.RUNNING.value, started_at=now, heartbeat_at=now
            )
            .where(
                (ProvisionRun.id == run_id) & (ProvisionRun.status == ProvisionStatus.QUEUED.value)
            )
            .execute()
        )
        if not claimed:
            return None
        run = ProvisionRun.get_by_id(run_id)
        emit(
            "v1.provision.started",
            {"run_id": run.id, "kind": run.kind, "host_ids": run.host_ids},
            redis_conn=redis_conn,
        )
    return run


def beat_provision_run(run_id: int) -> bool:
    """Move the heartbeat of a running run; False once it is not running any more."""
    return bool(
        ProvisionRun.update(heartbeat_at=utcnow())
        .where((ProvisionRun.id == run_id) & (ProvisionRun.status == ProvisionStatus.RUNNING.value))
        .execute()
    )


def record_provision_event(run: ProvisionRun | int, seq: int, data: dict[str, Any]) -> None:
    """Store one (scrubbed) Ansible event of a run under its sequence number."""
    ProvisionEvent.create(run=run, seq=seq, data=data)


CHANNEL_PREFIX = "helios:provision:"
END_MARK = {"kind": "end"}  # published last on a run's channel: live readers know it is over


def channel_for(run_id: int) -> str:
    """The Redis channel a run's events are published on."""
    return f"{CHANNEL_PREFIX}{run_id}"


def _publish_end(run_id: int, redis_conn: redis.Redis) -> None:
    """Tell the run's live readers it is over (once the end is committed)."""

    def send() -> None:
        try:
            redis_conn.publish(channel_for(run_id), json.dumps(END_MARK))
        except redis.RedisError as exc:  # readers find the end when their stream reconnects
            logger.warning("run #%d: end recorded but not published: %s", run_id, exc)

    database.after_commit(send)


def end_provision_run(
    run: ProvisionRun,
    status: str,
    message: str,
    redis_conn: redis.Redis | None,
    result: RunResult | None = None,
    was: ProvisionStatus = ProvisionStatus.RUNNING,
) -> bool:
    """Record the end of a run still in status ``was`` (v1.provision.finished); False if
    something else ended it first."""
    recap = result.recap if result is not None else {}
    unchanged = (ProvisionRun.id == run.id) & (ProvisionRun.status == was.value)
    with database.atomic():  # the run's end and its event are one change
        ended = (
            ProvisionRun.update(status=status, recap=recap, message=message, finished_at=utcnow())
            .where(unchanged)
            .execute()
        )
        if not ended:
            logger.warning("run #%d had already ended; outcome %s not recorded", run.id, status)
            return False
        failed = sorted(h for h, c in recap.items() if c["failed"] or c["unreachable"])
        emit(
            "v1.provision.finished",
            {"run_id": run.id, "kind": run.kind, "status": status,
             "changed": result.changed if result is not None else 0, "failed_hosts": failed},
            redis_conn=redis_conn,
        )  # fmt: skip
        if redis_conn is not None:
            _publish_end(run.id, redis_conn)
    return True


def finish_provision_run(
    run: ProvisionRun, result: RunResult | None, message: str, redis_conn: redis.Redis | None
) -> str:
    """Record how a running run ended and the state of each host it reached; its status."""
    ok = result is not None and result.ok
    status = (ProvisionStatus.SUCCEEDED if ok else ProvisionStatus.FAILED).value
    if not end_provision_run(run, status, message, redis_conn, result):
        return ProvisionRun.get_by_id(run.id).status
    recap = result.recap if result is not None else {}
    failed = {h for h, c in recap.items() if c["failed"] or c["unreachable"]}
    for host in Host.select().where(Host.id.in_(run.host_ids)):
        counts = recap.get(host.name)
        if counts is None:
            continue
        if host.name in failed:
            host.state = "failed"
        elif run.kind == "apply":
            host.state = "ready"
        else:
            host.state = "drifted" if counts["changed"] else "ready"
        host.last_run_at = utcnow()
        host.save()
    return status
