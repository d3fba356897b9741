"""Desired state and history: the Peewee models behind the panel, the API and the worker.

The schema itself is owned by the numbered migrations in ``panel/migrations/``; these classes
must describe the same tables (a test compares them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import peewee as pw

from panel.db import database
from panel.states import (
    BuildStatus,
    DeploymentStatus,
    ProvisionStatus,
    Role,
    RunStatus,
    TokenScope,
)

__all__ = [
    "MODELS",
    "ApiToken",
    "App",
    "AppDrift",
    "AppLog",
    "Build",
    "BuildStatus",
    "ChangeCount",
    "ClusterCredentials",
    "Deployment",
    "DeploymentStatus",
    "Domain",
    "DomainState",
    "EnvVar",
    "Event",
    "FollowerCursor",
    "Host",
    "LogChunk",
    "Membership",
    "Notifier",
    "NotifierDelivery",
    "OneOffRun",
    "ProvisionEvent",
    "ProvisionRun",
    "ProvisionStatus",
    "Release",
    "Role",
    "RunStatus",
    "Team",
    "TokenScope",
    "User",
    "UserSession",
    "WebhookDelivery",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time in UTC, without tzinfo (how every timestamp is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


class JSONField(pw.TextField):
    """A JSON document kept as text, so SQLite and PostgreSQL store it the same way."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------


class User(BaseModel):
    """A person; also the flask-login user (``is_authenticated``, ``is_anonymous``, ``get_id``
    and the ``is_active`` column are what it asks of one). The models import no Flask: the
    worker and the follower load them too."""

    email = pw.CharField(max_length=254, unique=True)
    name = pw.CharField(max_length=200, default="")
    password_hash = pw.CharField(max_length=255, null=True)
    github_id = pw.BigIntegerField(null=True, unique=True)
    github_login = pw.CharField(max_length=100, null=True)
    is_operator = pw.BooleanField(default=False)
    is_active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_login_at = pw.DateTimeField(null=True)
    # The GitHub OAuth token of the last sign-in with GitHub (Fernet token): lists the person's
    # repositories and creates an app's webhook. Never shown, never logged.
    github_token = pw.TextField(null=True)

    is_authenticated = True  # a User row is someone signed in; anonymity is flask-login's own
    is_anonymous = False

    def get_id(self) -> str:
        """The session key flask-login stores (peewee's get_id returns the int)."""
        return str(self.id)


class Team(BaseModel):
    slug = pw.CharField(max_length=63, unique=True)
    # The Nomad namespace its apps run in (its slug for teams created since migration 020);
    # None: the installation's NOMAD_NAMESPACE, until moved (panel.namespaces).
    nomad_namespace = pw.CharField(max_length=128, null=True)
    name = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=utcnow)
    # What the team's apps may use at most, set by site admins (panel.actions.limits checks
    # them when usage would grow); NULL: no limit.
    limit_cpu_mhz = pw.IntegerField(null=True)
    limit_memory_mb = pw.IntegerField(null=True)
    limit_instances = pw.IntegerField(null=True)
    limit_apps = pw.IntegerField(null=True)


class Membership(BaseModel):
    user = pw.ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    team = pw.ForeignKeyField(Team, backref="memberships", on_delete="CASCADE")
    role = pw.CharField(max_length=16, choices=[(r.value, r.value) for r in Role])
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("user", "team"), True),)


# ---------------------------------------------------------------------------------------------
# Apps and what runs them
# ---------------------------------------------------------------------------------------------


