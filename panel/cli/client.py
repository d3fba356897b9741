"""The `helios` client commands: a person's view of a panel, through its JSON API.

`helios login URL` checks a personal API token with the panel and keeps ``{url, token}`` in
``$XDG_CONFIG_HOME/helios/credentials.json`` (default ``~/.config``; mode 0600, folder 0700).
``HELIOS_URL`` with ``HELIOS_TOKEN`` take its place, e.g. in CI. Every read command takes
``--json`` for scripts. Exit codes: 0 ok, 1 the operation failed (e.g. a deploy failed),
2 invalid request, 3 not logged in or not allowed, 4 not found, 5 the panel cannot be reached.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from panel.cli.options import SchemaValue, schema_options
from panel.schema.apps import AppPatch, NewApp
from panel.validation import (
    ValidationError,
    validate_env_key,
    validate_env_value,
    validate_image,
    validate_panel_url,
    validate_release,
    validate_slug,
)

__all__ = [
    "APP",
    "ApiClient",
    "Checked",
    "ClientError",
    "Credentials",
    "Seconds",
    "api_client",
    "credentials_path",
    "load_credentials",
    "make_rollback_command",
    "path_segment",
    "print_table",
    "register_client_commands",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
STATUS_EXIT = {400: 2, 401: 3, 403: 3, 404: 4, 409: 2, 413: 2, 415: 2, 422: 2}
# The exit code of each ActionError code when a command acts on the database itself: the one its
# HTTP status (panel.web.access.ACTION_STATUS) gives through the API, so both ways agree.
ACTION_EXIT = {
    "invalid": EXIT_USAGE,
    "not_found": EXIT_NOT_FOUND,
    "forbidden": EXIT_AUTH,
    "conflict": EXIT_USAGE,
    "unpinned": EXIT_USAGE,
    "unreachable": EXIT_FAILED,
}
DEFAULT_URL = "http://127.0.0.1:8080"  # HELIOS_BIND's default
REQUEST_TIMEOUT = (5, 30)  # seconds: connect, read
POLL_INTERVAL = 1.0  # seconds between looks at a deployment being followed
WAIT_TIMEOUT = 1800  # seconds a `--wait` follows a deployment at most
TERMINAL = {"succeeded", "failed", "reverted", "superseded", "cancelled"}
PAGE_SIZE = 100  # items per request when listing everything
ID_MAX = 2**63 - 1  # the largest row id the panel stores
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII: it travels in an HTTP header

# Markup off: names, messages and values come from users and must print as they are.
out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


class ClientError(click.ClickException):
    """A one-line error for the person at the terminal, with the exit code scripts rely on."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Checked(click.ParamType):
    """A value checked by a validator of panel.validation, the rule the panel applies too; a
    bad one is a usage error (exit 2) that says how to fix it. With ``keep_text`` the value
    is passed on as typed (e.g. a command string), else as the validator normalised it."""

    def __init__(
        self, validator: Callable[[Any, str], Any], field: str, *, keep_text: bool = False
    ) -> None:
        self.validator, self.field, self.keep_text = validator, field, keep_text
        self.name = field

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The checked value; click.BadParameter (exit 2) with the validator's message."""
        if not isinstance(value, str):
            return value
        try:
            checked = self.validator(value, self.field)
        except ValidationError as exc:
            self.fail(exc.message, param, ctx)
        return value if self.keep_text else checked


class Seconds(click.FloatRange):
    """Seconds within a range; unlike click.FloatRange, 'nan' and 'inf' are refused."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number of seconds, finite and within the range."""
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


APP = Checked(validate_slug, "app")


# ---------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Where the panel is and the token to show it; ``source`` says where they came from."""

    url: str
    token: str
    source: str


