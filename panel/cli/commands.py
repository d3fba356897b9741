"""The `helios` command line: thin wrappers over functions that tests call directly."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

import click

from panel.cli.client import ACTION_EXIT, APP, EXIT_FAILED, EXIT_NOT_FOUND, Checked
from panel.cli.operator import acting_as_os_user
from panel.config import ConfigError, Settings, mask_url
from panel.validation import validate_release

__all__ = ["main"]

EXIT_USAGE = 2
DISTRIBUTION = "helios"  # the package whose version `helios --version` prints
MIGRATION_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,60}")


class _Fail(click.ClickException):
    """A clear one-line error with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Helios(click.Group):
    """The `helios` group: every argument must be text (UTF-8, no NUL) before anything parses
    it, so bytes that are not UTF-8 (they arrive as lone surrogates) end in one line, exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse an argument that is not valid text, then parse as usual."""
        for position, arg in enumerate(args, 1):
            if "\x00" in arg or not _is_utf8(arg):
                raise _Fail(
                    f"argument {position} ({arg!a}) is not text (UTF-8, no NUL): retype it",
                    EXIT_USAGE,
                )
        return super().parse_args(ctx, args)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _start(name: str):
    """Settings, logging, the database and Redis for process ``name``, after the checks it
    needs (the address free, Redis answering, the database opening): each failure is one line
    saying what to do, and nothing was created."""
    from panel.db import DatabaseError
    from panel.run import preflight
    from panel.run.redis_server import RedisServerError, find_redis_server
    from panel.run.runtime import start_process

    settings = _settings()
    try:
        if name in ("up", "panel"):
            preflight.check_port(settings.bind)
        if settings.redis_url or name in ("worker", "follower"):
            preflight.check_redis(settings.effective_redis_url, configured=bool(settings.redis_url))
        elif name == "up":
            find_redis_server()  # `helios up` starts its own: is there one to start?
        process = start_process(name, settings)
        preflight.check_database(process.database, settings.effective_database_url)
    except (DatabaseError, preflight.PreflightError, RedisServerError) as exc:
        raise click.ClickException(str(exc)) from None
    return process


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown (the package is not installed: pip install .)"
    click.echo(f"helios {version}")
    ctx.exit()


@click.group(cls=_Helios, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Print the version of Helios and exit.")  # fmt: skip
def cli() -> None:
    """Helios: deploy apps to your own Nomad cluster.

    Settings come from HELIOS_* environment variables; `helios config` shows them.
    """


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@cli.command()
def up() -> None:
    """Run everything locally: migrations, Redis, the panel and a worker (Ctrl-C stops all).

    A first administrator is created on the first run and its password printed once.
    """
    process = _start("up")  # first: it picks the metrics directory (see panel.metrics)
    from panel.run.up import run_up

    sys.exit(run_up(process))


@cli.command()
def panel() -> None:
    """Serve the web panel and API with gunicorn on HELIOS_BIND (SIGTERM drains requests)."""
    from panel.run.web_server import run_panel

    sys.exit(run_panel(_start("panel")))


@cli.command()
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--with-follower", "with_follower", is_flag=True,
              help="Also run the follower, forked from this worker so the two share their "
              "loaded code (what `helios up` does); the worker stops when it ends. Run one "
              "follower per installation: elsewhere use `helios follower`.")  # fmt: skip
def worker(burst: bool, with_follower: bool) -> None:
    """Run reconcile jobs from the queues (SIGTERM lets the current job finish)."""
    process = _start("worker")  # first: it picks the metrics directory (see panel.metrics)
    from panel.run.worker import run_worker

    sys.exit(run_worker(process, burst=burst, follower=with_follower))


@cli.command()
def follower() -> None:
    """Follow every deployment Nomad accepted to its end, through Nomad's event stream.

    Run one per installation, next to the workers (`helios up` starts one). SIGTERM stops it;
    a new one resumes where it stopped.
    """
    process = _start("follower")  # first: it picks the metrics directory (see panel.metrics)
    from panel.follow import run_follower

    sys.exit(run_follower(process))


