"""One-off commands (`helios run APP -- CMD`): each run, and its output in the app's log."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create one_off_run; give app_log rows the run they belong to."""

    @migrator.create_model
    class OneOffRun(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        release = pw.ForeignKeyField(migrator.orm["release"], on_delete="CASCADE")
        command = pw.TextField(default="[]")
        timeout_s = pw.IntegerField()
        requested_by = pw.ForeignKeyField(migrator.orm["user"], null=True, on_delete="SET NULL")
        requested_by_name = pw.CharField(max_length=300, default="")
        status = pw.CharField(max_length=16, default="queued", index=True)
        status_message = pw.TextField(default="")
        exit_code = pw.IntegerField(null=True)
        nomad_job_id = pw.CharField(max_length=128, null=True)
        requested_at = pw.DateTimeField()
        started_at = pw.DateTimeField(null=True)
        finished_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "one_off_run"
            indexes = ((("app", "requested_at"), False),)

    migrator.add_fields(
        "app_log",
        run=pw.ForeignKeyField(
            migrator.orm["one_off_run"], null=True, on_delete="CASCADE", field="id"
        ),
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added (the runs' output rows first)."""
    migrator.sql("DELETE FROM app_log WHERE run_id IS NOT NULL")
    migrator.drop_index("app_log", "run")
    migrator.remove_fields("app_log", "run")
    migrator.remove_model("one_off_run")
