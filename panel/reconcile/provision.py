"""RQ entry points for provisioning: ``plan_hosts(run_id)`` and ``apply_hosts(run_id)``.

Both run playbooks/site.yml with ansible-runner on an inventory rendered from the Host rows
(plan: check mode with diff, so nothing changes on the hosts). Every Ansible event is scrubbed,
stored as a ``ProvisionEvent`` and published on ``helios:provision:<run_id>`` for live pages;
the per-host recap is kept on the run. A run that already ended is left alone, so a repeated
job is harmless; a failure is recorded on the run and then re-raised for RQ.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import redis
import yaml
from rq import get_current_job

from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers.ansible import AnsibleDriver, AnsibleError, RunResult
from panel.events import emit
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus, utcnow
from panel.queue import connect_redis
from panel.render.ansible import InventoryHost, RenderError, render_inventory

__all__ = ["apply_hosts", "channel_for", "load_provision_vars", "plan_hosts"]

logger = logging.getLogger(__name__)

PLAYBOOK = "site.yml"
CHANNEL_PREFIX = "helios:provision:"
END_MARK = {"kind": "end"}  # published last, so live readers know the stream is over
_DEFAULT_PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def channel_for(run_id: int) -> str:
    """The Redis channel a run's events are published on."""
    return f"{CHANNEL_PREFIX}{run_id}"


def playbooks_dir(settings: Settings) -> Path:
    """Where site.yml lives."""
    return Path(settings.playbooks_dir) if settings.playbooks_dir else _DEFAULT_PLAYBOOKS


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


def driver_for(settings: Settings) -> AnsibleDriver:
    """The Ansible driver of this installation (work files and known hosts in the data dir)."""
    return AnsibleDriver(
        playbooks_dir(settings),
        work_dir=settings.data_dir / "ansible",
        known_hosts=settings.data_dir / "ansible" / "known_hosts",
        timeout=settings.provision_timeout,
    )


class _Recorder:
    """Stores each event of a run and publishes it; a Redis outage only loses liveness."""

    def __init__(self, run: ProvisionRun, redis_conn: redis.Redis) -> None:
        self.run = run
        self.redis = redis_conn
        self.channel = channel_for(run.id)
        last = ProvisionEvent.select(ProvisionEvent.seq).where(ProvisionEvent.run == run.id)
        self.seq = max((row.seq for row in last), default=0)

    def __call__(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event = {**event, "seq": self.seq}
        ProvisionEvent.create(run=self.run, seq=self.seq, data=event)
        self.publish(event)

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.redis.publish(self.channel, json.dumps(event))
        except redis.RedisError as exc:
            logger.warning("run #%d: event stored but not published: %s", self.run.id, exc)


def _inventory(hosts: list[Host], settings: Settings, workspace) -> tuple[str, list[str]]:
    common, per_host = load_provision_vars(settings)
    cipher = SecretCipher.from_settings(settings)
    secrets: list[str] = []
    rendered = []
    for host in hosts:
        key_file = None
        if host.ssh_private_key:
            key = cipher.decrypt(host.ssh_private_key)
            secrets.append(key)
            key_file = workspace.write_secret(f"host-{host.id}.key", key)
        rendered.append(
            InventoryHost(
                name=host.name,
                address=host.address,
                ssh_user=host.ssh_user,
                ssh_port=host.ssh_port,
                groups=tuple(host.groups),
                key_file=key_file,
                variables=per_host.get(host.name) or {},
            )
        )
    return render_inventory(rendered, common), secrets


def _claim(run_id: int) -> ProvisionRun | None:
    claimed = (
        ProvisionRun.update(status=ProvisionStatus.RUNNING.value, started_at=utcnow())
        .where((ProvisionRun.id == run_id) & (ProvisionRun.status == ProvisionStatus.QUEUED.value))
        .execute()
    )
    return ProvisionRun.get_by_id(run_id) if claimed else None


def _finish(run: ProvisionRun, result: RunResult | None, message: str, redis_conn) -> str:
    ok = result is not None and result.ok
    run.status = (ProvisionStatus.SUCCEEDED if ok else ProvisionStatus.FAILED).value
    run.recap = result.recap if result is not None else {}
    run.message = message
    run.finished_at = utcnow()
    run.save()
    failed = sorted(h for h, c in run.recap.items() if c["failed"] or c["unreachable"])
    hosts = Host.select().where(Host.id.in_(run.host_ids))
    for host in hosts:
        counts = run.recap.get(host.name)
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
    emit(
        "v1.provision.finished",
        {"run_id": run.id, "kind": run.kind, "status": run.status,
         "changed": result.changed if result is not None else 0, "failed_hosts": failed},
        redis_conn=redis_conn,
    )  # fmt: skip
    return run.status


def _describe(result: RunResult, kind: str) -> str:
    hosts = len(result.recap)
    if result.ok:
        verb = "would change" if kind == "plan" else "changed"
        return f"{verb} {result.changed} task(s) on {hosts} host(s)"
    return f"ansible-playbook ended {result.status} (exit code {result.rc}): see the failed tasks"


def _run_provision(run_id: int, kind: str) -> str:
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    existing = ProvisionRun.get_or_none(ProvisionRun.id == run_id)
    if existing is None:
        logger.warning("provision run #%d does not exist; nothing to do", run_id)
        return "missing"
    run = _claim(run_id)
    if run is None:
        return existing.status  # another execution has it, or it ended
    emit("v1.provision.started", {"run_id": run.id, "kind": kind, "host_ids": run.host_ids},
         redis_conn=redis_conn)  # fmt: skip
    recorder = _Recorder(run, redis_conn)
    all_hosts = list(Host.select().order_by(Host.id))
    chosen = {host.name for host in all_hosts if host.id in run.host_ids}
    limit = None if len(chosen) == len(all_hosts) else ",".join(sorted(chosen))
    driver = driver_for(settings)
    result: RunResult | None = None
    try:
        with driver.workspace() as workspace:
            # Every host is in the inventory (servers are joined, secrets live on the first);
            # the limit keeps the run to the chosen ones.
            inventory, secrets = _inventory(all_hosts, settings, workspace)
            result = driver.run(
                workspace, playbook=PLAYBOOK, inventory=inventory, check=kind == "plan",
                diff=True, limit=limit, on_event=recorder, secrets=secrets,
            )  # fmt: skip
    except (AnsibleError, RenderError) as exc:
        _finish(run, None, str(exc), redis_conn)
        recorder.publish(END_MARK)
        raise
    except Exception:
        _finish(run, None, "the run stopped on an unexpected error: see the worker's log",
                redis_conn)  # fmt: skip
        recorder.publish(END_MARK)
        raise
    status = _finish(run, result, _describe(result, kind), redis_conn)
    recorder.publish(END_MARK)
    return status


def plan_hosts(run_id: int) -> str:
    """Run the playbooks in check mode with diff: what would change, changing nothing."""
    return _run_provision(run_id, "plan")


def apply_hosts(run_id: int) -> str:
    """Run the playbooks: converge the hosts."""
    return _run_provision(run_id, "apply")