class App(BaseModel):
    """An app. A deleted one stays as a tombstone (``deleted_at`` set) so its deployments,
    releases and logs stay readable for HELIOS_DELETED_APP_RETENTION_DAYS; its slug is unique
    among live apps only (a partial index, migration 014), so the name is free at once. Code
    that lists or finds apps by name reads :meth:`live` (or filters ``deleted_at``)."""

    team = pw.ForeignKeyField(Team, backref="apps", on_delete="RESTRICT")
    slug = pw.CharField(max_length=63)
    image = pw.CharField(max_length=512, null=True)
    repo = pw.CharField(max_length=200, null=True)
    branch = pw.CharField(max_length=255, default="main")
    command = pw.CharField(max_length=4096, default="")
    port = pw.IntegerField(default=8080)
    health_path = pw.CharField(max_length=256, default="/healthz")
    count = pw.IntegerField(default=1)
    cpu_mhz = pw.IntegerField(default=250)
    memory_mb = pw.IntegerField(default=256)
    memory_max_mb = pw.IntegerField(default=0)
    dockerfile = pw.CharField(max_length=255, default="Dockerfile")
    build_context = pw.CharField(max_length=255, default=".")
    build_args = JSONField(default=dict)
    # The repository by GitHub's numeric id (stable across renames), the webhook Helios made
    # there (None: pasted by hand) and the secret GitHub signs its deliveries with (Fernet).
    github_repo_id = pw.BigIntegerField(null=True)
    github_hook_id = pw.BigIntegerField(null=True)
    webhook_secret = pw.TextField(null=True)
    # Who connected the repository: their GitHub token fetches private repositories.
    connected_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # Deletion (panel.actions.deletion): when and by whom (as events name actors); when its
    # Nomad job and variable were found gone, and the purge job's tries and last word.
    deleted_at = pw.DateTimeField(null=True)
    deleted_by = pw.CharField(max_length=300, default="")
    purged_at = pw.DateTimeField(null=True)
    purge_attempts = pw.IntegerField(default=0)
    purge_note = pw.TextField(default="")
    # Stopped by a person (panel.actions.lifecycle): its Nomad job is stopped, not purged; any
    # deployment starts it again. NULL while it runs.
    stopped_at = pw.DateTimeField(null=True)
    stopped_by = pw.CharField(max_length=300, default="")

    @classmethod
    def live(cls, *fields: Any) -> pw.ModelSelect:
        """Apps that are not deleted (``App.live().where(...)`` instead of ``App.select()``)."""
        return cls.select(*fields).where(cls.deleted_at.is_null())

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_stopped(self) -> bool:
        return self.stopped_at is not None


App.add_index(
    App.index(App.slug, unique=True, where=App.deleted_at.is_null(), name="app_slug_live")
)


class EnvVar(BaseModel):
    """An environment variable; when ``is_secret`` the value is a Fernet token, never plain."""

    app = pw.ForeignKeyField(App, backref="env_vars", on_delete="CASCADE")
    key = pw.CharField(max_length=128)
    value = pw.TextField()
    is_secret = pw.BooleanField(default=False)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("app", "key"), True),)


class Domain(BaseModel):
    app = pw.ForeignKeyField(App, backref="domains", on_delete="CASCADE")
    hostname = pw.CharField(max_length=253, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class Release(BaseModel):
    """An immutable snapshot of what to run: image, source revision and configuration."""

    app = pw.ForeignKeyField(App, backref="releases", on_delete="CASCADE")
    number = pw.IntegerField()
    image = pw.CharField(max_length=512)
    git_sha = pw.CharField(max_length=40, default="")
    config = JSONField(default=dict)
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("app", "number"), True),)


