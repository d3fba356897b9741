"""`helios logs APP`: an app's log, one deployment's or one build's, printed or followed live.

The lines come from the panel's API (GET /api/v1/apps/APP/logs, and the deployment's and the
build's /log). Without --follow the stored lines are printed and the command exits. With
--follow they come over the API's Server-Sent Events stream, which the panel closes now and
then: the command reconnects with Last-Event-ID, so no line is lost or printed twice, and exits
0 once a deployment's or build's log is complete (the stream's ``end``). Ctrl-C stops it
(exit 130).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click
import requests

from panel.cli.client import (
    APP,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    ApiClient,
    ClientError,
    api_client,
    path_segment,
)
from panel.cli.options import SchemaValue

__all__ = ["SseEvent", "follow_log", "format_line", "logs", "read_events"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT: how shells report a command stopped by Ctrl-C
LINES_MAX = 1000  # lines one API answer holds at most (the API's LOG_LIMIT_MAX)
PAGE_LINES = 1000  # lines asked for at once when printing a deployment's or build's whole log
READ_TIMEOUT = 60.0  # seconds without a byte before a stream counts as dropped (keep-alive: 15 s)
RECONNECT_DELAY = 2.0  # seconds before reconnecting, until the stream's `retry:` says otherwise
RECONNECT_ATTEMPTS = 30  # failed connections in a row before giving up (exit 5)
STREAM_COLORS = {"stderr": "red", "nomad": "yellow", "helios": "cyan"}


class QueryValue(click.ParamType):
    """A log filter checked by the API's own query model (``AppLogQuery``), imported when a
    value is given so that `helios --help` stays quick."""

    def __init__(self, field_name: str, metavar: str) -> None:
        self.field_name, self.name = field_name, metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The checked value; click.BadParameter (exit 2) with the API's message."""
        from panel.web.api_io import AppLogQuery

        return SchemaValue(AppLogQuery, self.field_name).convert(value, param, ctx)


# ---------------------------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    """One Server-Sent Event as received (an event of a lone ``retry:`` field counts too)."""

    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None
    retry: int | None = None  # milliseconds

    def json(self) -> Any:
        """The event's data, decoded."""
        return json.loads("\n".join(self.data))


def read_events(chunks: Iterable[bytes]) -> Iterator[SseEvent]:
    """The events of a Server-Sent Events byte stream, each as soon as its blank line came."""
    pending, event = b"", SseEvent()
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if event.data or event.retry is not None:
                    yield event
                event = SseEvent()
            elif not line.startswith(":"):  # a comment (keep-alive) otherwise
                name, _, value = line.partition(":")
                _set_field(event, name, value.removeprefix(" "))


def _set_field(event: SseEvent, name: str, value: str) -> None:
    if name == "data":
        event.data.append(value)
    elif name == "event":
        event.event = value
    elif name == "id":
        event.id = value
    elif name == "retry" and value.isascii() and value.isdigit():
        event.retry = int(value)


def follow_log(
    client: ApiClient, path: str, params: dict[str, Any], show: Callable[[dict], None]
) -> None:
    """Show each line a log's stream sends until its ``end``; a dropped or closed stream is
    opened again with Last-Event-ID, so that it resumes right after the last line shown."""
    last: str | None = None
    delay, failures = RECONNECT_DELAY, 0
    while True:
        headers = {"Last-Event-ID": last} if last is not None else {}
        try:
            with client.open_stream(path, params, headers, READ_TIMEOUT) as response:
                if response.status_code == 503:  # the panel serves all the streams it can
                    failures += 1
                    wait = response.headers.get("Retry-After", "")
                    delay = float(wait) if wait.isascii() and wait.isdigit() else delay
                elif not response.ok:
                    raise client.refusal(response)
                else:
                    failures = 0
                    for event in read_events(response.iter_content(chunk_size=None)):
                        delay = event.retry / 1000 if event.retry is not None else delay
                        if event.event == "end":
                            return
                        if event.event == "log" and event.id is not None:
                            show(event.json())
                            last = event.id
        except requests.RequestException as exc:
            failures += 1
            if failures >= RECONNECT_ATTEMPTS:
                raise ClientError(
                    f"lost the log stream of {client.url} and could not reconnect "
                    f"({type(exc).__name__}): check that the panel is running",
                    EXIT_UNREACHABLE,
                ) from None
        if last is not None:  # the resume point says where to start from now on
            params = {name: value for name, value in params.items() if name != "since"}
        time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------