# ---------------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Apply, roll back, create and list database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from panel.db import migrate_up, refresh_statistics

    _start("db")
    applied = migrate_up()
    refresh_statistics()  # the query planner's view of the tables (workers refresh it hourly)
    click.echo(f"applied: {', '.join(applied)}" if applied else "already up to date")


@db.command("downgrade")
@click.option(
    "--steps",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="How many migrations to roll back.",
)
@click.option("--all", "all_", is_flag=True, help="Roll back every migration (empties the db).")
def db_downgrade(steps: int, all_: bool) -> None:
    """Roll back the newest migration(s)."""
    from panel.db import migrate_down, migrate_status

    _start("db")
    if all_:
        steps = len(migrate_status())
    undone = migrate_down(steps)
    click.echo(f"rolled back: {', '.join(undone)}" if undone else "nothing to roll back")


@db.command("new")
@click.argument("name")
def db_new(name: str) -> None:
    """Write an empty migration NAME (letters, digits, '_') to fill in."""
    from peewee_migrate import Router

    from panel.db import MIGRATIONS_DIR, database

    if not MIGRATION_NAME_RE.fullmatch(name):
        raise click.BadParameter("use 1-60 letters, digits and '_' only, e.g. add_app_notes")
    _start("db")
    with database.connection_context():
        created = Router(database, migrate_dir=MIGRATIONS_DIR).create(name)
    click.echo(f"created {MIGRATIONS_DIR / (str(created) + '.py')}")


@db.command("status")
def db_status() -> None:
    """List migrations and whether each is applied."""
    from panel.db import migrate_status

    _start("db")
    for name, applied in migrate_status():
        click.echo(f"[{'x' if applied else ' '}] {name}")


# ---------------------------------------------------------------------------------------------
# Backups
# ---------------------------------------------------------------------------------------------

BACKUP_EXIT = {"conflict": EXIT_USAGE, "invalid": EXIT_USAGE, "not_found": EXIT_NOT_FOUND}


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.1f} KiB"


@cli.command()
@click.argument("path", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup(path: Path, force: bool) -> None:
    """Write a backup of this installation to PATH (a tar file, mode 0600).

    It holds a consistent snapshot of the database, taken while Helios runs (SQLite's online
    backup; pg_dump for PostgreSQL), and the keys needed to read it: the encryption key of
    every secret and the session key. SENSITIVE: keep it encrypted and off this machine.
    Restore it with `helios restore PATH`. Exit code 2 when PATH exists (without --force) or
    is a folder, 4 when its folder does not exist, 1 when the backup failed.
    """
    from panel.actions.backups import create_backup
    from panel.backup import BackupError, require_installation
    from panel.run import preflight
    from panel.run.runtime import start_process

    settings = _settings()
    try:
        require_installation(settings)  # before opening it creates an empty SQLite file
        process = start_process("backup", settings)  # Redis is not needed: not checked
        preflight.check_database(process.database, settings.effective_database_url)
    except BackupError as exc:
        raise _Fail(str(exc), BACKUP_EXIT.get(exc.code, EXIT_FAILED)) from None
    except preflight.PreflightError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backing up {mask_url(settings.effective_database_url)} ...")
    try:
        with process.database.connection_context(), acting_as_os_user():
            result = create_backup(actor=None, target=path, settings=process.settings,
                                   force=force, redis_conn=process.redis)  # fmt: skip
    except BackupError as exc:
        raise _Fail(str(exc), BACKUP_EXIT.get(exc.code, EXIT_FAILED)) from None
    click.echo(f"wrote {result.path} ({_size(result.size)}, mode 0600) in {result.seconds:.1f} s")
    click.echo(f"holds {_counted(result.counts)}")
    click.echo("it holds the key to every secret: keep it encrypted, off this machine", err=True)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="Replace the installation in HELIOS_DATA_DIR and the database (stop Helios first).",
)
def restore(path: Path, force: bool) -> None:
    """Restore the backup PATH into an empty HELIOS_DATA_DIR and database.

    Everything is checked first (the archive, its checksums, its schema level, the
    encryption key); then the database and key files (0600) are written and migrated up to
    this version. An installation already there is refused unless --force (stop every Helios
    process first). Exit code 2 when the installation is not empty or the backup is not
    usable (damaged, newer than this Helios, its key missing), 4 when PATH does not exist.
    """
    from panel.actions.backups import restore_installation
    from panel.backup import BackupError
    from panel.run.runtime import configure_logging

    settings = _settings()
    configure_logging(settings, "restore")
    click.echo(f"restoring {path} into {mask_url(settings.effective_database_url)} ...")
    try:
        with acting_as_os_user():
            result = restore_installation(actor=None, source=path, settings=settings,
                                          force=force)  # fmt: skip
    except BackupError as exc:
        raise _Fail(str(exc), BACKUP_EXIT.get(exc.code, EXIT_FAILED)) from None
    made = result.manifest
    click.echo(f"restored the backup of {made.created_at} (Helios {made.helios_version}) "
               f"in {result.seconds:.1f} s")  # fmt: skip
    click.echo(f"holds {_counted(result.counts)}")
    if result.migrated:
        click.echo(f"migrated up: {', '.join(result.migrated)}")
    if result.keys_written:
        click.echo(f"wrote {', '.join(result.keys_written)} into {settings.data_dir} (0600)")


