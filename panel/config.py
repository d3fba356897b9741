"""Settings: every HELIOS_* environment variable, read in one place, typed and checked."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["SETTINGS_DOC", "ConfigError", "Settings"]


class ConfigError(ValueError):
    """A setting has a value Helios cannot use; the message says which and how to fix it."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def _parse_int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number: use e.g. {low}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range: use a number from {low} to {high}")
    return value


def _parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r} is not allowed: use one of {', '.join(choices)}")
    return value


def _parse_bind(name: str, raw: str) -> str:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} is not HOST:PORT: use e.g. 127.0.0.1:8080")
    return raw.strip()


def _is_origin(value: str) -> bool:
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


def _parse_external_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not _is_origin(value):
        raise ConfigError(
            f"{name}={raw!r} is not the panel's public address: use scheme and host, with an "
            "optional port and nothing after it, e.g. https://helios.example.com"
        )
    return value


# name, attribute, default, help, parser, secret
_Spec = tuple[str, str, str, str, Callable[[str, str], Any], bool]


def _text(_name: str, raw: str) -> str:
    return raw.strip()


def _int(low: int, high: int) -> Callable[[str, str], int]:
    return lambda name, raw: _parse_int(name, raw, low, high)


def _optional_int(low: int, high: int) -> Callable[[str, str], int | None]:
    return lambda name, raw: _parse_int(name, raw, low, high) if raw.strip() else None


def _choice(*choices: str) -> Callable[[str, str], str]:
    return lambda name, raw: _parse_choice(name, raw, choices)


def _delays(name: str, raw: str) -> tuple[int, ...]:
    """Comma-separated whole seconds, e.g. '5,15,30' (1 to 10 of them, each 0 to 3600)."""
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not 1 <= len(parts) <= 10 or not all(part.isdigit() for part in parts):
        raise ConfigError(
            f"{name}={raw!r} is not a list of seconds: use 1 to 10 whole numbers, e.g. 5,15,30"
        )
    return tuple(_parse_int(name, part, 0, 3600) for part in parts)


def _rate(name: str, raw: str) -> str:
    """A rate such as '600 per minute' (the limits library's notation)."""
    from limits import parse_many

    try:
        parse_many(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a rate: use e.g. '600 per minute' or '10/second'"
        ) from None
    return raw.strip()


