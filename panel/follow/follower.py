"""The follower: one process follows every registered deployment through Nomad's event stream.

A deploy job ends once Nomad accepted the job version; from then on the deployment is the
follower's. The follower

- subscribes to ``/v1/event/stream`` (topics Deployment and Evaluation, in NOMAD_NAMESPACE)
  from the index after the last one it handled, kept in the database (``follower_cursor``);
- watches the registered, running deployments of the database: loaded at start and on every
  (re)connect, told of new ones by the deploy job over Redis (``helios:follow``), and looked
  for again every few seconds in case a notice was lost;
- on every (re)connect, and whenever Nomad says the stream fell behind its buffer, reads each
  watched deployment's state once (``GET /v1/job/:id/deployments``) before it handles events:
  Nomad's buffer is small (``event_buffer_size``, 100 by default) and a subscriber whose index
  aged out silently resumes at the oldest event still buffered;
- judges states with the pure :mod:`panel.reconcile.follow` and records progress (at most once
  a second per deployment) and outcomes through :mod:`panel.actions.deployments`, whose conditional
  updates make a replayed or late event harmless;
- ends a deployment still running HELIOS_DEPLOY_TIMEOUT seconds after its start (a timer here,
  not a question to Nomad);
- treats a stream that sends nothing, not even Nomad's heartbeat (every 30 s), for
  HELIOS_FOLLOW_STALL_TIMEOUT seconds as broken, and reconnects with back-off;
- follows registered builds the same way, through their allocations' events (topic
  Allocation; see :mod:`panel.follow.builds`);
- collects apps' deploy and runtime logs from the same allocation events: task events and
  each started task's output (:mod:`panel.logs.runtime`);
- refreshes the heartbeat of every watched deployment (one UPDATE) and its own liveness key in
  Redis every few seconds, so the worker's sweep can tell an unwatched deployment.

Threads: the main loop decides and writes; one thread reads the event stream and one listens
for Redis notices, both only put what they read in the main loop's queue.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Any, Protocol

import peewee as pw
import redis

from panel.actions.apps import enqueue_prune
from panel.actions.builds import BUILD_FOLLOW_CHANNEL
from panel.actions.deployments import (
    FOLLOW_CHANNEL,
    FOLLOWER_ALIVE_KEY,
    finish_deployment,
    note_deployment,
    record_nomad_deployment,
    save_follower_cursor,
    touch_deployments,
)
from panel.actions.runs import RUN_FOLLOW_CHANNEL
from panel.config import Settings
from panel.db import database
from panel.drivers.nomad import (
    EventStream,
    NomadConnection,
    NomadDriver,
    NomadError,
    NomadErrorKind,
)
from panel.follow.builds import BuildWatcher
from panel.follow.runs import RunWatcher
from panel.follow.watch import Watch, Watched
from panel.logs.runtime import AppLogs
from panel.models import App, Deployment, DeploymentStatus, FollowerCursor
from panel.reconcile.follow import Outcome, judge_deployment, judge_evaluation, placed_anything

__all__ = ["Follower", "run_follower"]

logger = logging.getLogger(__name__)

# Deployment states and counts; placement failures; build allocations (panel.follow.builds).
TOPICS = ("Deployment", "Evaluation", "Allocation")
TICK = 0.25  # seconds the loop waits for news before it looks at its timers
HEARTBEAT_INTERVAL = 5.0  # seconds between heartbeats of the watched deployments and our own
ALIVE_TTL = 15  # seconds the liveness key outlives the follower's last heartbeat
SCAN_INTERVAL = 5.0  # seconds between looks in the database for deployments to watch
PROGRESS_INTERVAL = 1.0  # seconds between two progress writes of one deployment, at least
CURSOR_INTERVAL = 1.0  # seconds between two saves of the event index, at least
SOURCE_CHECK_INTERVAL = 10.0  # seconds between two looks at where the cluster connection comes from
BACKOFF = (1, 2, 4, 8, 15, 30)  # seconds before reconnecting, growing while Nomad stays away


# What a notice on each channel asks the loop to watch (FOLLOW_CHANNEL: a deployment).
_NOTICE_KINDS = {BUILD_FOLLOW_CHANNEL: "watch_build", RUN_FOLLOW_CHANNEL: "watch_run"}


class FollowerProcess(Protocol):
    """What :func:`run_follower` needs of its process (``panel.run.runtime.Process``).

    Named here rather than imported: the process layer starts the follower, not the reverse.
    """

    settings: Settings
    redis: redis.Redis
    stop_requested: threading.Event

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT set ``stop_requested``."""


