"""`helios apps drift APP`: how APP's job in Nomad compares with its live release, and
`--reapply` to deploy that release again over a job changed, stopped or purged outside Helios.

Both go through the panel's API (GET /api/v1/apps/APP/drift, POST /api/v1/apps/APP/reapply).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from panel.cli.client import APP, ClientError, api_client, follow_deployment, out, path_segment

__all__ = ["drift"]

WAIT_TIMEOUT = 900  # seconds --wait follows a re-apply at most
STATE_STYLE = {"in_sync": "green", "drifted": "yellow", "stopped": "yellow", "missing": "red"}


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") + " UTC" if value else "-"


def _print_drift(answer: dict[str, Any]) -> None:
    state = answer["state"]
    if state is None:
        out.print(f"{answer['app']} has not been checked for drift yet (it needs a live release, "
                  "and HELIOS_DRIFT_INTERVAL above 0 on the panel).")  # fmt: skip
        return
    label = Text(state.replace("_", " "), style=STATE_STYLE.get(state, "dim"))
    checked = _when(answer["checked_at"])
    out.print(Text.assemble((answer["app"], "bold"), " ", label,
                            f" (release {answer['release']}, checked {checked})"))  # fmt: skip
    if answer["detected_at"]:
        out.print(f"  first seen {_when(answer['detected_at'])}")
    if answer["diff"]:
        out.print(answer["diff"])
    if state in {"drifted", "stopped", "missing"}:
        out.print(f"Run `helios apps drift {answer['app']} --reapply` to deploy release "
                  f"{answer['release']} again.")  # fmt: skip


@click.command("drift")
@click.argument("app", type=APP)
@click.option(
    "--reapply", is_flag=True, help="Deploy the live release again over Nomad's job (canaries)."
)
@click.option("--wait", is_flag=True, help="With --reapply: follow it; exit 1 unless it succeeds.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def drift(app: str, reapply: bool, wait: bool, as_json: bool) -> None:
    """Show how APP's job in Nomad compares with its live release (the last drift check)."""
    if wait and not reapply:
        raise click.UsageError("--wait goes with --reapply")
    client = api_client()
    if not reapply:
        answer = client.get(f"/apps/{path_segment(app)}/drift")
        if as_json:
            click.echo(json.dumps(answer, indent=2, sort_keys=True))
        else:
            _print_drift(answer)
        return
    deployment = client.call("POST", f"/apps/{path_segment(app)}/reapply")
    if wait:
        deployment = follow_deployment(client, deployment, interval=1.0, timeout=WAIT_TIMEOUT)
    if as_json:
        click.echo(json.dumps(deployment, indent=2, sort_keys=True))
    else:
        out.print(f"Deployment #{deployment['id']} {deployment['status'] if wait else 'queued'}: "
                  f"{app} release {deployment['release']} again.")  # fmt: skip
    if wait and deployment["status"] != "succeeded":
        message = deployment["status_message"] or f"see `helios status {app}`"
        raise ClientError(f"deployment #{deployment['id']} {deployment['status']}: {message}")
