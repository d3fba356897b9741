"""Build log collectors: each stream of a running build followed from Nomad, scrubbed, stored.

The follower calls :meth:`LogCollectors.follow` with each new state of a build's allocation;
once a task started (or the allocation is over), that starts a thread and returns, so the
follower's loop never waits on a log, and nothing polls Nomad for a task yet to start. The
thread reads the stored offsets and the build's secrets (the registry password and the git
token), then runs one thread per stream of the task (stdout, stderr) that

- follows the stream through Nomad's logs API from the byte after what was stored
  (``origin=start``), so a restarted follower resumes where the last one stopped;
- cuts what arrives after its last newline (a line longer than a chunk is cut at the chunk's
  size), scrubs it with a :class:`~panel.logs.scrub.ByteStreamScrubber` (one per stream, so a
  secret cut between two reads is still caught) and stores it through
  :func:`panel.actions.logs.append_log`, which publishes it once committed;
- stores with check-and-set on the stream's offset: when another collector (another follower)
  stored first, it starts again from what is stored, so no line is stored twice;
- ends the stream (``end_log_stream``) once Nomad ended it and the task is dead, or when the
  task never started and the allocation is over, or the allocation is gone;
- reconnects from where it is, after a pause, when the connection breaks or stays silent for
  ``READ_TIMEOUT`` seconds (a quiet build is not broken: reconnecting loses nothing).

Not caught: text the scrubber holds back when a collector dies (a possible start of a secret
at the end of what was read) is read again by the next collector only when no chunk was stored
after it; with secrets of one line, nothing is held back at the end of a line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from panel.actions.logs import (
    MAX_CHUNK_BYTES,
    Appended,
    append_log,
    end_log_stream,
    stream_offsets,
)
from panel.cluster_access import with_stored_registry
from panel.config import Settings
from panel.crypto import SecretKeyError
from panel.db import database
from panel.drivers.nomad import LogStream, NomadDriver, NomadError, NomadErrorKind
from panel.logs.scrub import ByteStreamScrubber, Scrubber
from panel.models import App, Build
from panel.reconcile.builds import git_token_for
from panel.render.build import BUILD_TASK, FETCH_TASK

__all__ = ["BuildSink", "LogCollectors", "Sink", "build_scrubber"]

logger = logging.getLogger(__name__)

READ_TIMEOUT = 300.0  # seconds of silence after which a followed log is opened again
RETRY_DELAYS = (0.5, 1, 2, 5)  # seconds before opening a stream again, growing while it fails
_TERMINAL = ("complete", "failed", "lost")


def build_scrubber(app: App, settings: Settings) -> Scrubber:
    """The scrubber of a build's logs: the secrets the build knows."""
    settings = with_stored_registry(settings)
    try:
        token = git_token_for(app, settings) or ""
    except SecretKeyError:  # unreadable: then no build could have received it either
        token = ""
    return Scrubber({"HELIOS_REGISTRY_PASSWORD": settings.registry_password, "GIT_TOKEN": token})


class Sink(Protocol):
    """Where one allocation's streams are stored: a build's log or an app's."""

    label: str  # for the worker's log: "build #12", "app web"

    def offsets(self) -> dict[tuple[str, str], tuple[int, bool]]:
        """(task, stream) → (bytes stored so far, ended)."""

    def append(self, task: str, kind: str, text: str, *, after: int, offset: int) -> Appended:
        """Store scrubbed text read from byte ``after`` to ``offset`` (check-and-set)."""

    def end(self, task: str, kind: str, *, offset: int) -> None:
        """Record that Nomad ended the stream."""


class BuildSink:
    """A build's log (``log_chunk``)."""

    def __init__(self, build_id: int, settings: Settings, redis_conn: redis.Redis) -> None:
        self.build_id, self.settings, self.redis = build_id, settings, redis_conn
        self.label = f"build #{build_id}"

    def offsets(self) -> dict[tuple[str, str], tuple[int, bool]]:
        return stream_offsets(self.build_id)

    def append(self, task: str, kind: str, text: str, *, after: int, offset: int) -> Appended:
        return append_log(
            self.build_id, task, kind, text, after=after, offset=offset,
            max_bytes=self.settings.log_max_bytes, redis_conn=self.redis,
        )  # fmt: skip

    def end(self, task: str, kind: str, *, offset: int) -> None:
        end_log_stream(self.build_id, task, kind, offset=offset, redis_conn=self.redis)


@dataclass
class _Stream:
    """One followed stream of one allocation's task: where it is in Nomad's log and stored."""

    sink: Sink
    job_id: str
    alloc_id: str
    task: str
    kind: str
    scrubber: Scrubber
    offset: int = 0  # bytes of the stream stored (fed to the scrubber and saved)
    full: bool = False  # the log reached its cap: what follows is read and dropped


