"""RQ entry point of host removal with a drain: ``await_drain(host_id)``.

The action (``panel.actions.hosts.remove_host``) started Nomad's drain of the host's client node
and marked the host ``draining``. This job follows the node with Nomad's blocking queries
(``GET /v1/node/<id>?index=…``: Nomad answers when the node changes, no polling) until its drain
ends: complete, the host is removed; ended otherwise, or not within the drain's deadline, the
host goes back to its former state with the reason on its page. A host no longer draining is
left alone, so a repeated job is harmless; :func:`resume_drains`, at each worker maintenance
pass, queues again the job of a draining host whose job was lost (Redis flushed, a worker
killed).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from panel.actions.hosts import (
    DRAIN_DEADLINE,
    drain_job_id,
    enqueue_drain,
    fail_host_drain,
    finish_host_drain,
)
from panel.config import Settings
from panel.drivers.nomad import NomadDriver, NomadError
from panel.models import Host
from panel.queue import connect_redis

__all__ = ["DRAIN_GRACE", "await_drain", "follow_drain", "resume_drains"]

logger = logging.getLogger(__name__)

WATCH_WAIT = 60  # seconds one blocking query waits for the node to change
DRAIN_GRACE = 60  # seconds past the drain's deadline before Helios gives up on it


def await_drain(host_id: int) -> str:
    """Remove a draining host once Nomad's drain of its node completes; what happened."""
    settings = Settings.from_env()
    job = get_current_job()
    redis_conn = job.connection if job is not None else connect_redis(settings)
    host = Host.get_or_none(Host.id == host_id)
    if host is None or host.state != "draining":
        return "not draining"
    try:
        reason = _wait(NomadDriver.from_settings(settings), host.name)
    except NomadError as exc:
        fail_host_drain(host_id, f"the drain could not be followed: {exc}", redis_conn)
        raise
    if reason is None:
        finish_host_drain(host_id, redis_conn)
        logger.info("host %s drained and removed", host.name)
        return "removed"
    fail_host_drain(host_id, reason, redis_conn)
    return "failed"


def _wait(driver: NomadDriver, name: str) -> str | None:
    """Follow the node named ``name`` until its drain ends: None when it completed (or the
    node is gone), else why it did not."""
    stub = driver.node_by_name(name)
    if stub is None:
        return None
    return follow_drain(driver, stub["ID"], name, deadline=DRAIN_DEADLINE,
                        unfinished="the host was not removed")  # fmt: skip


def follow_drain(
    driver: NomadDriver, node_id: str, name: str, *, deadline: int, unfinished: str
) -> str | None:
    """Follow the drain of node ``node_id`` (named ``name``) with blocking queries until it
    ends: None once it completed, else why not (``unfinished`` says what did not happen).
    Gives up DRAIN_GRACE seconds past ``deadline`` (the node then stays ineligible)."""
    give_up = time.monotonic() + deadline + DRAIN_GRACE
    index = 0
    while True:
        wait = max(1, min(WATCH_WAIT, int(give_up - time.monotonic())))
        node, index = driver.watch_node(node_id, index=index, wait=wait)
        outcome = _drain_outcome(node, unfinished)
        if outcome is not None:
            return outcome or None
        if time.monotonic() >= give_up:
            return (
                f"the drain of Nomad node {name} did not complete within "
                f"{deadline + DRAIN_GRACE} s; the node stays ineligible: see "
                f"`nomad node status {node_id[:8]}`"
            )


def _drain_outcome(node: dict[str, Any], unfinished: str) -> str | None:
    """None while the node drains; '' once its drain completed; else why it ended."""
    if node.get("DrainStrategy") is not None:
        return None
    status = (node.get("LastDrain") or {}).get("Status", "")
    if status == "complete":
        return ""
    return (
        f"the drain of Nomad node {node.get('Name', '')} ended with status {status or 'none'!r} "
        f"instead of completing; {unfinished}"
    )


_ALIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def resume_drains(redis_conn: redis.Redis) -> list[int]:
    """Queue again the job of every draining host that has no live one; their ids."""
    resumed = []
    for host in Host.select(Host.id).where(Host.state == "draining"):
        try:
            alive = Job.fetch(drain_job_id(host.id), connection=redis_conn).get_status() in _ALIVE
        except NoSuchJobError:
            alive = False
        except redis.RedisError as exc:
            logger.warning("cannot look at the drain jobs now: %s", exc)
            return resumed
        if not alive and enqueue_drain(redis_conn, host.id):
            resumed.append(host.id)
    return resumed