class Deployment(BaseModel):
    app = pw.ForeignKeyField(App, backref="deployments", on_delete="CASCADE")
    release = pw.ForeignKeyField(Release, backref="deployments", on_delete="CASCADE")
    status = pw.CharField(
        max_length=16,
        default=DeploymentStatus.QUEUED.value,
        choices=[(s.value, s.value) for s in DeploymentStatus],
        index=True,
    )
    status_message = pw.TextField(default="")
    nomad_job_version = pw.IntegerField(null=True)
    nomad_eval_id = pw.CharField(max_length=36, null=True)
    nomad_deployment_id = pw.CharField(max_length=36, null=True)
    # The namespace its job was registered in (None: NOMAD_NAMESPACE, rows before 020).
    nomad_namespace = pw.CharField(max_length=128, null=True)
    triggered_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    requested_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    # Runs of its deploy job that ended without an outcome (Nomad unreachable, a worker killed);
    # counted here so that no sweep or restart can reset them.
    attempts = pw.IntegerField(default=0)
    # Moved every few seconds by whatever holds the deployment: its deploy job until Nomad
    # accepted the job, then the follower. A stale one means nobody does.
    heartbeat_at = pw.DateTimeField(null=True)
    # The instances it runs when a scale changed them after it was registered, or a restart
    # carried a scaled count over (panel.actions.lifecycle); None: its release's count.
    instance_count = pw.IntegerField(null=True)
    # Why it was asked for (deploy, build, redelivery, rollback, reapply, restart, start) and
    # by whom, in words (an email, "operator NAME (local shell)", "build of <sha>"); empty on
    # rows older than migration 016.
    reason = pw.CharField(max_length=32, default="")
    requested_by = pw.CharField(max_length=300, default="")

    class Meta:
        indexes = ((("app", "requested_at"), False),)

    @property
    def registered(self) -> bool:
        """Nomad accepted this deployment's job version (the follower's from then on)."""
        return self.nomad_job_version is not None

    @property
    def count(self) -> int:
        """The instances this deployment runs: a scaled count, else its release's."""
        if self.instance_count is not None:
            return self.instance_count
        return int((self.release.config or {}).get("count") or 1)


class WebhookDelivery(BaseModel):
    """A GitHub delivery whose signature matched an app's secret: what it was, what it did.

    (app, delivery) is unique, so the same X-GitHub-Delivery is handled once, however many
    copies arrive at once. Deliveries with a bad signature are refused and not kept here.
    """

    app = pw.ForeignKeyField(App, backref="deliveries", on_delete="CASCADE")
    delivery = pw.CharField(max_length=64)
    event = pw.CharField(max_length=64)
    outcome = pw.CharField(max_length=16)  # accepted, ignored, failed
    reason = pw.TextField(default="")
    git_sha = pw.CharField(max_length=40, default="")
    branch = pw.CharField(max_length=255, default="")
    received_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("app", "delivery"), True), (("app", "received_at"), False))


class Build(BaseModel):
    """One build of one commit of a repo app: a Nomad batch job, then (on success) a deploy."""

    app = pw.ForeignKeyField(App, backref="builds", on_delete="CASCADE")
    number = pw.IntegerField()
    git_sha = pw.CharField(max_length=40)
    branch = pw.CharField(max_length=255)
    reason = pw.CharField(max_length=200, default="")
    status = pw.CharField(
        max_length=16,
        default=BuildStatus.QUEUED.value,
        choices=[(s.value, s.value) for s in BuildStatus],
        index=True,
    )
    status_message = pw.TextField(default="")
    delivery = pw.ForeignKeyField(
        WebhookDelivery, null=True, backref="builds", on_delete="SET NULL"
    )
    triggered_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    nomad_job_id = pw.CharField(max_length=128, null=True)
    nomad_namespace = pw.CharField(max_length=128, null=True)  # of its job (None: before 020)
    image = pw.CharField(max_length=512, default="")  # <registry>/<repository>@<digest>
    digest = pw.CharField(max_length=80, default="")
    exit_code = pw.IntegerField(null=True)
    builder = pw.CharField(max_length=16, default="")  # dockerfile or buildpacks, once known
    # What the commit's helios.toml sets (checked), read before the build starts.
    repo_settings = JSONField(default=dict)
    deployment = pw.ForeignKeyField(Deployment, null=True, on_delete="SET NULL")
    attempts = pw.IntegerField(default=0)
    requested_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    heartbeat_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("app", "number"), True),)

    @property
    def registered(self) -> bool:
        """Nomad accepted this build's job (the follower's from then on)."""
        return self.nomad_job_id is not None


