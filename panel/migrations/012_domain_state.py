"""Domain checks: each app address's DNS, routing in Traefik and TLS as last checked."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create domain_state."""

    @migrator.create_model
    class DomainState(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        hostname = pw.CharField(max_length=253)
        is_default = pw.BooleanField(default=False)
        state = pw.CharField(max_length=16)
        summary = pw.TextField(default="")
        dns = pw.TextField(default="{}")
        routing = pw.TextField(default="{}")
        tls = pw.TextField(default="{}")
        checked_at = pw.DateTimeField()

        class Meta:
            table_name = "domain_state"
            indexes = ((("app", "hostname"), True),)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("domain_state")
