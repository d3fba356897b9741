"""Actions on logs: store a scrubbed chunk of a task's output, mark a stream's end.

Build logs (``log_chunk``, one build's fetch and build tasks) and app logs (``app_log``: a
deployment's steps, its allocations' task events and output) are stored the same way.

The collectors (``panel.logs.collect``) scrub what Nomad sends and call these; nothing else
writes log rows. Each stored row is published on ``helios:logs`` once its transaction commits,
so a live page never shows a chunk the database could still lose. A build's log is bounded by
HELIOS_LOG_MAX_BYTES: the chunk that would pass it is replaced by the line "log truncated at N
bytes" after the whole lines that fit, and nothing more is stored after it (the ends of
streams still are: they hold no text).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw
import redis

from panel.db import database
from panel.models import AppLog, Deployment, LogChunk

__all__ = [
    "APP_STREAMS",
    "LOG_CHANNEL",
    "MAX_CHUNK_BYTES",
    "OUTPUT_STREAMS",
    "Appended",
    "app_log_document",
    "app_stream_offsets",
    "append_app_log",
    "append_log",
    "append_task_events",
    "end_app_stream",
    "end_log_stream",
    "log_document",
    "log_run_step",
    "log_step",
    "prune_app_logs",
    "prune_build_logs",
    "stream_offsets",
    "truncation_line",
]

logger = logging.getLogger(__name__)

LOG_CHANNEL = "helios:logs"  # each stored chunk, as JSON {build_id, seq, task, stream, text}
MAX_CHUNK_BYTES = 16_384  # bytes of UTF-8 in one row's text, at most
TASKS = ("fetch", "build")
STREAMS = ("stdout", "stderr")
_SEQ_RETRIES = 5  # two writers of one build may pick the same seq (PostgreSQL): try again


@dataclass(frozen=True)
class Appended:
    """What an append stored: the rows' seqs, whether the log is full (truncated), and
    whether the stream's stored offset was not the one expected (nothing stored)."""

    seqs: tuple[int, ...]
    truncated: bool = False
    conflict: bool = False


def truncation_line(max_bytes: int) -> str:
    """The last line of a log cut at ``max_bytes``."""
    return f"log truncated at {max_bytes} bytes\n"


def log_document(row: LogChunk) -> dict:
    """A stored chunk as published and as its live stream sends it."""
    return {
        "build_id": row.build_id,
        "seq": row.seq,
        "task": row.task,
        "stream": row.stream,
        "text": row.text,
        "final": row.final,
    }


def split_text(text: str, limit: int = MAX_CHUNK_BYTES) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes of UTF-8, cut after a newline when one is
    in the piece, never inside a character."""
    pieces, data = [], text.encode("utf-8", "surrogatepass")
    while data:
        piece = data[:limit]
        if len(data) > limit:
            newline = piece.rfind(b"\n")
            piece = piece[: newline + 1] if newline >= 0 else piece
            while piece and (data[len(piece)] & 0xC0) == 0x80:  # a continuation byte follows
                piece = piece[:-1]
        pieces.append(piece.decode("utf-8", "surrogatepass"))
        data = data[len(piece) :]
    return pieces


def _whole_lines_within(text: str, limit: int) -> str:
    """The longest run of ``text``'s first whole lines that fits in ``limit`` bytes of UTF-8."""
    data = text.encode("utf-8", "surrogatepass")[: max(limit, 0)]
    return data[: data.rfind(b"\n") + 1].decode("utf-8", "surrogatepass")


def _check(task: str, stream: str) -> None:
    if task not in TASKS or stream not in STREAMS:
        raise ValueError(f"a build log is of task fetch or build, stream stdout or stderr: "
                         f"not {task!r}/{stream!r}")  # fmt: skip


def _publish(redis_conn: redis.Redis | None, documents: list[dict]) -> None:
    """Publish stored rows' documents on LOG_CHANNEL once the transaction commits."""
    if redis_conn is None or not documents:
        return
    encoded = [json.dumps(document) for document in documents]

    def send() -> None:
        try:
            for document in encoded:
                redis_conn.publish(LOG_CHANNEL, document)
        except redis.RedisError as exc:  # the rows are the record: pages read them again
            logger.warning("log rows not published: %s", exc)

    database.after_commit(send)


