"""`helios releases APP`: an app's releases through the panel's API, the live one marked.

The live release is the one the app's last successful deployment deployed, as on the app's
page; the API's release items do not say it, so it is read from the app's deployments.
Exit codes as every client command: 3 not logged in or not allowed, 4 no such app.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Column
from rich.text import Text

from panel.cli.client import APP, PAGE_SIZE, ApiClient, api_client, out, path_segment, print_table

__all__ = ["live_release", "releases"]

SHORT_SHA = 12  # characters of a git sha the table shows (--json has all 40)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def live_release(client: ApiClient, app: str) -> int | None:
    """The number of ``app``'s live release: the one its last successful deployment deployed
    (None before its first success). Deployments come newest first, so the first success
    found is the last one."""
    path, page = f"/apps/{path_segment(app)}/deployments", 1
    while True:
        body = client.get(path, page=page, per_page=PAGE_SIZE)
        for deployment in body["items"]:
            if deployment["status"] == "succeeded":
                return deployment["release"]
        if not body["next"]:
            return None
        page += 1


@click.command()
@click.argument("app", type=APP)
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print the releases as JSON: the API's items, each with \"live\": true or false.",
)  # fmt: skip
def releases(app: str, as_json: bool) -> None:
    """List APP's releases, newest first: number, image, git commit, when it was made, and
    which one is live (the release of its last successful deployment).

    Any release can be deployed again with `helios rollback APP RELEASE`. Exit code 4 when
    there is no app APP.
    """
    client = api_client()
    items = client.get_all(f"/apps/{path_segment(app)}/releases")
    live = live_release(client, app) if items else None
    if as_json:
        _print_json([{**item, "live": item["number"] == live} for item in items])
        return
    if not items:
        out.print(f"{app} has no releases yet: `helios deploy {app}` makes the first.")
        return
    columns = [
        "release", "live", Column("image", overflow="fold"), Column("git sha", no_wrap=True),
        Column("created", no_wrap=True), Column("by", overflow="fold"),
    ]  # fmt: skip
    rows = []
    for item in items:
        mark = Text("live", style="green") if item["number"] == live else ""
        note = f" (rollback to {item['rollback_of']})" if item["rollback_of"] else ""
        rows.append([
            f"{item['number']}{note}", mark, item["image"], item["git_sha"][:SHORT_SHA] or "-",
            _when(item["created_at"]), item["created_by"] or "system",
        ])  # fmt: skip
    print_table(columns, rows)
