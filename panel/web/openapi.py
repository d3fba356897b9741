"""The OpenAPI 3.1 document of the JSON API, generated from the routes and the schema models.

Each API view declares what it takes and answers with :func:`operation` (its token scope, body
model, answer model and statuses); :func:`build_document` walks the application's URL map and
turns every ``api.*`` rule into an operation, with the models' JSON Schema as components. So
the paths are the routes, the bodies are the models the view checks input with, and nothing is
written twice. Served at /api/v1/openapi.json, and as a page at /api/v1/docs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from markupsafe import Markup, escape
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from panel.models import TokenScope
from panel.schema.accounts import ErrorOut
from panel.schema.apps import DomainIn, EnvKey, NewApp
from panel.schema.notifiers import NotifierPath
from panel.web.access import require_scope

__all__ = ["Operation", "build_document", "inline_markup", "operation", "reference"]

JSON = "application/json"
PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "No token, or the token is unknown, expired or revoked.",
    403: "The token lacks the scope, or the caller's role in the team is too weak.",
    404: "No such object in the caller's teams (other teams' objects are never revealed).",
    409: "The request conflicts with an existing object (a name or hostname in use).",
    413: "The body is larger than 1 MiB.",
    415: "The body is not sent as application/json.",
    422: "A field or query parameter is missing, unknown or invalid: `errors` lists each one.",
    429: "Too many requests from this token (or address): wait the seconds in Retry-After.",
    500: "Helios failed; the panel's log has the details under the body's `request_id`.",
    503: "A service Helios needs (the database, Redis or Nomad) is not answering: try again "
    "after the seconds in Retry-After.",
}
BODY_ERRORS = (400, 413, 415, 422)
# Path parameters are described by the schema field they name.
PATH_FIELDS: dict[str, tuple[type[BaseModel], str]] = {
    "slug": (NewApp, "slug"),
    "key": (EnvKey, "key"),
    "hostname": (DomainIn, "hostname"),
    "team": (NotifierPath, "team"),
    "notifier_id": (NotifierPath, "notifier_id"),
}
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
PAGE_PARAMS = [
    {
        "name": "page",
        "in": "query",
        "description": "Page number, from 1.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
    },
    {
        "name": "per_page",
        "in": "query",
        "description": "Items per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
]
TAGS = {
    "account": "You and your API tokens.",
    "apps": "Apps and their settings.",
    "env": "Environment variables and secrets.",
    "domains": "Custom domains.",
    "deployments": "Releases, deployments and rollbacks.",
    "builds": "Builds of repo apps: a push or a deploy builds a commit, then deploys it.",
    "logs": "Logs of apps, deployments and builds: as JSON, or live as Server-Sent Events.",
    "runs": "One-off commands (migrations, consoles) run once in an app's live release.",
    "notifiers": "A team's outgoing webhooks, signed with HMAC-SHA256 (team admins and owners).",
    "teams": "Teams: create one (you own it), delete an empty one (its owners).",
    "meta": "This description.",
}
DESCRIPTION = """\
The Helios JSON API: apps, their environment, domains, releases and deployments.

**Authentication.** Send a personal API token as `Authorization: Bearer <token>`. Tokens carry
scopes that nest: `read` (every GET), `deploy` (deploy and roll back) and `admin` (everything
else that changes state). What a token may do is the smaller of its scopes and its owner's role
in the app's team (viewer < deployer < admin < owner). Browser sessions are **not** accepted:
a cookie never drives this API, so cross-site request forgery does not apply to it.

**Errors.** Every error is `{"error": code, "message": text, "request_id": id}`, plus `field`
naming the input at fault and, on 422, `errors` listing every field at fault at once. Every
answer carries its id in `X-Request-Id`; on a 5xx, quote it: the panel's log has the details
under it. Objects of teams you are not in answer 404, never 403.