class LogChunk(BaseModel):
    """A piece of a build's output: whole lines of one task's stdout or stderr, scrubbed of the
    build's secrets before they were stored (``panel.logs.collect``).

    ``seq`` orders a build's chunks (the log's Server-Sent Events ids). ``offset`` is how many
    bytes of that task's stream in Nomad were read once this chunk was stored: a collector
    starting again resumes there. ``final`` marks the end of a stream (Nomad ended it: the task
    is dead). ``size`` is what the row counts against HELIOS_LOG_MAX_BYTES: its text's UTF-8
    bytes, and for the "log truncated" line the rest of the allowance, so nothing follows it.
    """

    build = pw.ForeignKeyField(Build, backref="log_chunks", on_delete="CASCADE")
    seq = pw.IntegerField()
    task = pw.CharField(max_length=16)  # fetch or build
    stream = pw.CharField(max_length=8)  # stdout or stderr
    text = pw.TextField(default="")
    size = pw.IntegerField(default=0)  # bytes
    offset = pw.BigIntegerField(default=0)  # bytes of the task's stream in Nomad
    final = pw.BooleanField(default=False)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("build", "seq"), True), (("build", "task", "stream", "offset"), False))


class OneOffRun(BaseModel):
    """A one-off command (``helios run APP -- CMD``): a Nomad batch job ``<app>-run-<id>`` of
    the app's live release (its image, env and secrets) running ``command`` (an argument list,
    never a shell line) once, with no restart. Its output is stored in the app's log
    (``AppLog.run``), scrubbed; ``exit_code`` is the command's, once it ended."""

    app = pw.ForeignKeyField(App, backref="runs", on_delete="CASCADE")
    release = pw.ForeignKeyField(Release, backref="runs", on_delete="CASCADE")
    command = JSONField(default=list)
    timeout_s = pw.IntegerField()
    requested_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    requested_by_name = pw.CharField(max_length=300, default="")
    status = pw.CharField(
        max_length=16,
        default=RunStatus.QUEUED.value,
        choices=[(s.value, s.value) for s in RunStatus],
        index=True,
    )
    status_message = pw.TextField(default="")
    exit_code = pw.IntegerField(null=True)
    nomad_job_id = pw.CharField(max_length=128, null=True)
    nomad_namespace = pw.CharField(max_length=128, null=True)  # of its job (None: before 020)
    requested_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "one_off_run"
        indexes = ((("app", "requested_at"), False),)

    @property
    def registered(self) -> bool:
        """Nomad accepted its job."""
        return self.nomad_job_id is not None


class AppLog(BaseModel):
    """A piece of an app's deploy or runtime log, scrubbed of the app's secrets before it was
    stored (``panel.logs.runtime``).

    ``stream`` says where it comes from: ``helios`` (a step of Helios's own: queued, submitted,
    the outcome), ``nomad`` (an allocation's task event: started, restarting, killed for memory,
    unhealthy) or ``stdout``/``stderr`` (what a task printed). ``seq`` orders all of one app's
    rows (the Server-Sent Events ids of its streams); ``deployment`` is the Helios deployment the
    allocation belongs to, so an old deployment's log stays readable. ``offset`` is, for a
    task's output, the bytes of that stream read from Nomad once the row was stored (a collector
    starting again resumes there) and, for task events, the event's time in nanoseconds (an
    event is stored once). A deployment keeps the newest HELIOS_LOG_MAX_BYTES of its output;
    rows older than HELIOS_LOG_RETENTION_DAYS are removed.
    """

    app = pw.ForeignKeyField(App, backref="log_rows", on_delete="CASCADE")
    seq = pw.IntegerField()
    deployment = pw.ForeignKeyField(Deployment, null=True, backref="log_rows", on_delete="CASCADE")
    # A one-off run's output (and its end line) belongs to the run, not to a deployment.
    run = pw.ForeignKeyField(OneOffRun, null=True, backref="log_rows", on_delete="CASCADE")
    alloc = pw.CharField(max_length=36, default="")  # Nomad allocation id
    process = pw.CharField(max_length=64, default="")  # the task group
    task = pw.CharField(max_length=64, default="")
    stream = pw.CharField(max_length=8)  # helios, nomad, stdout or stderr
    text = pw.TextField(default="")
    size = pw.IntegerField(default=0)  # bytes of UTF-8
    offset = pw.BigIntegerField(default=0)
    final = pw.BooleanField(default=False)  # Nomad ended this task's stream
    created_at = pw.DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = (
            (("app", "seq"), True),
            (("deployment", "seq"), False),
            (("alloc", "task", "stream", "offset"), False),
        )


