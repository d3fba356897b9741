"""RQ entry points for provisioning: ``plan_hosts(run_id)`` and ``apply_hosts(run_id)``.

Both run playbooks/site.yml with ansible-runner on an inventory rendered from the Host rows
(plan: check mode with diff, so nothing changes on the hosts). Every Ansible event is scrubbed,
stored as a ``ProvisionEvent`` and published on ``helios:provision:<run_id>`` for live pages;
the per-host recap is kept on the run. A run that already ended is left alone, so a repeated
job is harmless; a failure is recorded on the run and then re-raised for RQ.

A run writes the SSH keys of the hosts it reaches and nothing else, into a workspace removed
whatever happens, and trusts only their pinned host keys. While it runs, its ``heartbeat_at``
moves every ``HEARTBEAT_INTERVAL`` seconds. :func:`resume_provisioning`, called when a worker
starts and at each maintenance pass, cleans up after runs whose worker died (their workspace
is removed and they are marked failed) and queues again runs whose job was lost.

Every write to a run, its events and its hosts goes through :mod:`panel.actions.hosts`, which
also queues the jobs (``enqueue_provision``, re-exported here with the queue's name).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import redis
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from panel.actions.cluster import HANDOFF_KEY, store_cluster_credentials
from panel.actions.common import ActionError
from panel.actions.hosts import (
    PROVISION_JOBS,
    PROVISION_QUEUE,
    beat_provision_run,
    channel_for,
    claim_provision_run,
    end_provision_run,
    enqueue_provision,
    finish_provision_run,
    load_provision_vars,
    reached_hosts,
    record_provision_event,
    unpinned_message,
)
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.ansible import AnsibleDriver, AnsibleError, RunResult, Workspace
from panel.host_keys import HostKeyError, parse_host_keys, render_known_hosts
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus, utcnow
from panel.queue import connect_redis
from panel.render.ansible import InventoryHost, RenderError, render_inventory

__all__ = [
    "PROVISION_JOBS",
    "PROVISION_QUEUE",
    "Claim",
    "Recorder",
    "apply_hosts",
    "channel_for",
    "claim_run",
    "describe_result",
    "enqueue_provision",
    "heartbeat",
    "load_provision_vars",
    "own_addresses",
    "plan_hosts",
    "prepare_run",
    "reached_hosts",
    "resume_provisioning",
    "sweep_runs",
    "unpinned_message",
]

logger = logging.getLogger(__name__)

PLAYBOOK = "site.yml"
WORKSPACE_TAG = "provision-run-"  # + the run id, written in the run's workspace
HEARTBEAT_INTERVAL = 10.0  # seconds between two heartbeats of a running run
STALE_AFTER = 120  # seconds without a heartbeat after which a running run's worker is dead
REQUEUE_AFTER = 30  # seconds a queued run may lack its job before it is queued again
PLAYBOOKS_PACKAGE = "panel.playbooks"  # where a wheel installs playbooks/ (see setup.py)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # a source checkout, or site-packages
_CHECKOUT_PLAYBOOKS = _SOURCE_ROOT / "playbooks"


def installed_playbooks() -> Path | None:
    """The folder of Helios's own site.yml and roles/: inside the installed package (a wheel,
    or an editable install), else the top-level playbooks/ of a source checkout; None when
    neither has them."""
    try:
        spec = importlib.util.find_spec(PLAYBOOKS_PACKAGE)
    except ImportError:
        spec = None
    places = [Path(place) for place in (spec.submodule_search_locations or [])] if spec else []
    if (_SOURCE_ROOT / "pyproject.toml").is_file():  # a checkout, not whatever sits beside us
        places.append(_CHECKOUT_PLAYBOOKS)
    for place in places:
        if (place / PLAYBOOK).is_file() and (place / "roles").is_dir():
            return place
    return None


def playbooks_dir(settings: Settings) -> Path:
    """Where site.yml lives: ``HELIOS_PLAYBOOKS_DIR`` when set, else :func:`installed_playbooks`.

    Raises :class:`AnsibleError`, saying what to set, when there are none.
    """
    if settings.playbooks_dir:
        return Path(settings.playbooks_dir)
    found = installed_playbooks()
    if found is None:
        raise AnsibleError(
            f"Helios's playbooks were not found: neither the installed package "
            f"({PLAYBOOKS_PACKAGE}) nor a source checkout has {PLAYBOOK} and roles/. Reinstall "
            "Helios from a wheel that ships them, or set HELIOS_PLAYBOOKS_DIR to the folder "
            f"holding {PLAYBOOK} and roles/ (the repository's playbooks/)"
        )
    return found


def _driver(settings: Settings, playbooks: Path) -> AnsibleDriver:
    return AnsibleDriver(
        playbooks, work_dir=settings.data_dir / "ansible", timeout=settings.provision_timeout
    )


def driver_for(settings: Settings) -> AnsibleDriver:
    """The Ansible driver of this installation (run workspaces under <data dir>/ansible).

    Raises :class:`AnsibleError` when the playbooks cannot be found (see :func:`playbooks_dir`).
    """
    return _driver(settings, playbooks_dir(settings))


class Recorder:
    """Stores each event of a run and publishes it; a Redis outage only loses liveness."""

    def __init__(self, run: ProvisionRun, redis_conn: redis.Redis) -> None:
        self.run = run
        self.redis = redis_conn
        self.channel = channel_for(run.id)
        last = ProvisionEvent.select(ProvisionEvent.seq).where(ProvisionEvent.run == run.id)
        self.seq = max((row.seq for row in last), default=0)
        self.problems: dict[str, str] = {}  # host → its first failure, as a person reads it
        self.errors: list[str] = []  # what Ansible itself reported (no host named)

    def __call__(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event = {**event, "seq": self.seq}
        record_provision_event(self.run, self.seq, event)
        self._note_problem(event)
        self.publish(event)

    def _note_problem(self, event: dict[str, Any]) -> None:
        kind, host = event.get("kind"), event.get("host") or ""
        said = " ".join(str(event.get("msg") or event.get("text") or "").split())[:300]
        if kind == "unreachable" and host and host not in self.problems:
            self.problems[host] = f"{host} is unreachable: {said or 'no answer over SSH'}"
        elif kind == "failed" and host and host not in self.problems:
            task = event.get("task") or "a task"
            self.problems[host] = f"{host}: {task!r} failed" + (f": {said}" if said else "")
        elif kind == "error" and said:
            self.errors.append(said)

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.redis.publish(self.channel, json.dumps(event))
        except redis.RedisError as exc:
            logger.warning("run #%d: event stored but not published: %s", self.run.id, exc)


# ---------------------------------------------------------------------------------------------
# What a run reaches: hosts, keys, known hosts
# ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    inventory: str
    known_hosts: str
    secrets: list[str]
    limit: str | None


def _pinned_known_hosts(host: Host) -> str:
    try:
        keys = parse_host_keys(host.ssh_host_keys)
    except HostKeyError as exc:
        raise AnsibleError(
            f"the pinned SSH host keys of {host.name} cannot be read ({exc}): "
            f"pin them again (Hosts → {host.name})"
        ) from exc
    return render_known_hosts(keys, host.address, host.ssh_port)


def own_addresses(hosts: list[Host]) -> list[str]:
    """The addresses this machine sends from toward each host (its route's source address).

    Nothing is sent: a UDP socket's connect only picks the route. Names that do not resolve
    and unroutable hosts are left out (the run then fails on them with SSH's own message), and
    so are loopback addresses: a host's firewall lets its own loopback traffic in anyway.
    """
    found: dict[str, None] = {}
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host.address, host.ssh_port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            continue
        for family, kind, proto, _, where in infos[:1]:
            try:
                with socket.socket(family, kind, proto) as probe:
                    probe.connect(where)
                    address = str(probe.getsockname()[0]).split("%")[0]
            except OSError:
                continue
            if not ipaddress.ip_address(address).is_loopback:
                found[address] = None
    return list(found)


def prepare_run(run: ProvisionRun, settings: Settings, workspace: Workspace) -> Prepared:
    """Inventory of every host; key files and pinned host keys of the reached ones only."""
    common, per_host = load_provision_vars(settings)
    # Apps without a domain of their own answer at <app>.<HELIOS_BASE_DOMAIN> on the edge:
    # Traefik's default rule follows the panel's setting unless the vars file says otherwise.
    common = {"traefik_apps_domain": settings.base_domain, **common}
    hosts = list(Host.select().order_by(Host.id))
    # The firewall opens Nomad's API (and the cluster's other ports) to the cluster's hosts and
    # base_firewall_cluster_sources only: the panel adds the address it reaches the hosts from,
    # so it can talk to the cluster it provisions with nothing listed by hand.
    given = common.get("base_firewall_cluster_sources") or []
    if isinstance(given, list):
        sources = [*given, *(a for a in own_addresses(hosts) if a not in given)]
        common = {**common, "base_firewall_cluster_sources": sources}
    reached = reached_hosts(hosts, run.host_ids, common)
    problem = unpinned_message(reached)
    if problem:
        raise AnsibleError(problem)
    cipher = SecretCipher.from_settings(settings)
    key_files: dict[int, str] = {}
    secrets: list[str] = []
    for host in reached:
        if host.ssh_private_key:
            secrets.append(cipher.decrypt(host.ssh_private_key))
            key_files[host.id] = workspace.write_secret(f"host-{host.id}.key", secrets[-1])
    inventory = [
        InventoryHost(name=host.name, address=host.address, ssh_user=host.ssh_user,
                      ssh_port=host.ssh_port, groups=tuple(host.groups),
                      key_file=key_files.get(host.id), variables=per_host.get(host.name) or {})
        for host in hosts
    ]  # fmt: skip
    chosen = sorted(host.name for host in hosts if host.id in run.host_ids)
    return Prepared(
        inventory=render_inventory(inventory, common),
        known_hosts="".join(_pinned_known_hosts(host) for host in reached),
        secrets=secrets,
        limit=None if len(chosen) == len(hosts) else ",".join(chosen),
    )


# ---------------------------------------------------------------------------------------------
# A run from claim to finish
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def heartbeat(run_id: int) -> Iterator[None]:
    """Move the run's ``heartbeat_at`` every HEARTBEAT_INTERVAL seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_INTERVAL):
            try:
                with database.connection_context():
                    beat_provision_run(run_id)
            except pw.PeeweeException as exc:  # the next beat tries again
                logger.warning("run #%d: heartbeat not recorded: %s", run_id, exc)

    thread = threading.Thread(target=beat, name=f"provision-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def describe_result(result: RunResult, kind: str, recorder: Recorder) -> str:
    """The run's outcome in one message: what changed, or which hosts failed and why (an
    unreachable host with SSH's own words), or what Ansible said when no host got that far."""
    hosts = len(result.recap)
    if result.ok:
        verb = "would change" if kind == "plan" else "changed"
        return f"{verb} {result.changed} task(s) on {hosts} host(s)"
    ended = f"ansible-playbook ended {result.status} (exit code {result.rc})"
    if recorder.problems:
        return f"{ended}: " + "; ".join(recorder.problems.values())
    if recorder.errors:
        return f"{ended}: {recorder.errors[-1]}"
    return f"{ended} before any host reported a failure: see the output below"


@dataclass(frozen=True)
class Claim:
    """What a worker job holding a run works with; ``run`` is None when it may not run it,
    and ``status`` then says why (for the job's result)."""

    settings: Settings
    redis: redis.Redis
    run: ProvisionRun | None
    status: str = ""


def claim_run(run_id: int, what: str) -> Claim:
    """Claim run ``run_id`` for this worker job (``what``: "provision" or "maintenance", for
    the log): no such run gives status "missing"; a run another execution holds, or one that
    ended, gives its status."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    existing = ProvisionRun.get_or_none(ProvisionRun.id == run_id)
    if existing is None:
        logger.warning("%s run #%d does not exist; nothing to do", what, run_id)
        return Claim(settings, redis_conn, None, "missing")
    run = claim_provision_run(run_id, redis_conn)
    if run is None:
        return Claim(settings, redis_conn, None, existing.status)  # another has it, or it ended
    return Claim(settings, redis_conn, run)


def _run_provision(run_id: int, kind: str) -> str:
    claim = claim_run(run_id, "provision")
    if claim.run is None:
        return claim.status
    settings, redis_conn, run = claim.settings, claim.redis, claim.run
    recorder = Recorder(run, redis_conn)
    result: RunResult | None = None
    try:
        driver = driver_for(settings)  # missing playbooks fail the run, saying what to set
        with heartbeat(run.id), driver.workspace(tag=f"{WORKSPACE_TAG}{run.id}") as workspace:
            # Every host is in the inventory (servers are joined, secrets live on the first);
            # the limit keeps the run to the chosen ones.
            prepared = prepare_run(run, settings, workspace)
            result = driver.run(
                workspace, playbook=PLAYBOOK, inventory=prepared.inventory, check=kind == "plan",
                diff=True, limit=prepared.limit, on_event=recorder, secrets=prepared.secrets,
                known_hosts=prepared.known_hosts,
            )  # fmt: skip
        refused = _keep_cluster_credentials(run, result, settings)
    except (AnsibleError, RenderError) as exc:
        finish_provision_run(run, None, str(exc), redis_conn)  # publishes END_MARK
        raise
    except Exception:
        message = "the run stopped on an unexpected error: see the worker's log"
        finish_provision_run(run, None, message, redis_conn)
        raise
    message = describe_result(result, kind, recorder)
    if refused:
        message = f"{message}; {refused}"
    return finish_provision_run(run, result, message, redis_conn)


def _keep_cluster_credentials(run: ProvisionRun, result: RunResult, settings: Settings) -> str:
    """Store what the nomad role handed over (address, token, CA, client certificate), so
    every process talks to the cluster this run built. Nothing of it is logged. A refusal (its
    reason holds no secret) keeps the earlier credentials and is returned for the run's
    message, so the Hosts page says why the panel is not connected; else ""."""
    handed = result.handed_over.get(HANDOFF_KEY)
    if handed is None:
        return ""
    try:
        store_cluster_credentials(run, handed, SecretCipher.from_settings(settings))
    except ActionError as exc:
        logger.warning("run #%d: cluster credentials not kept: %s", run.id, exc)
        return f"the cluster credentials it handed over were not kept: {exc}"
    logger.info("run #%d: cluster credentials received and kept", run.id)
    return ""


def plan_hosts(run_id: int) -> str:
    """Run the playbooks in check mode with diff: what would change, changing nothing."""
    return _run_provision(run_id, "plan")


def apply_hosts(run_id: int) -> str:
    """Run the playbooks: converge the hosts."""
    return _run_provision(run_id, "apply")


# ---------------------------------------------------------------------------------------------
# After a crash: dead runs end, lost jobs are queued again
# ---------------------------------------------------------------------------------------------


def _abandon(run: ProvisionRun, since: datetime | None, redis_conn: redis.Redis) -> bool:
    when = f"{since:%Y-%m-%d %H:%M:%S} UTC" if since else "an unknown time"
    message = (
        f"the worker running it stopped (crashed or killed) at {when}; nothing more will "
        "happen: plan or apply again"
    )
    if not end_provision_run(run, ProvisionStatus.FAILED.value, message, redis_conn):
        return False
    logger.warning("provision run #%d: %s", run.id, message)
    return True


def _fail_dead_workspace_runs(settings: Settings, redis_conn: redis.Redis) -> list[int]:
    """Fail the running runs whose process died holding its workspace, then remove those
    workspaces (each only once its run's failure is recorded)."""
    failed = []

    def settle(tag: str) -> None:
        number = tag.removeprefix(WORKSPACE_TAG)
        if not (tag.startswith(WORKSPACE_TAG) and number.isdigit()):
            return
        run = ProvisionRun.get_or_none(
            (ProvisionRun.id == int(number))
            & (ProvisionRun.status == ProvisionStatus.RUNNING.value)
        )
        if run is not None and _abandon(
            run, run.heartbeat_at or run.started_at or run.requested_at, redis_conn
        ):
            failed.append(run.id)

    # Sweeping reads the run workspaces only: it works even where the playbooks are missing.
    _driver(settings, _CHECKOUT_PLAYBOOKS).sweep_workspaces(settle)
    return failed


def _requeue_lost(run: ProvisionRun, redis_conn: redis.Redis, settings: Settings) -> bool:
    try:
        status = Job.fetch(f"provision-{run.id}", connection=redis_conn).get_status()
    except NoSuchJobError:
        return enqueue_provision(redis_conn, run, settings)
    if status in {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}:
        # The job ended before it could claim the run (the worker's log says why).
        message = (
            f"its job ended ({status.value}) before it started: see the worker's log, then plan "
            "or apply again"
        )
        end_provision_run(
            run, ProvisionStatus.FAILED.value, message, redis_conn, was=ProvisionStatus.QUEUED
        )
    return False


def sweep_runs(redis_conn: redis.Redis, settings: Settings) -> dict[str, list[int]]:
    """Remove dead workspaces, fail runs whose worker died, queue runs whose job was lost.

    A running run is dead when the process that held its workspace is gone (this machine) or
    when its heartbeat is older than STALE_AFTER seconds (any machine). Idempotent.
    """
    failed = _fail_dead_workspace_runs(settings, redis_conn)
    stale = utcnow() - timedelta(seconds=STALE_AFTER)
    queued = []
    # Read into lists before writing: SQLite refuses a write at once ("database is locked",
    # without waiting busy_timeout) while this connection still reads a query's rows.
    running = list(
        ProvisionRun.select()
        .where(ProvisionRun.status == ProvisionStatus.RUNNING.value)
        .order_by(ProvisionRun.id)
    )
    for run in running:
        last = run.heartbeat_at or run.started_at or run.requested_at
        if last < stale and _abandon(run, last, redis_conn):
            failed.append(run.id)
    waiting = list(
        ProvisionRun.select()
        .where(
            (ProvisionRun.status == ProvisionStatus.QUEUED.value)
            & (ProvisionRun.requested_at < utcnow() - timedelta(seconds=REQUEUE_AFTER))
        )
        .order_by(ProvisionRun.id)
    )
    for run in waiting:
        if _requeue_lost(run, redis_conn, settings):
            queued.append(run.id)
    if queued:
        logger.info("queued again provision runs whose job was lost: %s", queued)
    return {"failed": sorted(failed), "queued": queued}


def resume_provisioning(redis_conn: redis.Redis, settings: Settings) -> None:
    """:func:`sweep_runs` for the worker: at start and each maintenance pass (never raises)."""
    try:
        with database.connection_context():
            sweep_runs(redis_conn, settings)
    except (pw.PeeweeException, redis.RedisError, OSError) as exc:
        logger.warning("could not sweep provisioning runs now: %s", exc)
