"""Provisioning runs and their Ansible events."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create the provision_run and provision_event tables."""

    @migrator.create_model
    class ProvisionRun(pw.Model):
        id = pw.AutoField()
        kind = pw.CharField(max_length=8)
        status = pw.CharField(default="queued", index=True, max_length=16)
        host_ids = pw.TextField()
        recap = pw.TextField()
        message = pw.TextField(default="")
        requested_by = pw.ForeignKeyField(
            column_name="requested_by_id",
            field="id",
            model=migrator.orm["user"],
            null=True,
            on_delete="SET NULL",
        )
        requested_at = pw.DateTimeField()
        started_at = pw.DateTimeField(null=True)
        finished_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "provision_run"

    @migrator.create_model
    class ProvisionEvent(pw.Model):
        id = pw.AutoField()
        run = pw.ForeignKeyField(
            column_name="run_id",
            field="id",
            model=migrator.orm["provision_run"],
            on_delete="CASCADE",
        )
        seq = pw.IntegerField()
        data = pw.TextField()
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "provision_event"
            indexes = [(("run", "seq"), True)]


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the provisioning tables, events first."""

    migrator.remove_model("provision_event")

    migrator.remove_model("provision_run")
