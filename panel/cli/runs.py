"""`helios run APP -- COMMAND [ARGS]...`: run a command once in an app's live release.

The panel queues the run (POST /api/v1/apps/APP/runs); unless --detach, the command then
follows the run's output over the API's Server-Sent Events stream (reconnecting with
Last-Event-ID, as `helios logs -f` does) — what the command printed on stdout to stdout, on
stderr to stderr, Helios's own lines to stderr — and exits with the command's exit code.
Helios's own failures keep their exit codes (2 invalid, 3 not allowed, 4 not found, 5 the
panel cannot be reached, 1 the run could not run or timed out).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from panel.cli.client import (
    APP,
    EXIT_FAILED,
    EXIT_USAGE,
    ClientError,
    api_client,
    path_segment,
)
from panel.cli.logs import EXIT_INTERRUPTED, follow_log
from panel.render.run import RUN_TIMEOUT_DEFAULT, RUN_TIMEOUT_RANGE, validate_run_command
from panel.validation import ValidationError

__all__ = ["run", "show_output"]


def show_output(line: dict[str, Any]) -> None:
    """Print one row of a run's log: stdout to stdout, the rest (stderr, Helios's) to stderr."""
    text = line.get("text") or ""
    if line.get("stream") == "helios":
        click.echo(click.style(text, fg="cyan"), nl=False, err=True, color=_color(sys.stderr))
    else:
        click.echo(text, nl=False, err=line.get("stream") != "stdout")


def _color(stream: Any) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


@click.command("run")
@click.argument("app", type=APP)
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARGS]...")
@click.option(
    "--timeout",
    type=click.IntRange(*RUN_TIMEOUT_RANGE),
    metavar="SECONDS",
    help=f"Stop the command if it still runs after this long (default {RUN_TIMEOUT_DEFAULT}). "
    "Example: --timeout 600",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Only queue the run and print its id; follow it later with the API "
    "(GET /api/v1/apps/APP/runs/ID and its /log).",
)
@click.option("--json", "as_json", is_flag=True, help="With --detach: print the run as JSON.")
def run(
    app: str, command: tuple[str, ...], timeout: int | None, detach: bool, as_json: bool
) -> None:
    """Run COMMAND once in APP's live release: its image, env and secrets.

    The command is an argument list, run without a shell (give `sh -c '...'` for one), as a
    Nomad batch job that is never restarted. Its output is streamed as it comes, scrubbed of
    the app's secrets, and `helios run` exits with the command's exit code. Put `--` before
    the command so that its options are not taken for helios's. It can read every secret of
    the app: it takes the deployer role.

    \b
    Examples:
      helios run web -- python manage.py migrate
      helios run web --timeout 60 -- sh -c 'echo $DATABASE_URL | wc -c'
      helios run web --detach -- rake db:seed
    """
    try:
        argv = validate_run_command(list(command))
    except ValidationError as exc:
        raise ClientError(exc.message, EXIT_USAGE) from None
    if as_json and not detach:
        raise click.UsageError("--json goes with --detach (the output itself is the command's)")
    client = api_client()
    body: dict[str, Any] = {"command": list(argv)}
    if timeout is not None:
        body["timeout"] = timeout
    base = f"/apps/{path_segment(app)}/runs"
    queued = client.call("POST", base, json=body)
    if detach:
        if as_json:
            click.echo(json.dumps(queued, indent=2, sort_keys=True))
        else:
            click.echo(queued["id"])
        return
    click.echo(
        f"run #{queued['id']} of {app} (release {queued['release']}) queued; its output follows",
        err=True,
    )
    try:
        follow_log(client, f"{base}/{queued['id']}/log", {"after": 0}, show_output)
    except KeyboardInterrupt:
        click.echo(f"stopped following: run #{queued['id']} goes on in Nomad", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    ended = client.get(f"{base}/{queued['id']}")
    _exit_as(ended)


def _exit_as(ended: dict[str, Any]) -> None:
    """Exit with the command's exit code; a run that never ran, or timed out, is a failure."""
    if ended["status"] == "succeeded":
        return
    if ended["status"] == "failed" and ended["exit_code"] is not None:
        raise click.exceptions.Exit(ended["exit_code"])
    message = ended["status_message"] or ended["status"]
    raise ClientError(f"run #{ended['id']} {ended['status']}: {message}", EXIT_FAILED)
