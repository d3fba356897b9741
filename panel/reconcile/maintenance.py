"""RQ entry point of a fleet maintenance: ``maintain_hosts(run_id)``.

The run (a provisioning run of kind ``maintain``, see :mod:`panel.actions.maintenance`) names
its hosts in order. One at a time, each host's Nomad node is drained (it turns ineligible; its
allocations move as their groups' migrate blocks allow, system jobs stay) and the drain is
followed with blocking queries until it completes; then the playbooks run on that host alone
with ``base_upgrade`` (the base role upgrades the packages and reboots only when
/var/run/reboot-required exists), the node is followed until Nomad reports it ready, and it is
made eligible again. Each step is an event of the run (stored, published live); Ansible's own
events come in between. The first failure ends the run there: that host stays ineligible, the
run's message says why and which hosts were not touched.

A run is claimed once (queued → running), so a job executed twice does nothing the second time;
the run's heartbeat moves while it runs, so a run whose worker died is ended as failed by the
provisioning sweep (:func:`panel.reconcile.provision.sweep_runs`), never run twice. Every step is
safe to ask for again: draining a drained node, running the playbooks, making an eligible node
eligible.
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import redis

from panel.actions.hosts import end_provision_run
from panel.actions.maintenance import (
    READY_TIMEOUT,
    fail_host_maintenance,
    finish_host_maintenance,
    maintenance_deadline,
    start_host_maintenance,
)
from panel.config import Settings
from panel.drivers.ansible import AnsibleError
from panel.drivers.nomad import NomadDriver, NomadError
from panel.models import Event, Host, ProvisionRun, ProvisionStatus
from panel.reconcile.host_drain import WATCH_WAIT, follow_drain
from panel.reconcile.provision import (
    PLAYBOOK,
    WORKSPACE_TAG,
    Recorder,
    claim_run,
    describe_result,
    driver_for,
    heartbeat,
    prepare_run,
)
from panel.render.ansible import RenderError

__all__ = ["UPGRADE_VARS", "maintain_hosts"]

logger = logging.getLogger(__name__)

UPGRADE_VARS = {"base_upgrade": True}  # what makes the base role upgrade (and maybe reboot)


class _StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


def maintain_hosts(run_id: int) -> str:
    """Maintain the run's hosts one at a time, stopping at the first failure; its status."""
    claim = claim_run(run_id, "maintenance")
    if claim.run is None:
        return claim.status
    settings, redis_conn, run = claim.settings, claim.redis, claim.run
    recorder = Recorder(run, redis_conn)
    try:
        with heartbeat(run.id):
            ok, message = _maintain(run, settings, recorder, redis_conn)
    except Exception:
        message = (
            "the maintenance stopped on an unexpected error: see the worker's log; the host it "
            "was at may still be ineligible"
        )
        end_provision_run(run, ProvisionStatus.FAILED.value, message, redis_conn)
        raise
    status = (ProvisionStatus.SUCCEEDED if ok else ProvisionStatus.FAILED).value
    end_provision_run(run, status, message, redis_conn)
    return ProvisionRun.get_by_id(run.id).status


def _requested_by(run: ProvisionRun) -> str:
    """Who asked for the run, as its request event names them."""
    rows = Event.select(Event.actor, Event.data).where(
        Event.subject == "v1.host.maintenance_requested"
    )
    for row in rows.order_by(Event.id.desc()):
        if (row.data or {}).get("run_id") == run.id:
            return row.actor or "operator"
    return "operator"


def _maintain(
    run: ProvisionRun, settings: Settings, recorder: Recorder, redis_conn: redis.Redis
) -> tuple[bool, str]:
    nomad = NomadDriver.from_settings(settings)
    requester = _requested_by(run)
    done: list[str] = []
    for position, host_id in enumerate(run.host_ids):
        host = Host.get_or_none(Host.id == host_id)
        if host is None:
            recorder({"kind": "step", "host": f"#{host_id}", "task": "removed since: skipped"})
            continue
        try:
            _maintain_host(run, host, nomad, settings, recorder, redis_conn, requester)
        except _StepFailed as failed:
            fail_host_maintenance(run, host, failed.step, failed.reason, redis_conn)
            recorder({"kind": "failed", "host": host.name, "task": failed.step,
                      "msg": failed.reason})  # fmt: skip
            rest = Host.select(Host.name).where(Host.id.in_(run.host_ids[position + 1 :]))
            untouched = sorted(row.name for row in rest)
            message = (
                f"{host.name}: {failed.step} failed: {failed.reason}. Its Nomad node stays "
                "ineligible: make it eligible once it is fixed (maintain it again)"
            )
            if done:
                message += f". Done: {', '.join(done)}"
            if untouched:
                message += f". Not touched: {', '.join(untouched)}"
            return False, message
        done.append(host.name)
    return True, f"maintained {len(done)} host(s), one at a time: {', '.join(done)}"


