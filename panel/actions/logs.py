"""Actions on build logs: store a scrubbed chunk of a task's output, mark a stream's end.

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

import peewee as pw
import redis

from panel.db import database
from panel.models import LogChunk

__all__ = [
    "LOG_CHANNEL",
    "MAX_CHUNK_BYTES",
    "Appended",
    "append_log",
    "end_log_stream",
    "log_document",
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


def _publish(redis_conn: redis.Redis | None, rows: list[LogChunk]) -> None:
    if redis_conn is None or not rows:
        return
    documents = [json.dumps(log_document(row)) for row in rows]

    def send() -> None:
        try:
            for document in documents:
                redis_conn.publish(LOG_CHANNEL, document)
        except redis.RedisError as exc:  # the rows are the record: pages read them again
            logger.warning("build log chunk not published: %s", exc)

    database.after_commit(send)


def _insert(build_id: int, make: list[dict]) -> list[LogChunk]:
    """Insert rows after the build's last seq, in one transaction (retried on a seq clash)."""
    for attempt in range(_SEQ_RETRIES):
        try:
            with database.atomic():
                last = (
                    LogChunk.select(pw.fn.MAX(LogChunk.seq))
                    .where(LogChunk.build == build_id)
                    .scalar()
                ) or 0
                return [
                    LogChunk.create(build=build_id, seq=last + 1 + i, **fields)
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
            build_id, [{**fields, "task": task, "stream": stream, "offset": offset}
                       for fields in make]
        )  # fmt: skip
        _publish(redis_conn, rows)
    return Appended(tuple(row.seq for row in rows), truncated=truncated)


def end_log_stream(
    build_id: int, task: str, stream: str, *, offset: int, redis_conn: redis.Redis | None = None
) -> int | None:
    """Record that Nomad ended one stream of the build (its task is dead); the row's seq, or
    None when its end was recorded already."""
    _check(task, stream)
    with database.atomic():
        done = LogChunk.select().where(
            (LogChunk.build == build_id) & (LogChunk.task == task) & (LogChunk.stream == stream)
            & LogChunk.final
        ).exists()  # fmt: skip
        if done:
            return None
        rows = _insert(
            build_id, [{"task": task, "stream": stream, "offset": offset, "final": True}]
        )
        _publish(redis_conn, rows)
    return rows[0].seq


def stream_offsets(build_id: int) -> dict[tuple[str, str], tuple[int, bool]]:
    """(task, stream) → (bytes read from Nomad so far, ended) for the build's stored streams."""
    rows = (
        LogChunk.select(
            LogChunk.task, LogChunk.stream, pw.fn.MAX(LogChunk.offset).alias("read"),
            pw.fn.MAX(LogChunk.final.cast("integer")).alias("ended"),
        )
        .where(LogChunk.build == build_id)
        .group_by(LogChunk.task, LogChunk.stream)
        .namedtuples()
    )  # fmt: skip
    return {(row.task, row.stream): (int(row.read or 0), bool(row.ended)) for row in rows}
