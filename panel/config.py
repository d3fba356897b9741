"""Settings: every HELIOS_* and NOMAD_* environment variable, read in one place, typed and checked.

`Settings` is a frozen pydantic-settings model. Each setting is one field carrying its type,
default, constraints, help text, secret flag and environment variable (HELIOS_ and the field's
name in capitals, unless the field names another, as the NOMAD_* ones do). `SETTINGS_DOC` and
`Settings.describe()` (what `helios config` prints) are derived from the fields. Bad values are
refused with one `ConfigError` naming every offending variable, a line each, with what to write.
Loads no web framework, database, queue or HTTP client: the pure core imports it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from panel.render.build import (
    BUILDER_IMAGE,
    GIT_IMAGE,
    validate_registry,
)
from panel.render.buildpacks import BUILDPACKS_BUILDER
from panel.validation import ValidationError as FieldError
from panel.validation import validate_image

__all__ = ["SETTINGS_DOC", "ConfigError", "SettingDoc", "Settings", "mask_url"]


class ConfigError(ValueError):
    """A setting has a value Helios cannot use; the message says which and how to fix it."""


def _to_int(value: Any) -> Any:
    """Text holding a whole number as that number; anything else unchanged (strict int refuses)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    return value


METRICS_TOKEN_RE = re.compile(r"[A-Za-z0-9._-]{16,256}")
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False, "": False}


def _to_bool(value: Any) -> Any:
    """1/true/yes/on and 0/false/no/off/empty (any case) as booleans; anything else unchanged."""
    return _BOOLEANS.get(value.strip().lower(), value) if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    """Text stripped and in lower case; anything else unchanged."""
    return value.strip().lower() if isinstance(value, str) else value


def _split(value: Any) -> Any:
    """Comma-separated text as a tuple of its non-empty, stripped parts."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _directory(value: Any) -> Any:
    """A directory as an absolute path (empty text: ./var)."""
    if isinstance(value, str):
        value = Path(value.strip() or "./var")
    return value.expanduser().absolute() if isinstance(value, Path) else value


def _backup_dir(value: str) -> str:
    """Empty (scheduled backups off) or an absolute folder."""
    if value and not value.startswith("/"):
        raise ValueError("is not an absolute path: use e.g. /var/backups/helios (empty: off)")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("is not HOST:PORT: use e.g. 127.0.0.1:8080")
    return value


def _is_origin(value: str) -> bool:
    """Scheme http(s), a host and an optional port, and nothing else."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError when out of range
    except ValueError:
        return False
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and parts.username is None
        and not (parts.path or parts.query or parts.fragment)
        and (port is None or port > 0)
        and value.isprintable()
        and not any(char in value for char in ";\\ ")
    )


def _origin(value: str) -> str:
    """The panel's public address: scheme, host and optional port only."""
    value = value.rstrip("/")
    if value and not _is_origin(value):
        raise ValueError(
            "is not the panel's public address: use scheme and host, with an optional port "
            "and nothing after it, e.g. https://helios.example.com"
        )
    return value


def _api_address(what: str, example: str, empty: str) -> Callable[[str], str]:
    """A validator of an HTTP API's address (Nomad's, Consul's, Traefik's): scheme, host and
    optional port, nothing after it (the clients add the paths); empty means ``empty``."""

    def check(value: str) -> str:
        value = value.rstrip("/")
        if value and not _is_origin(value):
            hint = (
                f"write http://{value} or https://{value}"
                if "://" not in value and _is_origin(f"http://{value}")
                else "use http:// or https://, a host and an optional port, nothing after it"
            )
            raise ValueError(f"is not {what}: {hint}, e.g. {example} (empty: {empty})")
        return value

    return check


_nomad_address = _api_address(
    "Nomad's HTTP API address", "https://nomad.internal:4646", "no cluster connected"
)
_consul_address = _api_address(
    "Consul's HTTP API address", "https://consul.internal:8501", "checks not read"
)
_traefik_api = _api_address("the address of Traefik's API", "http://127.0.0.1:8080", "not read")