def _insert(model: type[LogChunk] | type[AppLog], owner: Any, make: list[dict]) -> list[Any]:
    """Insert rows after the owner's last seq (a build's, an app's), in one transaction
    (retried on a seq clash)."""
    field = model.build if model is LogChunk else model.app
    for attempt in range(_SEQ_RETRIES):
        try:
            with database.atomic():
                last = model.select(pw.fn.MAX(model.seq)).where(field == owner).scalar() or 0
                return [
                    model.create(**{field.name: owner}, seq=last + 1 + i, **fields)
                    for i, fields in enumerate(make)
                ]
        except pw.IntegrityError:
            if attempt == _SEQ_RETRIES - 1:
                raise
    return []


def append_log(
    build_id: int,
    task: str,
    stream: str,
    text: str,
    *,
    after: int,
    offset: int,
    max_bytes: int,
    redis_conn: redis.Redis | None = None,
) -> Appended:
    """Store scrubbed ``text`` of one stream, read from Nomad from byte ``after`` to byte
    ``offset``, within the build's allowance of ``max_bytes``; publish the rows once committed.

    Check-and-set: nothing is stored when the stream's stored offset is not ``after`` (another
    collector stored that part already).
    """
    _check(task, stream)
    with database.atomic():
        used = (
            LogChunk.select(pw.fn.SUM(LogChunk.size)).where(LogChunk.build == build_id).scalar()
        ) or 0
        if used >= max_bytes:
            return Appended((), truncated=True)
        stored = (
            LogChunk.select(pw.fn.MAX(LogChunk.offset))
            .where((LogChunk.build == build_id) & (LogChunk.task == task)
                   & (LogChunk.stream == stream))
            .scalar()
        ) or 0  # fmt: skip
        if stored != after:
            return Appended((), conflict=True)
        size = len(text.encode("utf-8", "surrogatepass"))
        truncated = used + size > max_bytes
        kept = _whole_lines_within(text, max_bytes - used) if truncated else text
        make = [{"text": piece, "size": len(piece.encode("utf-8", "surrogatepass"))}
                for piece in split_text(kept)]  # fmt: skip
        if truncated:
            line = truncation_line(max_bytes)
            left = max_bytes - used - sum(fields["size"] for fields in make)
            make.append({"text": line, "size": max(left, len(line))})
        rows = _insert(
            LogChunk, build_id,
            [{**fields, "task": task, "stream": stream, "offset": offset} for fields in make],
        )  # fmt: skip
        _publish(redis_conn, [log_document(row) for row in rows])
    return Appended(tuple(row.seq for row in rows), truncated=truncated)


def end_log_stream(
    build_id: int, task: str, stream: str, *, offset: int, redis_conn: redis.Redis | None = None
) -> int | None:
    """Record that Nomad ended one stream of the build (its task is dead); the row's seq, or
    None when its end was recorded already."""
    _check(task, stream)
    where = (LogChunk.build == build_id) & (LogChunk.task == task) & (LogChunk.stream == stream)
    fields = {"task": task, "stream": stream, "offset": offset}
    return _end(LogChunk, build_id, where, fields, redis_conn)


def _document(row: LogChunk | AppLog) -> dict:
    return log_document(row) if isinstance(row, LogChunk) else app_log_document(row)


def _end(
    model: type[LogChunk] | type[AppLog], owner: Any, where: pw.Expression, fields: dict,
    redis_conn: redis.Redis | None,
) -> int | None:  # fmt: skip
    """Store the final row of the stream ``where`` selects (unless stored); its seq or None."""
    with database.atomic():
        if model.select().where(where & model.final).exists():
            return None
        rows = _insert(model, owner, [{**fields, "final": True}])
        _publish(redis_conn, [_document(row) for row in rows])
    return rows[0].seq


def _offsets(model: type[LogChunk] | type[AppLog], where: pw.Expression) -> dict:
    """(task, stream) → (bytes read from Nomad so far, ended) of the streams ``where`` selects."""
    rows = (
        model.select(
            model.task, model.stream, pw.fn.MAX(model.offset).alias("read"),
            pw.fn.MAX(model.final.cast("integer")).alias("ended"),
        )
        .where(where)
        .group_by(model.task, model.stream)
        .namedtuples()
    )  # fmt: skip
    return {(row.task, row.stream): (int(row.read or 0), bool(row.ended)) for row in rows}