# ---------------------------------------------------------------------------------------------
# Apps: render, plan, roll back
# ---------------------------------------------------------------------------------------------


def _app(slug: str):
    from panel.models import App

    app = App.live().where(App.slug == slug).first()
    if app is None:
        raise _Fail(f"no app named {slug!r}: check the name on the dashboard", EXIT_NOT_FOUND)
    return app


def _preview(slug: str):
    from panel.actions.apps import preview_spec
    from panel.actions.common import ActionError

    process = _start("cli")
    try:
        with process.database.connection_context():
            return preview_spec(_app(slug), process.settings), process
    except ActionError as exc:
        raise _Fail(f"{slug}: {exc}", EXIT_USAGE) from None


@cli.command()
@click.argument("app", required=False, type=APP)
@click.option(
    "--file",
    "manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Render an app manifest (TOML) instead of an app in the database.",
)
def render(app: str | None, manifest: Path | None) -> None:
    """Print the Nomad job JSON Helios would submit for APP (or for --file app.toml).

    Nothing is sent anywhere. Exit code 2 when the app or manifest is invalid, 4 when there
    is no app APP.
    """
    from panel.render.nomad import render_job

    if bool(app) == bool(manifest):
        raise click.UsageError("name an APP or give --file app.toml (one of the two)")
    if manifest is not None:
        from panel.schema.manifest import ManifestError, load_manifest

        try:
            irregular = manifest.exists() and not manifest.is_file()
        except OSError:  # e.g. a name too long: load_manifest says why it cannot be read
            irregular = False
        if irregular:
            raise _Fail(f"{manifest}: not a regular file; give a TOML manifest", EXIT_USAGE)
        try:
            spec = load_manifest(manifest, _settings())
        except ManifestError as exc:
            raise _Fail(str(exc), EXIT_USAGE) from None
    else:
        spec, _process = _preview(app or "")
    click.echo(json.dumps(render_job(spec), indent=2, sort_keys=False))