class AppDrift(BaseModel):
    """How the app's job in Nomad compared, when last checked, with the job of its live release
    (``panel.reconcile.drift``): in_sync, drifted, missing, stopped or unknown (Nomad did not
    answer). ``diff`` is Nomad's plan diff as text, scrubbed of the app's secrets;
    ``detected_at`` is when the current drift was first seen (None while in sync)."""

    app = pw.ForeignKeyField(App, backref="drift_rows", unique=True, on_delete="CASCADE")
    state = pw.CharField(max_length=16, index=True)
    diff = pw.TextField(default="")
    deployment = pw.ForeignKeyField(Deployment, null=True, on_delete="SET NULL")  # compared with
    checked_at = pw.DateTimeField(default=utcnow)
    detected_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "app_drift"


class AppHealth(BaseModel):
    """An app's health as the sampler last saw it in Nomad and Consul (``panel.live``): state
    (healthy, degraded, down, not_running), counts, why, and each instance with its checks;
    ``changed_at`` is when the state last changed."""

    app = pw.ForeignKeyField(App, backref="health_rows", on_delete="CASCADE", unique=True)
    state = pw.CharField(max_length=16)
    reason = pw.TextField(default="")
    wanted = pw.IntegerField(default=0)
    running = pw.IntegerField(default=0)
    healthy = pw.IntegerField(default=0)
    instances = JSONField(default=list)
    changed_at = pw.DateTimeField(default=utcnow)
    checked_at = pw.DateTimeField(default=utcnow)


class AppMetric(BaseModel):
    """One point of an app's CPU and memory use (all its instances together) at one
    resolution: 10 s points are kept an hour, 1 min points a day, 10 min points a week
    (``panel.live.RESOLUTIONS``), so an app never has more than 2,808 rows. A point sums
    its samples (the mean is the sum over ``samples``) and keeps the highest; the limits are
    the instances' reservations at the last sample."""

    app = pw.ForeignKeyField(App, backref="metric_rows", on_delete="CASCADE")
    resolution = pw.IntegerField()  # seconds per point
    bucket = pw.BigIntegerField()  # epoch seconds of the point's start
    samples = pw.IntegerField(default=0)
    cpu_sum = pw.FloatField(default=0.0)  # MHz
    cpu_max = pw.FloatField(default=0.0)
    memory_sum = pw.BigIntegerField(default=0)  # bytes
    memory_max = pw.BigIntegerField(default=0)
    cpu_limit = pw.FloatField(default=0.0)  # MHz reserved by the instances sampled
    memory_limit = pw.BigIntegerField(default=0)  # bytes

    class Meta:
        indexes = ((("app", "resolution", "bucket"), True), (("resolution", "bucket"), False))


class DomainState(BaseModel):
    """One address of an app (its default host or a custom domain) as the last domain check
    saw it (``panel.reconcile.domains``, judged by ``panel.domains_state``): state (ok,
    warning, error) and one sentence, then the facts of each part as read: ``dns``
    (addresses, or why none), ``routing`` (Traefik's router, its status and errors) and
    ``tls`` (the certificate served, whether it verified and why not)."""

    app = pw.ForeignKeyField(App, backref="domain_states", on_delete="CASCADE")
    hostname = pw.CharField(max_length=253)
    is_default = pw.BooleanField(default=False)
    state = pw.CharField(max_length=16)
    summary = pw.TextField(default="")
    dns = JSONField(default=dict)
    routing = JSONField(default=dict)
    tls = JSONField(default=dict)
    checked_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "domain_state"
        indexes = ((("app", "hostname"), True),)


