"""App manifests: a small TOML file describing one app, loaded into a validated AppSpec.

Used by ``helios render --file app.toml`` to preview the Nomad job of an app that is not in the
database. The keys come from the app schema (``panel.schema.apps``; see docs/manifest.md); the
installation's policy (base domain, datacenters, deploy timings, Traefik names) comes from the
settings, never from the file. A manifest holds secret *names* only: files end up in git, secret
values must not.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from panel.config import Settings
from panel.releases import spec_from_snapshot
from panel.schema.apps import AppSettings, DeployIn, NewApp, RollbackIn, release_fields
from panel.schema.base import Problems, check, check_field
from panel.spec import AppSpec
from panel.validation import ValidationError, validate_env_key

__all__ = [
    "FIELDS",
    "REPO_FILE",
    "ManifestError",
    "ManifestField",
    "effective_settings",
    "load_manifest",
    "read_repo_settings",
]

ENV_SET_COMMAND = "helios env set {app} KEY=VALUE --secret"


@dataclass(frozen=True)
class ManifestField:
    """One top-level manifest key: its TOML type, default and an example line."""

    kind: str  # "string", "integer", "command", "list of strings" or "table of strings"
    default: Any
    example: str
    required: bool = False


def _toml(value: Any) -> str:
    """A scalar or list of strings written as TOML (for example lines)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value) if isinstance(value, int) else f'"{value}"'


def _from_schema(model: type[BaseModel], name: str, **override: Any) -> ManifestField:
    """A manifest key described by a schema field: its TOML type, default and an example."""
    info = model.model_fields[name]
    annotation = info.annotation
    kind = "integer" if annotation is int else "string" if annotation in (str, str | None) else ""
    kind = kind or "command"
    default = None if info.is_required() else info.get_default()
    sample = info.examples[0] if info.examples else default
    return ManifestField(
        override.get("kind", kind),
        override.get("default", default),
        f"{name} = {_toml(sample)}",
        override.get("required", False),
    )


# The keys of a manifest: the app's name and image, the identity of the release it renders,
# every setting a release freezes (from the app schema), then its domains, env and secret names.
FIELDS: dict[str, ManifestField] = {
    "slug": _from_schema(NewApp, "slug", required=True),
    "image": _from_schema(AppSettings, "image", required=True),
    "team": _from_schema(NewApp, "team", default="default"),
    "git_sha": _from_schema(DeployIn, "git_sha"),
    "release": _from_schema(RollbackIn, "release", default=1),
    **{name: _from_schema(AppSettings, name) for name in release_fields()},
    "domains": ManifestField("list of strings", (), 'domains = ["shop.example.com"]'),
    "env": ManifestField("table of strings", {}, '[env]\nLOG_LEVEL = "info"'),
    "secrets": ManifestField("list of strings", (), 'secrets = ["DATABASE_PASSWORD"]'),
}

# AppSpec fields that come from settings: which variable to fix when one of them is refused.
POLICY_VARIABLES = {
    "base_domain": "HELIOS_BASE_DOMAIN",
    "datacenters": "HELIOS_NOMAD_DATACENTERS",
    "datacenter": "HELIOS_NOMAD_DATACENTERS",
    "certresolver": "HELIOS_TLS_CERTRESOLVER",
    "entrypoint": "HELIOS_TRAEFIK_ENTRYPOINT",
    "auto_promote": "HELIOS_DEPLOY_AUTO_PROMOTE",
    "auto_revert": "HELIOS_DEPLOY_AUTO_REVERT",
    "min_healthy_time_s": "HELIOS_DEPLOY_MIN_HEALTHY_TIME",
    "healthy_deadline_s": "HELIOS_DEPLOY_HEALTHY_DEADLINE",
    "progress_deadline_s": "HELIOS_DEPLOY_PROGRESS_DEADLINE",
}

# ValidationError.field values that name something other than the manifest key holding it.
FIELD_TO_KEY = {"env key": "env", "env value": "env", "domain": "domains", "secret name": "secrets"}

# How each kind of value is described in a type error.
KIND_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "command": "a string or a list of strings",
    "list of strings": "a list of strings",
    "table of strings": "a table of strings",
}

_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_END_RE = re.compile(r"\s*\(at end of document\)$")


class ManifestError(ValueError):
    """A manifest cannot be used: the message starts with the file and says how to fix it."""

    def __init__(self, path: Path | str, problem: str, *, field: str = "") -> None:
        """Keep the file, the manifest key at fault ("" when none) and the problem."""
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.field = field
        self.problem = problem


