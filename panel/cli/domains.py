"""`helios domains` and `helios open`: an app's addresses, through the panel's API.

`helios domains APP` lists where the app is reached (its default address, then each custom
domain) with what the last domain check found; `add` and `remove` route a custom domain to it
or stop doing so, from its next deploy. `helios open APP` prints the addresses, and opens the
first in a browser with ``--browser``. Only URLs the panel answered are printed or opened, and
only after they proved to be ``https://HOSTNAME/``. Exit codes as every client command:
2 invalid, 3 not logged in or not allowed, 4 not found, 5 unreachable.
"""

from __future__ import annotations

import json
import re
import webbrowser
from typing import Any

import click
from rich.table import Column
from rich.text import Text

from panel.cli.client import (
    APP,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    ApiClient,
    Checked,
    ClientError,
    api_client,
    err,
    out,
    path_segment,
    print_table,
)
from panel.validation import ValidationError, validate_domain

__all__ = ["checked_url", "domains", "open_app"]

HOSTNAME = Checked(validate_domain, "hostname")
STATE_STYLE = {"ok": "green", "warning": "yellow", "error": "red", "unknown": "dim"}
_URL_RE = re.compile(r"https://([^/]+)/")  # how the panel writes an address (address_url)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def _is_address(url: object) -> bool:
    match = _URL_RE.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        return False
    try:
        return validate_domain(match[1], "hostname") == match[1]
    except ValidationError:
        return False


def checked_url(url: object) -> str:
    """``url`` if it is ``https://HOSTNAME/`` with a valid hostname, as the panel writes an
    address; else ClientError (exit 5): the answer is not one to print or open."""
    if not _is_address(url):
        raise ClientError(
            f"the panel answered an address that is not https://HOSTNAME/ ({url!a:.80}): "
            "nothing printed or opened; check that the URL you logged in to is a Helios panel",
            EXIT_UNREACHABLE,
        )
    return str(url)


def _addresses(client: ApiClient, app: str) -> list[dict[str, Any]]:
    """The app's addresses as the panel answers them, the default one first."""
    items = client.get(f"/apps/{path_segment(app)}/urls")["items"]
    return sorted(items, key=lambda item: not item["default"])


class _Domains(click.Group):
    """`helios domains APP` lists; `helios domains add|remove|list APP …` as usual."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Read `helios domains APP [--json]` as `helios domains list APP [--json]`."""
        first = next((arg for arg in args if not arg.startswith("-")), None)
        if first is not None and first not in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Domains)
def domains() -> None:
    """List an app's addresses, and add or remove its custom domains.

    `helios domains APP` is `helios domains list APP` (an app named like a subcommand needs
    the `list`). Custom domains are routed, with TLS, from the app's next deploy.
    """


@domains.command("list")
@click.argument("app", type=APP)
@click.option("--json", "as_json", is_flag=True, help="Print the addresses as JSON.")
def domains_list(app: str, as_json: bool) -> None:
    """List where APP is reached: its default address, then each custom domain, with what the
    last domain check found (DNS, routing in Traefik, the TLS certificate served).

    "not checked" means no check has looked at it yet (it was added since, or checks are off).
    Exit code 4 when there is no app APP.
    """
    items = _addresses(api_client(), app)
    if as_json:
        _print_json(items)
        return
    columns = [
        Column("url", overflow="fold"), "default", Column("state", no_wrap=True),
        Column("summary", overflow="fold"), Column("checked", no_wrap=True),
    ]  # fmt: skip
    rows = []
    for item in items:
        state = item["state"]
        shown = Text(state, style=STATE_STYLE.get(state, "dim")) if state else "not checked"
        rows.append([
            checked_url(item["url"]), "default" if item["default"] else "", shown,
            item["summary"] or "-", _when(item["checked_at"]),
        ])  # fmt: skip
    print_table(columns, rows)


@domains.command("add")
@click.argument("app", type=APP)
@click.argument("hostname", type=HOSTNAME)
@click.option("--json", "as_json", is_flag=True, help="Print the new domain as JSON.")
def domains_add(app: str, hostname: str, as_json: bool) -> None:
    """Route HOSTNAME, a domain you own, to APP: served with TLS from its next deploy.

    Point the name's DNS at the cluster's edge first. Exit code 2 when HOSTNAME is not a
    hostname, is under the platform's own domain or is routed to an app already, 3 when you
    are not an admin of APP's team, 4 when there is no app APP.
    """
    domain = api_client().call(
        "POST", f"/apps/{path_segment(app)}/domains", json={"hostname": hostname}
    )
    if as_json:
        _print_json(domain)
        return
    out.print(f"Added {domain['hostname']} to {app}: it is routed from the next deploy "
              f"(`helios deploy {app}`).")  # fmt: skip


@domains.command("remove")
@click.argument("app", type=APP)
@click.argument("hostname", type=HOSTNAME)
def domains_remove(app: str, hostname: str) -> None:
    """Stop routing HOSTNAME to APP: its route goes with the app's next deploy.

    Exit code 3 when you are not an admin of APP's team, 4 when there is no app APP or
    HOSTNAME is not one of its domains.
    """
    path = f"/apps/{path_segment(app)}/domains/{path_segment(hostname)}"
    api_client().call("DELETE", path)
    out.print(f"Removed {hostname} from {app}: its route goes with the next deploy "
              f"(`helios deploy {app}`).")  # fmt: skip


@click.command("open")
@click.argument("app", type=APP)
@click.option("--browser", is_flag=True, help="Also open the first URL in a web browser.")
def open_app(app: str, browser: bool) -> None:
    """Print APP's URLs, one a line: its default address first, then each custom domain.

    With --browser the first is opened in your web browser as well (Python's webbrowser
    module: $BROWSER if set, else the desktop's). Without it nothing is opened, even on a
    terminal: over SSH that would start a text browser in your terminal. Exit code 1 when
    no browser could be started, 4 when there is no app APP.
    """
    urls = [checked_url(item["url"]) for item in _addresses(api_client(), app)]
    if not urls:  # the panel always answers the default address: this is not one
        raise ClientError(f"the panel answered no address for {app}: is it a Helios panel?",
                          EXIT_UNREACHABLE)  # fmt: skip
    for url in urls:
        click.echo(url)
    if not browser:
        return
    try:
        opened = webbrowser.open(urls[0], new=2)
    except webbrowser.Error:
        opened = False
    if not opened:
        raise ClientError(f"no web browser could be started: open {urls[0]} yourself, or set "
                          "BROWSER to the command of one", EXIT_FAILED)  # fmt: skip
    err.print(f"Opened {urls[0]} in a web browser.")