def stream_offsets(build_id: int) -> dict[tuple[str, str], tuple[int, bool]]:
    """(task, stream) → (bytes read from Nomad so far, ended) for the build's stored streams."""
    return _offsets(LogChunk, LogChunk.build == build_id)


# ---------------------------------------------------------------------------------------------
# App logs: a deployment's steps and task events, and what its allocations print
# ---------------------------------------------------------------------------------------------

APP_STREAMS = ("helios", "nomad", "stdout", "stderr")
OUTPUT_STREAMS = ("stdout", "stderr")
PRUNE_TO = 0.8  # a deployment over its allowance keeps this share of it, its newest output


def app_log_document(row: AppLog) -> dict:
    """A stored row of an app's log as published and as its streams send it."""
    return {
        "app_id": row.app_id,
        "deployment_id": row.deployment_id,
        "run_id": row.run_id,
        "seq": row.seq,
        "alloc": row.alloc,
        "process": row.process,
        "task": row.task,
        "stream": row.stream,
        "text": row.text,
        "final": row.final,
        "time": row.created_at.isoformat(timespec="seconds") + "Z",
    }


def _stream_of(alloc: str, task: str, stream: str):
    return (AppLog.alloc == alloc) & (AppLog.task == task) & (AppLog.stream == stream)


def _keep_within(owner: pw.Expression, max_bytes: int) -> int:
    """Remove the oldest output of a deployment (or a run) ``owner`` selects once it passed
    ``max_bytes``, down to PRUNE_TO of it; the newest row of each stream stays (it holds where
    its collector resumes). Rows removed."""
    output = owner & AppLog.stream.in_(OUTPUT_STREAMS)
    used = AppLog.select(pw.fn.SUM(AppLog.size)).where(output).scalar() or 0
    if used <= max_bytes:
        return 0
    keep, total, cutoff = max_bytes * PRUNE_TO, 0, None
    rows = AppLog.select(AppLog.seq, AppLog.size).where(output).order_by(AppLog.seq.desc())
    for row in rows.namedtuples():
        total += row.size
        if total > keep:
            cutoff = row.seq
            break
    if cutoff is None:
        return 0
    newest = (
        AppLog.select(pw.fn.MAX(AppLog.id))
        .where(output)
        .group_by(AppLog.alloc, AppLog.task, AppLog.stream)
    )
    return (
        AppLog.delete().where(output & (AppLog.seq <= cutoff) & AppLog.id.not_in(newest)).execute()
    )


def append_app_log(
    app_id: int,
    deployment_id: int | None,
    *,
    alloc: str,
    process: str,
    task: str,
    stream: str,
    text: str,
    after: int,
    offset: int,
    max_bytes: int,
    redis_conn: redis.Redis | None = None,
    run_id: int | None = None,
) -> Appended:
    """Store scrubbed ``text`` one allocation's task printed on ``stream`` (stdout or stderr),
    read from Nomad from byte ``after`` to byte ``offset``; publish the rows once committed.

    Check-and-set as for builds: nothing is stored when the stream's stored offset is not
    ``after``. The deployment (or the one-off run ``run_id``) keeps its newest ``max_bytes``
    of output.
    """
    if stream not in OUTPUT_STREAMS:
        raise ValueError(f"an app's output is stdout or stderr, not {stream!r}")
    with database.atomic():
        stored = AppLog.select(pw.fn.MAX(AppLog.offset)).where(
            _stream_of(alloc, task, stream)
        ).scalar() or 0  # fmt: skip
        if stored != after:
            return Appended((), conflict=True)
        common = {"deployment": deployment_id, "run": run_id, "alloc": alloc,
                  "process": process, "task": task, "stream": stream, "offset": offset}  # fmt: skip
        rows = _insert(
            AppLog, app_id,
            [{**common, "text": piece, "size": len(piece.encode("utf-8", "surrogatepass"))}
             for piece in split_text(text)],
        )  # fmt: skip
        if deployment_id is not None:
            _keep_within(AppLog.deployment == deployment_id, max_bytes)
        elif run_id is not None:
            _keep_within(AppLog.run == run_id, max_bytes)
        _publish(redis_conn, [app_log_document(row) for row in rows])
    return Appended(tuple(row.seq for row in rows))