def load_manifest(path: Path, settings: Settings) -> AppSpec:
    """Read a TOML app manifest and return its validated AppSpec (policy from settings)."""
    data = _parse(path)
    _check_keys(path, data)
    fields = {key: _typed(path, key, data) for key in FIELDS}
    settings_given = {key: fields[key] for key in ("image", *release_fields())}
    try:  # the app schema's own rules, every one a setting of the app has
        check(AppSettings, settings_given, strict=True)
    except Problems as exc:
        first = exc.problems[0]
        raise ManifestError(path, first.message, field=first.field) from None
    snapshot = {
        **{key: fields[key] for key in ("slug", "image", "git_sha", *release_fields())},
        "env": fields["env"],
        "secrets": dict.fromkeys(fields["secrets"], ""),
        "domains": fields["domains"],
    }
    try:
        return spec_from_snapshot(
            snapshot, team=fields["team"], release=fields["release"], deployment=0,
            settings=settings,
        )  # fmt: skip
    except ValidationError as exc:
        raise _wrap(path, exc) from exc


# ---------------------------------------------------------------------------------------------
# helios.toml: how a repository says its code runs
# ---------------------------------------------------------------------------------------------

REPO_FILE = "helios.toml"


def read_repo_settings(text: str, where: str = REPO_FILE) -> dict[str, Any]:
    """The settings a repository's ``helios.toml`` gives, checked by the app schema's rules.

    Only the settings a release freezes may be set there (command, port, health check,
    instances, resources: the fields of AppSettings marked ``release``); the app's name, team,
    source, variables and domains belong to the panel. Errors name the file and the key.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(where, _syntax_problem(str(exc), text)) from exc
    allowed = release_fields()
    _refuse_unknown_keys(
        where, data, allowed,
        f"{REPO_FILE} may set {', '.join(allowed)} (the rest of an app's settings live in "
        "the panel)",
    )  # fmt: skip
    given = {key: _typed(Path(where), key, data) for key in data}
    checked: dict[str, Any] = {}
    for key, value in given.items():
        try:
            checked[key] = check_field(AppSettings, key, value)
        except Problems as exc:
            raise ManifestError(where, exc.problems[0].message, field=key) from None
    return checked


def effective_settings(
    panel: dict[str, Any], repo: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings a release runs with, and where each came from ("panel" or REPO_FILE).

    ``panel`` is the app's whole AppSettings (as stored); ``repo`` what its file sets.

    The repository's file wins for the keys it sets: the code and how it runs travel
    together, and a release records which values came from the file. The result is checked
    whole by the app schema (a memory limit below the reservation is refused).
    """
    merged = {**panel, **repo}
    sources = {key: (REPO_FILE if key in repo else "panel") for key in merged}
    try:
        check(AppSettings, merged)
    except Problems as exc:
        first = exc.problems[0]
        where = sources.get(first.field, "panel")
        raise ManifestError(where, first.message, field=first.field) from None
    return merged, sources


# ---------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------


def _parse(path: Path) -> dict[str, Any]:
    """The TOML document as a dict; unreadable files and syntax errors become ManifestErrors."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(
            path, f"cannot read the manifest ({exc.strerror or exc}): check the path"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            path, f"is not UTF-8 text (byte {exc.start}): save the file as UTF-8"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, _syntax_problem(str(exc), text)) from exc


def _syntax_problem(message: str, text: str) -> str:
    """Turn tomllib's message into 'line L, column C: TOML syntax error (...): hint'."""
    match = _POSITION_RE.search(message)
    if match:
        line, column = int(match[1]), int(match[2])
        reason = message[: match.start()]
    else:
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        reason = _END_RE.sub("", message)
    if "overwrite" in reason or "redefine" in reason.lower():
        hint = "each key and table may appear only once"
    elif "Unterminated" in reason or "'\\n'" in reason:  # a string left open at line end
        hint = 'close the string with a matching quote, e.g. image = "nginx:1.27"'
    else:
        hint = (
            'strings need double quotes (image = "nginx:1.27"), lists square brackets '
            '(domains = ["shop.example.com"]) and tables a [name] header line'
        )
    return f"line {line}, column {column}: TOML syntax error ({reason}): {hint}"


