"""`helios notifiers`: a team's outgoing webhooks, through the panel's API (team admins).

Each command takes ``--team TEAM``; without it, the one team where you are an admin or owner.
A notifier is named by its name (or its id, as `helios notifiers list` shows it). The signing
secret is printed by `add` and `rotate-secret` only, once: the panel never shows it again.
Exit codes as every client command: 2 invalid, 3 not allowed, 4 not found, 5 unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Column
from rich.text import Text

from panel.cli.client import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    ApiClient,
    Checked,
    ClientError,
    api_client,
    out,
    path_segment,
    print_table,
)
from panel.cli.options import SchemaValue
from panel.schema.notifiers import NotifierIn, validate_notifier_name
from panel.validation import validate_slug

__all__ = ["notifiers"]

ADMIN_ROLES = {"admin", "owner"}
DELIVERY_STYLE = {"delivered": "green", "failed": "red", "pending": "yellow"}
NOTIFIER = Checked(validate_notifier_name, "notifier")


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _team(client: ApiClient, team: str | None) -> str:
    """The team given, else the caller's only team where they are an admin or owner."""
    if team is not None:
        return team
    teams = client.get("/me")["teams"]
    mine = [t["slug"] for t in teams if t["role"] in ADMIN_ROLES]
    if len(mine) == 1:
        return mine[0]
    names = ", ".join(mine) or "none"
    raise ClientError(
        f"name the team with --team TEAM (teams where you are an admin or owner: {names})",
        EXIT_USAGE,
    )


def _path(team: str, notifier: dict[str, Any] | None = None, action: str = "") -> str:
    path = f"/teams/{path_segment(team)}/notifiers"
    if notifier is not None:
        path += f"/{notifier['id']}"
    return path + (f"/{action}" if action else "")


def _find(client: ApiClient, team: str, wanted: str) -> dict[str, Any]:
    """The notifier named ``wanted`` (or whose id it is) in ``team``."""
    items = client.get(_path(team))["items"]
    for item in items:
        if item["name"] == wanted:
            return item
    for item in items:
        if str(item["id"]) == wanted:
            return item
    raise ClientError(
        f"{team} has no notifier named {wanted!r}: `helios notifiers list --team {team}` "
        "shows them",
        EXIT_NOT_FOUND,
    )


def _team_option(command: Callable) -> Callable:
    return click.option(
        "--team", type=Checked(validate_slug, "team"),
        help="The team (default: your one team where you are an admin or owner).",
    )(command)  # fmt: skip


def _json_option(what: str) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def _last_delivery(item: dict[str, Any]) -> Text:
    if not item["deliveries"]:
        return Text("none yet", style="dim")
    last = item["deliveries"][0]
    code = f" {last['last_status_code']}" if last["last_status_code"] else ""
    return Text(f"{last['status']}{code}", style=DELIVERY_STYLE.get(last["status"], "dim"))


def _print_secret(verb: str, answer: dict[str, Any], team: str) -> None:
    notifier = answer["notifier"]
    out.print(f"{verb} notifier {notifier['name']} (#{notifier['id']}) of {team}, sending to "
              f"{notifier['origin']}/….")  # fmt: skip
    out.print("Signing secret (shown only this once: give it to the receiver now):")
    click.echo(answer["secret"])


@click.group()
def notifiers() -> None:
    """List and manage a team's outgoing webhooks (team admins and owners).

    Each chosen event of the team is POSTed to the notifier's URL, signed with HMAC-SHA256 of
    the body in the X-Helios-Signature-256 header (see docs/events.md).
    """


@notifiers.command("list")
@_team_option
@_json_option("the notifiers and their recent deliveries")
def notifiers_list(team: str | None, as_json: bool) -> None:
    """List the team's notifiers with the outcome of their last delivery."""
    client = api_client()
    team = _team(client, team)
    items = client.get(_path(team))["items"]
    if as_json:
        _print_json(items)
        return
    if not items:
        out.print(f"{team} has no notifiers: add one with "
                  "`helios notifiers add NAME URL --event SUBJECT`.")  # fmt: skip
        return
    columns = [
        "#", Column("name", overflow="fold"), "state", Column("sends to", overflow="fold"),
        Column("format", no_wrap=True), Column("events", no_wrap=True),
        Column("last delivery", no_wrap=True),
    ]  # fmt: skip
    rows = []
    for item in items:
        state = Text("on", style="green") if item["enabled"] else Text("off", style="dim")
        rows.append([
            str(item["id"]), item["name"], state, f"{item['origin']}/…", item["format"],
            list(item["subjects"]), _last_delivery(item),
        ])  # fmt: skip
    print_table(columns, rows)


