"""The sampler: every HELIOS_SAMPLE_INTERVAL seconds one worker queues an RQ job that reads
what runs in Nomad and records each app's health and its CPU and memory use.

One pass is one request for every allocation of the namespace (``GET /v1/allocations``, with
task states), then one ``GET /v1/client/allocation/<id>/stats`` per running allocation, on
SAMPLE_THREADS threads (each answered by the allocation's client node); then, in one
transaction, each app's health (``panel.live.judge_health``: stored only when it changed,
with ``v1.app.down`` / ``v1.app.recovered`` on the transitions that matter) and one sample of
its instances' total use and reservation at each resolution; points past their retention go.
An allocation whose stats cannot be read counts in the health, not in the sample.

With HELIOS_CONSUL_ADDR set, one more request reads every check's state in Consul
(``GET /v1/health/state/any``), matched to the allocations by the service ids Nomad registers
(``panel.live.checks_by_alloc``): a critical check makes its instance unhealthy. When Consul
cannot be read, the pass logs one warning and keeps each instance's last known check states
(``panel.live.last_known_checks``; an instance never seen with checks is judged from Nomad
alone, "Consul checks unknown"): an unreachable Consul neither marks an app down nor makes one
look recovered.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from panel.actions.apps import DEPLOY_QUEUE
from panel.actions.observe import mark_checked, prune_metrics, record_health, record_usage
from panel.config import Settings
from panel.db import database
from panel.drivers.consul import ConsulDriver, ConsulError
from panel.drivers.nomad import NomadDriver, NomadError, nomad_configured
from panel.live import checks_by_alloc, judge_health, last_known_checks, usage_of
from panel.models import App, AppHealth
from panel.queue import get_queue

__all__ = ["SAMPLE_JOB", "SAMPLE_LOCK", "SampleReport", "run_sample", "sample", "sample_if_due"]

logger = logging.getLogger(__name__)

SAMPLE_LOCK = "helios:sample"
SAMPLE_THREADS = 16
MB = 1024 * 1024


@dataclass
class SampleReport:
    """What one pass did."""

    apps: int = 0
    allocations: int = 0
    stats_read: int = 0
    stats_failed: int = 0
    changed: int = 0
    checks: int | None = 0  # Consul checks of instances read; None: Consul could not be read
    requests: int = 0
    seconds: float = 0.0


def _stats(settings: Settings, alloc_ids: list[str]) -> dict[str, tuple[float, int] | None]:
    """Each running allocation's (CPU MHz, memory bytes), read in parallel; None: unreadable."""
    local = threading.local()

    def read(alloc_id: str) -> tuple[str, tuple[float, int] | None]:
        driver = getattr(local, "driver", None)
        if driver is None:
            driver = local.driver = NomadDriver.from_settings(settings)
        try:
            return alloc_id, usage_of(driver.allocation_stats(alloc_id))
        except NomadError as exc:
            logger.debug("stats of allocation %s not read: %s", alloc_id, exc)
            return alloc_id, None

    if not alloc_ids:
        return {}
    with ThreadPoolExecutor(max_workers=min(SAMPLE_THREADS, len(alloc_ids))) as pool:
        return dict(pool.map(read, alloc_ids))


def _checks(settings: Settings) -> dict[str, list[dict[str, str]]] | None:
    """Each allocation's Consul checks, in one request ({} when HELIOS_CONSUL_ADDR is not set);
    None, with a warning logged, when Consul could not be read."""
    if not settings.consul_addr:
        return {}
    consul = None
    try:
        consul = ConsulDriver.from_settings(settings)
        return checks_by_alloc(consul.service_checks())
    except ConsulError as exc:
        logger.warning("Consul checks not read, health judged from Nomad alone: %s", exc)
        return None
    finally:
        if consul is not None:
            consul.close()