def format_line(line: dict[str, Any], *, build: bool, color: bool = False) -> list[str]:
    """The printed lines of one stored row: each line of its text after the row's time,
    process/allocation (when it has one) and stream; a build's lines as they are."""
    texts = line["text"].removesuffix("\n").split("\n")
    if build:
        return texts
    stream = line["stream"]
    where = f" {line['process']}/{line['alloc'][:8]}" if line.get("alloc") else ""
    if color:
        stamp = click.style(line["time"], dim=True)
        stream = click.style(stream, fg=STREAM_COLORS.get(stream))
    else:
        stamp = line["time"]
    return [f"{stamp}{where} {stream} | {text}" for text in texts]


def _printer(*, build: bool, as_json: bool) -> Callable[[dict], None]:
    """Print a row: colored on a terminal (unless NO_COLOR is set), plain otherwise."""
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def show(line: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(line, sort_keys=True))
            return
        for text in format_line(line, build=build, color=color):
            click.echo(text, color=color)

    return show


def print_stored(
    client: ApiClient, path: str, params: dict[str, Any], show: Callable[[dict], None]
) -> None:
    """Show the stored lines ``params`` ask for; from ``after``, every page of them."""
    if "after" not in params:
        for line in client.get(path, **params)["lines"]:
            show(line)
        return
    while True:
        page = client.get(path, **params, limit=PAGE_LINES)
        for line in page["lines"]:
            show(line)
        if len(page["lines"]) < PAGE_LINES:
            return
        params = {**params, "after": page["after"]}


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _log_path(app: str, deployment: int | None, build: int | None) -> str:
    base = f"/apps/{path_segment(app)}"
    if deployment is not None:
        return f"{base}/deployments/{deployment}/log"
    if build is not None:
        return f"{base}/builds/{build}/log"
    return f"{base}/logs"


def _query(
    *, lines: int | None, whole: bool, processes: tuple[str, ...], streams: tuple[str, ...],
    since: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The API query: the newest ``lines`` (a whole log from its start), and the filters."""
    query: dict[str, Any] = {"process": list(processes), "stream": list(streams)}
    if since:
        query["since"] = since
    if lines is not None:
        query["limit"] = lines
    elif whole:
        query["after"] = 0
    return {name: value for name, value in query.items() if value != []}


@click.command()
@click.argument("app", type=APP)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing lines as they are stored, until Ctrl-C; a deployment's or "
    "build's log stops by itself once complete. Example: helios logs web -f",
)
@click.option(
    "--process",
    "processes",
    multiple=True,
    type=QueryValue("process", "PROCESS"),
    help="Only lines of this process (task group), and Helios's own steps; repeat "
    "for several. Example: --process web --process worker",
)
@click.option(
    "--stream",
    "streams",
    multiple=True,
    type=QueryValue("stream", "STREAM"),
    help="Only lines of this stream: helios (Helios's steps), nomad (task events), "
    "stdout or stderr; repeat for several. Example: --stream stderr",
)
@click.option(
    "--since",
    type=QueryValue("since", "AGE"),
    help="Only lines stored since that long ago: a number and s, m, h or d. Example: --since 10m",
)
@click.option(
    "--deployment",
    type=click.IntRange(min=1),
    metavar="ID",
    help="One deployment's log, from its start. Example: --deployment 42",
)
@click.option(
    "--build",
    type=click.IntRange(min=1),
    metavar="NUMBER",
    help="One build's output, from its start (no filters). Example: --build 7",
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(1, LINES_MAX),
    metavar="N",
    help="Print the newest N stored lines first (an app's log: 200 unless given; a "
    "deployment's or build's: all). Example: -n 50",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each line as a JSON object, one per line, for scripts.",
)
def logs(
    app: str, follow: bool, processes: tuple[str, ...], streams: tuple[str, ...],
    since: str | None, deployment: int | None, build: int | None, lines: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Print APP's log: Helios's steps, Nomad's task events and what its processes printed.

    Each line shows when it was stored, the process and allocation it came from and its
    stream (time process/alloc stream | text); a build's lines are printed as they are.
    Without --follow the stored lines are printed and the command exits.

    \b
    Examples:
      helios logs web                        the newest 200 lines
      helios logs web -f --process worker    follow the worker process
      helios logs web --stream stderr --since 1h
      helios logs web --deployment 42 -f     until deployment 42 is over
      helios logs web --build 7              a build's output
    """
    if deployment is not None and build is not None:
        raise click.UsageError("give --deployment ID or --build NUMBER, not both")
    if build is not None and (processes or streams or since):
        raise click.UsageError("--process, --stream and --since filter an app's log, not a build's")
    path = _log_path(app, deployment, build)
    params = _query(
        lines=lines, whole=deployment is not None or build is not None, processes=processes,
        streams=streams, since=since,
    )  # fmt: skip
    show = _printer(build=build is not None, as_json=as_json)
    try:
        if follow:
            follow_log(api_client(), path, params, show)
        else:
            print_stored(api_client(), path, params, show)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to print, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(EXIT_FAILED) from None
