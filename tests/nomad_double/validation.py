"""Validation of every request the Nomad double receives (NOMAD.md section 6).

Spec paths are checked with openapi-core against the strict spec from ``schema.py``;
``/client/*`` paths (absent from the spec) against the small hand description below.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from .schema import describe_error, load_strict_spec

SPEC_SERVER = "http://nomad.test"

# Query parameters Nomad 1.4 accepts on every list endpoint although the spec omits them.
# https://developer.hashicorp.com/nomad/api-docs#filtering
GENERIC_LIST_PARAMS = {"filter"}

BOOL_WORDS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}

# /client/* endpoints are not in the spec: allowed query parameters and their kinds.
# https://developer.hashicorp.com/nomad/api-docs/client
COMMON_CLIENT_PARAMS = {"namespace": "str", "region": "str", "node_id": "str"}
CLIENT_ENDPOINTS: list[tuple[str, str, dict[str, str], set[str]]] = [
    # (method, path regex, params, required params)
    ("get", r"/v1/client/allocation/[^/]+/stats", {}, set()),
    (
        "get",
        r"/v1/client/fs/logs/[^/]+",
        {
            "task": "str",
            "type": "stdout|stderr",
            "follow": "bool",
            "offset": "int",
            "origin": "start|end",
            "plain": "bool",
        },
        {"task", "type"},
    ),
]


@dataclass
class RawRequest:
    """The parts of an HTTP request openapi-core needs (its Request protocol)."""

    method: str
    path: str
    query: ImmutableMultiDict
    headers: Headers
    body: bytes | None
    host_url: str = SPEC_SERVER
    content_type: str = "application/json"
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        """Build the RequestParameters view."""
        self.parameters = RequestParameters(
            query=self.query, header=self.headers, cookie=ImmutableMultiDict(), path={}
        )

    @property
    def full_url_pattern(self) -> str:
        """Scheme, host and path (legacy attribute)."""
        return self.host_url + self.path


def prepare_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the strict spec adjusted for whole-request validation."""
    spec = copy.deepcopy(spec)
    spec["servers"] = [{"url": SPEC_SERVER + "/v1"}]
    for item in spec["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            # The double enforces ACLs itself (403), so a missing token is not a spec violation.
            if "security" in operation:
                operation["security"] = [{}, *operation["security"]]
    # The 1.4 spec marks a body as required for DELETE /var/{path}; Nomad reads none
    # (https://developer.hashicorp.com/nomad/api-docs/variables#delete-variable).
    spec["paths"]["/var/{path}"]["delete"]["requestBody"]["required"] = False
    # The spec declares the blocking-query `index` as a header; Nomad reads it from the query
    # string (https://developer.hashicorp.com/nomad/api-docs#blocking-queries,
    # command/agent/http.go parseWait), as python-nomad and every client send it.
    spec["components"]["parameters"]["IndexHeader"]["in"] = "query"
    # POST /v1/namespace takes the namespace as its body like /v1/namespace/{name}
    # (https://developer.hashicorp.com/nomad/api-docs/namespaces#create-or-update-namespace);
    # the spec forgot it there.
    by_name = spec["paths"]["/namespace/{namespaceName}"]["post"]["requestBody"]
    spec["paths"]["/namespace"]["post"]["requestBody"] = copy.deepcopy(by_name)
    # POST /v1/acl/token creates a token from the same body as the update at
    # /v1/acl/token/{accessor} (https://developer.hashicorp.com/nomad/api-docs/acl/tokens#create-token);
    # the spec has the update only.
    update = spec["paths"]["/acl/token/{tokenAccessor}"]["post"]
    create = copy.deepcopy(update)
    create["operationId"] = "CreateACLToken"
    create["parameters"] = [
        p for p in create.get("parameters", []) if "ACLTokenAccessorParam" not in p.get("$ref", "")
    ]
    spec["paths"]["/acl/token"]["post"] = create
    return spec


@functools.lru_cache(maxsize=4)
def build_openapi(spec_path: str) -> tuple[OpenAPI, dict[str, Any]]:
    """Build (and cache) the openapi-core object for a spec file."""
    spec = prepare_spec(load_strict_spec(spec_path))
    return OpenAPI.from_dict(spec), spec


def _allowed_query(spec: dict[str, Any], method: str, template: str) -> set[str]:
    """Names of the query parameters the spec declares for one operation."""
    item = spec["paths"][template]
    params = [*item.get("parameters", []), *item[method].get("parameters", [])]
    names = set()
    for param in params:
        if "$ref" in param:
            param = spec["components"]["parameters"][param["$ref"].rsplit("/", 1)[1]]
        if param.get("in") == "query":
            names.add(param["name"])
    return names


@functools.lru_cache(maxsize=256)
def _match_template(spec_path: str, path: str) -> str | None:
    """Find the spec path template ('/job/{jobName}') matching a /v1 request path."""
    _, spec = build_openapi(spec_path)
    rel = path[len("/v1") :]
    for template in spec["paths"]:
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(regex, rel):
            return template
    return None


def _error_messages(exc: BaseException) -> list[str]:
    """Collect readable messages from an openapi-core exception chain."""
    messages: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        for error in getattr(cause, "schema_errors", None) or ():
            messages.extend(describe_error(error))
        cause = cause.__cause__
    return messages or [f"{type(exc).__name__}: {exc}"]


def _check_kind(name: str, value: str, kind: str) -> str | None:
    """Check one hand-described query value; return a message or None."""
    if kind == "bool" and value not in BOOL_WORDS:
        return f"query {name}={value!r} is not a boolean"
    if kind == "int" and not re.fullmatch(r"-?\d+", value):
        return f"query {name}={value!r} is not an integer"
    if "|" in kind and value not in kind.split("|"):
        return f"query {name}={value!r} is not one of {kind.split('|')}"
    return None


def validate_client(method: str, path: str, query: dict[str, list[str]]) -> list[str] | None:
    """Validate a /client/* request; None when no hand description matches."""
    for verb, regex, params, required in CLIENT_ENDPOINTS:
        if verb == method and re.fullmatch(regex, path):
            allowed = {**COMMON_CLIENT_PARAMS, **params}
            problems = [f"missing required query parameter {n!r}" for n in required - set(query)]
            for name, values in query.items():
                if name not in allowed:
                    problems.append(f"unknown query parameter {name!r}")
                    continue
                for value in values:
                    problem = _check_kind(name, value, allowed[name])
                    if problem:
                        problems.append(problem)
            return problems
    return None


def normalise_body(raw: bytes) -> bytes:
    """Drop top-level nulls: python-nomad sends unset optional arguments as null."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if value is not None}
    return json.dumps(data).encode()


def validate_request(
    spec_path: str,
    method: str,
    path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes | None,
) -> list[str]:
    """Validate one request; return violation messages (empty when valid)."""
    method = method.lower()
    if path.startswith("/v1/client/"):
        problems = validate_client(method, path, query)
        if problems is None:
            return [f"{method.upper()} {path} is not a known Nomad endpoint"]
        return problems
    check_path = path
    if path.startswith("/v1/var/"):
        # Variable paths contain slashes; the spec's {path} template cannot match them.
        check_path = "/v1/var/" + quote(path[len("/v1/var/") :], safe="")
    openapi, spec = build_openapi(spec_path)
    # An empty prefix means "no prefix" to Nomad; python-nomad sends `prefix=` by default
    # (get_variables, get_deployments), which OpenAPI 3.0 only allows with the deprecated
    # allowEmptyValue.
    pairs = [(k, v) for k, vs in query.items() for v in vs if (k, v) != ("prefix", "")]
    request = RawRequest(
        method=method,
        path=check_path,
        query=ImmutableMultiDict(pairs),
        headers=Headers(list(headers.items())),
        body=normalise_body(body) if body else None,
    )
    try:
        openapi.validate_request(request)
    except Exception as exc:  # openapi-core raises many unrelated exception types
        return _error_messages(exc)
    template = _match_template(spec_path, check_path)
    if template is None:  # pragma: no cover - openapi-core would have raised
        return [f"no spec path for {path}"]
    allowed = _allowed_query(spec, method, template)
    if method == "get":
        allowed |= GENERIC_LIST_PARAMS
    return [f"unknown query parameter {name!r}" for name in sorted(set(query) - allowed)]
