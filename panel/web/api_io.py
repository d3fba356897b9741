"""The JSON API's edge: errors, request bodies and query parameters in, rows out as JSON.

Every body is checked here by its schema model (``panel.schema``): names, JSON types and values,
every field at fault reported at once; the actions check the values again. Secret values never leave
through these functions: a secret's value is ``null`` and a release lists secret names only.
"""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn

import peewee as pw
from flask import abort, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from panel.actions.common import FieldError
from panel.actions.deployments import queue_obstacles
from panel.actions.logs import APP_STREAMS
from panel.models import (
    ApiToken,
    App,
    Deployment,
    DeploymentStatus,
    Domain,
    EnvVar,
    Release,
    Role,
    Team,
    User,
)
from panel.schema.accounts import MembershipOut, TokenOut
from panel.schema.apps import (
    AppOut,
    AppSettings,
    DeploymentOut,
    DomainOut,
    EnvOut,
    ReleaseConfig,
    ReleaseOut,
)
from panel.schema.base import M, Meta, Problems, Resource, check
from panel.web.errors import current_request_id
from panel.web.paths import ID_MAX

__all__ = [
    "ERROR_CODES",
    "LOG_LIMIT_DEFAULT",
    "LOG_LIMIT_MAX",
    "PER_PAGE_DEFAULT",
    "PER_PAGE_MAX",
    "AppLogOut",
    "AppLogQuery",
    "BuildLogOut",
    "LogQuery",
    "app_json",
    "deployment_json",
    "domain_json",
    "dump",
    "env_json",
    "error_response",
    "fail",
    "membership_json",
    "page_of",
    "query_int",
    "read_body",
    "read_query",
    "release_json",
    "sent",
    "token_json",
]

PER_PAGE_DEFAULT = 20  # items
PER_PAGE_MAX = 100  # items
PAGE_MAX = 1_000_000  # pages; keeps OFFSET inside what every database accepts
LOG_LIMIT_DEFAULT = 200  # lines of a log in one answer
LOG_LIMIT_MAX = 1000  # lines
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    code: str | None = None,
    errors: Iterable[FieldError] = (),
):
    """The one error shape of the API: {"error": code, "message": text[, "field": name]
    [, "errors": [{"field", "message"}, …]], "request_id": id}: ``errors`` lists every field at
    fault; ``request_id`` is also the response's X-Request-Id."""
    body: dict[str, Any] = {"error": code or ERROR_CODES.get(status, "error"), "message": message}
    if field:
        body["field"] = field
    listed = [{"field": e.field, "message": e.message} for e in errors]
    if listed:
        body["errors"] = listed
    body["request_id"] = current_request_id()
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="helios"'
    return response


def fail(status: int, message: str, field: str | None = None) -> NoReturn:
    """Stop the request with an API error."""
    abort(error_response(status, message, field))


# ---------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    fail(400, f"the body is not valid JSON: {name} is not a JSON number")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; a key given twice is refused (which one counts is ambiguous,
    and a proxy or another parser in front may have read the other)."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            name = key[:100]
            if key in seen:
                fail(400, f"the body gives the key {name!r} twice: send each key once", name)
            seen.add(key)
    return body


def _parse_json() -> Any:
    if not request.is_json:
        fail(415, "send the body as JSON with the header 'Content-Type: application/json'")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(
            raw, parse_constant=_reject_constant, object_pairs_hook=_refuse_duplicate_keys
        )
    except (ValueError, RecursionError) as exc:
        fail(400, f"the body is not valid JSON: {exc}")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        fail(400, "the body has text that is not valid Unicode (a lone surrogate escape)")
    return body


def read_body(model: type[M], *, optional: bool = False, **context: Any) -> M:
    """The JSON object of the request checked by a schema model: JSON types strictly, unknown
    keys refused, and every field at fault reported at once (422).

    With ``optional`` an empty body counts as ``{}``.
    """
    if optional and not request.get_data(cache=True):
        body: Any = {}
    else:
        body = _parse_json()
    if not isinstance(body, dict):
        fail(422, 'the body must be a JSON object, e.g. {"name": "value"}')
    g.api_body = body  # as sent, for sent()
    try:
        return check(model, body, strict=True, context=context)
    except Problems as exc:
        problems = [FieldError(p.field, p.message) for p in exc.problems]
        abort(error_response(422, problems[0].message, problems[0].field, errors=problems))


def sent(body: BaseModel) -> dict[str, Any]:
    """The fields a client actually sent in a checked body (for changes to some fields), as
    checked; a field sent as ``""`` stays ``""`` (it clears an optional setting)."""
    raw = g.get("api_body", {})
    return {
        name: "" if raw.get(name) == "" else getattr(body, name) for name in body.model_fields_set
    }