SETTINGS_DOC: tuple[_Spec, ...] = (
    (
        "HELIOS_DATA_DIR",
        "data_dir",
        "./var",
        "Directory for the SQLite database, generated keys and the local Redis socket.",
        _text,
        False,
    ),
    (
        "HELIOS_DATABASE_URL",
        "database_url",
        "",
        "Database URL. Empty: SQLite at <data dir>/helios.db. "
        "PostgreSQL: postgresql://user:pass@host:5432/helios.",
        _text,
        True,
    ),
    (
        "HELIOS_REDIS_URL",
        "redis_url",
        "",
        "Redis URL for the queue and events. Empty: `helios up` starts its own Redis server; "
        "`helios panel` and `helios worker` use redis://127.0.0.1:6379/0.",
        _text,
        True,
    ),
    (
        "HELIOS_SECRET_KEY",
        "secret_key",
        "",
        "Key that signs session cookies. Empty: generated once into <data dir>/session.key.",
        _text,
        True,
    ),
    (
        "HELIOS_ENCRYPTION_KEY",
        "encryption_key",
        "",
        "Fernet key that encrypts secrets at rest. Empty: generated once into "
        "<data dir>/encryption.key (mode 0600). Keep a copy: without it secrets cannot be read.",
        _text,
        True,
    ),
    ("HELIOS_BIND", "bind", "127.0.0.1:8080", "Address the panel listens on.", _parse_bind, False),
    (
        "HELIOS_EXTERNAL_URL",
        "external_url",
        "",
        "The panel's public address as browsers reach it, e.g. https://helios.example.com "
        "(GitHub sends people back to it after sign-in; the Host header is never used). "
        "Empty: http://<HELIOS_BIND>.",
        _parse_external_url,
        False,
    ),
    (
        "HELIOS_WEB_WORKERS",
        "web_workers",
        "2",
        "Gunicorn worker processes for the panel.",
        _int(1, 64),
        False,
    ),
    (
        "HELIOS_WEB_THREADS",
        "web_threads",
        "8",
        "Threads per panel worker (each live log stream holds one).",
        _int(1, 256),
        False,
    ),
    (
        "HELIOS_STREAM_MAX",
        "stream_max",
        "",
        "Live event streams one panel worker serves at once; more are refused (503) and the "
        "page retries. Empty: half of HELIOS_WEB_THREADS, so ordinary requests always have a "
        "thread. Must be below HELIOS_WEB_THREADS.",
        _optional_int(0, 255),
        False,
    ),
    (
        "HELIOS_STREAM_LIFETIME",
        "stream_lifetime",
        "60",
        "Seconds one live event stream stays open; the browser then reconnects and resumes "
        "where it stopped.",
        _int(1, 3600),
        False,
    ),
    (
        "HELIOS_GRACEFUL_TIMEOUT",
        "graceful_timeout",
        "30",
        "Seconds the panel waits for requests in flight when asked to stop.",
        _int(1, 3600),
        False,
    ),
    (
        "HELIOS_LOG_FORMAT",
        "log_format",
        "text",
        "Log format: text for people, json for log shippers.",
        _choice("text", "json"),
        False,
    ),
    (
        "HELIOS_LOG_LEVEL",
        "log_level",
        "info",
        "Log level.",
        _choice("debug", "info", "warning", "error"),
        False,
    ),
    (
        "HELIOS_QUEUES",
        "queues",
        "deploys,default",
        "Comma-separated RQ queues the worker listens on, highest priority first.",
        _text,
        False,
    ),
    (
        "HELIOS_BASE_DOMAIN",
        "base_domain",
        "apps.localhost",
        "Every app is served at <app>.<base domain> besides its custom domains.",
        _text,
        False,
    ),
    (
        "HELIOS_TRUSTED_PROXIES",
        "trusted_proxies",
        "0",
        "How many reverse proxies in front of the panel set X-Forwarded-For/-Proto; 0 trusts none.",
        _int(0, 5),
        False,
    ),
    (
        "HELIOS_LOGIN_FREE_FAILURES",
        "login_free_failures",
        "5",
        "Failed sign-ins one address (or one browser that signed in before) may make for one "
        "account before each further failure makes it wait 2, 4, 8 ... seconds.",
        _int(1, 1_000_000),
        False,
    ),
    (
        "HELIOS_LOGIN_BACKOFF_MAX",
        "login_backoff_max",
        "900",
        "Longest wait in seconds after failed sign-ins for one account from one address.",
        _int(1, 86400),
        False,
    ),
    (
        "HELIOS_LOGIN_ADDRESS_FAILURES",
        "login_address_failures",
        "50",
        "Failed sign-ins one address may make over all accounts per HELIOS_LOGIN_WINDOW; then "
        "it waits for the window to end (browsers that signed in to the account before do not).",
        _int(1, 1_000_000),
        False,
    ),
    (
        "HELIOS_LOGIN_ACCOUNT_FAILURES",
        "login_account_failures",
        "100",
        "Failed sign-ins for one account per HELIOS_LOGIN_WINDOW from browsers that never "
        "signed in to it, whatever their address; then such browsers wait for the window to end.",
        _int(1, 1_000_000),
        False,
    ),
    (
        "HELIOS_LOGIN_WINDOW",
        "login_window",
        "900",
        "Seconds over which failed sign-ins per address and per account are counted.",
        _int(10, 86400),
        False,
    ),
    (
        "HELIOS_LOGIN_DEVICE_DAYS",
        "login_device_days",
        "90",
        "Days a browser stays known to an account after signing in to it (exempt from the "
        "address and account limits).",
        _int(1, 3650),
        False,
    ),
    (
        "HELIOS_GITHUB_CLIENT_ID",
        "github_client_id",
        "",
        "GitHub OAuth app client id. Empty: GitHub sign-in is off.",
        _text,
        False,
    ),
    (
        "HELIOS_GITHUB_CLIENT_SECRET",
        "github_client_secret",
        "",
        "GitHub OAuth app client secret.",
        _text,
        True,
    ),
    (
        "HELIOS_GITHUB_ORGS",
        "github_orgs",
        "",
        "Comma-separated GitHub organisations whose members may sign in. Empty: any account.",
        _text,
        False,
    ),
    (
        "HELIOS_GITHUB_URL",
        "github_url",
        "https://github.com",
        "GitHub's web address (GitHub Enterprise: your server).",
        _text,
        False,
    ),
    (
        "HELIOS_GITHUB_API_URL",
        "github_api_url",
        "https://api.github.com",
        "GitHub's API address (GitHub Enterprise: https://HOST/api/v3).",
        _text,
        False,
    ),
    (
        "HELIOS_SECURE_COOKIES",
        "secure_cookies",
        "false",
        "Mark cookies Secure (set true when the panel is served over TLS).",
        _parse_bool,
        False,
    ),
    (
        "NOMAD_ADDR",
        "nomad_addr",
        "",
        "Nomad HTTP API address, e.g. https://nomad.internal:4646. Empty: no cluster connected.",
        _text,
        False,
    ),
    ("NOMAD_TOKEN", "nomad_token", "", "Nomad ACL token Helios uses.", _text, True),
    ("NOMAD_NAMESPACE", "nomad_namespace", "default", "Nomad namespace apps run in.", _text, False),
    ("NOMAD_REGION", "nomad_region", "", "Nomad region (empty: the server's own).", _text, False),
    (
        "NOMAD_CACERT",
        "nomad_cacert",
        "",
        "CA certificate file that signed Nomad's TLS certificate (empty: system CAs).",
        _text,
        False,
    ),
    (
        "NOMAD_CLIENT_CERT",
        "nomad_client_cert",
        "",
        "Client certificate file for Nomad's mutual TLS.",
        _text,
        False,
    ),
    ("NOMAD_CLIENT_KEY", "nomad_client_key", "", "Key file of NOMAD_CLIENT_CERT.", _text, False),
    (
        "NOMAD_SKIP_VERIFY",
        "nomad_skip_verify",
        "false",
        "Do not verify Nomad's TLS certificate (never in production).",
        _parse_bool,
        False,
    ),
    (
        "HELIOS_NOMAD_DATACENTERS",
        "nomad_datacenters",
        "dc1",
        "Comma-separated Nomad datacenters apps may run in.",
        _text,
        False,
    ),
    (
        "HELIOS_TLS_CERTRESOLVER",
        "tls_certresolver",
        "le",
        "Traefik certificate resolver for app domains (empty: Traefik's default certificate).",
        _text,
        False,
    ),
    (
        "HELIOS_TRAEFIK_ENTRYPOINT",
        "traefik_entrypoint",
        "websecure",
        "Traefik entrypoint app routers listen on.",
        _text,
        False,
    ),
    (
        "HELIOS_DEPLOY_AUTO_PROMOTE",
        "deploy_auto_promote",
        "true",
        "Promote canaries automatically once all are healthy.",
        _parse_bool,
        False,
    ),
    (
        "HELIOS_DEPLOY_AUTO_REVERT",
        "deploy_auto_revert",
        "true",
        "Let Nomad roll back to the last stable version when a deployment fails.",
        _parse_bool,
        False,
    ),
    (
        "HELIOS_DEPLOY_MIN_HEALTHY_TIME",
        "deploy_min_healthy_time",
        "10",
        "Seconds an instance must pass its checks to count as healthy.",
        _int(0, 3600),
        False,
    ),
    (
        "HELIOS_DEPLOY_HEALTHY_DEADLINE",
        "deploy_healthy_deadline",
        "300",
        "Seconds an instance has to become healthy.",
        _int(1, 86400),
        False,
    ),
    (
        "HELIOS_DEPLOY_PROGRESS_DEADLINE",
        "deploy_progress_deadline",
        "600",
        "Seconds a deployment may go without a newly healthy instance before it fails "
        "(must exceed the healthy deadline).",
        _int(2, 86400),
        False,
    ),
    (
        "HELIOS_DEPLOY_TIMEOUT",
        "deploy_timeout",
        "1800",
        "Seconds a deployment may take from its start to an outcome; the follower fails one "
        "still running after that.",
        _int(10, 86400),
        False,
    ),
    (
        "HELIOS_DEPLOY_RETRY_DELAYS",
        "deploy_retry_delays",
        "5,10,20,40,60",
        "Seconds to wait before each new attempt while Nomad is unreachable or answers 5xx "
        "(comma-separated); after the last one the deployment fails.",
        _delays,
        False,
    ),
    (
        "HELIOS_DEPLOY_LOCK_TTL",
        "deploy_lock_ttl",
        "5",
        "Seconds the per-app deploy lock outlives a worker that died holding it (a living "
        "holder renews it every third of that).",
        _int(2, 60),
        False,
    ),
    (
        "HELIOS_FOLLOW_STALL_TIMEOUT",
        "follow_stall_timeout",
        "45",
        "Seconds the follower waits for anything on Nomad's event stream (Nomad sends a "
        "heartbeat every 30) before it reconnects.",
        _int(1, 600),
        False,
    ),
    (
        "HELIOS_IMAGE_DEPLOY_ROLE",
        "image_deploy_role",
        "admin",
        "Role needed to deploy an image other than the app's configured one (that image gets "
        "every secret of the app): owner, admin or deployer.",
        _choice("owner", "admin", "deployer"),
        False,
    ),
    (
        "HELIOS_API_RATE_LIMIT",
        "api_rate_limit",
        "600 per minute",
        "Requests one API token (or one address without a token) may make; more get 429 with "
        "Retry-After.",
        _rate,
        False,
    ),
    (
        "HELIOS_PLAYBOOKS_DIR",
        "playbooks_dir",
        "",
        "Folder holding site.yml and roles/. Empty: the playbooks/ folder beside the panel "
        "package.",
        _text,
        False,
    ),
    (
        "HELIOS_PROVISION_VARS",
        "provision_vars",
        "",
        "YAML file of Ansible variables for every plan and apply: `vars:` for all hosts, "
        "`hosts: {NAME: {...}}` for one. Values are passed as data, never as templates.",
        _text,
        False,
    ),
    (
        "HELIOS_PROVISION_TIMEOUT",
        "provision_timeout",
        "3600",
        "Seconds one plan or apply may run before it is stopped.",
        _int(60, 86400),
        False,
    ),
)


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one Helios process."""

    data_dir: Path = Path("./var")
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = ""
    encryption_key: str = ""
    bind: str = "127.0.0.1:8080"
    external_url: str = ""
    web_workers: int = 2
    web_threads: int = 8
    stream_max: int = 4  # from_env: half of web_threads unless set
    stream_lifetime: int = 60
    graceful_timeout: int = 30
    log_format: str = "text"
    log_level: str = "info"
    queues: tuple[str, ...] = ("deploys", "default")
    base_domain: str = "apps.localhost"
    secure_cookies: bool = False
    trusted_proxies: int = 0
    login_free_failures: int = 5
    login_backoff_max: int = 900
    login_address_failures: int = 50
    login_account_failures: int = 100
    login_window: int = 900
    login_device_days: int = 90
    github_client_id: str = ""
    github_client_secret: str = ""
    github_orgs: tuple[str, ...] = ()
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    nomad_addr: str = ""
    nomad_token: str = ""
    nomad_namespace: str = "default"
    nomad_region: str = ""
    nomad_cacert: str = ""
    nomad_client_cert: str = ""
    nomad_client_key: str = ""
    nomad_skip_verify: bool = False
    nomad_datacenters: tuple[str, ...] = ("dc1",)
    tls_certresolver: str = "le"
    traefik_entrypoint: str = "websecure"
    deploy_auto_promote: bool = True
    deploy_auto_revert: bool = True
    deploy_min_healthy_time: int = 10
    deploy_healthy_deadline: int = 300
    deploy_progress_deadline: int = 600
    deploy_timeout: int = 1800
    deploy_retry_delays: tuple[int, ...] = (5, 10, 20, 40, 60)
    deploy_lock_ttl: int = 5
    follow_stall_timeout: int = 45
    image_deploy_role: str = "admin"
    api_rate_limit: str = "600 per minute"
    playbooks_dir: str = ""
    provision_vars: str = ""
    provision_timeout: int = 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from the environment (HELIOS_* and NOMAD_*), then apply overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, attr, default, _help, parse, _secret in SETTINGS_DOC:
            values[attr] = parse(name, env.get(name, default))
        values["data_dir"] = Path(values["data_dir"] or "./var").expanduser().absolute()
        values["queues"] = _parse_queues(values["queues"])
        values["github_orgs"] = tuple(
            org.strip().lower() for org in values["github_orgs"].split(",") if org.strip()
        )
        for name in ("github_url", "github_api_url"):
            values[name] = values[name].rstrip("/")
        values["nomad_datacenters"] = tuple(
            dc.strip() for dc in values["nomad_datacenters"].split(",") if dc.strip()
        )
        if values["stream_max"] is None:
            values["stream_max"] = values["web_threads"] // 2
        elif values["stream_max"] >= values["web_threads"]:
            raise ConfigError(
                f"HELIOS_STREAM_MAX={values['stream_max']} leaves no thread for other requests: "
                f"use a number below HELIOS_WEB_THREADS={values['web_threads']}"
            )
        if values["deploy_progress_deadline"] <= values["deploy_healthy_deadline"]:
            raise ConfigError(
                "HELIOS_DEPLOY_PROGRESS_DEADLINE must exceed HELIOS_DEPLOY_HEALTHY_DEADLINE: "
                "Nomad refuses jobs otherwise"
            )
        values.update(overrides)
        return cls(**values)

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
        """A copy with some values changed."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value with secrets masked, help) for every setting."""
        rows = []
        for name, attr, _default, help_text, _parse, secret in SETTINGS_DOC:
            value = getattr(self, attr)
            if attr == "database_url":
                value = self.effective_database_url
            if isinstance(value, tuple):
                value = ",".join(str(item) for item in value)
            shown = str(value)
            if secret and shown:
                shown = mask_url(shown) if "://" in shown else "********"
            rows.append((name, shown, help_text))
        return rows


def _parse_queues(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                f"HELIOS_QUEUES has {name!r}: queue names use letters, digits, '-' and '_'"
            )
    if not names:
        raise ConfigError("HELIOS_QUEUES is empty: name at least one queue, e.g. default")
    return names


def mask_url(url: str) -> str:
    """Hide the password in a URL such as postgresql://user:pass@host/db."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in credentials else url