**Pages.** Lists that grow answer `{"items", "page", "per_page", "total", "next"}`;
`per_page` is 1 to 100 (default 20), and `next` is the path of the next page or null.
"""


@dataclass(frozen=True)
class Operation:
    """What one API view takes and answers, as declared beside it."""

    tag: str
    scope: TokenScope | None
    ok: int
    out: type[BaseModel] | None
    body: type[BaseModel] | None
    body_optional: bool
    errors: tuple[int, ...]
    paged: bool
    location: bool
    media: tuple[str, dict[str, Any]] | None = None
    query: type[BaseModel] | None = None
    summary: str = ""
    description: str = ""


def operation(
    tag: str,
    scope: TokenScope | None,
    *,
    out: type[BaseModel] | None = None,
    ok: int = 200,
    body: type[BaseModel] | None = None,
    body_optional: bool = False,
    errors: tuple[int, ...] = (),
    paged: bool = False,
    location: bool = False,
    media: tuple[str, dict[str, Any]] | None = None,
    query: type[BaseModel] | None = None,
) -> Callable[[Callable], Callable]:
    """Declare an API view's contract, and require ``scope`` of its token (None: open).

    ``out`` is the model of a JSON answer; ``media`` (type, schema) describes any other answer,
    or a second form of it when ``out`` is given too (the client picks one with ``Accept``).
    ``query`` is the model of the query parameters the view takes (read with ``read_query``).

    The view's docstring gives the summary (its first sentence) and description (the rest).
    """

    def decorate(view: Callable) -> Callable:
        first, _, more = (view.__doc__ or "").strip().partition("\n\n")
        summary, _dot, rest = " ".join(first.split()).partition(". ")
        summary, rest = summary.rstrip(".") + ".", (rest + " " + " ".join(more.split())).strip()
        declared = Operation(
            tag=tag, scope=scope, ok=ok, out=out, body=body, body_optional=body_optional,
            errors=errors, paged=paged, location=location, media=media, query=query,
            summary=summary, description=rest,
        )  # fmt: skip
        guarded = require_scope(scope)(view) if scope is not None else view
        guarded.helios_operation = declared  # type: ignore[attr-defined]
        return guarded

    return decorate


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------

_PARAM_RE = re.compile(r"<(?:(?P<converter>[a-z]+):)?(?P<name>\w+)>")


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _errors(declared: Operation) -> dict[str, Any]:
    codes = set(declared.errors) | {422, 500, 503}
    if declared.body is not None:
        codes |= set(BODY_ERRORS)
    if declared.scope is not None:
        codes |= {401, 403, 429}
    out = {}
    for code in sorted(codes):
        extra = {}
        if code in (429, 503):
            header = {"description": "Seconds until a request is allowed."}
            extra["headers"] = {"Retry-After": {**header, "schema": {"type": "integer"}}}
        out[str(code)] = _json(ERROR_DESCRIPTIONS[code], _ref(ErrorOut), **extra)
    return out


def _path_parameter(converter: str | None, name: str, field_schemas: dict) -> dict[str, Any]:
    if converter == "int":
        schema: dict[str, Any] = dict(ID)
        description = "The object's number."
    else:
        model, field = PATH_FIELDS[name]
        schema = {k: v for k, v in field_schemas[model][field].items() if k != "examples"}
        description = schema.pop("description", "")
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}  # fmt: skip


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of ``model``; a list field is the parameter repeated."""
    properties = model.model_json_schema(mode="validation")["properties"]
    parameters = []
    for name, info in model.model_fields.items():
        schema = {k: v for k, v in properties[name].items() if k not in ("title", "description")}
        options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
        if options:  # an optional value: absent, never null
            schema.update(options[0])
        if schema.get("default", 0) is None:
            del schema["default"]
        parameters.append(
            {"name": name, "in": "query", "required": info.is_required(),
             "description": info.description or "", "schema": schema}
        )  # fmt: skip
    return parameters


def _answer(declared: Operation) -> dict[str, Any]:
    """The success answer: JSON (``out``) and/or another media type (``media``)."""
    content: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    description = declared.summary
    if declared.out is not None:
        content[JSON] = {"schema": _ref(declared.out)}
        description = declared.out.__doc__ or "The answer."
        if declared.location:
            where = {
                "description": "Where the new object can be read.",
                "schema": {"type": "string"},
            }
            extra["headers"] = {"Location": where}
    if declared.media is not None:
        media_type, schema = declared.media
        content[media_type] = {"schema": schema}
    if not content:
        return {"description": "Done; no content."}
    return {"description": description, "content": content, **extra}