class Follower:
    """Follows every registered deployment until it ends; ``run()`` returns once ``stop`` is set."""

    def __init__(
        self, settings: Settings, redis_conn: redis.Redis, stop: threading.Event | None = None
    ) -> None:
        self.settings = settings
        self.redis = redis_conn
        self.stop = stop or threading.Event()
        # NOMAD_ADDR, else what provisioning handed over; when that changes, run() returns
        # and run_follower starts following the new one.
        self.connection = NomadConnection.from_settings(settings)
        self.driver = NomadDriver(self.connection) if self.connection.address else None
        self.cursor_name = "|".join(
            ("nomad-events", self.connection.address, settings.nomad_namespace,
             settings.nomad_region)
        )  # fmt: skip
        self.next_source_check = 0.0
        self.ended = threading.Event()  # run() returned: its notices' thread stops too
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.watched = Watched()
        self.builds = BuildWatcher(settings, redis_conn, self.driver, self.stop)
        self.app_logs = AppLogs(settings, redis_conn, self.driver, self.builds.logs)
        self.runs = RunWatcher(settings, redis_conn, self.driver, self.builds.logs)
        self.lock = threading.Lock()  # guards stream and generation (the stream thread sets them)
        self.stream: EventStream | None = None
        self.generation = 0  # of the stream: items of an older stream are ignored
        self.connecting = False  # a stream is being opened by its thread
        self.connected = False  # a stream is open and every watch was read after it opened
        self.requested_index = 0
        self.first_index: int | None = None
        self.failures = 0
        self.reconnect_at = 0.0
        self.index = 0  # of the last event batch handled
        self.saved_index = 0
        self.next_beat = self.next_scan = self.next_save = 0.0
        self.counters = {"connects": 0, "resyncs": 0, "gaps": 0, "finished": 0}

    # -- the loop ------------------------------------------------------------------------------

    def _connection_changed(self) -> bool:
        """Whether the cluster connection is no longer the one followed (checked every
        SOURCE_CHECK_INTERVAL seconds): a newly provisioned cluster needs no restart."""
        now = time.monotonic()
        if now < self.next_source_check:
            return False
        self.next_source_check = now + SOURCE_CHECK_INTERVAL
        current = NomadConnection.from_settings(self.settings)
        if current == self.connection:
            return False
        logger.info(
            "the Nomad connection changed (%s → %s): following the new one",
            self.connection.address or "no cluster",
            current.address or "no cluster",
        )
        return True

    def run(self) -> None:
        """Follow until stopped, or until the cluster connection changes."""
        listener = threading.Thread(target=self._listen, name="follower-notices", daemon=True)
        listener.start()
        with database.connection_context():
            cursor = FollowerCursor.get_or_none(FollowerCursor.name == self.cursor_name)
            self.index = self.saved_index = cursor.event_index if cursor else 0
            self._scan()
        if self.driver is None:
            logger.warning("no Nomad cluster configured (NOMAD_ADDR): nothing to follow")
        try:
            while not self.stop.is_set() and not self._connection_changed():
                idle = self.stream is None and not self.connecting
                if self.driver is not None and idle and time.monotonic() >= self.reconnect_at:
                    self._connect()
                self._handle(self._next_items())
                self._timers()
        finally:
            self._close_stream()
            try:
                with database.connection_context():
                    self._save_cursor(force=True)
            except pw.PeeweeException as exc:
                logger.warning("event index not saved: %s", exc)
            self.ended.set()
            listener.join(timeout=5)

    def _next_items(self) -> list[tuple[Any, ...]]:
        """What arrived within TICK seconds (everything queued, once the first one is here)."""
        try:
            items = [self.inbox.get(timeout=TICK)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                return items

    def _handle(self, items: list[tuple[Any, ...]]) -> None:
        if not items:
            return
        try:
            with database.connection_context():
                for item in items:
                    try:
                        self._handle_one(item)
                    except pw.PeeweeException:
                        raise
                    except Exception:  # a bug with one item must not stop the others
                        logger.exception("follower: could not handle %s", item[:2])
        except pw.PeeweeException as exc:  # the database is away: read Nomad again later
            logger.warning("database error, reconnecting to Nomad to read again: %s", exc)
            self._drop_stream(backoff=True)

    def _handle_one(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "watch":
            self._watch_id(item[1])
        elif kind == "watch_build":
            self._watch_build(item[1])
        elif kind == "watch_run":
            self._watch_run(item[1])
        elif item[1] != self.generation:
            return  # from a stream closed since
        elif kind == "frame":
            self._on_frame(item[2])
        elif kind == "opened":
            self._opened()
        elif kind == "failed":
            self.connecting = False
            self._connect_failed(item[2])
        elif kind == "ended":
            logger.warning("%s — reconnecting", item[2])
            self._drop_stream(backoff=True)

    # -- the stream ------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open a stream after the last index handled, in the stream's own thread."""
        self.requested_index = self.index + 1 if self.index else 0
        with self.lock:
            self.generation += 1
            self.connecting, self.first_index = True, None
        threading.Thread(
            target=self._read,
            args=(self.generation, self.requested_index),
            name="follower-stream",
            daemon=True,
        ).start()

    def _read(self, generation: int, index: int) -> None:
        """The stream's thread: open it, then put every line in the inbox, then how it ended."""
        assert self.driver is not None
        try:
            # Every namespace: each team's apps run in their own (events name their job).
            stream = self.driver.in_namespace("*").open_event_stream(
                index=index, topics=TOPICS, read_timeout=self.settings.follow_stall_timeout
            )
        except NomadError as exc:
            self.inbox.put(("failed", generation, exc))
            return
        with self.lock:
            current = generation == self.generation and not self.stop.is_set()
            if current:
                self.stream = stream
        if not current:
            stream.close()
            return
        self.inbox.put(("opened", generation))
        try:
            for frame in stream:
                self.inbox.put(("frame", generation, frame))
            ended = "Nomad closed the event stream"
        except NomadError as exc:
            ended = f"event stream: {exc}"
        self.inbox.put(("ended", generation, ended))

    def _opened(self) -> None:
        """The stream is open: read every watched deployment, then handle its events."""
        self.connecting = False
        self.counters["connects"] += 1
        try:
            self._scan(resync=False)
            self._resync_all()
        except NomadError as exc:
            self._close_stream()
            self._connect_failed(exc)
            return
        self.connected = True
        logger.info(
            "following %d deployment(s) through Nomad's event stream from index %d",
            len(self.watched), self.requested_index,
        )  # fmt: skip

    def _connect_failed(self, exc: NomadError) -> None:
        self.failures += 1
        delay = BACKOFF[min(self.failures, len(BACKOFF)) - 1]
        self.reconnect_at = time.monotonic() + delay
        logger.warning("%s — connecting again in %d s", exc, delay)

    def _drop_stream(self, *, backoff: bool) -> None:
        """Close the stream; the loop opens a new one (at once, or after a back-off)."""
        self._close_stream()
        if backoff:
            self.failures += 1
            self.reconnect_at = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF)) - 1]
        else:
            self.reconnect_at = 0.0

    def _close_stream(self) -> None:
        with self.lock:
            stream, self.stream = self.stream, None
            self.generation += 1
            self.connected = self.connecting = False
        if stream is not None:
            stream.close()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if "Error" in frame:
            # Nomad ends a stream that fell out of its buffer with this text: events were lost.
            self.counters["gaps"] += 1
            logger.warning("Nomad's event stream: %s — reading every deployment again", frame)
            self._drop_stream(backoff=False)
            return
        self.failures = 0
        index = frame.get("Index")
        if index is None:
            return  # a heartbeat
        if self.first_index is None:
            self.first_index = index
            if self.requested_index and index > self.requested_index:
                # Not necessarily lost (writes without events leave gaps in the index), but
                # every watched deployment was read after the stream opened: nothing is.
                logger.info("event stream resumed at index %d (asked for %d)", index,
                            self.requested_index)  # fmt: skip
        for event in frame.get("Events") or ():
            payload = (event.get("Payload") or {}).get(event.get("Topic"), {})
            if event.get("Topic") == "Deployment":
                watch = self.watched.by_version(payload.get("JobID"), payload.get("JobVersion"))
                if watch is not None and self._same_namespace(watch, payload):
                    self._apply_deployment(watch, payload)
            elif event.get("Topic") == "Evaluation":
                watch = self.watched.by_evaluation(payload.get("ID"))
                if watch is not None:
                    self._apply_evaluation(watch, payload)
            elif event.get("Topic") == "Allocation":
                self.builds.on_allocation(payload)
                self.runs.on_allocation(payload)
                self.app_logs.on_allocation(payload)
        self.index = max(self.index, index)

    def _same_namespace(self, watch: Watch, payload: dict[str, Any]) -> bool:
        """Whether an event's object is in the watched job's namespace (a moved team's app
        has a job of the same name in its old namespace)."""
        namespace = payload.get("Namespace")
        return not namespace or namespace == (watch.namespace or self.settings.nomad_namespace)

    # -- judging ---------------------------------------------------------------------------------

    def _apply_deployment(self, watch: Watch, deployment: dict[str, Any]) -> None:
        """Apply a state of Nomad's deployment unless a newer one was applied already."""
        index = deployment.get("ModifyIndex") or 0
        if index and index <= watch.seen_index:
            return
        watch.seen_index = index
        if deployment.get("ID") and watch.nomad_deployment_id != deployment["ID"]:
            watch.nomad_deployment_id = deployment["ID"]
            record_nomad_deployment(watch.deployment_id, deployment["ID"])
        watch.placed = watch.placed or placed_anything(deployment)
        verdict = judge_deployment(deployment)
        if isinstance(verdict, Outcome):
            self._finish(watch, verdict)
        else:
            watch.progress = verdict

    def _apply_evaluation(self, watch: Watch, evaluation: dict[str, Any]) -> None:
        outcome = judge_evaluation(evaluation, placed=watch.placed)
        if outcome is not None:
            self._finish(watch, outcome)

    def _resync(self, watch: Watch) -> None:
        """Read one deployment's state from Nomad (one GET; the evaluation only when nothing
        was placed yet)."""
        assert self.driver is not None
        self.counters["resyncs"] += 1
        try:
            found = self.driver.in_namespace(watch.namespace).job_deployments(watch.job_id)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.NOT_FOUND:
                raise
            self._finish(
                watch,
                Outcome(
                    DeploymentStatus.CANCELLED,
                    f"Nomad has no job {watch.job_id!r} any more (stopped and purged)",
                ),
            )
            return
        ours = [d for d in found if d.get("JobVersion") == watch.version]
        if ours:
            self._apply_deployment(watch, max(ours, key=lambda d: d.get("CreateIndex", 0)))
        if watch.deployment_id in self.watched and not watch.placed and watch.eval_id:
            evaluation = self.driver.in_namespace(watch.namespace).evaluation(watch.eval_id)
            self._apply_evaluation(watch, evaluation)

    def _resync_all(self) -> None:
        for watch in self.watched.all():
            self._resync(watch)
        self.builds.resync_all()
        self.runs.resync_all()
        self.app_logs.resync()

    def _finish(self, watch: Watch, outcome: Outcome) -> None:
        self.watched.remove(watch.deployment_id)
        if finish_deployment(watch.deployment_id, outcome, self.redis):
            self.counters["finished"] += 1
            enqueue_prune(self.redis, watch.app_id)

    # -- the database ----------------------------------------------------------------------------

    def _scan(self, resync: bool = True) -> None:
        """Watch every registered running deployment; forget those that ended elsewhere."""
        rows = (
            Deployment.select(Deployment, App)
            .join(App)
            .where(
                (Deployment.status == DeploymentStatus.RUNNING.value)
                & Deployment.nomad_job_version.is_null(False)
            )
        )
        found = {row.id: row for row in rows}
        for deployment_id in self.watched.ids():
            if deployment_id not in found:
                self.watched.remove(deployment_id)
        for deployment_id, row in sorted(found.items()):
            if deployment_id not in self.watched:
                self._add(row, resync=resync)
        self.builds.scan(resync=resync and self.connected)
        self.runs.scan(resync=resync and self.connected)

    def _watch_build(self, build_id: int) -> None:
        """A build job said Nomad accepted this build."""
        try:
            self.builds.watch_id(build_id, resync=self.connected)
        except NomadError as exc:
            logger.warning("%s — reconnecting", exc)
            self._drop_stream(backoff=True)

    def _watch_run(self, run_id: int) -> None:
        """A run job said Nomad accepted this one-off run."""
        try:
            self.runs.watch_id(run_id, resync=self.connected)
        except NomadError as exc:
            logger.warning("%s — reconnecting", exc)
            self._drop_stream(backoff=True)

    def _watch_id(self, deployment_id: int) -> None:
        """A deploy job said Nomad accepted this deployment."""
        if deployment_id in self.watched:
            return
        row = Deployment.get_or_none(Deployment.id == deployment_id)
        if row is not None and row.status == DeploymentStatus.RUNNING.value and row.registered:
            self._add(row, resync=True)

    def _add(self, row: Deployment, *, resync: bool) -> None:
        watch = Watch.of(row, self.settings.deploy_timeout)
        self.watched.add(watch)
        if resync and self.connected:
            try:
                self._resync(watch)
            except NomadError as exc:
                logger.warning("%s — reconnecting", exc)
                self._drop_stream(backoff=True)

    def _save_cursor(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.index == self.saved_index or (now < self.next_save and not force):
            return
        save_follower_cursor(self.cursor_name, self.index)
        self.saved_index, self.next_save = self.index, now + CURSOR_INTERVAL

    # -- timers ----------------------------------------------------------------------------------

    def _timers(self) -> None:
        """Deadlines, progress writes, heartbeats, scans and the cursor, when due."""
        now = time.monotonic()
        expired = [w for w in self.watched.all() if now >= w.deadline]
        progress = [
            w
            for w in self.watched.all()
            if w.progress and w.progress != w.written and now - w.written_at >= PROGRESS_INTERVAL
        ]
        beat, scan = now >= self.next_beat, now >= self.next_scan
        save = self.index != self.saved_index and now >= self.next_save
        builds = bool(self.builds.watched) or bool(self.runs.watched)
        if not (expired or progress or beat or scan or save or builds):
            return
        try:
            with database.connection_context():
                self.builds.timers(now)
                self.runs.timers(now)
                for watch in expired:
                    self._finish(watch, self._timed_out(watch))
                for watch in progress:
                    note_deployment(watch.deployment_id, watch.progress, self.redis)
                    watch.written, watch.written_at = watch.progress, now
                if beat:
                    self._beat()
                    self.next_beat = now + HEARTBEAT_INTERVAL
                if scan:
                    self._scan()
                    self.next_scan = now + SCAN_INTERVAL
                self._save_cursor()
        except pw.PeeweeException as exc:
            logger.warning("database error in the follower (trying again): %s", exc)
        except Exception:  # a bug must not stop the follower: the next tick tries again
            logger.exception("follower: timers failed")

    def _timed_out(self, watch: Watch) -> Outcome:
        timeout = self.settings.deploy_timeout
        return Outcome(
            DeploymentStatus.FAILED,
            f"Nomad's deployment did not finish within {timeout} s of the start "
            f"(HELIOS_DEPLOY_TIMEOUT); it may still be running: see `nomad job status "
            f"{watch.job_id}`",
        )

    def _beat(self) -> None:
        touch_deployments(self.watched.ids())
        self.builds.beat()
        try:
            self.redis.set(
                FOLLOWER_ALIVE_KEY, f"{socket.gethostname()}:{os.getpid()}", ex=ALIVE_TTL
            )
        except redis.RedisError as exc:
            logger.warning("liveness not recorded in Redis: %s", exc)

    # -- notices from deploy jobs ----------------------------------------------------------------

    def _listen(self) -> None:
        """The notices' thread: deployment ids published by deploy jobs into the inbox."""
        while not self.stop.is_set() and not self.ended.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(FOLLOW_CHANNEL, BUILD_FOLLOW_CHANNEL, RUN_FOLLOW_CHANNEL)
                while not self.stop.is_set() and not self.ended.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        channel = message.get("channel")
                        channel = channel.decode() if isinstance(channel, bytes) else channel
                        kind = _NOTICE_KINDS.get(channel, "watch")
                        self.inbox.put((kind, int(message["data"])))
            except (redis.RedisError, ValueError) as exc:  # the database scan covers the gap
                logger.warning("Redis notices interrupted: %s", exc)
                self.stop.wait(2)
            finally:
                pubsub.close()


def run_follower(process: FollowerProcess) -> int:
    """`helios follower`: follow deployments until SIGTERM or SIGINT; the exit code."""
    process.install_signal_handlers()
    while not process.stop_requested.is_set():
        follower = Follower(process.settings, process.redis, process.stop_requested)
        where = follower.connection.address or "no cluster"
        namespace = process.settings.nomad_namespace
        logger.info("follower started for %s, namespace %s", where, namespace)
        follower.run()
    logger.info("follower stopped")
    return 0
