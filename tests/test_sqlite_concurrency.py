"""16 writer processes on one SQLite file: WAL + busy_timeout + BEGIN IMMEDIATE, 0 lock errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from panel.db import migrate_up, open_database
from panel.models import Event

WRITERS = 16
WRITES_EACH = 40

# Each writer does read-then-write transactions: the pattern that fails with "database is
# locked" under SQLite's default deferred transactions when two writers upgrade at once.
WRITER = """
import json, sys
import peewee as pw
from panel.db import database, open_database
from panel.models import Event

open_database(sys.argv[1])
errors = 0
for i in range(int(sys.argv[3])):
    try:
        with database.atomic():
            seen = Event.select().where(Event.actor == sys.argv[2]).count()
            Event.create(subject="v1.test.write", actor=sys.argv[2], data={"i": i, "seen": seen})
    except pw.OperationalError as exc:
        errors += 1
        print(repr(exc), file=sys.stderr)
print(json.dumps({"errors": errors}))
"""


def test_concurrent_writers_never_see_database_is_locked(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'helios.db'}"
    open_database(url)
    migrate_up()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"writer-{n}", str(WRITES_EACH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for n in range(WRITERS)
    ]
    results = [proc.communicate(timeout=120) for proc in writers]
    errors = sum(json.loads(out)["errors"] for out, _ in results)
    stderr = "".join(err for _, err in results)
    assert [proc.returncode for proc in writers] == [0] * WRITERS, stderr
    assert errors == 0, stderr
    database = open_database(url)
    with database.connection_context():
        assert Event.select().count() == WRITERS * WRITES_EACH
        for n in range(WRITERS):
            seen = [e.data["seen"] for e in Event.select().where(Event.actor == f"writer-{n}")]
            assert sorted(seen) == list(range(WRITES_EACH))