def _operation(declared: Operation, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    scope = declared.scope.value if declared.scope is not None else None
    note = f"Scope: `{scope}`." if scope else "No token needed."
    spec: dict[str, Any] = {
        "summary": declared.summary,
        "description": f"{declared.description}\n\n{note}".strip(),
        "tags": [declared.tag],
        "security": [{"bearer": []}] if scope else [],
    }
    params = parameters + (PAGE_PARAMS if declared.paged else [])
    if declared.query is not None:
        params += _query_parameters(declared.query)
    if params:
        spec["parameters"] = params
    if declared.body is not None:
        content: dict[str, Any] = {"schema": _ref(declared.body)}
        example = getattr(declared.body, "example", None)
        if example is not None:
            content["example"] = example
        spec["requestBody"] = {"required": not declared.body_optional, "content": {JSON: content}}
    spec["responses"] = {str(declared.ok): _answer(declared), **_errors(declared)}
    return spec


def _models(declared: list[Operation]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {"ErrorOut": ErrorOut}
    for item in declared:
        for model in (item.body, item.out):
            if model is not None:
                found[model.__name__] = model
    for model, _field in PATH_FIELDS.values():
        found[model.__name__] = model
    return list(found.values())


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``api.*`` route of ``app``."""
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        declared = getattr(view, "helios_operation", None)
        if not rule.endpoint.startswith("api.") or declared is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.rule, method.lower(), declared))
    models = _models([declared for _path, _method, declared in routes])
    pairs = [(model, "validation") for model in models]
    _keys, top = models_json_schema(pairs, ref_template=REF)
    schemas = top.get("$defs", {})
    field_schemas = {
        model: schemas[model.__name__]["properties"] for model, _field in PATH_FIELDS.values()
    }
    paths: dict[str, dict[str, Any]] = {}
    for rule, method, declared in sorted(routes, key=lambda r: (r[0], r[1])):
        parameters = [
            _path_parameter(m["converter"], m["name"], field_schemas)
            for m in _PARAM_RE.finditer(rule)
        ]
        path = _PARAM_RE.sub(lambda m: "{" + m["name"] + "}", rule).removeprefix(PREFIX)
        paths.setdefault(path, {})[method] = _operation(declared, parameters)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Helios API", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A personal API token (it starts with `hel_`).",
                }
            },
            "schemas": schemas,
        },
    }


# ---------------------------------------------------------------------------------------------
# The reference page
# ---------------------------------------------------------------------------------------------


_CODE_RE = re.compile(r"`([^`]+)`")
_STRONG_RE = re.compile(r"\*\*([^*]+)\*\*")


def inline_markup(text: str) -> Markup:
    """The document's bits of Markdown (`code`, **strong**) as HTML; everything else escaped."""
    html = str(escape(text))
    html = _CODE_RE.sub(r"<code>\1</code>", html)
    return Markup(_STRONG_RE.sub(r"<strong>\1</strong>", html))  # noqa: S704 - escaped above


def _type_of(schema: dict[str, Any]) -> str:
    """A short human name of a JSON Schema: 'string', 'integer or null', 'App' …"""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type_of(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(str(value) for value in schema["enum"])
    return str(schema.get("type", "any"))


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The properties of an object schema as rows: name, type, required, default, help."""
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        limits = [f"{word} {prop[key]}" for key, word in (("minimum", "≥"), ("maximum", "≤"))
                  if key in prop]  # fmt: skip
        rows.append(
            {
                "name": name,
                "type": _type_of(prop),
                "required": name in required,
                "default": prop.get("default"),
                "has_default": "default" in prop,
                "limits": ", ".join(limits),
                "help": prop.get("description", ""),
            }
        )
    return rows


def reference(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document arranged for reading: per tag, its operations with resolved fields."""
    schemas = document["components"]["schemas"]
    by_tag: dict[str, list[dict[str, Any]]] = {name: [] for name in TAGS}
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            body = spec.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema")
            answers = []
            for status, answer in spec["responses"].items():
                schema = answer.get("content", {}).get(JSON, {}).get("schema", {})
                answers.append({"status": status, "text": answer["description"],
                                "type": _type_of(schema) if schema else ""})  # fmt: skip
            by_tag[spec["tags"][0]].append(
                {
                    "id": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    "method": method.upper(),
                    "path": PREFIX + path,
                    "summary": spec["summary"],
                    "description": spec["description"],
                    "parameters": spec.get("parameters", []),
                    "body": _type_of(body) if body else "",
                    "body_fields": _fields(schemas[_type_of(body)]) if body else [],
                    "answers": answers,
                }
            )
    return [
        {"tag": tag, "about": TAGS[tag], "operations": operations}
        for tag, operations in by_tag.items()
        if operations
    ]
