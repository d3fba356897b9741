"""The JSON API's edge: errors, request bodies and query parameters in, rows out as JSON.

Every field a client sends is checked against an allow-list here (name and JSON type) before
an action sees it; the actions then check the values themselves. Secret values never leave
through these functions: a secret's value is ``null`` and a release lists secret names only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NoReturn

import peewee as pw
from flask import abort, jsonify, request, url_for

from panel.models import ApiToken, App, Deployment, Domain, EnvVar, Release, Role, Team, User

__all__ = [
    "ERROR_CODES",
    "PER_PAGE_DEFAULT",
    "PER_PAGE_MAX",
    "app_json",
    "deployment_json",
    "domain_json",
    "env_json",
    "error_response",
    "fail",
    "membership_json",
    "page_of",
    "query_int",
    "read_body",
    "release_json",
    "token_json",
]

PER_PAGE_DEFAULT = 20  # items
PER_PAGE_MAX = 100  # items
PAGE_MAX = 1_000_000  # pages; keeps OFFSET inside what every database accepts
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


def error_response(status: int, message: str, field: str | None = None, code: str | None = None):
    """The one error shape of the API: {"error": code, "message": text[, "field": name]}."""
    body = {"error": code or ERROR_CODES.get(status, "error"), "message": message}
    if field:
        body["field"] = field
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# kind → (does the JSON value have the right type, how to say what is expected)
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "text"),
    "integer": (_is_int, "a whole number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "command": (lambda v: isinstance(v, str) or _is_strings(v), "text or a list of strings"),
    "strings": (_is_strings, "a list of strings"),
    "integer_or_null": (lambda v: v is None or _is_int(v), "a whole number or null"),
}


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


def read_body(
    fields: dict[str, str], required: Iterable[str] = (), *, optional: bool = False
) -> dict[str, Any]:
    """The JSON object of the request, with only ``fields`` (name → kind) and ``required`` set.

    With ``optional`` an empty body counts as ``{}``.
    """
    if optional and not request.get_data(cache=True):
        body: Any = {}
    else:
        body = _parse_json()
    if not isinstance(body, dict):
        fail(422, 'the body must be a JSON object, e.g. {"name": "value"}')
    for name in body:
        if name not in fields:
            allowed = ", ".join(fields) or "nothing"
            fail(422, f"unknown field {name!r}: this request takes {allowed}", name[:100])
    for name in required:
        if name not in body:
            fail(422, f"{name} is required", name)
    for name, value in body.items():
        check, expected = KINDS[fields[name]]
        if not check(value):
            fail(422, f"{name} must be {expected}", name)
    return body


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


def deployment_json(deployment: Deployment, app_slug: str) -> dict[str, Any]:
    """A deployment, with the release it deploys (the release row must be joined)."""
    release = deployment.release
    return {
        "id": deployment.id,
        "app": app_slug,
        "release": release.number,
        "image": release.image,
        "git_sha": release.git_sha,
        "rollback_of": (release.config or {}).get("rollback_of"),
        "status": deployment.status,
        "status_message": deployment.status_message,
        "nomad_job_version": deployment.nomad_job_version,
        "triggered_by": _email(deployment.triggered_by) if deployment.triggered_by_id else None,
        "requested_at": _time(deployment.requested_at),
        "started_at": _time(deployment.started_at),
        "finished_at": _time(deployment.finished_at),
    }


def app_json(app: App, last: Deployment | None = None) -> dict[str, Any]:
    """An app's configuration and its last deployment (the team row must be joined)."""
    return {
        "slug": app.slug,
        "team": app.team.slug,
        "image": app.image,
        "repo": app.repo,
        "branch": app.branch,
        "command": app.command,
        "port": app.port,
        "health_path": app.health_path,
        "count": app.count,
        "cpu_mhz": app.cpu_mhz,
        "memory_mb": app.memory_mb,
        "memory_max_mb": app.memory_max_mb,
        "created_at": _time(app.created_at),
        "updated_at": _time(app.updated_at),
        "last_deployment": deployment_json(last, app.slug) if last is not None else None,
    }


def domain_json(row: Domain) -> dict[str, Any]:
    """A custom domain of an app."""
    return {"hostname": row.hostname, "created_at": _time(row.created_at)}


def env_json(row: EnvVar) -> dict[str, Any]:
    """An environment variable; a secret's value is null, always."""
    return {
        "key": row.key,
        "value": None if row.is_secret else row.value,
        "secret": row.is_secret,
        "updated_at": _time(row.updated_at),
    }


def release_json(release: Release) -> dict[str, Any]:
    """A release and the configuration it froze: secret names, never their values."""
    config = release.config or {}
    return {
        "number": release.number,
        "image": release.image,
        "git_sha": release.git_sha,
        "rollback_of": config.get("rollback_of"),
        "created_by": _email(release.created_by) if release.created_by_id else None,
        "created_at": _time(release.created_at),
        "config": {
            "command": config.get("command", ""),
            "port": config.get("port"),
            "health_path": config.get("health_path"),
            "count": config.get("count"),
            "cpu_mhz": config.get("cpu_mhz"),
            "memory_mb": config.get("memory_mb"),
            "memory_max_mb": config.get("memory_max_mb"),
            "env": dict(config.get("env", {})),
            "secrets": sorted(config.get("secrets", {})),
            "domains": list(config.get("domains", [])),
        },
    }


def token_json(row: ApiToken, current_id: int | None) -> dict[str, Any]:
    """An API token as its owner may see it: never the secret, nor its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": _time(row.created_at),
        "expires_at": _time(row.expires_at),
        "last_used_at": _time(row.last_used_at),
        "revoked_at": _time(row.revoked_at),
        "parent_id": row.parent_id,
        "current": row.id == current_id,
    }


def membership_json(team: Team, role: Role | str) -> dict[str, Any]:
    """A team the caller belongs to, with the caller's role in it."""
    return {"slug": team.slug, "name": team.name, "role": str(role)}