def credentials_path() -> Path:
    """$XDG_CONFIG_HOME/helios/credentials.json (a relative XDG_CONFIG_HOME is ignored)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "helios" / "credentials.json"


def load_credentials() -> Credentials | None:
    """HELIOS_URL + HELIOS_TOKEN, else the credentials file, else None (not logged in)."""
    url, token = os.environ.get("HELIOS_URL", ""), os.environ.get("HELIOS_TOKEN", "")
    if url or token:
        if not (url and token):
            raise ClientError("set both HELIOS_URL and HELIOS_TOKEN, or neither", EXIT_USAGE)
        return Credentials(_normalise_url(url), _check_token(token), "environment")
    return saved_credentials()


def saved_credentials() -> Credentials | None:
    """The credentials `helios login` stored, or None."""
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
        return Credentials(_normalise_url(data["url"]), str(data["token"]), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise ClientError(f"{path} is unreadable: run `helios login` again", EXIT_AUTH) from None


def save_credentials(url: str, token: str) -> Path:
    """Write the credentials file atomically, readable by its owner only."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": url, "token": token}, handle)
            handle.write("\n")
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path


def _normalise_url(url: str) -> str:
    try:
        return validate_panel_url(url.strip())
    except ValidationError as exc:
        raise ClientError(exc.message, EXIT_USAGE) from None


