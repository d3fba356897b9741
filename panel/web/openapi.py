"""The OpenAPI 3.0 description of the JSON API, written by hand and served at /api/v1/openapi.json.

A test compares its paths and methods with the blueprint's URL rules, and Schemathesis checks
the API's answers against it, so the document and the code cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

JSON = "application/json"

# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"nullable": True, "allOf": [schema]}
    return {**schema, "nullable": True}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object with exactly these properties (all required unless ``required`` says)."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = list(properties) if required is None else required
    if required:  # OpenAPI 3.0 refuses an empty list
        schema["required"] = required
    return schema


def _json_response(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "No token, or the token is unknown, expired or revoked.",
    403: "The token lacks the scope, or the caller's role in the team is too weak.",
    404: "No such object in the caller's teams (other teams' objects are never revealed).",
    409: "The request conflicts with an existing object (a name or hostname in use).",
    413: "The body is larger than 1 MiB.",
    415: "The body is not sent as application/json.",
    422: "A field or query parameter is missing, unknown or invalid; `field` names it.",
    429: "Too many requests from this token (or address): wait the seconds in Retry-After.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until a request is allowed.",
        "schema": {"type": "integer"},
    }
}


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses; every operation that takes a token may also be rate limited (429)."""
    if 401 in codes:
        codes = (*codes, 429)
    return {
        str(code): _json_response(
            ERROR_DESCRIPTIONS[code],
            _ref("Error"),
            **({"headers": RETRY_AFTER} if code == 429 else {}),
        )
        for code in codes
    }


def _body(schema_name: str, example: dict[str, Any], required: bool = True) -> dict[str, Any]:
    content = {"schema": _ref(schema_name), "example": example}
    return {"required": required, "content": {JSON: content}}


BODY_ERRORS = (400, 413, 415, 422)
LOCATION = {
    "Location": {"description": "Where the new object can be read.", "schema": {"type": "string"}}
}