@cli.command()
@click.argument("app", type=APP)
@click.option("--json", "as_json", is_flag=True, help="Print Nomad's plan response as JSON.")
def plan(app: str, as_json: bool) -> None:
    """Show what deploying APP's current configuration would change in Nomad (a dry run).

    Exit code 3 when Nomad refuses the token, 4 when there is no app APP, 5 when Nomad cannot
    be reached.
    """
    from panel.cli.client import EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE
    from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind
    from panel.namespaces import namespace_for
    from panel.reconcile.pending import like_the_running_job
    from panel.reconcile.plan import format_plan
    from panel.render.nomad import render_job

    exit_codes = {
        NomadErrorKind.DENIED: EXIT_AUTH,
        NomadErrorKind.NOT_FOUND: EXIT_NOT_FOUND,
        NomadErrorKind.UNREACHABLE: EXIT_UNREACHABLE,
    }
    spec, process = _preview(app)
    with process.database.connection_context():
        namespace = namespace_for(_app(app).team, process.settings)
    try:
        driver = NomadDriver.for_namespace(process.settings, namespace)
        body = like_the_running_job(render_job(spec), driver.read_job(spec.slug))
        result = driver.plan_job(spec.slug, body)
    except NomadError as exc:
        raise _Fail(str(exc), exit_codes.get(exc.kind, EXIT_FAILED)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from panel.reconcile.follow import describe_plan, placement_failure

    for line in format_plan(result):
        click.echo(line)
    click.echo(f"\nScheduler: {describe_plan(result)}")
    failure = placement_failure(result.get("FailedTGAllocs"))
    if failure:
        click.echo(f"Warning: {failure}", err=True)


@cli.command()
@click.argument("app", type=APP)
@click.argument("release", type=Checked(validate_release, "release"))
def rollback(app: str, release: int) -> None:
    """Deploy RELEASE of APP again, as a new deployment (the worker carries it out).

    Recorded as done by the OS account running it. Exit codes as through the API: 4 when
    the app or release does not exist, 2 when the request is refused.
    """
    from panel.actions.apps import request_rollback
    from panel.actions.common import ActionError

    process = _start("cli")
    try:
        with process.database.connection_context(), acting_as_os_user():
            requested = request_rollback(
                actor=None, app=_app(app), release_number=release,
                settings=process.settings, redis_conn=process.redis,
            )  # fmt: skip
    except ActionError as exc:
        raise _Fail(f"{app}: {exc}", ACTION_EXIT.get(exc.code, EXIT_FAILED)) from None
    number = requested.deployment.id
    click.echo(f"deployment #{number} queued: {app} back to release {release}")
    if requested.notice:
        click.echo(requested.notice, err=True)
    if not requested.enqueued:
        click.echo("Redis is not reachable: the worker queues it once Redis is back.", err=True)


# ---------------------------------------------------------------------------------------------
# Accounts and settings
# ---------------------------------------------------------------------------------------------


@cli.group()
def admin() -> None:
    """Manage accounts from the server's shell."""


def _read_password() -> tuple[str, bool]:
    """The password from stdin when it is not a terminal, else a generated one (and True)."""
    from panel.crypto import generate_password

    if sys.stdin is None or sys.stdin.isatty():
        return generate_password(), True
    return sys.stdin.readline().rstrip("\r\n"), False


@admin.command("create")
@click.argument("email")
@click.option("--team", default="default", show_default=True, help="Team to join as owner.")
@click.option(
    "--operator",
    is_flag=True,
    help="Make the account an operator (manages hosts and the cluster). Off by default.",
)
def admin_create(email: str, team: str, operator: bool) -> None:
    """Create an account for EMAIL.

    The password is read from standard input when it is not a terminal; otherwise a random
    one is generated and printed once. Exit code 2 when EMAIL, --team or the password is not
    acceptable.
    """
    from panel.actions.accounts import create_user, validate_email, validate_password
    from panel.actions.common import ActionError
    from panel.db import database
    from panel.validation import ValidationError, validate_slug

    password, generated = _read_password()
    try:
        email = validate_email(email)
        team = validate_slug(team, "team")
        validate_password(password, email)
    except (ActionError, ValidationError) as exc:
        raise _Fail(str(exc), EXIT_USAGE) from None
    process = _start("admin")
    try:
        with database.connection_context(), acting_as_os_user() as who:
            user = create_user(email, password, team_slug=team, is_operator=operator,
                               actor=who, redis_conn=process.redis)  # fmt: skip
    except ActionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.email} (team {team}{', operator' if operator else ''})")
    if generated:
        click.echo(f"password: {password}  (shown once; store it now)")