def _refuse_unknown_keys(
    where: Path | str, data: dict[str, Any], allowed: list[str], which: str
) -> None:
    """A ManifestError for the first key not in ``allowed``, with a did-you-mean."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ManifestError(where, f"unknown key {key!r}: {guess}{which}", field=key)


def _check_keys(path: Path, data: dict[str, Any]) -> None:
    """Refuse secret values, unknown keys and missing required keys."""
    if isinstance(data.get("secrets"), dict):
        app = data["slug"] if isinstance(data.get("slug"), str) and data["slug"] else "APP"
        raise ManifestError(
            path,
            "secrets is a table of values, but a manifest never holds secret values (manifests "
            'end up in git): list only their names, e.g. secrets = ["DATABASE_PASSWORD"], '
            f"and store each value with `{ENV_SET_COMMAND.format(app=app)}`",
            field="secrets",
        )
    _refuse_unknown_keys(path, data, list(FIELDS), f"allowed keys are {', '.join(FIELDS)}")
    for key, spec in FIELDS.items():
        if spec.required and key not in data:
            raise ManifestError(
                path, f"missing required key {key!r}: add a line such as {spec.example}", field=key
            )


# ---------------------------------------------------------------------------------------------
# Types: TOML already typed every value; check each against its key before validation
# ---------------------------------------------------------------------------------------------


def _a(kind: str) -> str:
    """A TOML type name with its article: 'an integer', 'a string'."""
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def _typed(path: Path, key: str, data: dict[str, Any]) -> Any:
    """The value of key (or its default), refused when its TOML type does not fit."""
    spec = FIELDS[key]
    if key not in data:
        return spec.default
    value = data[key]
    kind = _toml_type(value)
    ok = {
        "string": kind == "string",
        "integer": kind == "integer",
        "command": kind == "string" or (kind == "array" and _all_strings(value)),
        "list of strings": kind == "array" and _all_strings(value),
        "table of strings": kind == "table",
    }[spec.kind]
    if not ok:
        got = "an array with a non-string item" if kind == "array" else _a(kind)
        problem = f"{key} must be {KIND_NAMES[spec.kind]}, not {got}: e.g. {spec.example}"
        raise ManifestError(path, problem, field=key)
    if key == "env":
        _check_env(path, value)
    if key == "secrets":
        _check_secret_names(path, value, data)
    return value


def _all_strings(items: list[Any]) -> bool:
    """Whether every item of a TOML array is a string."""
    return all(isinstance(item, str) for item in items)


def _check_env(path: Path, env: dict[str, Any]) -> None:
    """Every [env] value is a string (TOML numbers and booleans must be quoted)."""
    for name, value in env.items():
        if not isinstance(value, str):
            raise ManifestError(
                path,
                f"env.{name} is {_a(_toml_type(value))}, but environment values are strings: "
                f'quote it, e.g. {name} = "{_suggest(value)}"',
                field="env",
            )


def _suggest(value: object) -> str:
    """A quoted-string version of a scalar for a hint (tables and arrays get a placeholder)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else "..."


def _check_secret_names(path: Path, names: list[str], data: dict[str, Any]) -> None:
    """Secret entries are names; 'KEY=value' means someone pasted a value into the file."""
    for name in names:
        if "=" in name:
            app = data["slug"] if isinstance(data.get("slug"), str) and data["slug"] else "APP"
            raise ManifestError(
                path,
                "secrets lists names only, but an entry contains '=' (a value?); a manifest "
                'never holds secret values: keep the name, e.g. secrets = ["DATABASE_PASSWORD"], '
                f"remove the value from the file (and its history) and store it with "
                f"`{ENV_SET_COMMAND.format(app=app)}`",
                field="secrets",
            )
        try:
            validate_env_key(name, "secret name")
        except ValidationError as exc:
            raise _wrap(path, exc) from exc


# ---------------------------------------------------------------------------------------------
# Validation errors from the spec
# ---------------------------------------------------------------------------------------------


def _wrap(path: Path, exc: ValidationError) -> ManifestError:
    """A ManifestError naming the manifest key (or the setting) a spec ValidationError is about."""
    variable = POLICY_VARIABLES.get(exc.field)
    if variable:
        return ManifestError(
            path,
            f"{exc.message} (this comes from the setting {variable}, not from the manifest: "
            "fix the setting)",
            field=exc.field,
        )
    key = FIELD_TO_KEY.get(exc.field, exc.field)
    named = exc.message.startswith((key, exc.field))
    problem = exc.message if named else f"{key}: {exc.message}"
    return ManifestError(path, problem, field=key)