def _maintain_host(
    run: ProvisionRun,
    host: Host,
    nomad: NomadDriver,
    settings: Settings,
    recorder: Recorder,
    redis_conn: redis.Redis,
    requester: str,
) -> None:
    """Every step for one host; raises _StepFailed at the first that fails."""
    deadline = maintenance_deadline(run)
    step = "drain"

    def say(text: str) -> None:
        recorder({"kind": "step", "host": host.name, "task": text})

    try:
        node = nomad.node_by_name(host.name)
        node_id = str(node["ID"]) if node is not None else None
        start_host_maintenance(run, host, node_id, redis_conn)
        if node_id is None:
            say(f"drain: no Nomad node is named {host.name}: nothing to drain")
        else:
            meta = {"helios.reason": f"maintenance run #{run.id} of {host.name}",
                    "helios.requested_by": requester}  # fmt: skip
            nomad.drain_node(node_id, deadline=deadline, meta=meta)
            say(
                f"drain: node {node_id[:8]} is ineligible and drains (deadline {deadline} s; "
                "system jobs stay)"
            )
            reason = follow_drain(nomad, node_id, host.name, deadline=deadline,
                                  unfinished="the maintenance stopped there")  # fmt: skip
            if reason is not None:
                raise _StepFailed("drain", reason)
            say("drain: complete")
        step = "update"
        say("update: playbooks with base_upgrade (packages; a reboot if required)")
        _update(run, host, settings, recorder)
        say("update: done")
        if node_id is not None:
            step = "ready"
            _wait_ready(nomad, node_id, host.name)
            say("ready: Nomad reports the node ready")
            step = "eligible"
            nomad.set_node_eligibility(node_id, eligible=True)
            say("eligible: the node takes allocations again")
    except NomadError as exc:
        raise _StepFailed(step, f"Nomad: {exc}") from None
    except (AnsibleError, RenderError) as exc:
        raise _StepFailed("update", str(exc)) from None
    finish_host_maintenance(run, host, redis_conn)


def _update(run: ProvisionRun, host: Host, settings: Settings, recorder: Recorder) -> None:
    """Run the playbooks on ``host`` alone with the base role's upgrade path."""
    driver = driver_for(settings)
    with driver.workspace(tag=f"{WORKSPACE_TAG}{run.id}") as workspace:
        prepared = prepare_run(SimpleNamespace(host_ids=[host.id]), settings, workspace)
        result = driver.run(
            workspace, playbook=PLAYBOOK, inventory=prepared.inventory,
            extravars=json.dumps(UPGRADE_VARS), limit=host.name, on_event=recorder,
            secrets=prepared.secrets, known_hosts=prepared.known_hosts,
        )  # fmt: skip
    if not result.ok:
        raise _StepFailed("update", describe_result(result, "apply", recorder))


def _wait_ready(nomad: NomadDriver, node_id: str, name: str) -> None:
    """Follow the node with blocking queries until Nomad reports it ready."""
    give_up = time.monotonic() + READY_TIMEOUT
    index = 0
    node: dict[str, Any] = {}
    while True:
        wait = max(1, min(WATCH_WAIT, int(give_up - time.monotonic())))
        node, index = nomad.watch_node(node_id, index=index, wait=wait)
        if node.get("Status") == "ready":
            return
        if time.monotonic() >= give_up:
            raise _StepFailed(
                "ready",
                f"Nomad node {name} was not ready within {READY_TIMEOUT} s after the updates "
                f"(status {node.get('Status', '')!r}); it stays ineligible",
            )
