"""Cluster credentials handed over by provisioning: the address, region, token (encrypted), CA,
client certificate and key (encrypted), the management token for team namespaces (encrypted)
and the registry's address and account (password encrypted) Helios uses for the cluster it
built, and the run that handed them over."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create cluster_credentials."""

    @migrator.create_model
    class ClusterCredentials(pw.Model):
        address = pw.CharField(max_length=255)
        region = pw.CharField(max_length=128, default="")
        accessor = pw.CharField(max_length=64, default="")
        token = pw.TextField()
        ca_cert = pw.TextField(default="")
        client_cert = pw.TextField(default="")
        client_key = pw.TextField(default="")
        management_accessor = pw.CharField(max_length=64, default="")
        management_token = pw.TextField(default="")
        registry = pw.CharField(max_length=255, default="")
        registry_username = pw.CharField(max_length=64, default="")
        registry_password = pw.TextField(default="")
        run = pw.ForeignKeyField(migrator.orm["provision_run"], null=True, on_delete="SET NULL")
        received_at = pw.DateTimeField()

        class Meta:
            table_name = "cluster_credentials"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop cluster_credentials."""
    migrator.remove_model("cluster_credentials")
