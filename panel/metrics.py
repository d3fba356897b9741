"""Prometheus metrics of every Helios process, served together by the panel's /metrics.

One Helios is many processes: gunicorn workers, RQ workers and the work horses they fork, the
follower. prometheus-client's multiprocess mode has each of them write its samples to files in
``PROMETHEUS_MULTIPROC_DIR``; :func:`render_metrics` adds the files up. prometheus-client picks
its mode when it is first imported, so ``start_process`` sets that variable (to
``<data dir>/metrics``) before anything imports this module, and every child inherits it. A
process started without it (a test, a shell) keeps its metrics in memory and serves its own.
The files of a process that ended are folded into one archive per kind (``panel.metrics_files``),
so their number stays that of the live processes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from panel.metrics_files import archive_process, reading
from panel.queue import get_queue

__all__ = [
    "BUILD_DURATION",
    "CONTENT_TYPE_LATEST",
    "DEPLOYMENTS",
    "HTTP_IN_FLIGHT",
    "HTTP_REQUEST_DURATION",
    "HTTP_STREAMS_OPEN",
    "JOB_DURATION",
    "JOB_FAILURES",
    "METRICS_DIR_ENV",
    "count_deployment",
    "forget_process",
    "observe_build",
    "observe_job",
    "render_metrics",
]

logger = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Captured when prometheus-client chose its mode (it is imported above): what decides whether
# this process's samples are in files or in memory.
_MULTIPROCESS_DIR = os.environ.get(METRICS_DIR_ENV) or None

# Seconds. Requests: from a cached page to a slow API call; jobs and builds last minutes.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BUILD_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)

# ---------------------------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------------------------

HTTP_REQUEST_DURATION = Histogram(
    "helios_http_request_duration_seconds",
    "Panel requests by route endpoint, method and status (live streams are not included).",
    ["endpoint", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "helios_http_requests_in_flight",
    "Panel requests being served now, live streams included.",
    multiprocess_mode="livesum",
)
HTTP_STREAMS_OPEN = Gauge(
    "helios_http_streams_open",
    "Live event streams (text/event-stream responses) open now.",
    multiprocess_mode="livesum",
)
JOB_DURATION = Histogram(
    "helios_job_duration_seconds",
    "RQ jobs by function, from the work horse's fork to its end, whatever the outcome.",
    ["job"],
    buckets=JOB_BUCKETS,
)
JOB_FAILURES = Counter(
    "helios_job_failures",
    "RQ jobs that did not finish: they raised (retried or failed) or their work horse died.",
    ["job"],
)
DEPLOYMENTS = Counter(
    "helios_deployments",
    "Deployments that ended, by outcome (succeeded, failed).",
    ["status"],
)
BUILD_DURATION = Histogram(
    "helios_build_duration_seconds",
    "Builds that ended, from their start (or request) to their end, by outcome.",
    ["status"],
    buckets=BUILD_BUCKETS,
)


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


def observe_job(job_name: str, seconds: float, finished: bool) -> None:
    """Record one RQ job that ran ``seconds``; ``finished`` False counts a failure."""
    JOB_DURATION.labels(job=job_name).observe(seconds)
    if not finished:
        JOB_FAILURES.labels(job=job_name).inc()


def count_deployment(status: str) -> None:
    """Record a deployment that ended with ``status``."""
    DEPLOYMENTS.labels(status=status).inc()


def observe_build(status: str, started: datetime | None, finished: datetime | None) -> None:
    """Record a build that ended with ``status`` (no duration when a time is missing)."""
    if started is None or finished is None:
        return
    BUILD_DURATION.labels(status=status).observe(max(0.0, (finished - started).total_seconds()))


def forget_process(pid: int) -> None:
    """A child process ended and was reaped: drop its live gauges and fold its counters and
    histograms into the archive (they still count), then remove its files."""
    if _MULTIPROCESS_DIR:
        archive_process(pid, _MULTIPROCESS_DIR)


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------


class _QueueDepth:
    """Jobs in each RQ queue by state, read from Redis when Prometheus scrapes."""

    def __init__(self, connection: redis.Redis, queue_names: tuple[str, ...]) -> None:
        self.connection = connection
        self.queue_names = queue_names

    def collect(self) -> Iterator[Metric]:
        """One gauge family, or none when Redis does not answer (the scrape still succeeds)."""
        family = GaugeMetricFamily(
            "helios_queue_jobs", "Jobs in each RQ queue by state.", labels=["queue", "state"]
        )
        started = time.monotonic()
        try:
            for name in self.queue_names:
                queue = get_queue(self.connection, name)
                family.add_metric([name, "queued"], queue.count)
                family.add_metric([name, "started"], queue.started_job_registry.count)
                family.add_metric([name, "scheduled"], queue.scheduled_job_registry.count)
                family.add_metric([name, "failed"], queue.failed_job_registry.count)
        except redis.RedisError as exc:
            logger.warning("queue depth left out of /metrics: Redis did not answer: %s", exc)
            return
        yield family
        yield GaugeMetricFamily(
            "helios_queue_read_seconds",
            "Seconds reading the queue depths from Redis took in this scrape.",
            value=time.monotonic() - started,
        )


class _ProcessFiles:
    """Every process's samples, read from the multiprocess directory while no process's files
    are being folded into the archive (a count never shows twice nor goes down)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files = MultiProcessCollector(None, directory)

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's sum of the files, read under the directory's shared lock."""
        with reading(self.directory):
            metrics = list(self.files.collect())
        yield from metrics


class _ThisProcess:
    """This process's own metrics, when it keeps them in memory (no multiprocess dir)."""

    def collect(self) -> Iterator[Metric]:
        """Everything in prometheus-client's default registry."""
        yield from REGISTRY.collect()


def render_metrics(connection: redis.Redis, queue_names: tuple[str, ...]) -> bytes:
    """The text exposition of every Helios process's metrics and the queue depths."""
    registry = CollectorRegistry(auto_describe=False)
    if _MULTIPROCESS_DIR:
        registry.register(_ProcessFiles(_MULTIPROCESS_DIR))
    else:
        registry.register(_ThisProcess())
    registry.register(_QueueDepth(connection, queue_names))
    return generate_latest(registry)