def _op(
    summary: str,
    scope: str,
    responses: dict[str, Any],
    *,
    tag: str,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation; every one needs a token with ``scope`` (the scopes nest: admin ⊃ deploy
    ⊃ read)."""
    operation: dict[str, Any] = {
        "summary": summary,
        "description": (description + "\n\n" if description else "") + f"Scope: `{scope}`.",
        "tags": [tag],
        "security": [{"bearer": []}],
        "responses": {**responses, **_errors(422)},
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    return operation


def _path_param(name: str, schema: dict[str, Any], description: str, example: Any) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
        "example": example,
    }


SLUG = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z]([a-z0-9-]*[a-z0-9])?$",
}
SLUG_PARAM = _path_param("slug", SLUG, "The app's name.", "web")
KEY_PARAM = _path_param(
    "key",
    {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Z_][A-Z0-9_]*$"},
    "The variable's name (NOMAD_* and HELIOS_* are reserved).",
    "DATABASE_URL",
)
HOSTNAME_PARAM = _path_param(
    "hostname",
    {"type": "string", "minLength": 1, "maxLength": 253},
    "A custom domain of the app.",
    "www.example.com",
)
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
TIME = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601."}


def _page(item: str) -> dict[str, Any]:
    return _object(
        {
            "items": {"type": "array", "items": _ref(item)},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": {"type": "integer", "minimum": 0},
            "next": _nullable(
                {"type": "string", "description": "Path of the next page; null on the last."}
            ),
        }
    )


def _list(item: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": _ref(item)}})


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

COMMAND = {
    "description": "The process's command: a string split like a POSIX shell, or an argv list. "
    "Empty: the image's own command.",
    "oneOf": [
        {"type": "string", "maxLength": 4096},
        {"type": "array", "items": {"type": "string", "maxLength": 4096}, "maxItems": 256},
    ],
}
APP_SETTINGS = {
    "image": {
        "type": "string",
        "maxLength": 512,
        "description": "Docker image, e.g. `registry.example.com/team/app:1.2`. An app has "
        'either an image or a repo; in an update, `""` clears one of them.',
    },
    "repo": {
        "type": "string",
        "maxLength": 200,
        "description": "GitHub repository `OWNER/REPO` to build from.",
    },
    "branch": {"type": "string", "maxLength": 255, "description": "Branch to build."},
    "command": COMMAND,
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "health_path": {"type": "string", "maxLength": 256, "description": "HTTP check path."},
    "count": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Instances."},
    "cpu_mhz": {"type": "integer", "minimum": 100, "maximum": 64000},
    "memory_mb": {"type": "integer", "minimum": 32, "maximum": 262144},
    "memory_max_mb": {
        "type": "integer",
        "minimum": 0,
        "maximum": 262144,
        "description": "Memory hard cap, at least memory_mb; 0 for none.",
    },
}
DEPLOYMENT_STATUSES = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "reverted",
    "superseded",
    "cancelled",
]
SCOPES = ["read", "deploy", "admin"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        **_object(
            {
                "error": {
                    "type": "string",
                    "description": "Stable code: bad_request, unauthorized, forbidden, "
                    "not_found, method_not_allowed, conflict, too_large, "
                    "unsupported_media_type, invalid, internal_error.",
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
                "field": {"type": "string", "description": "The field at fault (on 422)."},
            },
            required=["error", "message"],
        ),
    },
    "Token": _object(
        {
            "id": ID,
            "name": {"type": "string"},
            "prefix": {"type": "string", "description": "First characters, to recognise it."},
            "scopes": {"type": "array", "items": {"type": "string", "enum": SCOPES}},
            "created_at": TIME,
            "expires_at": _nullable(TIME),
            "last_used_at": _nullable(TIME),
            "revoked_at": _nullable(TIME),
            "parent_id": _nullable(
                {**ID, "description": "The token that made this one (revoked with it)."}
            ),
            "current": {"type": "boolean", "description": "The token of this request."},
        }
    ),
    "NewToken": _object(
        {
            "token": _ref("Token"),
            "secret": {"type": "string", "description": "The token itself: shown this once."},
        }
    ),
    "TokenCreate": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "scopes": {
                "type": "array",
                "items": {"type": "string", "enum": SCOPES},
                "minItems": 1,
            },
            "days": {
                "type": "integer",
                "minimum": 1,
                "maximum": 366,
                "nullable": True,
                "default": 90,
                "description": "Days until it expires; null: never.",
            },
        },
        required=["name", "scopes"],
    ),
    "Me": _object(
        {
            "user": _object({"email": {"type": "string"}, "name": {"type": "string"}}),
            "teams": {
                "type": "array",
                "items": _object(
                    {
                        "slug": {"type": "string"},
                        "name": {"type": "string"},
                        "role": {
                            "type": "string",
                            "enum": ["owner", "admin", "deployer", "viewer"],
                        },
                    }
                ),
            },
            "token": _ref("Token"),
        }
    ),
    "Deployment": _object(
        {
            "id": ID,
            "app": {"type": "string"},
            "release": {"type": "integer", "minimum": 1},
            "image": {"type": "string"},
            "git_sha": {"type": "string"},
            "rollback_of": _nullable(
                {"type": "integer", "minimum": 1, "description": "The release rolled back to."}
            ),
            "status": {"type": "string", "enum": DEPLOYMENT_STATUSES},
            "status_message": {"type": "string"},
            "nomad_job_version": _nullable({"type": "integer", "minimum": 0}),
            "triggered_by": _nullable({"type": "string", "description": "Email; null: system."}),
            "requested_at": TIME,
            "started_at": _nullable(TIME),
            "finished_at": _nullable(TIME),
        }
    ),
    "DeploymentCreate": _object(
        {
            "image": {
                "type": "string",
                "maxLength": 512,
                "description": "Deploy this image instead of the app's own (needs the role "
                "of HELIOS_IMAGE_DEPLOY_ROLE, admin by default, and a token of that scope).",
            },
            "git_sha": {
                "type": "string",
                "maxLength": 40,
                "description": "The source revision the image was built from.",
            },
        },
        required=[],
    ),
    "Rollback": _object({"release": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}),
    "App": _object(
        {
            "slug": {"type": "string"},
            "team": {"type": "string"},
            "image": _nullable({"type": "string"}),
            "repo": _nullable({"type": "string"}),
            "branch": {"type": "string"},
            "command": {"type": "string"},
            "port": {"type": "integer"},
            "health_path": {"type": "string"},
            "count": {"type": "integer"},
            "cpu_mhz": {"type": "integer"},
            "memory_mb": {"type": "integer"},
            "memory_max_mb": {"type": "integer"},
            "created_at": TIME,
            "updated_at": TIME,
            "last_deployment": _nullable(_ref("Deployment")),
        }
    ),
    "AppCreate": _object(
        {
            "team": {
                **SLUG,
                "description": "The team's slug; may be left out by members of one team.",
            },
            "slug": {**SLUG, "description": "The app's name (also its Nomad job name)."},
            **APP_SETTINGS,
        },
        required=["slug"],
    ),
    "AppUpdate": {
        **_object(APP_SETTINGS, required=[]),
        "minProperties": 1,
        "description": "Only the settings sent change; slug and team cannot.",
    },
    "EnvVar": _object(
        {
            "key": {"type": "string"},
            "value": _nullable({"type": "string", "description": "null for a secret, always."}),
            "secret": {"type": "boolean"},
            "updated_at": TIME,
        }
    ),
    "EnvSet": _object(
        {
            "value": {"type": "string", "description": "At most 32 KiB of UTF-8, no NUL."},
            "secret": {
                "type": "boolean",
                "default": False,
                "description": "Encrypt it and never show it again.",
            },
        },
        required=["value"],
    ),
    "Domain": _object({"hostname": {"type": "string"}, "created_at": TIME}),
    "DomainCreate": _object({"hostname": {"type": "string", "minLength": 1, "maxLength": 253}}),
    "Release": _object(
        {
            "number": {"type": "integer", "minimum": 1},
            "image": {"type": "string"},
            "git_sha": {"type": "string"},
            "rollback_of": _nullable(
                {"type": "integer", "minimum": 1, "description": "The release rolled back to."}
            ),
            "created_by": _nullable({"type": "string"}),
            "created_at": TIME,
            "config": _object(
                {
                    "command": {"type": "string"},
                    "port": {"type": "integer"},
                    "health_path": {"type": "string"},
                    "count": {"type": "integer"},
                    "cpu_mhz": {"type": "integer"},
                    "memory_mb": {"type": "integer"},
                    "memory_max_mb": {"type": "integer"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "secrets": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Names of the secrets the release had (values never).",
                    },
                    "domains": {"type": "array", "items": {"type": "string"}},
                }
            ),
        }
    ),
    "AppPage": _page("App"),
    "ReleasePage": _page("Release"),
    "DeploymentPage": _page("Deployment"),
    "EnvList": _list("EnvVar"),
    "DomainList": _list("Domain"),
    "TokenList": _list("Token"),
}

# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------

NO_CONTENT = {"description": "Done; no content."}
APP_READ_ERRORS = _errors(401, 403, 404)
ACCEPTED = {
    "202": _json_response(
        "Recorded and queued; follow it at the Location.", _ref("Deployment"), headers=LOCATION
    )
}

PATHS: dict[str, Any] = {
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "description": "No token needed.",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": _json_response("The OpenAPI document.", {"type": "object"})},
        }
    },
    "/me": {
        "get": _op(
            "Who the token belongs to",
            "read",
            {"200": _json_response("The caller.", _ref("Me")), **_errors(401, 403)},
            tag="account",
            description="The token's owner, their teams with their role in each, and the token.",
        )
    },
    "/apps": {
        "get": _op(
            "List apps",
            "read",
            {"200": _json_response("A page of apps.", _ref("AppPage")), **_errors(401, 403, 422)},
            tag="apps",
            parameters=PAGE_PARAMS,
            description="Apps of every team the caller belongs to, by name.",
        ),
        "post": _op(
            "Create an app",
            "admin",
            {
                "201": _json_response("Created.", _ref("App"), headers=LOCATION),
                **_errors(401, 403, 404, 409, *BODY_ERRORS),
            },
            tag="apps",
            body=_body(
                "AppCreate",
                {"team": "acme", "slug": "shop", "image": "registry.example.com/acme/shop:1.0"},
            ),
            description="Give either `image` or `repo`. Needs the admin role in the team.",
        ),
    },
    "/apps/{slug}": {
        "get": _op(
            "Show an app",
            "read",
            {"200": _json_response("The app.", _ref("App")), **APP_READ_ERRORS},
            tag="apps",
            parameters=[SLUG_PARAM],
        ),
        "patch": _op(
            "Change an app's settings",
            "admin",
            {
                "200": _json_response("The app as changed.", _ref("App")),
                **_errors(401, 403, 404, *BODY_ERRORS),
            },
            tag="apps",
            parameters=[SLUG_PARAM],
            body=_body("AppUpdate", {"count": 2, "memory_mb": 512}),
            description="The running release is untouched; the next deploy uses the settings.",
        ),
    },
    "/apps/{slug}/env": {
        "get": _op(
            "List environment variables",
            "read",
            {"200": _json_response("The variables.", _ref("EnvList")), **APP_READ_ERRORS},
            tag="env",
            parameters=[SLUG_PARAM],
            description="Secret values are never returned: `value` is null, `secret` true.",
        )
    },
    "/apps/{slug}/env/{key}": {
        "put": _op(
            "Set an environment variable",
            "admin",
            {
                "200": _json_response("The variable (a secret's value is null).", _ref("EnvVar")),
                **_errors(401, 403, 404, *BODY_ERRORS),
            },
            tag="env",
            parameters=[SLUG_PARAM, KEY_PARAM],
            body=_body("EnvSet", {"value": "postgres://db.internal/shop", "secret": True}),
        ),
        "delete": _op(
            "Remove an environment variable",
            "admin",
            {"204": NO_CONTENT, **_errors(401, 403, 404)},
            tag="env",
            parameters=[SLUG_PARAM, KEY_PARAM],
        ),
    },
    "/apps/{slug}/domains": {
        "get": _op(
            "List custom domains",
            "read",
            {"200": _json_response("The domains.", _ref("DomainList")), **APP_READ_ERRORS},
            tag="domains",
            parameters=[SLUG_PARAM],
        ),
        "post": _op(
            "Add a custom domain",
            "admin",
            {
                "201": _json_response("Added.", _ref("Domain"), headers=LOCATION),
                **_errors(401, 403, 404, 409, *BODY_ERRORS),
            },
            tag="domains",
            parameters=[SLUG_PARAM],
            body=_body("DomainCreate", {"hostname": "shop.example.com"}),
            description="Served with TLS from the app's next deploy.",
        ),
    },
    "/apps/{slug}/domains/{hostname}": {
        "delete": _op(
            "Remove a custom domain",
            "admin",
            {"204": NO_CONTENT, **_errors(401, 403, 404)},
            tag="domains",
            parameters=[SLUG_PARAM, HOSTNAME_PARAM],
        )
    },
    "/apps/{slug}/releases": {
        "get": _op(
            "List releases",
            "read",
            {
                "200": _json_response("A page of releases.", _ref("ReleasePage")),
                **_errors(401, 403, 404, 422),
            },
            tag="deployments",
            parameters=[SLUG_PARAM, *PAGE_PARAMS],
            description="Newest first. Each release's configuration lists secret names only.",
        )
    },
    "/apps/{slug}/deployments": {
        "get": _op(
            "List deployments",
            "read",
            {
                "200": _json_response("A page of deployments.", _ref("DeploymentPage")),
                **_errors(401, 403, 404, 422),
            },
            tag="deployments",
            parameters=[SLUG_PARAM, *PAGE_PARAMS],
            description="Newest first.",
        ),
        "post": _op(
            "Deploy",
            "deploy",
            {**ACCEPTED, **_errors(401, 403, 404, *BODY_ERRORS)},
            tag="deployments",
            parameters=[SLUG_PARAM],
            body=_body(
                "DeploymentCreate", {"image": "registry.example.com/acme/web:1.1"}, required=False
            ),
            description="Cuts a release from the app's configuration and queues its deployment. "
            "The body is optional. Needs the deployer role.",
        ),
    },
    "/apps/{slug}/rollback": {
        "post": _op(
            "Roll back to a release",
            "deploy",
            {**ACCEPTED, **_errors(401, 403, 404, *BODY_ERRORS)},
            tag="deployments",
            parameters=[SLUG_PARAM],
            body=_body("Rollback", {"release": 1}),
            description="Deploys an earlier release again, as a new deployment.",
        )
    },
    "/deployments/{deployment_id}": {
        "get": _op(
            "Show a deployment",
            "read",
            {"200": _json_response("The deployment.", _ref("Deployment")), **APP_READ_ERRORS},
            tag="deployments",
            parameters=[_path_param("deployment_id", ID, "The deployment's id.", 1)],
            description="Poll this until `status` is terminal (not queued or running).",
        )
    },
    "/tokens": {
        "get": _op(
            "List your API tokens",
            "read",
            {"200": _json_response("Your tokens.", _ref("TokenList")), **_errors(401, 403)},
            tag="account",
            description="Newest first, revoked ones included. Never the secrets.",
        ),
        "post": _op(
            "Create an API token",
            "admin",
            {
                "201": _json_response(
                    "Created: `secret` is shown in this response only.", _ref("NewToken")
                ),
                **_errors(401, 403, *BODY_ERRORS),
            },
            tag="account",
            body=_body("TokenCreate", {"name": "ci", "scopes": ["deploy"], "days": 30}),
        ),
    },
    "/tokens/{token_id}": {
        "delete": _op(
            "Revoke an API token",
            "read",
            {"204": NO_CONTENT, **_errors(401, 403, 404)},
            tag="account",
            parameters=[_path_param("token_id", ID, "The token's id.", 1)],
            description="A token may always revoke itself (that is how `helios logout` works); "
            "revoking another one needs the `admin` scope.",
        )
    },
}

DESCRIPTION = """\
The Helios JSON API: apps, their environment, domains, releases and deployments.

**Authentication.** Send a personal API token as `Authorization: Bearer <token>`. Tokens carry
scopes that nest: `read` (every GET), `deploy` (deploy and roll back) and `admin` (everything
else that changes state). What a token may do is the smaller of its scopes and its owner's role
in the app's team (viewer < deployer < admin < owner). Browser sessions are **not** accepted:
a cookie never drives this API, so cross-site request forgery does not apply to it.

**Errors.** Every error is `{"error": code, "message": text}`, plus `field` on 422. Objects of
teams you are not in answer 404, never 403.

**Pages.** Lists that grow answer `{"items", "page", "per_page", "total", "next"}`;
`per_page` is 1 to 100 (default 20), and `next` is the path of the next page or null.
"""

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Helios API", "version": "1.0.0", "description": DESCRIPTION},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "tags": [
        {"name": "account", "description": "You and your API tokens."},
        {"name": "apps", "description": "Apps and their settings."},
        {"name": "env", "description": "Environment variables and secrets."},
        {"name": "domains", "description": "Custom domains."},
        {"name": "deployments", "description": "Releases, deployments and rollbacks."},
        {"name": "meta", "description": "This description."},
    ],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A personal API token (it starts with `hel_`).",
            }
        },
        "schemas": SCHEMAS,
    },
}
