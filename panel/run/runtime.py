"""The one way every Helios process starts: settings, logging, connections, graceful stop.

``helios panel``, ``helios worker`` and ``helios up`` all call :func:`start_process` first.
Stopping is graceful on SIGTERM and SIGINT alike: the panel drains requests in flight (gunicorn's
graceful stop), the worker finishes its current job (RQ's warm shutdown), ``helios up`` passes
the request on to its children and waits for them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

import peewee as pw
import redis

from panel import cluster_access
from panel.config import Settings
from panel.db import open_database
from panel.queue import connect_redis
from panel.run.log_format import TEXT_FORMAT, JsonFormatter, set_process_name

__all__ = [
    "JsonFormatter",
    "JsonStderr",
    "Process",
    "configure_logging",
    "logs_json",
    "metrics_dir",
    "start_process",
]

logger = logging.getLogger(__name__)

QUIET_LOGGERS = ("peewee", "oauthlib", "requests_oauthlib")
# One-shot `helios` commands: what they print is their answer, so they log warnings and errors
# only (everything under HELIOS_LOG_LEVEL=debug); the services log at HELIOS_LOG_LEVEL.
ONE_SHOT_PROCESSES = frozenset({"cli", "admin", "db"})
DATA_DIR_MODE = 0o700  # the data dir holds the database, keys and the Redis socket
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when first imported


def configure_logging(settings: Settings, name: str) -> None:
    """Send logs to stderr, as text or JSON per HELIOS_LOG_FORMAT."""
    set_process_name(name)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Python's warnings are log records too (in JSON: one document each, never a bare line).
    logging.captureWarnings(True)
    if settings.log_format == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(
            args.exc_type, args.exc_value, args.exc_traceback
        )
    level = logging.getLevelName(settings.log_level.upper())
    if name in ONE_SHOT_PROCESSES and settings.log_level != "debug":
        level = max(level, logging.WARNING)
    root.setLevel(level)
    # These libraries log secrets at DEBUG, so they stay at INFO even when Helios debugs:
    # peewee every SQL statement with its parameters (password, session and token hashes),
    # oauthlib and requests-oauthlib the token request (client secret, PKCE verifier, tokens).
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    if settings.log_level != "debug":
        # One line per table created is noise for operators; the summary is logged by us.
        logging.getLogger("peewee_migrate").setLevel(logging.WARNING)


class JsonStderr:
    """A stand-in for sys.stderr in a process logging JSON, for what writes to it directly
    rather than through logging (multiprocessing prints the traceback of a child that failed
    that way): each line becomes a JSON document, so the stream stays one object a line."""

    def __init__(self, stream: TextIO, process: str) -> None:
        self._stream = stream
        self._process = process
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._stream.write(self._document(line) + "\n")
        return len(text)

    def _document(self, line: str) -> str:
        return json.dumps({
            "time": datetime.now(UTC).isoformat(), "level": "error", "logger": "stderr",
            "pid": os.getpid(), "process": self._process, "message": line,
        })  # fmt: skip

    def flush(self) -> None:
        if self._pending.strip():
            self._stream.write(self._document(self._pending) + "\n")
        self._pending = ""
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False


def logs_json() -> bool:
    """Whether this process's log handler writes JSON (HELIOS_LOG_FORMAT=json)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def _log_uncaught(exc_type, exc_value, exc_traceback) -> None:
    """An exception nothing caught, logged as one record (JSON logs stay one object a line)."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc_value, exc_traceback)
        return
    logger.critical("uncaught exception", exc_info=(exc_type, exc_value, exc_traceback))


class Process:
    """A started Helios process: its settings, database, Redis client and stop request."""

    def __init__(self, name: str, settings: Settings, database: pw.Database) -> None:
        self.name = name
        self.settings = settings
        self.database = database
        self.redis: redis.Redis = connect_redis(settings)
        self.stop_requested = threading.Event()
        self._on_stop: list[Callable[[int], None]] = []

    def on_stop(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` when SIGTERM or SIGINT arrives."""
        self._on_stop.append(callback)

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to a graceful stop."""
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)

    def _handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            logger.info("%s: stop already under way", self.name)
            return
        logger.info("%s: %s received, stopping gracefully", self.name, signal.Signals(signum).name)
        self.stop_requested.set()
        for callback in self._on_stop:
            callback(signum)


def _make_private_dir(path: Path) -> None:
    """Create the data dir 0700, or tighten an existing one that others can read."""
    path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(DATA_DIR_MODE)
    except PermissionError:
        logger.warning("%s is readable by others and not ours to chmod: make it 0700", path)


def metrics_dir(settings: Settings) -> Path:
    """Where every Helios process of this data dir writes its Prometheus samples."""
    return settings.data_dir / "metrics"


def _share_metrics(settings: Settings) -> None:
    # Before anything imports prometheus-client (panel.metrics), which then writes this
    # process's samples to files there, as every child inheriting the variable will.
    path = metrics_dir(settings)
    path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    os.environ[METRICS_DIR_ENV] = str(path.resolve())


def start_process(name: str, settings: Settings | None = None) -> Process:
    """Load settings, set up logging, open the database and Redis clients for a process."""
    settings = settings or Settings.from_env()
    configure_logging(settings, name)
    _make_private_dir(settings.data_dir)
    _share_metrics(settings)
    database = open_database(settings.effective_database_url)
    cluster_access.install()  # without NOMAD_ADDR: the cluster provisioning handed over
    logger.info("%s starting (pid %d)", name, os.getpid())
    return Process(name, settings, database)