def query_int(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; 422 naming it otherwise."""
    values = request.args.getlist(name)
    if not values:
        return default
    text = values[0]
    if len(values) > 1 or not (text.isascii() and text.isdigit() and len(text) <= 7):
        fail(422, f"{name} must be one whole number from {low} to {high}", name)
    if not low <= int(text) <= high:
        fail(422, f"{name} {int(text)} is out of range: use {low} to {high}", name)
    return int(text)


def read_query(model: type[M]) -> M:
    """The request's query parameters checked by a model: a list field takes its parameter
    each time it is given, any other field once; every parameter at fault reported at once
    (422). Parameters the model lacks were refused before the view ran."""
    data: dict[str, Any] = {}
    problems: list[FieldError] = []
    for name, info in model.model_fields.items():
        values = request.args.getlist(name)
        if typing.get_origin(info.annotation) is list:
            data[name] = values
        elif len(values) > 1:
            problems.append(FieldError(name, f"give {name} once"))
        elif values:
            data[name] = values[0]
    try:
        query = check(model, data, strict=True)
    except Problems as exc:
        problems += [FieldError(p.field, p.message) for p in exc.problems]
    if problems:
        abort(error_response(422, problems[0].message, problems[0].field, errors=problems))
    return query


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def page_of(query: pw.SelectQuery, serialize: Callable[[list], list[dict[str, Any]]]):
    """One page of ``query`` as {"items", "page", "per_page", "total", "next"}.

    ``serialize`` turns the page's rows into items (a list, so it can batch its own lookups).
    ``next`` is the path of the following page, or null on the last one.
    """
    page = query_int("page", 1, 1, PAGE_MAX)
    per_page = query_int("per_page", PER_PAGE_DEFAULT, 1, PER_PAGE_MAX)
    total = query.count()
    rows = list(query.paginate(page, per_page))
    following = None
    if page * per_page < total:
        args = {**(request.view_args or {}), "page": page + 1, "per_page": per_page}
        following = url_for(request.endpoint, **args)
    return jsonify(
        {
            "items": serialize(rows),
            "page": page,
            "per_page": per_page,
            "total": total,
            "next": following,
        }
    )


# ---------------------------------------------------------------------------------------------
# Rows as JSON
# ---------------------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def _email(user: User | None) -> str | None:
    return user.email if user is not None else None


def dump(model: type[BaseModel], row: Any, **given: Any) -> dict[str, Any]:
    """The answer ``model`` describes, field by field: ``given`` values, else the row's
    attribute of the same name; times as ISO 8601 UTC with a Z, enums as their values."""
    out: dict[str, Any] = {}
    for name in model.model_fields:
        value = given[name] if name in given else getattr(row, name)
        if isinstance(value, datetime):
            value = _time(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[name] = value
    return out


def _waiting(deployment: Deployment) -> str:
    """Why a queued deployment without a note waits: no worker, no cluster (Redis is asked
    once per request, however many deployments an answer holds)."""
    if deployment.status != DeploymentStatus.QUEUED.value or deployment.status_message:
        return ""
    if "helios_waiting" not in g:
        g.helios_waiting = queue_obstacles(
            current_app.extensions["helios.settings"], current_app.extensions["helios.redis"]
        )
    return g.helios_waiting


def deployment_json(deployment: Deployment, app_slug: str) -> dict[str, Any]:
    """A deployment, with the release it deploys (the release row must be joined); a queued
    one's ``status_message`` says why it waits when something stops it."""
    release = deployment.release
    return dump(
        DeploymentOut, deployment, app=app_slug, release=release.number, image=release.image,
        git_sha=release.git_sha, rollback_of=(release.config or {}).get("rollback_of"),
        triggered_by=_email(deployment.triggered_by) if deployment.triggered_by_id else None,
        status_message=deployment.status_message or _waiting(deployment),
    )  # fmt: skip


def app_json(app: App, last: Deployment | None = None) -> dict[str, Any]:
    """An app's configuration and its last deployment (the team row must be joined)."""
    last_json = deployment_json(last, app.slug) if last is not None else None
    return dump(AppOut, app, team=app.team.slug, last_deployment=last_json)


def domain_json(row: Domain) -> dict[str, Any]:
    """A custom domain of an app."""
    return dump(DomainOut, row)


def env_json(row: EnvVar) -> dict[str, Any]:
    """An environment variable; a secret's value is null, always."""
    return dump(EnvOut, row, value=None if row.is_secret else row.value, secret=row.is_secret)


def release_json(release: Release) -> dict[str, Any]:
    """A release and the configuration it froze: secret names, never their values."""
    config = release.config or {}
    frozen = {
        "env": dict(config.get("env", {})),
        "secrets": sorted(config.get("secrets", {})),
        "domains": list(config.get("domains", [])),
    }
    defaults = {name: info.get_default() for name, info in AppSettings.model_fields.items()}
    settings = {name: config.get(name, defaults.get(name)) for name in ReleaseConfig.model_fields}
    return dump(
        ReleaseOut, release, rollback_of=config.get("rollback_of"),
        created_by=_email(release.created_by) if release.created_by_id else None,
        config={**settings, **frozen},
    )  # fmt: skip


def token_json(row: ApiToken, current_id: int | None) -> dict[str, Any]:
    """An API token as its owner may see it: never the secret, nor its hash."""
    return dump(TokenOut, row, scopes=list(row.scopes), current=row.id == current_id)


def membership_json(team: Team, role: Role | str) -> dict[str, Any]:
    """A team the caller belongs to, with the caller's role in it."""
    return dump(MembershipOut, team, role=str(role))


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


def _number_text(value: Any) -> Any:
    """ASCII digits as the number they write; anything else as given, for the strict type
    check to refuse (pydantic's lax parsing would take ' 5', '5.0' or '5_0')."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return value


def _bool_text(value: Any) -> Any:
    """'true' and 'false' as booleans; anything else as given, for the type check to refuse."""
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


class LogQuery(Resource):
    """Where a log's answer starts, how many lines it holds, and whether it follows the log."""

    after: Annotated[
        int | None, BeforeValidator(_number_text),
        Meta(label="After", kind="the seq of a line: a whole number from 0"),
    ] = Field(
        None, ge=0, le=ID_MAX,
        description="Only lines after this seq: the `after` of the previous answer (a stream "
        "also resumes from the header Last-Event-ID). Without it, the newest `limit` lines.",
    )  # fmt: skip
    limit: Annotated[
        int, BeforeValidator(_number_text),
        Meta(label="Limit", kind=f"a whole number from 1 to {LOG_LIMIT_MAX}"),
    ] = Field(
        LOG_LIMIT_DEFAULT, ge=1, le=LOG_LIMIT_MAX,
        description="Lines answered at most; a stream starts with this many stored lines "
        "when `after` is not given.",
    )  # fmt: skip
    follow: Annotated[
        bool | None, BeforeValidator(_bool_text), Meta(label="Follow", kind="true or false")
    ] = Field(
        None,
        description="true: stream the log as Server-Sent Events, as `Accept: text/event-stream` "
        "asks; false: answer JSON whatever Accept says.",
    )


ProcessName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]*[A-Za-z0-9][A-Za-z0-9_-]*$",
                                               max_length=64)]  # fmt: skip


