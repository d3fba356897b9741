"""`helios teams`: the teams you belong to; create one, delete an empty one, through the API;
a team's usage against its limits, which site admins set (`helios teams limits`).

Creating a team makes you its owner; deleting needs the owner role and a team without apps
(delete them first), and asks to type the team's slug again unless --yes.
Exit codes as every client command: 2 invalid or refused, 3 not allowed, 4 not found,
5 unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.text import Text

from panel.cli.client import EXIT_USAGE, ClientError, api_client, out, path_segment, print_table
from panel.cli.options import SchemaValue
from panel.schema.accounts import TeamIn
from panel.schema.limits import MEASURES
from panel.validation import ValidationError, validate_team_limit

__all__ = ["teams"]


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group()
def teams() -> None:
    """List the teams you belong to; create a team or delete an empty one; see a team's
    usage and limits."""


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
    rows = [[item["slug"], item["name"], Text(item["role"]),
             item.get("nomad_namespace") or "(NOMAD_NAMESPACE)"] for item in items]  # fmt: skip
    print_table(["team", "name", "your role", "nomad namespace"], rows)


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


class LimitValue(click.ParamType):
    """A team limit: a whole number within its range, or "none" (no limit)."""

    def __init__(self, measure: str) -> None:
        self.measure = measure
        self.name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            checked = validate_team_limit(value, self.measure)
        except ValidationError as exc:
            self.fail(exc.message, param, ctx)
        return "none" if checked is None else checked


_LABELS = {"apps": ("apps", ""), "instances": ("instances", ""), "cpu_mhz": ("CPU", " MHz"),
           "memory_mb": ("memory", " MB")}  # fmt: skip


@teams.command("limits")
@click.argument("slug", type=SchemaValue(TeamIn, "slug"))
@click.option("--cpu-mhz", "cpu_mhz", type=LimitValue("cpu_mhz"),
              help="CPU (MHz) of every instance together, or none.")  # fmt: skip
@click.option("--memory-mb", "memory_mb", type=LimitValue("memory_mb"),
              help="Memory (MB) of every instance together, or none.")  # fmt: skip
@click.option("--instances", type=LimitValue("instances"),
              help="Instances of every app together, or none.")  # fmt: skip
@click.option("--apps", type=LimitValue("apps"), help="Live apps, or none.")
@click.option("--json", "as_json", is_flag=True, help="Print usage and limits as JSON.")
def teams_limits(slug: str, as_json: bool, **given: Any) -> None:
    """Show the team SLUG's usage against its limits; with options, set them (site admins).

    Usage counts live apps, and the instances, CPU and memory of those not stopped. A change
    that would take the team over a limit is refused; lowering usage always works. "none"
    removes a limit; options left out stay as they are.
    """
    wanted = {m: (None if v == "none" else v) for m, v in given.items() if v is not None}
    path = f"/teams/{path_segment(slug)}/limits"
    answer = api_client().call("PUT", path, json=wanted) if wanted else api_client().get(path)
    if as_json:
        _print_json(answer)
        return
    if wanted:
        out.print(f"Limits of {answer['team']} saved.")
    rows = []
    for measure in MEASURES:
        label, unit = _LABELS[measure]
        used, limit = answer[measure]["used"], answer[measure]["limit"]
        shown = "no limit" if limit is None else f"{limit:,}{unit}"
        over = " (over the limit)" if limit is not None and used > limit else ""
        rows.append([label, f"{used:,}{unit}{over}", shown])
    print_table(["resource", "used", "limit"], rows)


def _on_the_server(slug: str, action: Callable[..., Any]) -> Any:
    """Run a site admin's ``action`` on team SLUG from the server's shell (as the OS user, no
    panel login); its result. No team SLUG exits 4; a refusal exits with its action code."""
    from panel.actions.common import ActionError
    from panel.cli.client import ACTION_EXIT, EXIT_NOT_FOUND
    from panel.cli.operator import acting_as_os_user
    from panel.config import ConfigError
    from panel.models import Team
    from panel.run.runtime import start_process

    try:
        process = start_process("cli")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with acting_as_os_user(), process.database.connection_context():
        team = Team.get_or_none(Team.slug == slug)
        if team is None:
            raise ClientError(f"no team named {slug!r}", EXIT_NOT_FOUND)
        try:
            return action(
                actor=None, team=team, settings=process.settings, redis_conn=process.redis
            )
        except ActionError as exc:
            raise ClientError(str(exc), ACTION_EXIT.get(exc.code, EXIT_USAGE)) from None


@teams.command("move-namespace")
@click.argument("slug", type=SchemaValue(TeamIn, "slug"))
def teams_move_namespace(slug: str) -> None:
    """Move the team SLUG's apps into a Nomad namespace of their own (run on the server, by a
    site admin).

    Sets the team's namespace to SLUG, creates it in Nomad (with HELIOS_NOMAD_MANAGEMENT_TOKEN,
    else NOMAD_TOKEN) and queues a deployment of each live app's current release there; once
    one succeeded, the app's job in the old namespace is purged. Safe to run again. Exit code 2
    when Nomad refuses to create the namespace, 4 when there is no team SLUG.
    """
    from panel.actions.team_namespace import move_team_namespace

    move = _on_the_server(slug, move_team_namespace)
    out.print(f"{move.team} runs in Nomad namespace {move.namespace} "
              f"(`nomad job status -namespace={move.namespace}`).")  # fmt: skip
    for app, deployment in sorted(move.deployments.items()):
        out.print(f"  {app}: deployment #{deployment} queued into {move.namespace}")
    for app in move.already:
        out.print(f"  {app}: runs there already")
    for app in move.busy:
        out.print(f"  {app}: a deployment is under way: run this again once it ended")
    for app in move.undeployed:
        out.print(f"  {app}: nothing runs (no live release, or stopped): it deploys there next")


@teams.command("nomad-token")
@click.argument("slug", type=SchemaValue(TeamIn, "slug"))
def teams_nomad_token(slug: str) -> None:
    """Create a Nomad token that reads only the team SLUG's namespace (run on the server, by a
    site admin), for giving the team `nomad` CLI access.

    Writes ACL policy helios-team-SLUG (read, plus read-logs and read-fs, in namespace SLUG)
    with HELIOS_NOMAD_MANAGEMENT_TOKEN (else NOMAD_TOKEN) and prints the new token's secret
    once: Helios does not keep it. Exit code 2 when the team still runs in the shared namespace
    (move it first) or Nomad refuses, 4 when there is no team SLUG.
    """
    from panel.actions.team_namespace import create_team_nomad_token

    token = _on_the_server(slug, create_team_nomad_token)
    out.print(f"Nomad token for {token.team} (policy {token.policy}, accessor {token.accessor}); "
              "its secret is shown only now:")  # fmt: skip
    click.echo(token.secret)
    out.print(f"Use it as NOMAD_TOKEN with `nomad job status -namespace={token.namespace}`.")