def _edge_addr(value: str) -> str:
    """Empty, or HOST:PORT of the edge (Traefik's TLS entrypoint) as the cluster reaches it."""
    return _host_port(value) if value else value


def _queue_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for name in value:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                f"{_env('queues')} has {name!r}: queue names use letters, digits, '-' and '_'"
            )
    if not value:
        raise ValueError(f"{_env('queues')} is empty: name at least one queue, e.g. default")
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """CIDR networks, each written canonically (10.0.0.0/8, fd00::/8)."""
    networks = []
    for text in value:
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(
                f"{_env('notify_allow_networks')} has {text!r}: write CIDR networks, "
                "e.g. 10.0.0.0/8,fd00::/8"
            ) from None
    return tuple(networks)


def _registry(value: str) -> str:
    """A registry address HOST[:PORT], or empty (no builds)."""
    if value:
        try:
            validate_registry(value)
        except FieldError:
            raise ValueError(
                "is not a registry address: use HOST[:PORT] without scheme or path, "
                "e.g. registry.internal:5000"
            ) from None
    return value


def _metrics_token(value: str) -> str:
    """Empty, or a bearer token of 16 to 256 URL-safe characters."""
    if value and not METRICS_TOKEN_RE.fullmatch(value):
        raise ValueError(
            # the value is a secret: the message names the variable, never what it holds
            f"{_env('metrics_token')} is not a usable token: use 16 to 256 letters, digits, "
            "'-', '_' or '.', "
            "e.g. the output of `openssl rand -hex 32`"
        )
    return value


def _image(value: str) -> str:
    """A Docker image reference."""
    try:
        validate_image(value)
    except FieldError:
        raise ValueError(
            "is not an image reference: use registry/path:tag or registry/path@sha256:..., "
            "e.g. quay.io/buildah/stable:v1.40.1"
        ) from None
    return value


def _rate(value: str) -> str:
    """A rate such as '600 per minute' (the limits library's notation, imported only here)."""
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError("is not a rate: use e.g. '600 per minute' or '10/second'") from None
    return value


# Setting types: text from the environment is converted first, then checked strictly.
Whole = Annotated[int, Strict(), BeforeValidator(_to_int)]
Flag = Annotated[bool, Strict(), BeforeValidator(_to_bool)]
Names = Annotated[tuple[str, ...], BeforeValidator(_split)]
Lowered = BeforeValidator(_lower)
Address = Annotated[str, AfterValidator(lambda url: url.rstrip("/"))]


def _setting(
    default: Any, text: str, *, env: str = "", secret: bool = False, hint: str = "", **rules: Any
) -> Any:
    """One setting's field, with help `text`: read from variable `env` (default: HELIOS_ and the
    field's name in capitals), masked (and kept out of repr) when `secret`; `hint` replaces the
    type's advice when a value is refused; `rules` are pydantic constraints."""
    extra = {"secret": secret} | ({"env": env} if env else {}) | ({"hint": hint} if hint else {})
    return Field(default, description=text, repr=not secret, json_schema_extra=extra, **rules)


ENV_PREFIX = "HELIOS_"  # a setting's variable, unless it names its own (NOMAD_ADDR …)


