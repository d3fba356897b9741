"""Initial schema: people, teams, apps, releases, deployments, hosts, tokens, events."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create every table of the first release."""

    @migrator.create_model
    class User(pw.Model):
        id = pw.AutoField()
        email = pw.CharField(max_length=254, unique=True)
        name = pw.CharField(default="", max_length=200)
        password_hash = pw.CharField(max_length=255, null=True)
        github_id = pw.BigIntegerField(null=True, unique=True)
        github_login = pw.CharField(max_length=100, null=True)
        is_operator = pw.BooleanField(default=False)
        is_active = pw.BooleanField(default=True)
        created_at = pw.DateTimeField()
        last_login_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "user"

    @migrator.create_model
    class ApiToken(pw.Model):
        id = pw.AutoField()
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["user"], on_delete="CASCADE"
        )
        name = pw.CharField(max_length=100)
        token_hash = pw.CharField(max_length=64, unique=True)
        prefix = pw.CharField(max_length=16)
        scopes = pw.TextField()
        expires_at = pw.DateTimeField(null=True)
        last_used_at = pw.DateTimeField(null=True)
        revoked_at = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "api_token"

    @migrator.create_model
    class Team(pw.Model):
        id = pw.AutoField()
        slug = pw.CharField(max_length=63, unique=True)
        name = pw.CharField(max_length=200)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "team"

    @migrator.create_model
    class App(pw.Model):
        id = pw.AutoField()
        team = pw.ForeignKeyField(
            column_name="team_id", field="id", model=migrator.orm["team"], on_delete="RESTRICT"
        )
        slug = pw.CharField(max_length=63, unique=True)
        image = pw.CharField(max_length=512, null=True)
        repo = pw.CharField(max_length=200, null=True)
        branch = pw.CharField(default="main", max_length=255)
        command = pw.CharField(default="", max_length=4096)
        port = pw.IntegerField(default=8080)
        health_path = pw.CharField(default="/healthz", max_length=256)
        count = pw.IntegerField(default=1)
        cpu_mhz = pw.IntegerField(default=250)
        memory_mb = pw.IntegerField(default=256)
        memory_max_mb = pw.IntegerField(default=0)
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "app"

    @migrator.create_model
    class Release(pw.Model):
        id = pw.AutoField()
        app = pw.ForeignKeyField(
            column_name="app_id", field="id", model=migrator.orm["app"], on_delete="CASCADE"
        )
        number = pw.IntegerField()
        image = pw.CharField(max_length=512)
        git_sha = pw.CharField(default="", max_length=40)
        config = pw.TextField()
        created_by = pw.ForeignKeyField(
            column_name="created_by_id",
            field="id",
            model=migrator.orm["user"],
            null=True,
            on_delete="SET NULL",
        )
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "release"
            indexes = [(("app", "number"), True)]

    @migrator.create_model
    class Deployment(pw.Model):
        id = pw.AutoField()
        app = pw.ForeignKeyField(
            column_name="app_id", field="id", model=migrator.orm["app"], on_delete="CASCADE"
        )
        release = pw.ForeignKeyField(
            column_name="release_id", field="id", model=migrator.orm["release"], on_delete="CASCADE"
        )
        status = pw.CharField(default="queued", index=True, max_length=16)
        status_message = pw.TextField(default="")
        nomad_job_version = pw.IntegerField(null=True)
        nomad_eval_id = pw.CharField(max_length=36, null=True)
        nomad_deployment_id = pw.CharField(max_length=36, null=True)
        triggered_by = pw.ForeignKeyField(
            column_name="triggered_by_id",
            field="id",
            model=migrator.orm["user"],
            null=True,
            on_delete="SET NULL",
        )
        requested_at = pw.DateTimeField()
        started_at = pw.DateTimeField(null=True)
        finished_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "deployment"
            indexes = [(("app", "requested_at"), False)]

    @migrator.create_model
    class Domain(pw.Model):
        id = pw.AutoField()
        app = pw.ForeignKeyField(
            column_name="app_id", field="id", model=migrator.orm["app"], on_delete="CASCADE"
        )
        hostname = pw.CharField(max_length=253, unique=True)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "domain"

    @migrator.create_model
    class EnvVar(pw.Model):
        id = pw.AutoField()
        app = pw.ForeignKeyField(
            column_name="app_id", field="id", model=migrator.orm["app"], on_delete="CASCADE"
        )
        key = pw.CharField(max_length=128)
        value = pw.TextField()
        is_secret = pw.BooleanField(default=False)
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "env_var"
            indexes = [(("app", "key"), True)]

    @migrator.create_model
    class Event(pw.Model):
        id = pw.AutoField()
        subject = pw.CharField(index=True, max_length=100)
        actor = pw.CharField(default="system", max_length=254)
        team = pw.ForeignKeyField(
            column_name="team_id",
            field="id",
            model=migrator.orm["team"],
            null=True,
            on_delete="SET NULL",
        )
        data = pw.TextField()
        created_at = pw.DateTimeField(index=True)

        class Meta:
            table_name = "event"

    @migrator.create_model
    class Host(pw.Model):
        id = pw.AutoField()
        name = pw.CharField(max_length=253, unique=True)
        address = pw.CharField(max_length=253)
        ssh_user = pw.CharField(default="root", max_length=32)
        ssh_port = pw.IntegerField(default=22)
        groups = pw.TextField()
        ssh_private_key = pw.TextField(null=True)
        state = pw.CharField(default="new", max_length=16)
        last_run_at = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "host"

    @migrator.create_model
    class Membership(pw.Model):
        id = pw.AutoField()
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["user"], on_delete="CASCADE"
        )
        team = pw.ForeignKeyField(
            column_name="team_id", field="id", model=migrator.orm["team"], on_delete="CASCADE"
        )
        role = pw.CharField(max_length=16)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "membership"
            indexes = [(("user", "team"), True)]


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop every table, dependants first."""

    migrator.remove_model("membership")

    migrator.remove_model("host")

    migrator.remove_model("event")

    migrator.remove_model("env_var")

    migrator.remove_model("domain")

    migrator.remove_model("deployment")

    migrator.remove_model("release")

    migrator.remove_model("app")

    migrator.remove_model("team")

    migrator.remove_model("api_token")

    migrator.remove_model("user")
