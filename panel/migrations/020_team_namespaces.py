"""Teams as Nomad namespaces.

``team.nomad_namespace``: the namespace the team's apps run in; teams created from now on get
their slug, teams from before keep NULL (the installation's NOMAD_NAMESPACE) until moved with
``helios teams move-namespace``. Deployments, builds and one-off runs record the namespace their
job was submitted to, so followers and clean-ups address it even after the team moved.
"""

import peewee as pw
from peewee_migrate import Migrator

TABLES = ("team", "deployment", "build", "one_off_run")


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add nomad_namespace (nullable) to team, deployment, build and one_off_run."""
    for table in TABLES:
        migrator.add_fields(table, nomad_namespace=pw.CharField(max_length=128, null=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo migrate."""
    for table in reversed(TABLES):
        migrator.remove_fields(table, "nomad_namespace")
