"""`helios teams`: the teams you belong to; create one, delete an empty one, through the API.

Creating a team makes you its owner; deleting needs the owner role and a team without apps
(delete them first), and asks to type the team's slug again unless --yes.
Exit codes as every client command: 2 invalid or refused, 3 not allowed, 4 not found,
5 unreachable.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from panel.cli.client import EXIT_USAGE, ClientError, api_client, out, path_segment, print_table
from panel.cli.options import SchemaValue
from panel.schema.accounts import TeamIn

__all__ = ["teams"]


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group()
def teams() -> None:
    """List the teams you belong to; create a team or delete an empty one."""


@teams.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the teams as JSON.")
def teams_list(as_json: bool) -> None:
    """List the teams you belong to, with your role in each."""
    items = api_client().get("/me")["teams"]
    if as_json:
        _print_json(items)
        return
    if not items:
        out.print("You belong to no team: create one with `helios teams create SLUG`.")
        return
    rows = [[item["slug"], item["name"], Text(item["role"])] for item in items]
    print_table(["team", "name", "your role"], rows)


@teams.command("create")
@click.argument("slug", type=SchemaValue(TeamIn, "slug"))
@click.option("--name", default="", type=SchemaValue(TeamIn, "name"),
              help="A name to show (default: the slug, capitalised).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the new team as JSON.")
def teams_create(slug: str, name: str, as_json: bool) -> None:
    """Create the team SLUG; you become its owner."""
    team = api_client().call("POST", "/teams", json={"slug": slug, "name": name or ""})
    if as_json:
        _print_json(team)
        return
    out.print(f"Created the team {team['slug']} ({team['name']}): you are its owner. "
              f"Add apps with `helios apps create NAME --team {team['slug']}`.")  # fmt: skip


@teams.command("delete")
@click.argument("slug", type=SchemaValue(TeamIn, "slug"))
@click.option("--yes", is_flag=True, help="Do not ask to type the slug (scripts).")
def teams_delete(slug: str, yes: bool) -> None:
    """Delete the team SLUG (owners only): its memberships and notifiers go with it.

    Refused (exit code 2) while the team has apps: delete them first. Asks to type SLUG again
    unless --yes (SLUG itself is the confirmation then); 4 when you are in no such team.
    """
    confirm = slug
    if not yes:
        confirm = click.prompt(f"Type {slug} to delete it", default="", show_default=False)
        if confirm.strip() != slug:
            raise ClientError(f"you typed {confirm.strip()[:63]!r}, not {slug}: nothing deleted",
                              EXIT_USAGE)  # fmt: skip
    api_client().call("DELETE", f"/teams/{path_segment(slug)}", json={"confirm": confirm})
    out.print(f"Deleted the team {slug}, with its memberships and notifiers.")