@admin.command("reset-password")
@click.argument("email")
def admin_reset_password(email: str) -> None:
    """Give the account EMAIL a new password and sign it out everywhere.

    The password is read from standard input when it is not a terminal; otherwise a random
    one is generated and printed once. The reset is recorded in the audit log under the OS
    account running the command. Exit code 2 when the password is not acceptable, 4 when no
    account uses EMAIL.
    """
    from panel.actions.accounts import set_password
    from panel.actions.common import ActionError
    from panel.db import database
    from panel.models import User

    password, generated = _read_password()
    process = _start("admin")
    with database.connection_context(), acting_as_os_user() as operator:
        user = User.get_or_none(User.email == email.strip().lower())
        if user is None:
            raise _Fail(f"no account uses {email.strip()!r}: check the address", EXIT_NOT_FOUND)
        try:
            ended = set_password(
                user, password, actor=operator, reset=True, redis_conn=process.redis
            )
        except ActionError as exc:
            raise _Fail(str(exc), EXIT_USAGE) from None
    click.echo(f"password of {user.email} reset; {ended} session(s) signed out")
    if generated:
        click.echo(f"password: {password}  (shown once; store it now)")


@cli.command("config")
def show_config() -> None:
    """Print the effective settings, secrets masked."""
    settings = _settings()
    for name, value, help_text in settings.describe():
        click.echo(f"{name}={value}")
        click.echo(click.style(f"    {help_text}", dim=True))
    click.echo(f"Nomad connection: {_nomad_connection_source(settings)}")


def _nomad_connection_source(settings: Settings) -> str:
    """Where the Nomad connection comes from (environment or provisioning), token masked.

    Reads the database only when it exists: `helios config` creates nothing.
    """
    from panel.cluster_access import ConnectionSource, connection_source
    from panel.db import open_database

    if not settings.nomad_addr:
        url = settings.effective_database_url
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            return ConnectionSource("none").describe()
        try:
            open_database(url)
        except (ConfigError, OSError, RuntimeError) as exc:
            return f"unknown: the database cannot be opened ({exc})"
    return connection_source(settings).describe()


from panel.cli.hosts import hosts  # noqa: E402

cli.add_command(hosts)


def main() -> None:
    """Entry point of the `helios` console script."""
    try:
        cli(prog_name="helios")
    except UnicodeError as exc:
        # Text that is not UTF-8 from somewhere other than argv (a file, the environment).
        click.echo(f"Error: text that is not valid UTF-8 ({exc.reason}): use UTF-8", err=True)
        sys.exit(EXIT_USAGE)


# ---------------------------------------------------------------------------------------------
# Client commands: they talk to a panel's API (panel/cli/client.py). `rollback` goes through
# the API when credentials exist, else it falls back to the operator's database path above.
# ---------------------------------------------------------------------------------------------

from panel.cli.client import apps as apps_group  # noqa: E402
from panel.cli.client import register_client_commands  # noqa: E402
from panel.cli.domains import domains, open_app  # noqa: E402
from panel.cli.drift import drift  # noqa: E402
from panel.cli.lifecycle import restart, scale, start, stop  # noqa: E402
from panel.cli.logs import logs  # noqa: E402
from panel.cli.notifiers import notifiers  # noqa: E402
from panel.cli.releases import releases  # noqa: E402
from panel.cli.runs import run  # noqa: E402
from panel.cli.teams import teams  # noqa: E402

register_client_commands(cli, local_rollback=rollback.callback)
cli.add_command(logs)
cli.add_command(notifiers)
cli.add_command(teams)
cli.add_command(releases)
cli.add_command(run)
cli.add_command(domains)
cli.add_command(open_app)
apps_group.add_command(drift)
for _lifecycle_command in (scale, restart, stop, start):
    apps_group.add_command(_lifecycle_command)
