"""Outgoing notifications: a team's webhooks (notifier) and their deliveries."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create notifier and notifier_delivery."""

    @migrator.create_model
    class Notifier(pw.Model):
        team = pw.ForeignKeyField(migrator.orm["team"], on_delete="CASCADE")
        name = pw.CharField(max_length=100)
        url = pw.CharField(max_length=2048)
        format = pw.CharField(max_length=8, default="json")
        subjects = pw.TextField(default="[]")
        secret = pw.TextField()
        enabled = pw.BooleanField(default=True)
        created_by = pw.ForeignKeyField(migrator.orm["user"], null=True, on_delete="SET NULL")
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "notifier"
            indexes = ((("team", "name"), True),)

    @migrator.create_model
    class NotifierDelivery(pw.Model):
        notifier = pw.ForeignKeyField(Notifier, on_delete="CASCADE")
        event = pw.ForeignKeyField(migrator.orm["event"], null=True, on_delete="SET NULL")
        subject = pw.CharField(max_length=100)
        status = pw.CharField(max_length=16, default="pending")
        attempts = pw.IntegerField(default=0)
        last_status_code = pw.IntegerField(null=True)
        last_error = pw.CharField(max_length=500, default="")
        created_at = pw.DateTimeField()
        delivered_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "notifier_delivery"
            indexes = ((("notifier", "event"), True),)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("notifier_delivery")
    migrator.remove_model("notifier")
