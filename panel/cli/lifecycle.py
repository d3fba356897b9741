"""`helios apps scale|restart|stop|start APP`: everyday actions on a running app.

Each goes through the panel's API (POST /api/v1/apps/APP/scale, …/restart, …/stop, …/start)
and needs the deployer role and a token with the deploy scope. Exit codes as everywhere: 2
when the panel refuses the action in the app's state (a deployment under way, stopped
already, never deployed …) or the input, 3 without the role or scope, 4 when there is no such
app, 1 when a followed deployment does not succeed.
"""

from __future__ import annotations

from typing import Any

import click

from panel.cli.client import (
    APP,
    EXIT_USAGE,
    Checked,
    ClientError,
    _finish,
    _print_json,
    _wait_options,
    api_client,
    out,
    path_segment,
)
from panel.validation import validate_count

__all__ = ["restart", "scale", "start", "stop"]


def _stopped_note(app: dict[str, Any]) -> str:
    return " It is stopped: the count applies when it starts." if app.get("stopped_at") else ""


@click.command("scale")
@click.argument("app", type=APP)
@click.argument("count", type=Checked(validate_count, "count"))
@click.option("--json", "as_json", is_flag=True, help="Print the app as JSON.")
def scale(app: str, count: int, as_json: bool) -> None:
    """Run COUNT instances of APP (1-50), without a new release.

    The count becomes APP's setting, so its next deploy keeps it; a worker asks Nomad to start
    or stop instances, the others keep running. Exit code 2 while a deployment of APP is under
    way or before its first deploy.
    """
    answer = api_client().call("POST", f"/apps/{path_segment(app)}/scale", json={"count": count})
    if as_json:
        _print_json(answer)
        return
    out.print(f"{answer['slug']} runs {answer['count']} instance(s) from now on."
              + _stopped_note(answer))  # fmt: skip


@click.command("restart")
@click.argument("app", type=APP)
@_wait_options
def restart(app: str, wait: bool, as_json: bool, **follow: float) -> None:
    """Replace every instance of APP with a fresh one, keeping it up.

    A deployment of the live release: new instances start and pass their checks before old ones
    stop. With --wait, follow it (exit 1 unless it succeeds). Exit code 2 when APP is stopped
    (use `helios apps start`) or was never deployed.
    """
    client = api_client()
    deployment = client.call("POST", f"/apps/{path_segment(app)}/restart")
    _finish(client, deployment, wait, as_json, **follow)


@click.command("stop")
@click.argument("app", type=APP)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print the app as JSON.")
def stop(app: str, yes: bool, as_json: bool) -> None:
    """Stop every instance of APP: it serves nothing until `helios apps start APP`.

    Its Nomad job is stopped (not purged); its settings, releases, variables and domains stay.
    Asks first unless --yes. Exit code 2 when it is stopped already, was never deployed, or a
    deployment of it is under way.
    """
    if not yes:
        answer = click.prompt(
            f"Stop every instance of {app}? It serves nothing until started [y/N]",
            default="", show_default=False,
        )  # fmt: skip
        if answer.strip().lower() not in ("y", "yes"):
            raise ClientError(f"{app} not stopped", EXIT_USAGE)
    row = api_client().call("POST", f"/apps/{path_segment(app)}/stop")
    if as_json:
        _print_json(row)
        return
    out.print(f"Stopped {row['slug']}: a worker stops its instances now. "
              f"`helios apps start {row['slug']}` brings it back.")  # fmt: skip


@click.command("start")
@click.argument("app", type=APP)
@_wait_options
def start(app: str, wait: bool, as_json: bool, **follow: float) -> None:
    """Start APP again after `helios apps stop`, with its live release.

    A deployment of the live release, with canaries and checks. With --wait, follow it (exit 1
    unless it succeeds). Exit code 2 when APP is not stopped.
    """
    client = api_client()
    deployment = client.call("POST", f"/apps/{path_segment(app)}/start")
    _finish(client, deployment, wait, as_json, **follow)
