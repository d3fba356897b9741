"""The `helios` command line: thin wrappers over functions that tests call directly."""

from __future__ import annotations

import sys

import click

from panel.config import ConfigError, Settings

__all__ = ["main"]

EXIT_USAGE = 2


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _start(name: str):
    from panel.db import DatabaseError
    from panel.runtime import start_process

    try:
        return start_process(name, _settings())
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    from panel.up import run_up

    sys.exit(run_up(_start("up")))


@cli.command()
def panel() -> None:
    """Serve the web panel and API with gunicorn on HELIOS_BIND (SIGTERM drains requests)."""
    from panel.web_server import run_panel

    sys.exit(run_panel(_start("panel")))


@cli.command()
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
def worker(burst: bool) -> None:
    """Run reconcile jobs from the queues (SIGTERM lets the current job finish)."""
    from panel.worker import run_worker

    sys.exit(run_worker(_start("worker"), burst=burst))


# ---------------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Apply, roll back, create and list database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from panel.db import migrate_up

    _start("db")
    applied = migrate_up()
    click.echo(f"applied: {', '.join(applied)}" if applied else "already up to date")


@db.command("downgrade")
@click.option(
    "--steps",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
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

    if not name.replace("_", "").isalnum() or not name.isascii():
        raise click.BadParameter("use letters, digits and '_' only, e.g. add_app_notes")
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
# Accounts and settings
# ---------------------------------------------------------------------------------------------


@cli.group()
def admin() -> None:
    """Manage accounts from the server's shell."""


@admin.command("create")
@click.argument("email")
@click.option("--team", default="default", show_default=True, help="Team to join as owner.")
@click.option(
    "--operator/--no-operator",
    default=True,
    show_default=True,
    help="Operators manage hosts and the cluster.",
)
def admin_create(email: str, team: str, operator: bool) -> None:
    """Create an account for EMAIL.

    The password is read from standard input when it is not a terminal; otherwise a random
    one is generated and printed once.
    """
    from panel.accounts import AccountError, create_user
    from panel.crypto import generate_password
    from panel.db import database

    generated = sys.stdin is None or sys.stdin.isatty()
    password = generate_password() if generated else sys.stdin.readline().rstrip("\r\n")
    _start("admin")
    try:
        with database.connection_context():
            user = create_user(email, password, team_slug=team, is_operator=operator)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.email} (team {team})")
    if generated:
        click.echo(f"password: {password}  (shown once; store it now)")


@cli.command("config")
def show_config() -> None:
    """Print the effective settings, secrets masked."""
    for name, value, help_text in _settings().describe():
        click.echo(f"{name}={value}")
        click.echo(click.style(f"    {help_text}", dim=True))


def main() -> None:
    """Entry point of the `helios` console script."""
    cli(prog_name="helios")