def sample(
    settings: Settings, redis_conn: redis.Redis | None, *, driver: NomadDriver | None = None,
    now: float | None = None,
) -> SampleReport:  # fmt: skip
    """One pass over every app (see the module's docstring); raises NomadError when Nomad
    cannot list allocations (a Consul that cannot be read only leaves checks unknown)."""
    started = time.monotonic()
    at = int(now if now is not None else time.time())
    driver = driver or NomadDriver.from_settings(settings)
    # One request for every namespace (each team's apps run in their own); app slugs are
    # unique across namespaces, so allocations map to apps by job id.
    allocations = driver.in_namespace("*").all_allocations()
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alloc in allocations:
        by_job[str(alloc.get("JobID") or "")].append(alloc)
    apps = list(App.live(App.id, App.slug, App.team, App.cpu_mhz, App.memory_mb, App.stopped_at))
    running = [
        str(a["ID"])
        for app in apps
        for a in by_job.get(app.slug, ())
        if a.get("ClientStatus") == "running" and a.get("DesiredStatus") == "run"
    ]
    usage = _stats(settings, running)
    checks = _checks(settings)
    report = SampleReport(apps=len(apps), allocations=len(allocations), requests=1 + len(running))
    report.requests += 1 if settings.consul_addr else 0
    report.checks = None if checks is None else sum(map(len, checks.values()))
    report.stats_read = sum(1 for value in usage.values() if value is not None)
    report.stats_failed = len(usage) - report.stats_read
    with database.atomic():
        stored = {row.app_id: row for row in AppHealth.select()}
        used = []
        for app in apps:
            allocs = by_job.get(app.slug, [])
            known = checks
            if checks is None and app.id in stored:
                known = last_known_checks(allocs, stored[app.id].instances or [])
            health = judge_health(allocs, known)
            if app.stopped_at is not None and health["state"] == "not_running":
                health["reason"] = "stopped"
            if checks is None and known is not None:
                health["reason"] += " (Consul unreachable: its last known check states)"
            report.changed += record_health(app, health, redis_conn, stored.get(app.id), known=True)
            sampled = [usage[str(a["ID"])] for a in allocs if usage.get(str(a["ID"]))]
            if sampled:
                used.append({
                    "app_id": app.id, "cpu": sum(cpu for cpu, _ in sampled),
                    "memory": sum(memory for _, memory in sampled),
                    "cpu_limit": float(app.cpu_mhz * len(sampled)),
                    "memory_limit": app.memory_mb * MB * len(sampled),
                })  # fmt: skip
        record_usage(used, at=at)
        mark_checked([app.id for app in apps])
        prune_metrics(at)
    report.seconds = time.monotonic() - started
    return report


SAMPLE_JOB = "panel.reconcile.observe.run_sample"


def run_sample() -> str:
    """The RQ job of one pass (in a work horse, with its database connection)."""
    from panel.queue import connect_redis

    settings = Settings.from_env()
    report = sample(settings, connect_redis(settings))
    checks = "unknown" if report.checks is None else report.checks
    return (
        f"{report.apps} apps, {report.allocations} allocations, {report.stats_read} stats read "
        f"({report.stats_failed} not), {checks} checks, {report.changed} changed, "
        f"in {report.seconds:.2f} s"
    )


def sample_if_due(connection: redis.Redis, settings: Settings) -> bool:
    """Queue a pass when one is due (one worker per interval: a lock in Redis, and a job id
    per interval so a pass is never queued twice); never raises. True when queued."""
    interval = settings.sample_interval
    if not interval or not nomad_configured(settings):
        return False
    try:
        if not connection.set(SAMPLE_LOCK, os.getpid(), nx=True, ex=interval):
            return False
        get_queue(connection, DEPLOY_QUEUE).enqueue(
            SAMPLE_JOB, job_id=f"sample-{int(time.time()) // interval}", job_timeout=interval * 6,
            result_ttl=interval * 6, failure_ttl=3600, description="sample apps",
        )  # fmt: skip
    except redis.RedisError as exc:
        logger.warning("apps not sampled now: %s", exc)
        return False
    return True