# ---------------------------------------------------------------------------------------------
# Machines, access and history
# ---------------------------------------------------------------------------------------------


class Host(BaseModel):
    name = pw.CharField(max_length=253, unique=True)
    address = pw.CharField(max_length=253)
    ssh_user = pw.CharField(max_length=32, default="root")
    ssh_port = pw.IntegerField(default=22)
    groups = JSONField(default=list)
    ssh_private_key = pw.TextField(null=True)  # Fernet token
    # known_hosts lines of the host's SSH keys; used only once an operator pinned them.
    ssh_host_keys = pw.TextField(default="")
    ssh_host_keys_pinned_at = pw.DateTimeField(null=True)
    state = pw.CharField(max_length=16, default="new")
    last_run_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    # While its Nomad node drains before removal: the state to return to if the drain fails.
    state_before_drain = pw.CharField(max_length=16, null=True)
    note = pw.TextField(default="")  # why the last drain failed ('' when nothing went wrong)


class ApiToken(BaseModel):
    """A personal API token: only its SHA-256 is kept, the token is shown once."""

    user = pw.ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    token_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16)
    scopes = JSONField(default=list)
    expires_at = pw.DateTimeField(null=True)
    last_used_at = pw.DateTimeField(null=True)
    revoked_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    # The token that minted this one through the API (None: made in the panel or the shell).
    # A minted token never has more scope or a later expiry; revoking a token revokes its own.
    parent = pw.ForeignKeyField("self", null=True, backref="children", on_delete="CASCADE")


class UserSession(BaseModel):
    """A signed-in browser: the cookie holds a random id whose SHA-256 is kept here.

    Signing out revokes the row, so a copied cookie stops working at once; a password change,
    "sign out everywhere" and losing every team revoke all of a person's rows.
    """

    user = pw.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    address = pw.CharField(max_length=64, default="")
    user_agent = pw.CharField(max_length=200, default="")
    created_at = pw.DateTimeField(default=utcnow)
    last_seen_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)


class Event(BaseModel):
    subject = pw.CharField(max_length=100, index=True)
    actor = pw.CharField(max_length=254, default="system")
    team = pw.ForeignKeyField(Team, null=True, backref="events", on_delete="SET NULL")
    # The person an event is about when it belongs to no team (sign-ins, their tokens).
    user = pw.ForeignKeyField(User, null=True, backref="events", on_delete="SET NULL")
    data = JSONField(default=dict)
    created_at = pw.DateTimeField(default=utcnow, index=True)


# ---------------------------------------------------------------------------------------------
# Provisioning: Ansible runs against the hosts
# ---------------------------------------------------------------------------------------------


class ProvisionRun(BaseModel):
    """One run of playbooks/site.yml: a plan (check mode with diff) or an apply."""

    kind = pw.CharField(
        max_length=8, choices=[("plan", "plan"), ("apply", "apply"), ("maintain", "maintain")]
    )
    status = pw.CharField(
        max_length=16,
        default=ProvisionStatus.QUEUED.value,
        choices=[(s.value, s.value) for s in ProvisionStatus],
        index=True,
    )
    host_ids = JSONField(default=list)
    recap = JSONField(default=dict)
    message = pw.TextField(default="")
    requested_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    requested_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    heartbeat_at = pw.DateTimeField(null=True)  # refreshed while a worker runs it