def end_app_stream(
    app_id: int,
    deployment_id: int | None,
    *,
    alloc: str,
    process: str,
    task: str,
    stream: str,
    offset: int,
    redis_conn: redis.Redis | None = None,
    run_id: int | None = None,
) -> int | None:
    """Record that Nomad ended one output stream of an allocation's task (it is dead); the
    row's seq, or None when its end was recorded already."""
    if stream not in OUTPUT_STREAMS:
        raise ValueError(f"an app's output is stdout or stderr, not {stream!r}")
    fields = {"deployment": deployment_id, "run": run_id, "alloc": alloc, "process": process,
              "task": task, "stream": stream, "offset": offset}  # fmt: skip
    return _end(AppLog, app_id, _stream_of(alloc, task, stream), fields, redis_conn)


def app_stream_offsets(alloc: str) -> dict[tuple[str, str], tuple[int, bool]]:
    """(task, stream) → (bytes read from Nomad so far, ended) for an allocation's output."""
    return _offsets(AppLog, (AppLog.alloc == alloc) & AppLog.stream.in_(OUTPUT_STREAMS))


def append_task_events(
    app_id: int,
    deployment_id: int | None,
    *,
    alloc: str,
    process: str,
    task: str,
    events: list[tuple[int, str]],
    redis_conn: redis.Redis | None = None,
) -> int:
    """Store the task events (time in ns, scrubbed line) newer than those stored for this
    allocation's task; how many were new. Replayed events (a follower reading again) are
    stored once."""
    with database.atomic():
        seen = AppLog.select(pw.fn.MAX(AppLog.offset)).where(
            _stream_of(alloc, task, "nomad")
        ).scalar() or 0  # fmt: skip
        new = sorted((at, text) for at, text in events if at > seen)
        if not new:
            return 0
        rows = _insert(
            AppLog, app_id,
            [{"deployment": deployment_id, "alloc": alloc, "process": process, "task": task,
              "stream": "nomad", "offset": at, "text": line if line.endswith("\n") else line + "\n",
              "size": len(line.encode("utf-8", "surrogatepass"))} for at, line in new],
        )  # fmt: skip
        _publish(redis_conn, [app_log_document(row) for row in rows])
    return len(rows)


def log_step(deployment: Deployment, text: str, redis_conn: redis.Redis | None = None) -> None:
    """One line of Helios's own in a deployment's log (queued, submitted, its outcome...)."""
    line = text.rstrip("\n") + "\n"
    rows = _insert(
        AppLog, deployment.app_id,
        [{"deployment": deployment.id, "stream": "helios", "text": line,
          "size": len(line.encode("utf-8", "surrogatepass"))}],
    )  # fmt: skip
    _publish(redis_conn, [app_log_document(row) for row in rows])


def log_run_step(
    app_id: int, run_id: int, text: str, redis_conn: redis.Redis | None = None
) -> None:
    """One line of Helios's own in a one-off run's log (how it ended, its exit code...)."""
    line = text.rstrip("\n") + "\n"
    rows = _insert(
        AppLog, app_id,
        [{"run": run_id, "stream": "helios", "text": line,
          "size": len(line.encode("utf-8", "surrogatepass"))}],
    )  # fmt: skip
    _publish(redis_conn, [app_log_document(row) for row in rows])


PRUNE_BATCH = 5_000  # rows removed per transaction, so writers elsewhere wait little


def _delete_in_batches(model: type[pw.Model], where: pw.Expression) -> int:
    removed = 0
    while True:
        with database.atomic():
            ids = [row.id for row in model.select(model.id).where(where).limit(PRUNE_BATCH)]
            if ids:
                model.delete().where(model.id.in_(ids)).execute()
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            return removed


def prune_app_logs(before: datetime) -> int:
    """Remove app log rows stored before ``before`` (HELIOS_LOG_RETENTION_DAYS); how many.
    The newest row of each output stream of a running allocation stays (where its collector
    resumes)."""
    newest = (
        AppLog.select(pw.fn.MAX(AppLog.id))
        .where(AppLog.stream.in_(OUTPUT_STREAMS) & ~AppLog.final)
        .group_by(AppLog.alloc, AppLog.task, AppLog.stream)
    )
    return _delete_in_batches(AppLog, (AppLog.created_at < before) & AppLog.id.not_in(newest))


def prune_build_logs(before: datetime) -> int:
    """Remove build log rows stored before ``before`` (HELIOS_LOG_RETENTION_DAYS); how many."""
    return _delete_in_batches(LogChunk, LogChunk.created_at < before)