class Settings(BaseModel):
    """The effective configuration of one Helios process (immutable, hashable).

    A plain pydantic model: :meth:`from_env` reads the variables itself, so no settings
    framework is loaded into every process (pydantic-settings cost each one 16 MB).
    """

    # validate_default: data_dir and stream_max are computed by their validators.
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, validate_default=True
    )

    data_dir: Annotated[Path, BeforeValidator(_directory)] = _setting(
        "./var",
        "Directory for the SQLite database, generated keys and the local Redis socket.",
    )
    database_url: str = _setting(
        "",
        "Database URL. Empty: SQLite at <data dir>/helios.db. "
        "PostgreSQL: postgresql://user:pass@host:5432/helios.",
        secret=True,
    )
    redis_url: str = _setting(
        "",
        "Redis URL for the queue and events. Empty: `helios up` starts its own Redis server; "
        "`helios panel` and `helios worker` use redis://127.0.0.1:6379/0.",
        secret=True,
    )
    secret_key: str = _setting(
        "",
        "Key that signs session cookies. Empty: generated once into <data dir>/session.key.",
        secret=True,
    )
    metrics_token: Annotated[str, AfterValidator(_metrics_token)] = _setting(
        "",
        "Bearer token that /metrics (Prometheus) asks for. Empty: /metrics answers only "
        "requests from a loopback address, and 404 to others.",
        secret=True,
    )
    encryption_key: str = _setting(
        "",
        "Fernet key that encrypts secrets at rest. Empty: generated once into "
        "<data dir>/encryption.key (mode 0600). Keep a copy: without it secrets cannot be read.",
        secret=True,
    )
    bind: Annotated[str, AfterValidator(_host_port)] = _setting(
        "127.0.0.1:8080", "Address the panel listens on."
    )
    external_url: Annotated[str, AfterValidator(_origin)] = _setting(
        "",
        "The panel's public address as browsers reach it, e.g. https://helios.example.com "
        "(GitHub sends people back to it after sign-in; the Host header is never used). "
        "Empty: http://<HELIOS_BIND>.",
    )
    web_workers: Annotated[Whole, Field(ge=1, le=64)] = _setting(
        2, "Gunicorn worker processes for the panel."
    )
    web_connections: Annotated[Whole, Field(ge=2, le=10_000)] = _setting(
        1000,
        "Connections one panel worker serves at once: requests, idle keep-alive connections and "
        "live streams alike (gevent workers: each is a greenlet, not a thread); more wait to be "
        "accepted.",
    )
    stream_max: Annotated[Whole, Field(ge=0, le=9_999)] = _setting(
        None,  # nine tenths of web_connections
        "Live event streams one panel worker serves at once; more are refused (503): a "
        "provisioning page retries, a deployment page says to reload. Empty: nine tenths of "
        "HELIOS_WEB_CONNECTIONS (900 by default), so ordinary requests always find a "
        "connection. Must be below HELIOS_WEB_CONNECTIONS.",
    )
    stream_lifetime: Annotated[Whole, Field(ge=1, le=3600)] = _setting(
        60,
        "Seconds one live event stream stays open; the browser then reconnects and resumes "
        "where it stopped.",
    )
    page_cache: Annotated[Whole, Field(ge=0, le=100_000)] = _setting(
        128,
        "Rendered dashboard pages one panel worker keeps, each reused until anything it shows "
        "changes (the database counts changes) or the minute ends; 0 renders every request.",
    )
    graceful_timeout: Annotated[Whole, Field(ge=1, le=3600)] = _setting(
        30, "Seconds the panel waits for requests in flight when asked to stop."
    )
    log_format: Annotated[Literal["text", "json"], Lowered] = _setting(
        "text", "Log format: text for people, json for log shippers."
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Lowered] = _setting(
        "info", "Log level."
    )
    queues: Annotated[Names, AfterValidator(_queue_names)] = _setting(
        ("deploys", "default"),
        "Comma-separated RQ queues the worker listens on, highest priority first.",
    )
    base_domain: str = _setting(
        "apps.localhost", "Every app is served at <app>.<base domain> besides its custom domains."
    )
    trusted_proxies: Annotated[Whole, Field(ge=0, le=5)] = _setting(
        0,
        "How many reverse proxies in front of the panel set X-Forwarded-For/-Proto; 0 trusts none.",
    )
    login_free_failures: Annotated[Whole, Field(ge=1, le=1_000_000)] = _setting(
        5,
        "Failed sign-ins one address (or one browser that signed in before) may make for one "
        "account before each further failure makes it wait 2, 4, 8 ... seconds.",
    )
    login_backoff_max: Annotated[Whole, Field(ge=1, le=86400)] = _setting(
        900, "Longest wait in seconds after failed sign-ins for one account from one address."
    )
    login_address_failures: Annotated[Whole, Field(ge=1, le=1_000_000)] = _setting(
        50,
        "Failed sign-ins one address may make over all accounts per HELIOS_LOGIN_WINDOW; then "
        "it waits for the window to end (browsers that signed in to the account before do not).",
    )
    login_account_failures: Annotated[Whole, Field(ge=1, le=1_000_000)] = _setting(
        100,
        "Failed sign-ins for one account per HELIOS_LOGIN_WINDOW from browsers that never "
        "signed in to it, whatever their address; then such browsers wait for the window to end.",
    )
    login_window: Annotated[Whole, Field(ge=10, le=86400)] = _setting(
        900, "Seconds over which failed sign-ins per address and per account are counted."
    )
    login_device_days: Annotated[Whole, Field(ge=1, le=3650)] = _setting(
        90,
        "Days a browser stays known to an account after signing in to it (exempt from the "
        "address and account limits).",
    )
    github_client_id: str = _setting(
        "", "GitHub OAuth app client id. Empty: GitHub sign-in is off."
    )
    github_client_secret: str = _setting("", "GitHub OAuth app client secret.", secret=True)
    github_orgs: Annotated[Names, Lowered] = _setting(
        (), "Comma-separated GitHub organisations whose members may sign in. Empty: any account."
    )
    github_url: Address = _setting(
        "https://github.com", "GitHub's web address (GitHub Enterprise: your server)."
    )
    github_api_url: Address = _setting(
        "https://api.github.com", "GitHub's API address (GitHub Enterprise: https://HOST/api/v3)."
    )
    github_repo_scopes: Flag = _setting(
        True,
        "Ask GitHub at sign-in for the scopes 'repo' and 'admin:repo_hook', so people can pick "
        "their private repositories and Helios creates each app's push webhook. false: a "
        "read-only sign-in (read:user, user:email, read:org); repositories are typed in, "
        "webhooks added by hand.",
    )
    secure_cookies: Flag = _setting(
        False, "Mark cookies Secure (set true when the panel is served over TLS)."
    )
    nomad_addr: Annotated[str, AfterValidator(_nomad_address)] = _setting(
        "",
        "Nomad HTTP API address, e.g. https://nomad.internal:4646. Empty: no cluster connected.",
        env="NOMAD_ADDR",
    )
    nomad_token: str = _setting("", "Nomad ACL token Helios uses.", secret=True, env="NOMAD_TOKEN")
    nomad_namespace: str = _setting(
        "default",
        "Nomad namespace of the apps of teams that were not moved to a namespace of their own "
        "(teams created since run in a namespace named after the team).",
        env="NOMAD_NAMESPACE",
    )
    nomad_management_token: str = _setting(
        "",
        "Nomad management token used only to create team namespaces (and team tokens); empty: "
        "the one provisioning handed over, else NOMAD_TOKEN, which then needs a management "
        "token's rights.",
        secret=True,
    )
    nomad_region: str = _setting("", "Nomad region (empty: the server's own).", env="NOMAD_REGION")
    nomad_cacert: str = _setting(
        "",
        "CA certificate file that signed Nomad's TLS certificate (empty: system CAs).",
        env="NOMAD_CACERT",
    )
    nomad_client_cert: str = _setting(
        "", "Client certificate file for Nomad's mutual TLS.", env="NOMAD_CLIENT_CERT"
    )
    nomad_client_key: str = _setting("", "Key file of NOMAD_CLIENT_CERT.", env="NOMAD_CLIENT_KEY")
    nomad_skip_verify: Flag = _setting(
        False,
        "Do not verify Nomad's TLS certificate (never in production).",
        env="NOMAD_SKIP_VERIFY",
    )
    consul_addr: Annotated[str, AfterValidator(_consul_address)] = _setting(
        "",
        "Consul HTTP API address, e.g. https://consul.internal:8501: each sampling pass reads "
        "every instance's check states there (one request). Empty: checks are not read and "
        "health comes from Nomad alone.",
    )
    consul_token: str = _setting(
        "",
        "Consul ACL token for reading check states (its policy needs service:read and "
        "node:read). Empty: Consul's anonymous token.",
        secret=True,
    )
    consul_cacert: str = _setting(
        "",
        "CA certificate file that signed Consul's TLS certificate (empty: system CAs); the "
        "certificate is always verified.",
    )
    nomad_datacenters: Names = _setting(
        ("dc1",), "Comma-separated Nomad datacenters apps may run in."
    )
    tls_certresolver: str = _setting(
        "le", "Traefik certificate resolver for app domains (empty: Traefik's default certificate)."
    )
    traefik_entrypoint: str = _setting("websecure", "Traefik entrypoint app routers listen on.")
    deploy_auto_promote: Flag = _setting(
        True, "Promote canaries automatically once all are healthy."
    )
    deploy_auto_revert: Flag = _setting(
        True, "Let Nomad roll back to the last stable version when a deployment fails."
    )
    deploy_min_healthy_time: Annotated[Whole, Field(ge=0, le=3600)] = _setting(
        10, "Seconds an instance must pass its checks to count as healthy."
    )
    deploy_healthy_deadline: Annotated[Whole, Field(ge=1, le=86400)] = _setting(
        300, "Seconds an instance has to become healthy."
    )
    deploy_progress_deadline: Annotated[Whole, Field(ge=2, le=86400)] = _setting(
        600,
        "Seconds a deployment may go without a newly healthy instance before it fails "
        "(must exceed the healthy deadline).",
    )
    deploy_timeout: Annotated[Whole, Field(ge=10, le=86400)] = _setting(
        1800,
        "Seconds a deployment may take from its start to an outcome; the follower fails one "
        "still running after that.",
    )
    deploy_start_timeout: Annotated[Whole, Field(ge=10, le=86400)] = _setting(
        900,
        "Seconds a deployment may wait for a worker to start it; one still queued that long "
        "after it was requested fails instead of deploying long after it was asked for.",
    )
    deploy_retry_delays: Annotated[
        tuple[Annotated[Whole, Field(ge=0, le=3600)], ...], BeforeValidator(_split)
    ] = _setting(
        (5, 10, 20, 40, 60),
        "Seconds to wait before each new attempt while Nomad is unreachable or answers 5xx "
        "(comma-separated); after the last one the deployment fails.",
        min_length=1,
        max_length=10,
        hint="is not a list of seconds: use 1 to 10 whole numbers, e.g. 5,15,30",
    )
    deploy_lock_ttl: Annotated[Whole, Field(ge=2, le=60)] = _setting(
        5,
        "Seconds the per-app deploy lock outlives a worker that died holding it (a living "
        "holder renews it every third of that).",
    )
    follow_stall_timeout: Annotated[Whole, Field(ge=1, le=600)] = _setting(
        45,
        "Seconds the follower waits for anything on Nomad's event stream (Nomad sends a "
        "heartbeat every 30) before it reconnects.",
    )
    image_deploy_role: Annotated[Literal["owner", "admin", "deployer"], Lowered] = _setting(
        "admin",
        "Role needed to deploy an image other than the app's configured one (that image gets "
        "every secret of the app): owner, admin or deployer.",
    )
    api_rate_limit: Annotated[str, AfterValidator(_rate)] = _setting(
        "600 per minute",
        "Requests one API token (or one address without a token) may make; more get 429 with "
        "Retry-After.",
    )
    playbooks_dir: str = _setting(
        "",
        "Folder holding site.yml and roles/. Empty: the playbooks installed with Helios "
        "(panel/playbooks/ in the package), or playbooks/ in a source checkout.",
    )
    provision_vars: str = _setting(
        "",
        "YAML file of Ansible variables for every plan and apply: `vars:` for all hosts, "
        "`hosts: {NAME: {...}}` for one. Values are passed as data, never as templates.",
    )
    provision_timeout: Annotated[Whole, Field(ge=60, le=86400)] = _setting(
        3600, "Seconds one plan or apply may run before it is stopped."
    )
    registry: Annotated[str, AfterValidator(_registry)] = _setting(
        "",
        "Registry (HOST[:PORT]) that builds push app images to and keep their layer cache "
        "in, e.g. registry.internal:5000. Empty: no builds.",
    )
    registry_insecure: Flag = _setting(
        False,
        "Reach HELIOS_REGISTRY over plain HTTP without verifying TLS (only for a registry on "
        "loopback or a private network you trust).",
    )
    registry_username: str = _setting(
        "", "User name builds push to HELIOS_REGISTRY with (empty: no login)."
    )
    registry_password: str = _setting(
        "",
        "Password builds push to HELIOS_REGISTRY with; it reaches each build through a Nomad "
        "Variable only that build's task can read, never the job.",
        secret=True,
    )
    registry_ca_file: str = _setting(
        "",
        "PEM file of the CA that signed HELIOS_REGISTRY's certificate, when the system's roots "
        "do not (provisioning's cluster CA); builds trust it for the registry only.",
    )
    build_node_pool: str = _setting(
        "build",
        "Nomad node pool builds run in; keep app nodes out of it, since builds run the "
        "apps' Dockerfiles.",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        hint="is not a node pool name: use letters, digits, '_', '.' or '-', e.g. build",
    )
    build_cpu: Annotated[Whole, Field(ge=100, le=64_000)] = _setting(
        1000, "CPU in MHz reserved for each build."
    )
    build_memory: Annotated[Whole, Field(ge=256, le=262_144)] = _setting(
        2048, "Memory in MB reserved for each build."
    )
    build_disk: Annotated[Whole, Field(ge=300, le=1_048_576)] = _setting(
        4096,
        "Disk in MB each build may use for the source and the image layers (Nomad's "
        "ephemeral disk).",
    )
    build_timeout: Annotated[Whole, Field(ge=60, le=86400)] = _setting(
        1800,
        "Seconds one build may run before it is stopped and fails (fetching the source has "
        "its own limit, at most 600).",
    )
    log_max_bytes: Annotated[Whole, Field(ge=16_384, le=1_073_741_824)] = _setting(
        5_000_000,
        "Bytes of output kept per build and per deployment (scrubbed of secrets): a build's "
        'log then says "log truncated at N bytes" and stores nothing more; a deployment keeps '
        "its newest output.",
    )
    sample_interval: Annotated[Whole, Field(ge=0, le=3600)] = _setting(
        10,
        "Seconds between two readings of every app's instances, health and CPU and memory use "
        "in Nomad (one worker does it); 0 turns sampling off.",
    )
    log_retention_days: Annotated[Whole, Field(ge=1, le=3650)] = _setting(
        14,
        "Days build and app logs are kept; the worker removes older lines once an hour.",
    )
    deleted_app_retention_days: Annotated[Whole, Field(ge=0, le=3650)] = _setting(
        30,
        "Days a deleted app's deployments, releases, builds and logs stay readable (its audit "
        "events stay with the team's); the worker then removes them, once an hour.",
    )
    notify_allow_networks: Annotated[Names, AfterValidator(_networks)] = _setting(
        (),
        "Comma-separated CIDR networks outgoing notifications may reach although they are "
        "loopback, private, link-local or otherwise internal (e.g. 10.20.0.0/16 for a chat "
        "server on your network). Empty: only public addresses.",
    )
    notify_allow_http: Flag = _setting(
        False,
        "Let notifiers use plain http:// URLs (their deliveries can then be read and changed "
        "on the way). false: https:// only.",
    )
    notify_retry_delays: Annotated[
        tuple[Annotated[Whole, Field(ge=0, le=86400)], ...], BeforeValidator(_split)
    ] = _setting(
        (10, 60, 300, 1800),
        "Seconds to wait before each new attempt of a notification whose receiver was "
        "unreachable or answered 5xx or 429 (comma-separated); after the last one it fails.",
        min_length=1,
        max_length=10,
        hint="is not a list of seconds: use 1 to 10 whole numbers, e.g. 10,60,300,1800",
    )
    drift_interval: Annotated[Whole, Field(ge=0, le=86400)] = _setting(
        300,
        "Seconds between drift checks (each app's job in Nomad against its live release); "
        "0 turns them off.",
    )
    domain_check_interval: Annotated[Whole, Field(ge=0, le=86400)] = _setting(
        300,
        "Seconds between checks of every app's addresses (its default one and each custom "
        "domain): DNS, routing in Traefik and the TLS certificate served (one worker does it); "
        "0 turns them off.",
    )
    backup_dir: Annotated[str, AfterValidator(_backup_dir)] = _setting(
        "",
        "Folder where the worker writes a scheduled backup (`helios backup`) every "
        "HELIOS_BACKUP_INTERVAL seconds, named helios-backup-<UTC time>.tar (0600). Empty: no "
        "scheduled backups. The archives hold the key to every secret: see Backups.",
    )
    backup_interval: Annotated[Whole, Field(ge=60, le=30 * 86400)] = _setting(
        86400, "Seconds between scheduled backups (one worker writes each)."
    )
    backup_keep: Annotated[Whole, Field(ge=1, le=10_000)] = _setting(
        7,
        "How many scheduled backups stay in HELIOS_BACKUP_DIR; older ones are removed after "
        "each new one is written (other files there are never touched).",
    )
    edge_addr: Annotated[str, AfterValidator(_edge_addr)] = _setting(
        "",
        "HOST:PORT of Traefik's TLS entrypoint that domain checks connect to (with each "
        "domain as SNI), and whose addresses the domains' DNS should point at, e.g. "
        "edge.internal:443. Empty: each domain itself on port 443; DNS is not compared.",
    )
    edge_cacert: str = _setting(
        "",
        "PEM file of CAs trusted besides the system's when domain checks verify the "
        "certificates the edge serves (e.g. a staging ACME CA). Empty: the system's CAs only.",
    )
    traefik_api: Annotated[str, AfterValidator(_traefik_api)] = _setting(
        "",
        "Address of Traefik's API (its `api` enabled), e.g. http://127.0.0.1:8080, that domain "
        "checks read routers from. Empty: routing is shown as unknown.",
    )
    builder_image: Annotated[str, AfterValidator(_image)] = _setting(
        BUILDER_IMAGE,
        "Image that runs rootless buildah for builds (a pinned tag or @sha256 digest).",
    )
    buildpacks_builder: Annotated[str, AfterValidator(_image)] = _setting(
        BUILDPACKS_BUILDER,
        "Trusted Cloud Native Buildpacks builder image for repositories without a Dockerfile "
        "(a pinned tag or @sha256 digest).",
    )
    build_git_image: Annotated[str, AfterValidator(_image)] = _setting(
        GIT_IMAGE,
        "Image with git and a POSIX shell that fetches the commit to build (a pinned tag or "
        "@sha256 digest).",
    )

    @field_validator("stream_max", mode="before")
    @classmethod
    def _most_connections(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            # a bad web_connections is reported itself
            return info.data.get("web_connections", 0) * 9 // 10
        return value

    @field_validator("stream_max")
    @classmethod
    def _below_connections(cls, value: int, info: ValidationInfo) -> int:
        connections = info.data.get("web_connections")
        if connections is not None and value >= connections:
            raise ValueError(
                f"{_env('stream_max')}={value} leaves no connection for other requests: "
                f"use a number below {_env('web_connections')}={connections}"
            )
        return value

    @field_validator("deploy_progress_deadline")
    @classmethod
    def _after_healthy_deadline(cls, value: int, info: ValidationInfo) -> int:
        healthy = info.data.get("deploy_healthy_deadline")
        if healthy is not None and value <= healthy:
            raise ValueError(
                f"{_env('deploy_progress_deadline')} must exceed "
                f"{_env('deploy_healthy_deadline')}: Nomad refuses jobs otherwise"
            )
        return value

    def __init__(self, **values: Any) -> None:
        """Settings from values by field name (text as in the environment, or typed), the rest
        defaulted. Every refused value is one line of the ConfigError raised."""
        unknown = sorted(set(values) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"Settings has no setting {', '.join(unknown)}")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            lines = (_explain(error, values) for error in exc.errors())
            raise ConfigError("\n".join(dict.fromkeys(lines))) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from the environment (HELIOS_* and NOMAD_*), then apply overrides."""
        given = _from_environment(os.environ if environ is None else environ)
        return cls(**(given | overrides))

    @property
    def effective_database_url(self) -> str:
        """The database URL actually used (SQLite under the data dir when unset)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'helios.db'}"

    @property
    def effective_external_url(self) -> str:
        """The panel's public address, without a trailing slash (http://<bind> when unset)."""
        return self.external_url or f"http://{self.bind}"

    @property
    def effective_redis_url(self) -> str:
        """The Redis URL actually used when none was configured."""
        return self.redis_url or "redis://127.0.0.1:6379/0"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed, checked like any others."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**(current | changes))

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help) for every setting."""
        rows = []
        for doc in SETTINGS_DOC:
            field = doc.field
            value = self.effective_database_url if field == "database_url" else getattr(self, field)
            shown = _as_text(value)
            if doc.secret and shown:
                shown = mask_url(shown) if "://" in shown else "********"
            rows.append((doc.env, shown, doc.help))
        return rows


class SettingDoc(NamedTuple):
    """One setting as documented (default as written in the environment)."""

    env: str
    field: str
    default: str
    help: str
    secret: bool


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _env(name: str) -> str:
    """The environment variable of the field `name`."""
    default = f"{ENV_PREFIX}{name.upper()}"
    return str(_extra(Settings.model_fields[name]).get("env", default))


def _as_text(value: Any) -> str:
    """A value written as in the environment: lists comma-separated, None empty."""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)


SETTINGS_DOC: tuple[SettingDoc, ...] = tuple(
    SettingDoc(_env(name), name, _as_text(field.default), field.description or "", secret)
    for name, field in Settings.model_fields.items()
    for secret in [bool(_extra(field)["secret"])]
)


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Field name to text for every setting whose variable is set (never decoded as JSON)."""
    found = {name: environ.get(_env(name)) for name in Settings.model_fields}
    return {name: value for name, value in found.items() if value is not None}


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    """(ge, le) of a field, or of its items for a tuple field; None where unbounded."""
    rules = list(field.metadata)
    for arg in get_args(field.annotation):
        rules.extend(getattr(arg, "__metadata__", ()))
    rules += [rule for item in rules if isinstance(item, FieldInfo) for rule in item.metadata]
    low = next((rule.ge for rule in rules if getattr(rule, "ge", None) is not None), None)
    high = next((rule.le for rule in rules if getattr(rule, "le", None) is not None), None)
    return low, high


def _explain(error: ErrorDetails, given: Mapping[str, Any]) -> str:
    """One line of a ConfigError: the variable, the value given, and what to write instead.

    A validator's ValueError either names the variable itself or says what follows
    "VARIABLE='value'"; pydantic's own errors are put in the same words by their type."""
    name = str(error["loc"][0])
    field = Settings.model_fields[name]
    env, value, kind = _env(name), given.get(name, error["input"]), error["type"]
    low, high = _bounds(field)
    if kind in {"greater_than_equal", "less_than_equal"}:
        number = _to_int(error["input"])
        return f"{env}={number} is out of range: use a number from {low} to {high}"
    if kind == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        return reason if reason.startswith(env) else f"{env}={value!r} {reason}"
    choices = ", ".join(map(str, get_args(field.annotation)))
    hint = _extra(field).get("hint") or {
        "int": f"is not a whole number: use e.g. {low if low is not None else 1}",
        "bool": "is not a boolean: use true or false",
        "literal": f"is not allowed: use one of {choices}",
    }.get(kind.split("_")[0], f"is not valid: {error['msg']}")
    return f"{env}={value!r} {hint}"


def mask_url(url: str) -> str:
    """Hide the password in a URL such as postgresql://user:pass@host/db."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in credentials else url
