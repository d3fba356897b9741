"""Push to deploy: an app's build settings and GitHub hook, people's GitHub tokens, webhook
deliveries and builds."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the build and GitHub columns; create webhook_delivery and build."""
    migrator.add_fields(
        "app",
        dockerfile=pw.CharField(max_length=255, default="Dockerfile"),
        build_context=pw.CharField(max_length=255, default="."),
        build_args=pw.TextField(default="{}"),
        github_repo_id=pw.BigIntegerField(null=True),
        github_hook_id=pw.BigIntegerField(null=True),
        webhook_secret=pw.TextField(null=True),
        connected_by=pw.ForeignKeyField(
            migrator.orm["user"], null=True, on_delete="SET NULL", field="id"
        ),
    )
    migrator.add_fields("user", github_token=pw.TextField(null=True))

    @migrator.create_model
    class WebhookDelivery(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        delivery = pw.CharField(max_length=64)
        event = pw.CharField(max_length=64)
        outcome = pw.CharField(max_length=16)
        reason = pw.TextField(default="")
        git_sha = pw.CharField(max_length=40, default="")
        branch = pw.CharField(max_length=255, default="")
        received_at = pw.DateTimeField()

        class Meta:
            table_name = "webhook_delivery"
            indexes = ((("app", "delivery"), True), (("app", "received_at"), False))

    @migrator.create_model
    class Build(pw.Model):
        app = pw.ForeignKeyField(migrator.orm["app"], on_delete="CASCADE")
        number = pw.IntegerField()
        git_sha = pw.CharField(max_length=40)
        branch = pw.CharField(max_length=255)
        reason = pw.CharField(max_length=200, default="")
        status = pw.CharField(max_length=16, default="queued", index=True)
        status_message = pw.TextField(default="")
        delivery = pw.ForeignKeyField(WebhookDelivery, null=True, on_delete="SET NULL")
        triggered_by = pw.ForeignKeyField(migrator.orm["user"], null=True, on_delete="SET NULL")
        nomad_job_id = pw.CharField(max_length=128, null=True)
        image = pw.CharField(max_length=512, default="")
        digest = pw.CharField(max_length=80, default="")
        exit_code = pw.IntegerField(null=True)
        builder = pw.CharField(max_length=16, default="")
        repo_settings = pw.TextField(default="{}")
        deployment = pw.ForeignKeyField(migrator.orm["deployment"], null=True, on_delete="SET NULL")
        attempts = pw.IntegerField(default=0)
        requested_at = pw.DateTimeField()
        started_at = pw.DateTimeField(null=True)
        finished_at = pw.DateTimeField(null=True)
        heartbeat_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "build"
            indexes = ((("app", "number"), True),)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop what migrate added."""
    migrator.remove_model("build")
    migrator.remove_model("webhook_delivery")
    migrator.remove_fields("user", "github_token")
    migrator.drop_index("app", "connected_by")
    migrator.remove_fields(
        "app", "dockerfile", "build_context", "build_args", "github_repo_id", "github_hook_id",
        "webhook_secret", "connected_by",
    )  # fmt: skip