class LogCollectors:
    """The collectors of one follower; ``stop`` ends them all (their streams are closed)."""

    def __init__(self, settings: Settings, redis_conn: redis.Redis, stop: threading.Event):
        self.settings = settings
        self.redis = redis_conn
        self.stop = stop
        self.lock = threading.Lock()
        self.started: set[tuple[int, str, str]] = set()  # (build, allocation, task)
        self.open: set[LogStream] = set()
        self.threads: list[threading.Thread] = []
        # Per (key, allocation): the threads collecting it, so an end can wait for its output.
        self.groups: dict[tuple[Any, str], list[threading.Thread]] = {}
        self._closer: threading.Thread | None = None

    def follow(self, build_id: int, job_id: str, alloc: dict[str, Any]) -> None:
        """Collect the logs of each task of a build's allocation that started (or that never
        will: the allocation is over); returns at once."""
        alloc_id = alloc.get("ID", "")
        states = alloc.get("TaskStates") or {}
        over = alloc.get("ClientStatus") in _TERMINAL
        tasks = [
            task
            for task in (FETCH_TASK, BUILD_TASK)
            if over or (states.get(task) or {}).get("StartedAt")
            or (states.get(task) or {}).get("State") == "dead"
        ]  # fmt: skip
        self.follow_tasks(build_id, job_id, alloc_id, tasks, lambda: self._build_sink(build_id))

    def follow_tasks(
        self, key: Any, job_id: str, alloc_id: str, tasks: list[str],
        prepare: Callable[[], tuple[Sink, Scrubber] | None], *, track: bool = False,
    ) -> None:  # fmt: skip
        """Collect the output of ``tasks`` of an allocation (each once per ``key``): in a thread,
        ``prepare()`` gives the sink and the scrubber (None: nothing to collect). ``track``:
        remember the threads, for :meth:`wait_for` (which forgets them)."""
        with self.lock:
            if self.stop.is_set():
                return
            tasks = [task for task in tasks if (key, alloc_id, task) not in self.started]
            self.started.update((key, alloc_id, task) for task in tasks)
            if tasks and self._closer is None:
                self._closer = self._thread(self._close_on_stop, "log-closer")
        group = (key, alloc_id) if track else None
        for task in tasks:
            self._thread(lambda t=task: self._start_with(key, job_id, alloc_id, t, prepare),
                         f"logs-{alloc_id[:8]}-{task}", group)  # fmt: skip

    def wait_for(self, key: Any, alloc_id: str, timeout: float) -> bool:
        """Wait until the output of ``key``'s allocation is collected (its streams end when its
        tasks are over), at most ``timeout`` seconds; True when it all was."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                pending = [t for t in self.groups.get((key, alloc_id), []) if t.is_alive()]
                if not pending:
                    self.groups.pop((key, alloc_id), None)
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pending[0].join(left)

    def join(self, timeout: float) -> None:
        """Wait for every collector thread to end (tests; the follower does not wait)."""
        for thread in list(self.threads):
            thread.join(timeout)

    def _thread(
        self, target: Callable[[], None], name: str, group: tuple[Any, str] | None = None
    ) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(thread)
        if group is not None:
            with self.lock:
                self.groups.setdefault(group, []).append(thread)
        thread.start()
        return thread

    def _close_on_stop(self) -> None:
        self.stop.wait()
        with self.lock:
            streams = list(self.open)
        for stream in streams:
            stream.close()

    def _build_sink(self, build_id: int) -> tuple[Sink, Scrubber] | None:
        """A build's sink and the scrubber of its secrets (None: the build is gone)."""
        build = Build.select(Build, App).join(App).where(Build.id == build_id).first()
        if build is None:
            return None
        scrubber = build_scrubber(build.app, self.settings)
        return BuildSink(build_id, self.settings, self.redis), scrubber

    def _start_with(
        self, key: Any, job_id: str, alloc_id: str, task: str,
        prepare: Callable[[], tuple[Sink, Scrubber] | None],
    ) -> None:  # fmt: skip
        """Read the stored offsets and the secrets, then start a thread per unfinished stream."""
        try:
            with database.connection_context():
                prepared = prepare()
                if prepared is None:
                    return
                sink, scrubber = prepared
                offsets = sink.offsets()
        except Exception:
            logger.exception("%s: the log collectors of %s did not start", key, task)
            with self.lock:
                self.started.discard((key, alloc_id, task))
            return
        for kind in ("stdout", "stderr"):
            offset, ended = offsets.get((task, kind), (0, False))
            if not ended:
                stream = _Stream(sink, job_id, alloc_id, task, kind, scrubber, offset)
                group = (key, alloc_id)
                self._thread(lambda s=stream: self._collect(s),
                             f"logs-{alloc_id[:8]}-{task}-{kind}",
                             group if group in self.groups else None)  # fmt: skip

    # -- one stream ----------------------------------------------------------------------------

    def _collect(self, stream: _Stream) -> None:
        """Follow one stream until Nomad ended it for good (or the follower stops)."""
        driver = NomadDriver.from_settings(self.settings)  # a session per thread
        failures = 0
        while not self.stop.is_set():
            try:
                with database.connection_context():
                    if self._read(driver, stream):
                        return
                failures = 0
            except NomadError as exc:
                if exc.kind == NomadErrorKind.NOT_FOUND:  # not started yet, or gone
                    if self._ended(driver, stream):
                        return
                else:  # broken, silent, Nomad away: a dead task's log is still there to read
                    logger.info("%s %s %s: %s — reading again", stream.sink.label,
                                stream.task, stream.kind, exc)  # fmt: skip
            except Exception:  # a bug or the database away: try again, never kill the follower
                logger.exception("%s %s %s: log collection failed", stream.sink.label,
                                 stream.task, stream.kind)  # fmt: skip
            failures += 1
            self.stop.wait(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])

    def _read(self, driver: NomadDriver, stream: _Stream) -> bool:
        """Follow the stream once from its offset; True when it ended for good."""
        scrub = ByteStreamScrubber(stream.scrubber)  # a fresh start at a stored offset
        log = driver.follow_log(
            stream.alloc_id, stream.task, stderr=stream.kind == "stderr", offset=stream.offset,
            read_timeout=READ_TIMEOUT,
        )  # fmt: skip
        with self.lock:
            self.open.add(log)
            if self.stop.is_set():  # stopped while it opened: the closer did not see it
                log.close()
        pending, fed = b"", 0  # read but not fed; fed but held back by the scrubber
        try:
            for piece in log:
                pending += piece
                # Whole lines; and a line longer than a chunk so far, as it is.
                cut = pending.rfind(b"\n") + 1
                if len(pending) - cut >= MAX_CHUNK_BYTES:
                    cut = len(pending)
                if not cut:
                    continue
                text, fed, pending = scrub.feed(pending[:cut]), fed + cut, pending[cut:]
                if text:
                    if not self._store(stream, text, fed):
                        return False  # another collector stored first: start again from there
                    fed = 0
        finally:
            with self.lock:
                self.open.discard(log)
        if self.stop.is_set() or not self._ended_in_nomad(driver, stream):
            return False
        rest = scrub.feed(pending) + scrub.flush()
        if (rest or fed) and not self._store(stream, rest, fed + len(pending)):
            return False
        self._finish(stream)
        return True

    def _store(self, stream: _Stream, text: str, size: int) -> bool:
        """Store scrubbed text covering ``size`` more bytes; False when the offset moved."""
        if stream.full:
            stream.offset += size
            return True
        done = stream.sink.append(stream.task, stream.kind, text, after=stream.offset,
                                  offset=stream.offset + size)  # fmt: skip
        if done.conflict:
            stream.offset = stream.sink.offsets().get((stream.task, stream.kind), (0, False))[0]
            return False
        stream.full = done.truncated
        stream.offset += size
        return True

    def _finish(self, stream: _Stream) -> None:
        stream.sink.end(stream.task, stream.kind, offset=stream.offset)

    # -- what Nomad says of the task -----------------------------------------------------------

    def _task(self, driver: NomadDriver, stream: _Stream) -> tuple[dict[str, Any] | None, str]:
        """(the allocation or None when gone, the task's state)."""
        # By the allocation's id: that reads in whichever namespace its job runs.
        try:
            alloc = driver.allocation(stream.alloc_id)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.NOT_FOUND:
                raise
            return None, ""
        state = ((alloc or {}).get("TaskStates") or {}).get(stream.task) or {}
        return alloc, state.get("State", "")

    def _ended_in_nomad(self, driver: NomadDriver, stream: _Stream) -> bool:
        """Nomad ended the followed log: because the task is dead (or its allocation gone)?"""
        alloc, state = self._task(driver, stream)
        return alloc is None or state == "dead" or alloc.get("ClientStatus") in _TERMINAL

    def _ended(self, driver: NomadDriver, stream: _Stream) -> bool:
        """The log cannot be read (not started, or gone): end the stream when the task is over."""
        try:
            over = self._ended_in_nomad(driver, stream)
        except NomadError:
            return False
        if over:
            with database.connection_context():
                self._finish(stream)
        return over
