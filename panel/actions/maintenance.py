"""Fleet maintenance: hosts taken out of Nomad one at a time, updated, and put back.

A maintenance is a provisioning run of kind ``maintain`` (its events, live stream, page and
crash handling are a run's). Its job, :mod:`panel.reconcile.maintenance`, takes the hosts in
the order given and, for each: marks its Nomad node ineligible and drains it (system jobs stay;
each group's migrate block keeps its healthy count), follows the drain until it completes, runs
the playbooks on that host alone with ``base_upgrade`` (package upgrades, a reboot only when
one is required), waits until its Nomad node is ready, and makes it eligible again. The first
step that fails ends the run: that host's node stays ineligible, the reason is on the run (and
so on the host's page), and the hosts after it are not touched.

Only operators may ask for one, and only one maintenance is queued or running at a time (two
would drain two hosts at once). The functions at the end are the job's writers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from panel.actions.common import ActionError, actor_name, authorize_operator
from panel.actions.hosts import (
    enqueue_provision,
    load_provision_vars,
    reached_hosts,
    unpinned_message,
)
from panel.config import Settings
from panel.db import database
from panel.drivers.ansible import AnsibleError
from panel.drivers.nomad import nomad_configured
from panel.events import emit
from panel.models import Host, ProvisionRun, ProvisionStatus, User

__all__ = [
    "DEFAULT_DEADLINE",
    "MAINTAIN_JOB",
    "MAX_DEADLINE",
    "READY_TIMEOUT",
    "STEPS",
    "fail_host_maintenance",
    "finish_host_maintenance",
    "maintenance_deadline",
    "maintenance_job_timeout",
    "request_maintenance",
    "start_host_maintenance",
]

logger = logging.getLogger(__name__)

KIND = "maintain"
MAINTAIN_JOB = "panel.reconcile.maintenance.maintain_hosts"
DEFAULT_DEADLINE = 600  # seconds Nomad gives each drain before it stops what is left
MAX_DEADLINE = 86_400
READY_TIMEOUT = 900  # seconds a host's node has to be ready again after its updates
STEPS = ("drain", "update", "ready", "eligible")
_LIVE = (ProvisionStatus.QUEUED.value, ProvisionStatus.RUNNING.value)


def maintenance_deadline(run: ProvisionRun) -> int:
    """The drain deadline (seconds) a maintenance run was asked with."""
    value = (run.recap or {}).get("deadline")
    return value if isinstance(value, int) and 0 < value <= MAX_DEADLINE else DEFAULT_DEADLINE


def maintenance_job_timeout(run: ProvisionRun, settings: Settings) -> int:
    """Seconds the job of a maintenance run may take: every host's drain (with the time Helios
    waits past its deadline), playbooks and wait for its node, one after the other."""
    per_host = maintenance_deadline(run) + 60 + settings.provision_timeout + READY_TIMEOUT + 60
    return per_host * max(1, len(run.host_ids)) + 60


def _chosen_hosts(host_ids: Sequence[int] | None, group: str | None) -> list[Host]:
    if (host_ids is None) == (group is None):
        raise ActionError("invalid", "name the hosts to maintain, or a group", "hosts")
    if group is not None:
        hosts = list(Host.select().order_by(Host.name))
        chosen = [host for host in hosts if group in host.groups]
        if not chosen:
            raise ActionError("invalid", f"no host is in the group {group!r}", "group")
        return chosen
    ids = list(dict.fromkeys(host_ids or []))
    if not ids:
        raise ActionError("invalid", "name at least one host to maintain", "hosts")
    found = {host.id: host for host in Host.select().where(Host.id.in_(ids))}
    missing = [host_id for host_id in ids if host_id not in found]
    if missing:
        raise ActionError("not_found", f"no host #{missing[0]}", "hosts")
    return [found[host_id] for host_id in ids]  # in the order asked


def request_maintenance(
    *,
    actor: User | None,
    settings: Settings,
    redis_conn: redis.Redis | None,
    host_ids: Sequence[int] | None = None,
    group: str | None = None,
    deadline: int = DEFAULT_DEADLINE,
) -> ProvisionRun:
    """Record the maintenance of some hosts (``host_ids``, in that order) or of every host of
    ``group`` (by name), and queue its job."""
    authorize_operator(actor)
    if isinstance(deadline, bool) or not isinstance(deadline, int):
        raise ActionError("invalid", "the deadline is a number of seconds", "deadline")
    if not 1 <= deadline <= MAX_DEADLINE:
        raise ActionError(
            "invalid", f"the deadline is between 1 and {MAX_DEADLINE} seconds", "deadline"
        )
    if not nomad_configured(settings):
        raise ActionError(
            "invalid", "set NOMAD_ADDR: a maintenance drains hosts through Nomad", "hosts"
        )
    hosts = _chosen_hosts(host_ids, group)
    draining = [host.name for host in hosts if host.state == "draining"]
    if draining:
        raise ActionError("conflict", f"{draining[0]} is being removed (draining)", "hosts")
    try:
        common, _ = load_provision_vars(settings)
    except AnsibleError as exc:
        raise ActionError("invalid", str(exc), "hosts") from None
    ids = [host.id for host in hosts]
    problem = unpinned_message(reached_hosts(list(Host.select().order_by(Host.id)), ids, common))
    if problem:
        raise ActionError("unpinned", problem, "hosts")
    with database.atomic():
        busy = (
            ProvisionRun.select(ProvisionRun.id)
            .where((ProvisionRun.kind == KIND) & ProvisionRun.status.in_(_LIVE))
            .first()
        )
        if busy is not None:
            raise ActionError(
                "conflict",
                f"maintenance run #{busy.id} is not over yet: one maintenance at a time",
                "hosts",
            )
        run = ProvisionRun.create(
            kind=KIND, host_ids=ids, recap={"deadline": deadline}, requested_by=actor
        )
        emit(
            "v1.host.maintenance_requested",
            {"run_id": run.id, "host_ids": ids, "hosts": [host.name for host in hosts],
             "deadline": deadline},
            actor=actor_name(actor),
            redis_conn=redis_conn,
        )  # fmt: skip
    if redis_conn is not None:
        enqueue_provision(redis_conn, run, settings)
    return run


# ---------------------------------------------------------------------------------------------
# A maintenance in flight (called by its job in panel.reconcile.maintenance)
# ---------------------------------------------------------------------------------------------


def start_host_maintenance(
    run: ProvisionRun, host: Host, node_id: str | None, redis_conn: redis.Redis | None
) -> None:
    """A host's maintenance begins (v1.host.maintenance_started)."""
    emit(
        "v1.host.maintenance_started",
        {"host": host.name, "host_id": host.id, "run_id": run.id, "node_id": node_id or ""},
        redis_conn=redis_conn,
    )


def finish_host_maintenance(run: ProvisionRun, host: Host, redis_conn: redis.Redis | None) -> None:
    """A host went through every step and is eligible again (v1.host.maintenance_finished)."""
    emit(
        "v1.host.maintenance_finished",
        {"host": host.name, "host_id": host.id, "run_id": run.id},
        redis_conn=redis_conn,
    )


def fail_host_maintenance(
    run: ProvisionRun, host: Host, step: str, reason: str, redis_conn: redis.Redis | None
) -> None:
    """A step of a host's maintenance failed (v1.host.maintenance_failed); the run is ended
    by the caller, which says the hosts left untouched."""
    emit(
        "v1.host.maintenance_failed",
        {"host": host.name, "host_id": host.id, "run_id": run.id, "step": step,
         "reason": reason[:2000]},
        redis_conn=redis_conn,
    )  # fmt: skip
