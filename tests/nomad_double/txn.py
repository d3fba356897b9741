"""Raft-like writes of the Nomad double: one index per write, table indexes, commit hooks.

In Nomad every change goes through one raft apply: all objects it touches get the same
``ModifyIndex``, the tables it touches remember that index (``state.Index("allocs")``, what
blocking queries report as ``X-Nomad-Index``), and the event broker publishes one batch of events
for it, all with that index and the apply's message type as ``Type``
(nomad/state/events.go ``eventsFromChanges``).

Here a write is the set of objects ``touch``-ed since the last ``commit``. Index fields are set
to a provisional value when touched (the next index, so sorting by ``CreateIndex`` works in the
middle of a write) and stamped with the real index at commit, which also wakes blocked queries
(a condition variable on the cluster lock) and hands the changes to the event broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

CommitHook = Callable[[int, str, list[tuple[str, dict[str, Any]]]], None]

# Tables whose index also moves when another table is written, as Nomad's state store does:
# a job upsert writes "job_version" too, an allocation upsert updates "job_summary".
DERIVED_TABLES = {"jobs": ("job_version",), "allocs": ("job_summary",)}


def _stamp(obj: dict[str, Any], field: str, index: int) -> None:
    """Set obj[field] (a dotted path into nested dicts) to index."""
    *parents, last = field.split(".")
    for key in parents:
        obj = obj.get(key) or {}
    if isinstance(obj, dict):
        obj[last] = index


class Writes:
    """The write-ahead part of the cluster state; subclasses hold the tables."""

    def __init__(self) -> None:
        """Start at index 1 ("On a new Nomad cluster the value of this index starts at 1")."""
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.index = 1
        self.table_index: dict[str, int] = {}
        self.on_commit: CommitHook | None = None
        self._pending: dict[int, tuple[str, dict[str, Any], tuple[str, ...]]] = {}
        self._pending_tables: set[str] = set()

    def touch(self, table: str, obj: dict[str, Any], *fields: str) -> int:
        """Record that obj, a row of table, changes in the write in progress.

        fields are the index fields to stamp (default ``ModifyIndex``; dotted paths reach into
        nested objects). Returns the provisional index.
        """
        fields = fields or ("ModifyIndex",)
        previous = self._pending.get(id(obj))
        merged = tuple(dict.fromkeys((previous[2] if previous else ()) + fields))
        self._pending[id(obj)] = (table, obj, merged)
        provisional = self.index + 1
        for field in fields:
            _stamp(obj, field, provisional)
        return provisional

    def touch_table(self, table: str) -> None:
        """Record a change of table without an object (a deletion)."""
        self._pending_tables.add(table)

    def commit(self, msg_type: str | None, only: Iterable[dict[str, Any]] | None = None) -> int:
        """End the write: stamp its index, publish its events as msg_type, wake blocked queries.

        Returns the write's index (the current index when nothing changed). With ``only`` just
        those pending objects are committed, the rest stays pending for the next write.
        """
        if only is None:
            keys, tables = list(self._pending), set(self._pending_tables)
            self._pending_tables.clear()
        else:
            keys, tables = [id(o) for o in only if id(o) in self._pending], set()
        if not keys and not tables:
            return self.index
        self.index += 1
        changes = []
        for key in keys:
            table, obj, fields = self._pending.pop(key)
            for field in fields:
                _stamp(obj, field, self.index)
            changes.append((table, obj))
            tables.add(table)
        for table in tables | {d for t in tables for d in DERIVED_TABLES.get(t, ())}:
            self.table_index[table] = self.index
        if self.on_commit is not None and msg_type is not None:
            self.on_commit(self.index, msg_type, changes)
        self.changed.notify_all()
        return self.index

    def table(self, *names: str) -> int:
        """Index of the last write to any of the tables, floored at 1 like Nomad's blockingRPC."""
        return max([1, *(self.table_index.get(name, 0) for name in names)])
