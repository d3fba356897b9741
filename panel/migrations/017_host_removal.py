"""Removing a host whose Nomad node runs allocations: it is drained first.

``host.state_before_drain``: the state a host was in when its drain began (it returns to it
when the drain fails); ``host.note``: why the last drain failed, shown on the host's page
(empty when nothing went wrong).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add state_before_drain and note to host."""
    migrator.add_fields(
        "host",
        state_before_drain=pw.CharField(max_length=16, null=True),
        note=pw.TextField(default=""),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate."""
    migrator.remove_fields("host", "state_before_drain", "note")
