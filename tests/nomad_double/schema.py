"""Strict validation of Nomad API bodies against HashiCorp's OpenAPI spec (Nomad 1.4), in tests.

The spec (the pinned ``nomad-openapi.yaml``, see ``reference.py``) is loose: no ``required``
lists and no ``additionalProperties: false``, so a misspelt key such as ``MemoryMb`` would pass
and Nomad would silently drop it. :func:`load_strict_spec` tightens a private copy of it; the
double validates every request with it, and the renderer's tests every job body. At run time
Helios asks Nomad itself (``NomadDriver.validate_job``, and the plan before each register).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker

SCHEMA_REF = "#/components/schemas/{}"

# Fields newer than the Nomad 1.4 spec. Helios's renderer only emits 1.4 fields; these are
# here because real job documents from newer Nomad versions (the reference examples: Nomad's
# own docs/testdata at 1.6.2-dev and Traefik fixtures) contain them. Keep this list small.
NEWER_FIELDS: dict[str, dict[str, Any]] = {
    # Nomad 1.6.0: node pools (job.node_pool).
    "Job": {"NodePool": {"type": "string"}},
    # Nomad 1.5.0: workload identity (task `identity` block with env/file).
    "Task": {
        "Identity": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "Name": {"type": "string"},
                "Audience": {"type": "array", "items": {"type": "string"}},
                "Env": {"type": "boolean"},
                "File": {"type": "boolean"},
                "ServiceName": {"type": "string"},
            },
        }
    },
    # Nomad 1.6.0: `logs { disabled = true }` turns off log collection.
    "LogConfig": {"Disabled": {"type": "boolean"}},
    # Nomad 1.5.0: `restart { render_templates = true }` re-renders templates on restart.
    "RestartPolicy": {"RenderTemplates": {"type": "boolean"}},
    # Nomad 1.5.0: Nomad-native services carry their namespace in job reads.
    "Service": {"Namespace": {"type": "string"}},
}

# Required keys added to the loose spec. Job only requires ID because /v1/jobs/parse may
# return a job without groups; submitted jobs (register/plan) must have task groups, which
# is enforced on the request wrappers below.
REQUIRED: dict[str, list[str]] = {
    "JobRegisterRequest": ["Job"],
    "JobPlanRequest": ["Job"],
    "JobRevertRequest": ["JobID", "JobVersion"],
    "Job": ["ID"],
    "TaskGroup": ["Name", "Tasks"],
    "Task": ["Name", "Driver"],
    "Port": ["Label"],
}

# Closed value sets Nomad documents; "" is what Nomad itself emits for "unset".
ENUMS: dict[tuple[str, str], list[str]] = {
    ("Job", "Type"): ["service", "batch", "system", "sysbatch"],
    ("UpdateStrategy", "HealthCheck"): ["checks", "task_states", "manual", ""],
    ("Service", "Provider"): ["consul", "nomad", ""],
    ("Service", "OnUpdate"): ["require_healthy", "ignore_warnings", "ignore", ""],
    ("ServiceCheck", "OnUpdate"): ["require_healthy", "ignore_warnings", "ignore", ""],
}

# A job that is submitted must carry at least one task group.
SUBMITTED_JOB = {
    "allOf": [
        {"$ref": SCHEMA_REF.format("Job")},
        {"required": ["TaskGroups"], "properties": {"TaskGroups": {"minItems": 1}}},
    ]
}


class JobSpecError(ValueError):
    """A request body does not match the strict Nomad API schema."""

    def __init__(self, messages: list[str]) -> None:
        """Keep the individual messages and join them for str()."""
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


def _close_objects(node: Any) -> None:
    """Add additionalProperties: false to every object schema that lists properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def make_strict(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a strict deep copy of a loaded Nomad OpenAPI spec."""
    strict = copy.deepcopy(spec)
    schemas = strict["components"]["schemas"]
    for name, fields in NEWER_FIELDS.items():
        schemas[name].setdefault("properties", {}).update(copy.deepcopy(fields))
    _close_objects(strict["components"])
    for name, required in REQUIRED.items():
        schemas[name]["required"] = sorted(set(schemas[name].get("required", [])) | set(required))
    for (name, field), values in ENUMS.items():
        schemas[name]["properties"][field]["enum"] = list(values)
    for name in ("JobRegisterRequest", "JobPlanRequest"):
        schemas[name]["properties"]["Job"] = copy.deepcopy(SUBMITTED_JOB)
    return strict


@functools.lru_cache(maxsize=8)
def _load_cached(resolved: str) -> dict[str, Any]:
    """Read and tighten the spec at an absolute path (cached)."""
    with open(resolved, encoding="utf-8") as handle:
        return make_strict(yaml.safe_load(handle))


def load_strict_spec(path: str | Path) -> dict[str, Any]:
    """Load the Nomad OpenAPI yaml at path as a strict spec (cached per path; do not mutate)."""
    return _load_cached(str(Path(path).resolve()))


def drop_nulls(obj: Any) -> Any:
    """Return a copy of obj with null values removed from dicts and lists (Nomad's 'unset')."""
    if isinstance(obj, dict):
        return {key: drop_nulls(value) for key, value in obj.items() if value is not None}
    if isinstance(obj, list):
        return [drop_nulls(value) for value in obj if value is not None]
    return obj


_VALIDATORS: dict[tuple[int, str], tuple[dict[str, Any], OAS30Validator]] = {}


def _validator(spec: dict[str, Any], schema_name: str) -> OAS30Validator:
    """Return a (cached) OAS 3.0 validator for one component schema of spec."""
    key = (id(spec), schema_name)
    cached = _VALIDATORS.get(key)
    if cached is None or cached[0] is not spec:
        components = spec["components"]
        if schema_name not in components["schemas"]:
            raise KeyError(f"unknown schema {schema_name!r}")
        schema = {"$ref": SCHEMA_REF.format(schema_name), "components": components}
        cached = (spec, OAS30Validator(schema, format_checker=oas30_format_checker))
        _VALIDATORS[key] = cached
    return cached[1]


def format_path(parts: Any) -> str:
    """Render a jsonschema path deque as Job.TaskGroups[0].Name ("(root)" when empty)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _json_type(value: Any) -> str:
    """Name the JSON type of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """Flatten anyOf/oneOf error contexts to their leaves."""
    if error.context:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


def describe_error(error: ValidationError) -> list[str]:
    """Turn one jsonschema error into human-readable 'path: problem' messages."""
    path = format_path(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(key for key in instance if key not in known)
        return [f"{path}: unknown key {key!r}" for key in extra] or [f"{path}: {error.message}"]
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in instance]
        return [f"{path}: missing required key {key!r}" for key in missing]
    if error.validator == "type":
        if instance is None:
            return [f"{path}: null is not allowed (omit the key to leave it unset)"]
        return [
            f"{path}: expected {error.validator_value}, got {_json_type(instance)} {instance!r}"
        ]
    if error.validator == "enum":
        return [f"{path}: {instance!r} is not one of {error.validator_value}"]
    return [f"{path}: {error.message}"]


def validate_body(body: Any, schema_name: str, spec: dict[str, Any]) -> list[str]:
    """Validate body against a component schema of a strict spec; return error messages."""
    validator = _validator(spec, schema_name)
    messages: list[str] = []
    errors = sorted(validator.iter_errors(body), key=lambda err: list(map(str, err.absolute_path)))
    for error in errors:
        for leaf in _leaf_errors(error):
            for message in describe_error(leaf):
                if message not in messages:
                    messages.append(message)
    return messages


def check_body(body: Any, schema_name: str, spec: dict[str, Any]) -> None:
    """Raise JobSpecError listing every problem when body does not match the schema."""
    messages = validate_body(body, schema_name, spec)
    if messages:
        raise JobSpecError(messages)