class AppLogQuery(LogQuery):
    """A log query of an app or a deployment, with its filters."""

    process: Annotated[
        list[ProcessName],
        Meta(label="Process", kind="the name of a process (task group): letters, digits, - and _"),
    ] = Field(default_factory=list, description="Only lines of this process (task group), e.g. "
              "`web`, and Helios's own steps; repeat it for several.")  # fmt: skip
    stream: Annotated[
        list[Literal[APP_STREAMS]],  # type: ignore[valid-type]
        Meta(label="Stream", kind=f"one of {', '.join(APP_STREAMS)}"),
    ] = Field(default_factory=list, description="Only lines of this stream: helios (Helios's "
              "steps), nomad (task events), stdout or stderr; repeat it for several.")  # fmt: skip
    since: Annotated[
        str | None, Meta(label="Since", kind="a number and a unit: 30s, 10m, 2h or 7d")
    ] = Field(None, pattern=r"^[0-9]{1,7}[smhd]$", description="Only lines stored since that "
              "long ago: `30s`, `10m`, `2h` or `7d`.")  # fmt: skip


class LogLineOut(Resource):
    """A stored piece of an app's log, scrubbed of the app's secrets."""

    app_id: int = Field(description="The app's id.")
    deployment_id: int | None = Field(description="The deployment it belongs to, if any.")
    run_id: int | None = Field(description="The one-off run it belongs to, if any.")
    seq: int = Field(description="Its place in the app's log (the stream's event id).", ge=1)
    alloc: str = Field(description="The Nomad allocation it came from; empty for Helios's steps.")
    process: str = Field(description="The allocation's process (task group), e.g. `web`.")
    task: str = Field(description="The allocation's task.")
    stream: str = Field(description="helios, nomad (a task event), stdout or stderr.")
    text: str = Field(description="One line or more, each ending with a newline.")
    final: bool = Field(description="True on the row ending an output stream (no text).")
    time: str = Field(description="When it was stored: UTC, ISO 8601 with a trailing Z.")


class AppLogOut(Resource):
    """Stored lines of the log, oldest first; send `after` back to get the lines that follow."""

    lines: list[LogLineOut]
    after: int = Field(
        description="The seq of the last line answered (the `after` sent, or 0, when none).", ge=0
    )


class BuildLogLineOut(Resource):
    """A stored piece of a build's output, scrubbed of the build's secrets."""

    seq: int = Field(description="Its place in the build's log (the stream's event id).", ge=1)
    task: str = Field(description="fetch or build.")
    stream: str = Field(description="stdout or stderr.")
    text: str = Field(description="Whole lines, each ending with a newline.")


class BuildLogOut(Resource):
    """Stored lines of the build's log, oldest first; send `after` back to get what follows."""

    lines: list[BuildLogLineOut]
    after: int = Field(
        description="The seq of the last line answered (the `after` sent, or 0, when none).", ge=0
    )