class ClusterCredentials(BaseModel):
    """How Helios reaches the Nomad cluster provisioning built: one row, replaced by each apply
    that hands credentials over. ``token``, ``client_key`` and ``management_token`` are encrypted
    (SecretCipher); the
    certificates are PEM text. NOMAD_ADDR in the environment overrides all of it."""

    address = pw.CharField(max_length=255)
    region = pw.CharField(max_length=128, default="")
    accessor = pw.CharField(max_length=64, default="")
    token = pw.TextField()
    ca_cert = pw.TextField(default="")
    client_cert = pw.TextField(default="")
    client_key = pw.TextField(default="")
    # Used only to create team namespaces and team tokens (empty: none handed over).
    management_accessor = pw.CharField(max_length=64, default="")
    management_token = pw.TextField(default="")
    # The cluster's registry for builds (empty: none); the password encrypted, the CA ca_cert.
    registry = pw.CharField(max_length=255, default="")
    registry_username = pw.CharField(max_length=64, default="")
    registry_password = pw.TextField(default="")
    run = pw.ForeignKeyField(ProvisionRun, null=True, on_delete="SET NULL")
    received_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "cluster_credentials"


class ProvisionEvent(BaseModel):
    """One Ansible event of a run, scrubbed of secrets: what the live page shows."""

    run = pw.ForeignKeyField(ProvisionRun, backref="events", on_delete="CASCADE")
    seq = pw.IntegerField()
    data = JSONField(default=dict)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("run", "seq"), True),)


# ---------------------------------------------------------------------------------------------
# The follower's place in Nomad's event stream
# ---------------------------------------------------------------------------------------------


class FollowerCursor(BaseModel):
    """The index of the last Nomad event batch the follower handled, per cluster and namespace.

    Kept in the database, which outlives a Redis restart, so a restarted follower resumes there.
    """

    name = pw.CharField(max_length=255, primary_key=True)
    event_index = pw.BigIntegerField(default=0)
    updated_at = pw.DateTimeField(default=utcnow)


# ---------------------------------------------------------------------------------------------
# Outgoing notifications: a team's webhooks and their deliveries
# ---------------------------------------------------------------------------------------------


class Notifier(BaseModel):
    """An outgoing webhook of a team: the event subjects it wants, where and how to send them.

    ``secret`` is a Fernet token of the HMAC key that signs each delivery (shown once).
    """

    team = pw.ForeignKeyField(Team, backref="notifiers", on_delete="CASCADE")
    name = pw.CharField(max_length=100)
    url = pw.CharField(max_length=2048)
    format = pw.CharField(max_length=8, default="json")
    subjects = JSONField(default=list)
    secret = pw.TextField()
    enabled = pw.BooleanField(default=True)
    created_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("team", "name"), True),)


class NotifierDelivery(BaseModel):
    """One event sent (or being sent) to one notifier, and how it went."""

    notifier = pw.ForeignKeyField(Notifier, backref="deliveries", on_delete="CASCADE")
    event = pw.ForeignKeyField(Event, null=True, on_delete="SET NULL")
    subject = pw.CharField(max_length=100)
    status = pw.CharField(max_length=16, default="pending")
    attempts = pw.IntegerField(default=0)
    last_status_code = pw.IntegerField(null=True)
    last_error = pw.CharField(max_length=500, default="")
    created_at = pw.DateTimeField(default=utcnow)
    delivered_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("notifier", "event"), True),)


class ChangeCount(BaseModel):
    """One row: how many times what the dashboard shows has changed. The database counts, by
    triggers on those tables (``panel.db.CHANGE_TRACKED_TABLES``), in the same transaction
    as the change, whichever process makes it; the panel keeps a rendered page while the
    count it was rendered at is still the count (``panel.web.fragments``)."""

    n = pw.BigIntegerField(default=0)


MODELS: tuple[type[BaseModel], ...] = (
    User,
    Team,
    Membership,
    App,
    EnvVar,
    Domain,
    DomainState,
    Release,
    Deployment,
    WebhookDelivery,
    Build,
    LogChunk,
    OneOffRun,
    AppLog,
    AppHealth,
    AppMetric,
    AppDrift,
    Host,
    ApiToken,
    Event,
    ProvisionRun,
    ProvisionEvent,
    ClusterCredentials,
    UserSession,
    FollowerCursor,
    Notifier,
    NotifierDelivery,
    ChangeCount,
)