def _check_token(token: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise ClientError(
            "that is not an API token (printable ASCII without spaces): paste the token the "
            "panel showed when it was created",
            EXIT_USAGE,
        )
    return token


def _require_credentials() -> Credentials:
    credentials = load_credentials()
    if credentials is None:
        raise ClientError(
            "not logged in: run `helios login URL` (or set HELIOS_URL and HELIOS_TOKEN)", EXIT_AUTH
        )
    return credentials


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


class ApiClient:
    """Calls the panel's /api/v1 with a bearer token; API errors become ClientError."""

    def __init__(self, credentials: Credentials) -> None:
        self.url = credentials.url
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {credentials.token}", "Accept": "application/json"}
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (None for 204); raises ClientError for anything else."""
        try:
            response = self.session.request(
                method, f"{self.url}/api/v1{path}", timeout=REQUEST_TIMEOUT, **kwargs
            )
        except requests.RequestException as exc:
            raise ClientError(
                f"cannot reach the panel at {self.url} ({_reason(exc)}): check the URL and that "
                "the panel is running",
                EXIT_UNREACHABLE,
            ) from None
        if response.status_code == 204:
            return None
        body = self._json(response)
        if response.ok:
            return body
        raise self.refusal(response)

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.url} did not answer like a Helios panel (HTTP {response.status_code}, "
                f"{response.headers.get('Content-Type', 'no content type')})",
                EXIT_UNREACHABLE,
            ) from None

    def refusal(self, response: requests.Response) -> ClientError:
        """The error of an answer that is not a success: the API's message, and the exit code
        its status maps to."""
        body = self._json(response)
        message = body.get("message") if isinstance(body, dict) else None
        return ClientError(
            str(message or f"the panel answered HTTP {response.status_code}"),
            STATUS_EXIT.get(response.status_code, EXIT_FAILED),
        )

    def open_stream(
        self, path: str, params: dict[str, Any], headers: dict[str, str], read_timeout: float
    ) -> requests.Response:
        """GET ``path`` as Server-Sent Events, the answer left unread (close it). Network errors
        are raised as requests raises them: the caller reconnects."""
        return self.session.get(
            f"{self.url}/api/v1{path}", params=params, stream=True,
            headers={"Accept": "text/event-stream", **headers},
            timeout=(REQUEST_TIMEOUT[0], read_timeout),
        )  # fmt: skip

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with query ``params``."""
        return self.call("GET", path, params=params or None)

    def get_all(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        items, page = [], 1
        while True:
            body = self.get(path, page=page, per_page=PAGE_SIZE)
            items.extend(body["items"])
            if not body["next"]:
                return items
            page += 1


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unknown"
    return type(exc).__name__


def api_client() -> ApiClient:
    """A client of the panel the user logged in to (or HELIOS_URL and HELIOS_TOKEN name)."""
    return ApiClient(_require_credentials())


def path_segment(value: str) -> str:
    """A path segment as typed by a person: quoted, so '/' or '?' cannot reach another route."""
    return requests.utils.quote(value, safe="")


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


Cell = str | Text | list[str]  # a list prints one item a line (on a terminal)


def print_table(columns: Sequence[str | Column], rows: Iterable[Sequence[Cell]]) -> None:
    """Print a table: on a terminal, as wide as the terminal is (long cells fold to fit);
    piped, as a header line and one line per row, cells separated by tabs, never wrapped or
    cut whatever the width (``--json`` is the format for scripts)."""
    rows = list(rows)
    if out.is_terminal:
        table = Table(*columns, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*("\n".join(cell) if isinstance(cell, list) else cell for cell in row))
        out.print(table, width=shutil.get_terminal_size().columns)
        return
    headers = [column.header if isinstance(column, Column) else column for column in columns]
    for line in [headers, *rows]:
        click.echo("\t".join(_plain(cell) for cell in line))


def _plain(cell: Cell) -> str:
    """A cell on one line: a list joined with commas, tabs and line breaks written as escapes."""
    text = ",".join(cell) if isinstance(cell, list) else str(cell)
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def _source(app: dict[str, Any]) -> str:
    if app.get("repo"):
        return f"{app['repo']}@{app['branch']}"
    return app.get("image") or "-"


STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "reverted": "red",
    "running": "yellow",
    "queued": "cyan",
}


def _status(value: str | None) -> Text:
    if value is None:
        return Text("never deployed", style="dim")
    return Text(value, style=STATUS_STYLE.get(value, "dim"))


def _print_deployments(deployments: list[dict[str, Any]]) -> None:
    columns = [
        "#", "release", "status", Column("image", overflow="fold"), Column("by", overflow="fold"),
        Column("requested", no_wrap=True), Column("message", overflow="fold"),
    ]  # fmt: skip
    print_table(columns, (
        [str(d["id"]), str(d["release"]), _status(d["status"]), d["image"],
         d["triggered_by"] or "system", _when(d["requested_at"]), d["status_message"]]
        for d in deployments
    ))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Signing in and out
# ---------------------------------------------------------------------------------------------


def _read_stdin(read: Callable[[], str]) -> str:
    """What ``read`` returns from standard input; bytes that are not UTF-8 are a usage error."""
    try:
        return read()
    except UnicodeDecodeError:
        raise ClientError("standard input is not UTF-8 text: send UTF-8", EXIT_USAGE) from None


def _read_token() -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        token = _read_stdin(lambda: click.prompt("Personal API token", hide_input=True, err=True))
    else:
        token = _read_stdin(sys.stdin.readline if sys.stdin is not None else str).strip()
    if not token:
        raise ClientError("no token given: create one in the panel, then paste it", EXIT_USAGE)
    return _check_token(token.strip())


@click.command()
@click.argument("url", required=False)
def login(url: str | None) -> None:
    """Sign in to a panel (default http://127.0.0.1:8080) with a personal API token.

    The token is asked for without echo, or read from standard input when that is not a
    terminal. It is checked with the panel, then stored in
    $XDG_CONFIG_HOME/helios/credentials.json (~/.config by default), readable by you only.
    """
    if url is None:
        try:
            saved = saved_credentials()
        except ClientError:
            saved = None
        url = os.environ.get("HELIOS_URL") or (saved.url if saved is not None else DEFAULT_URL)
    url = _normalise_url(url)
    if url.startswith("http://") and not url.startswith(("http://127.", "http://localhost")):
        err.print(f"Warning: {url} is not HTTPS; the token crosses the network readable.")
    token = _read_token()
    me = ApiClient(Credentials(url, token, "prompt")).get("/me")
    path = save_credentials(url, token)
    scopes = ", ".join(me["token"]["scopes"])
    expires = _when(me["token"]["expires_at"]) if me["token"]["expires_at"] else "never"
    out.print(f"Logged in to {url} as {me['user']['email']} (scopes: {scopes}; expires {expires}).")
    out.print(f"Credentials saved in {path}")


@click.command()
def logout() -> None:
    """Revoke this computer's token on the panel and delete the stored credentials.

    When the panel cannot be reached the local credentials are deleted anyway, and you are
    told to revoke the token in the panel.
    """
    if os.environ.get("HELIOS_TOKEN"):
        err.print("HELIOS_TOKEN is set in the environment: unset it to stop using that token.")
    try:
        credentials = saved_credentials()
    except ClientError:
        credentials_path().unlink()
        out.print("Logged out (the unreadable credentials file was deleted).")
        return
    if credentials is None:
        out.print("Not logged in.")
        return
    client = ApiClient(credentials)
    try:
        token_id = client.get("/me")["token"]["id"]
        client.call("DELETE", f"/tokens/{token_id}")
        revoked = "token revoked"
    except ClientError as exc:
        revoked = "token not revoked"
        if exc.exit_code != EXIT_AUTH:  # 401: it is dead already
            err.print(f"Warning: {exc.message}; revoke the token in the panel.")
    credentials_path().unlink(missing_ok=True)
    out.print(f"Logged out of {credentials.url} ({revoked}; credentials deleted).")


# ---------------------------------------------------------------------------------------------
# Apps
# ---------------------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the apps as JSON.")
@click.pass_context
def apps(ctx: click.Context, as_json: bool) -> None:
    """List your apps with their last deployment; `helios apps create` makes one."""
    if ctx.invoked_subcommand is not None:
        return
    items = api_client().get_all("/apps")
    if as_json:
        _print_json(items)
        return
    if not items:
        out.print("No apps yet: create one with `helios apps create NAME --image IMAGE`.")
        return
    rows = []
    for app in items:
        last = app["last_deployment"] or {}
        deployed = last.get("finished_at") or last.get("requested_at")
        rows.append([
            app["slug"], app["team"], _source(app), _status(last.get("status")),
            str(last.get("release", "-")), _when(deployed),
        ])  # fmt: skip
    columns = ["name", "team", Column("source", overflow="fold"), "status", "release", "deployed"]
    print_table(columns, rows)


def _settings_body(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave, as a JSON body."""
    return {name: value for name, value in options.items() if value is not None}


@apps.command("create")
@click.argument("name", type=SchemaValue(NewApp, "slug"))
@schema_options(NewApp)
@click.option("--json", "as_json", is_flag=True, help="Print the new app as JSON.")
def apps_create(name: str, as_json: bool, **options: Any) -> None:
    """Create app NAME from --image IMAGE or --repo OWNER/REPO."""
    options.pop("slug", None)
    if bool(options["image"]) == bool(options["repo"]):
        raise click.UsageError("give either --image IMAGE or --repo OWNER/REPO")
    app = api_client().call("POST", "/apps", json={"slug": name, **_settings_body(options)})
    if as_json:
        _print_json(app)
        return
    out.print(f"Created app {app['slug']} in team {app['team']} ({_source(app)}).")
    out.print(f"Deploy it with `helios deploy {app['slug']}`.")


@apps.command("set")
@click.argument("name", type=SchemaValue(NewApp, "slug"))
@schema_options(AppPatch, defaults=False)
@click.option("--json", "as_json", is_flag=True, help="Print the app as JSON.")
def apps_set(name: str, as_json: bool, **options: Any) -> None:
    """Change settings of app NAME; they apply from its next deploy (`helios deploy NAME`).

    Giving --image or --repo switches the app's source to it (the other one is cleared).
    """
    body = _settings_body(options)
    if not body:
        raise click.UsageError("give at least one setting to change, e.g. --count 2")
    # An app runs an image or builds a repo: giving one source replaces the other.
    for source, other in (("image", "repo"), ("repo", "image")):
        if body.get(source) and other not in body:
            body[other] = ""
    app = api_client().call("PATCH", f"/apps/{name}", json=body)
    if as_json:
        _print_json(app)
        return
    changed = ", ".join(f"{key}={app[key]}" for key in body)
    out.print(f"Changed {app['slug']}: {changed}. Deploy it with `helios deploy {app['slug']}`.")


@apps.command("delete")
@click.argument("name", type=APP)
@click.option("--yes", is_flag=True, help="Do not ask to type the name (scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def apps_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete app NAME: its Nomad job is stopped and purged, its domains, variables and secrets
    removed and its name freed; its deployments and logs are kept for a while (the panel's
    HELIOS_DELETED_APP_RETENTION_DAYS).

    Asks to type NAME again unless --yes (NAME itself is the confirmation then). Exit code 2
    when a deployment or build of it is under way or the typed name differs, 4 when there is
    no such app.
    """
    confirm = name
    if not yes:
        confirm = click.prompt(f"Type {name} to delete it", default="", show_default=False)
        if confirm.strip() != name:
            raise ClientError(f"you typed {confirm.strip()[:63]!r}, not {name}: nothing deleted",
                              EXIT_USAGE)  # fmt: skip
    answer = api_client().call("DELETE", f"/apps/{path_segment(name)}", json={"confirm": confirm})
    if as_json:
        _print_json(answer)
        return
    out.print(f"Deleted {answer['app']}: {answer['message']}.")


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


@click.group()
def env() -> None:
    """Set, list and remove an app's environment variables and secrets."""


def _pairs(assignments: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs, from_stdin = [], False
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{assignment!r} is not KEY=VALUE (use KEY=- to read stdin)")
        if value == "-":
            if from_stdin:
                raise click.UsageError("only one value can come from standard input (KEY=-)")
            from_stdin = True
            value = _read_stdin(sys.stdin.read).removesuffix("\n")
        try:
            pairs.append((validate_env_key(key, "key"), validate_env_value(value, "value")))
        except ValidationError as exc:
            raise ClientError(exc.message, EXIT_USAGE) from None
    return pairs


@env.command("set")
@click.argument("app", type=APP)
@click.argument("assignments", metavar="KEY=VALUE...", nargs=-1, required=True)
@click.option("--secret", is_flag=True, help="Encrypt the values; they are never shown again.")
def env_set(app: str, assignments: tuple[str, ...], secret: bool) -> None:
    """Set variables of APP from KEY=VALUE pairs; they apply from its next deploy.

    Write KEY=- to read the value from standard input, so secrets stay out of shell history.
    """
    client = api_client()
    for key, value in _pairs(assignments):
        client.call(
            "PUT", f"/apps/{path_segment(app)}/env/{path_segment(key)}",
            json={"value": value, "secret": secret},
        )  # fmt: skip
        out.print(f"Set {key}{' (secret)' if secret else ''} on {app}.")


@env.command("list")
@click.argument("app", type=APP)
@click.option("--json", "as_json", is_flag=True, help="Print the variables as JSON.")
def env_list(app: str, as_json: bool) -> None:
    """List APP's variables; secret values are never shown (the panel does not return them)."""
    items = api_client().get(f"/apps/{path_segment(app)}/env")["items"]
    if as_json:
        _print_json(items)
        return
    if not items:
        out.print(f"{app} has no environment variables.")
        return
    print_table(["key", "value", "updated"], (
        [item["key"], Text("•••••• (secret)", style="dim") if item["secret"] else item["value"],
         _when(item["updated_at"])]
        for item in items
    ))  # fmt: skip


@env.command("unset")
@click.argument("app", type=APP)
@click.argument("keys", metavar="KEY...", nargs=-1, required=True,
                type=Checked(validate_env_key, "key"))  # fmt: skip
def env_unset(app: str, keys: tuple[str, ...]) -> None:
    """Remove variables or secrets of APP (from its next deploy on)."""
    client = api_client()
    for key in keys:
        client.call("DELETE", f"/apps/{path_segment(app)}/env/{path_segment(key)}")
        out.print(f"Removed {key} from {app}.")


# ---------------------------------------------------------------------------------------------
# Deploying
# ---------------------------------------------------------------------------------------------


def _follow(
    fetch: Callable[[], dict[str, Any]],
    first: dict[str, Any],
    label: str,
    *,
    interval: float,
    timeout: float,
    hint: str,
) -> dict[str, Any]:
    """Poll ``fetch()`` until the record it returns is terminal, showing each change of its
    status and message; return the last state."""
    deadline = time.monotonic() + timeout
    seen = None
    record = first
    with err.status(f"{label}: {record['status']}") as spinner:
        while True:
            state = (record["status"], record["status_message"])
            if state != seen:
                seen = state
                note = f": {state[1]}" if state[1] else ""
                err.print(Text.assemble(f"{time.strftime('%H:%M:%S')} ", _status(state[0]), note))
                spinner.update(f"{label}: {state[0]}")
            if record["status"] in TERMINAL:
                return record
            if time.monotonic() > deadline:
                raise ClientError(
                    f"{label} is still {record['status']} after {timeout:.0f} s; {hint}"
                )
            time.sleep(interval)
            record = fetch()


def follow_deployment(
    client: ApiClient, deployment: dict[str, Any], *, interval: float, timeout: float
) -> dict[str, Any]:
    """Poll a deployment until it is terminal, showing each change; return the last state."""
    return _follow(
        lambda: client.get(f"/deployments/{deployment['id']}"), deployment,
        f"deployment #{deployment['id']}", interval=interval, timeout=timeout,
        hint=f"follow it with `helios status {deployment['app']}`",
    )  # fmt: skip


def _finish(client: ApiClient, deployment: dict, wait: bool, as_json: bool, **follow) -> None:
    if wait:
        deployment = follow_deployment(client, deployment, **follow)
    if as_json:
        _print_json(deployment)
    else:
        verb = deployment["status"] if wait else "queued"
        rollback = deployment.get("rollback_of")
        back = f", rollback to release {rollback}" if rollback else ""
        out.print(
            f"Deployment #{deployment['id']} {verb}: {deployment['app']} release "
            f"{deployment['release']} ({deployment['image']}){back}."
        )
        if not wait and deployment["status_message"]:  # e.g. no cluster to reach: say so now
            err.print(deployment["status_message"])
    if wait and deployment["status"] != "succeeded":
        message = deployment["status_message"] or "see `helios status`"
        raise ClientError(f"deployment #{deployment['id']} {deployment['status']}: {message}")


def _wait_options(command: Callable) -> Callable:
    options = [
        click.option("--wait", is_flag=True, help="Follow it; exit 1 unless it succeeds."),
        click.option(
            "--timeout", default=WAIT_TIMEOUT, show_default=True, type=Seconds(1, 7 * 86_400),
            help="Seconds --wait follows at most.",
        ),
        click.option(
            "--interval", default=POLL_INTERVAL, show_default=True, type=Seconds(0.05, 60),
            help="Seconds between looks while waiting.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the deployment as JSON."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.argument("app", type=APP)
@click.option("--image", type=Checked(validate_image, "image"),
              help="Deploy this image instead of the app's own.")  # fmt: skip
@_wait_options
def deploy(app: str, image: str | None, wait: bool, as_json: bool, **follow: float) -> None:
    """Deploy APP's current configuration as a new release (optionally with --image).

    An app built from a GitHub repository builds the head of its branch first; with --wait,
    the build is followed, then the deployment it starts.
    """
    client = api_client()
    body = {"image": image} if image else {}
    answer = client.call("POST", f"/apps/{path_segment(app)}/deployments", json=body)
    if "build" not in answer:
        _finish(client, answer, wait, as_json, **follow)
        return
    if not wait:
        if as_json:
            _print_json(answer)
        else:
            out.print(f"{answer['message'].capitalize()}: it deploys once built. {answer['url']}")
        return
    build = follow_build(client, app, answer["build"], **follow)
    if build["status"] != "succeeded" or build["deployment_id"] is None:
        message = build["status_message"] or "see the build's page"
        raise ClientError(f"build #{build['number']} {build['status']}: {message}")
    deployment = client.get(f"/deployments/{build['deployment_id']}")
    _finish(client, deployment, wait, as_json, **follow)


def follow_build(
    client: ApiClient, app: str, number: int, *, interval: float, timeout: float
) -> dict[str, Any]:
    """Poll a build until it ended, showing each change; return the last state."""
    path = f"/apps/{path_segment(app)}/builds/{number}"
    return _follow(
        lambda: client.get(path), client.get(path), f"build #{number}", interval=interval,
        timeout=timeout, hint=f"see it with `helios status {app}`",
    )  # fmt: skip


@click.command()
@click.argument("app", type=APP)
@click.option("--json", "as_json", is_flag=True,
              help="Print the app, its pending changes and deployments as JSON.")  # fmt: skip
@click.option("--last", default=5, show_default=True, type=click.IntRange(1, 100),
              help="How many recent deployments to show.")  # fmt: skip
def status(app: str, as_json: bool, last: int) -> None:
    """Show APP's settings, the changes its next deploy would apply, and its most recent
    deployments."""
    client = api_client()
    row = client.get(f"/apps/{path_segment(app)}")
    pending = client.get(f"/apps/{path_segment(app)}/pending")
    deployments = client.get(f"/apps/{path_segment(app)}/deployments", per_page=last)["items"]
    if as_json:
        _print_json({"app": row, "pending": pending, "deployments": deployments})
        return
    current = row["last_deployment"]
    out.print(Text.assemble((row["slug"], "bold"), f" (team {row['team']})"))
    out.print(f"  source   {_source(row)}")
    out.print(f"  command  {row['command'] or '(the image default)'}")
    out.print(f"  port     {row['port']}, health check {row['health_path']}")
    out.print(
        f"  runs     {row['count']} instance(s), {row['cpu_mhz']} MHz, {row['memory_mb']} MB"
        + (f" (cap {row['memory_max_mb']} MB)" if row["memory_max_mb"] else "")
    )
    out.print(Text.assemble("  status   ", _status(current["status"] if current else None)))
    if row.get("stopped_at"):
        out.print(f"  stopped  by {row['stopped_by']} at {_when(row['stopped_at'])}: "
                  f"`helios apps start {row['slug']}` runs it again")  # fmt: skip
    if pending["changes"]:
        _print_pending(row["slug"], pending)
    if deployments:
        out.print()
        _print_deployments(deployments)


def _print_pending(slug: str, pending: dict[str, Any]) -> None:
    """The changes the next deploy would apply, and the command that applies them."""
    out.print(f"  pending  changed since release {pending['live_release']} (live), "
              "not deployed yet:")  # fmt: skip
    for change in pending["changes"]:
        out.print(f"           {change}")
    out.print(f"           `helios deploy {slug}` applies them")


def make_rollback_command(local_fallback: Callable[[str, int], None] | None) -> click.Command:
    """`helios rollback APP RELEASE` through the API; ``local_fallback(app, release)`` runs
    instead when no credentials are configured (an operator on the panel's own server)."""

    @click.command("rollback")
    @click.argument("app", type=APP)
    @click.argument("release", type=Checked(validate_release, "release"))
    @_wait_options
    def rollback(app: str, release: int, wait: bool, as_json: bool, **follow: float) -> None:
        """Deploy RELEASE of APP again, as a new deployment.

        Goes through the panel's API when you are logged in (or HELIOS_URL and HELIOS_TOKEN
        are set); without credentials, on the panel's server, it uses the database directly.
        """
        credentials = load_credentials()
        if credentials is None and local_fallback is not None:
            if wait or as_json:
                raise click.UsageError("--wait and --json need `helios login` first")
            local_fallback(app, release)
            return
        client = ApiClient(credentials or _require_credentials())
        deployment = client.call(
            "POST", f"/apps/{path_segment(app)}/rollback", json={"release": release}
        )
        _finish(client, deployment, wait, as_json, **follow)

    return rollback


@click.command()
@click.argument("app", type=APP)
@click.argument("deployment", type=click.IntRange(1, ID_MAX))
@click.option("--json", "as_json", is_flag=True, help="Print the deployment as JSON.")
def cancel(app: str, deployment: int, as_json: bool) -> None:
    """Cancel deployment DEPLOYMENT of APP before Nomad accepted it: it never deploys.

    Exit code 2 when it cannot be cancelled (it ended, Nomad is rolling it out already, or a
    worker is submitting it right now: try again), 4 when APP has no such deployment.
    """
    client = api_client()
    answer = client.call("POST", f"/apps/{path_segment(app)}/deployments/{deployment}/cancel")
    if as_json:
        _print_json(answer)
        return
    out.print(
        f"Deployment #{answer['id']} cancelled: {answer['app']} release {answer['release']} "
        "will not be deployed."
    )


def register_client_commands(
    group: click.Group, local_rollback: Callable[[str, int], None] | None = None
) -> None:
    """Add login, logout, apps, env, deploy, cancel, status and rollback to the `helios`
    group."""
    for command in (
        login,
        logout,
        apps,
        env,
        deploy,
        cancel,
        status,
        make_rollback_command(local_rollback),
    ):
        group.add_command(command)