@notifiers.command("add")
@click.argument("name", type=SchemaValue(NotifierIn, "name"))
@click.argument("url", type=SchemaValue(NotifierIn, "url"))
@click.option(
    "--event", "events", metavar="SUBJECT", multiple=True, required=True,
    type=SchemaValue(NotifierIn, "subjects"),
    help="An event to send (repeat it): v1.deployment.succeeded, v1.deployment.failed, "
    "v1.build.failed, v1.app.down, v1.app.drift_detected.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["json", "slack"]), default="json", show_default=True,
    help="json: the event, signed; slack: one line of text (a Slack incoming webhook).",
)  # fmt: skip
@_team_option
@_json_option("the notifier and its secret")
def notifiers_add(
    name: str, url: str, events: tuple[str, ...], fmt: str, team: str | None, as_json: bool
) -> None:
    """Register NAME, POSTing the chosen events to URL; prints its signing secret once.

    URL must be https:// and lead to public addresses only (the panel checks it now and at
    every send).
    """
    client = api_client()
    team = _team(client, team)
    body = {"name": name, "url": url, "format": fmt, "subjects": list(dict.fromkeys(events))}
    answer = client.call("POST", _path(team), json=body)
    if as_json:
        _print_json(answer)
        return
    _print_secret("Created", answer, team)


@notifiers.command("remove")
@click.argument("notifier", type=NOTIFIER)
@_team_option
def notifiers_remove(notifier: str, team: str | None) -> None:
    """Delete NOTIFIER (a name or id) and its deliveries."""
    client = api_client()
    team = _team(client, team)
    item = _find(client, team, notifier)
    client.call("DELETE", _path(team, item))
    out.print(f"Removed notifier {item['name']} from {team}.")


def _set_enabled(notifier: str, team: str | None, enabled: bool) -> None:
    client = api_client()
    team = _team(client, team)
    item = _find(client, team, notifier)
    client.call("PATCH", _path(team, item), json={"enabled": enabled})
    state = "on: the chosen events reach it" if enabled else "off: events no longer reach it"
    out.print(f"Notifier {item['name']} of {team} is {state}.")


@notifiers.command("enable")
@click.argument("notifier", type=NOTIFIER)
@_team_option
def notifiers_enable(notifier: str, team: str | None) -> None:
    """Turn NOTIFIER (a name or id) on."""
    _set_enabled(notifier, team, True)


@notifiers.command("disable")
@click.argument("notifier", type=NOTIFIER)
@_team_option
def notifiers_disable(notifier: str, team: str | None) -> None:
    """Turn NOTIFIER (a name or id) off: events no longer reach it."""
    _set_enabled(notifier, team, False)


@notifiers.command("test")
@click.argument("notifier", type=NOTIFIER)
@_team_option
@_json_option("the queued delivery")
def notifiers_test(notifier: str, team: str | None, as_json: bool) -> None:
    """Send a test event (v1.notifier.tested) to NOTIFIER only, enabled or not."""
    client = api_client()
    team = _team(client, team)
    item = _find(client, team, notifier)
    delivery = client.call("POST", _path(team, item, "test"))
    if as_json:
        _print_json(delivery)
        return
    out.print(f"Test delivery #{delivery['id']} to {item['name']} queued: "
              f"`helios notifiers list --team {team}` shows how it went.")  # fmt: skip


@notifiers.command("rotate-secret")
@click.argument("notifier", type=NOTIFIER)
@_team_option
@_json_option("the notifier and its new secret")
def notifiers_rotate_secret(notifier: str, team: str | None, as_json: bool) -> None:
    """Give NOTIFIER (a name or id) a new signing secret; prints it once.

    The old secret stops signing at once, retries of earlier deliveries included: give the
    receiver the new one right away.
    """
    client = api_client()
    team = _team(client, team)
    item = _find(client, team, notifier)
    answer = client.call("POST", _path(team, item, "rotate-secret"))
    if as_json:
        _print_json(answer)
        return
    _print_secret("Rotated the secret of", answer, team)
