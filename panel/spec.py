"""Desired state as frozen dataclasses (pure: no I/O, no clock, no database).

An :class:`AppSpec` validates and normalises every field when it is created, so a spec that
exists only holds allowed values; the renderers rely on that. Secret *values* are never part of
a spec: only their names, so a spec can be logged, diffed and rendered safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from panel.validation import (
    ValidationError,
    validate_command,
    validate_count,
    validate_cpu_mhz,
    validate_custom_domain,
    validate_datacenter,
    validate_domain,
    validate_duration_s,
    validate_env_key,
    validate_env_value,
    validate_git_sha,
    validate_health_path,
    validate_image,
    validate_memory_max_mb,
    validate_memory_mb,
    validate_port,
    validate_release,
    validate_slug,
)

__all__ = ["WEB", "AppSpec", "ProcessSpec", "build_app_spec"]

WEB = "web"  # the process that gets the port, the service, the check and the domains
MAX_DOMAINS = 100  # hostnames per app: Let's Encrypt's limit of names on one certificate


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """One process type of an app (a Nomad group with one task); empty command = image default."""

    name: str
    command: tuple[str, ...] = ()
    count: int = 1

    def __post_init__(self) -> None:
        """Validate and normalise the fields (a command string is split into argv)."""
        object.__setattr__(self, "name", validate_slug(self.name, "process"))
        object.__setattr__(self, "command", validate_command(self.command, "command"))
        object.__setattr__(self, "count", validate_count(self.count, "count"))


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    """Everything needed to render one release of one app; validated on creation."""

    slug: str
    team: str
    image: str
    release: int
    base_domain: str
    git_sha: str = ""
    deployment: int = 0  # the Helios deployment this job is rendered for; 0 = none (previews)
    port: int = 8080
    health_path: str = "/healthz"
    cpu_mhz: int = 250
    memory_mb: int = 256
    memory_max_mb: int = 0  # 0 = no hard cap above the reservation
    processes: tuple[ProcessSpec, ...] = (ProcessSpec(name=WEB),)
    env: tuple[tuple[str, str], ...] = ()  # non-secret (key, value), sorted by key
    secret_keys: tuple[str, ...] = ()  # names only; values live in Nomad Variables
    domains: tuple[str, ...] = ()  # custom domains, lowercased, sorted
    datacenters: tuple[str, ...] = ("dc1",)
    canary: bool = True
    auto_promote: bool = True
    auto_revert: bool = True
    min_healthy_time_s: int = 10
    healthy_deadline_s: int = 300
    progress_deadline_s: int = 600
    certresolver: str = "le"  # "" = no ACME resolver (Traefik's default certificate)
    entrypoint: str = "websecure"

    def __post_init__(self) -> None:
        """Validate and normalise every field, in dependency order."""
        for step in (_identity, _resources, _processes, _environment, _routing, _policy):
            for name, value in step(self).items():
                object.__setattr__(self, name, value)

    @classmethod
    def build(cls, **fields: Any) -> AppSpec:
        """Build a validated spec (same as build_app_spec)."""
        return cls(**fields)

    @property
    def default_domain(self) -> str:
        """The platform hostname of the app: <slug>.<base_domain>."""
        return f"{self.slug}.{self.base_domain}"

    @property
    def all_domains(self) -> tuple[str, ...]:
        """Default domain first, then the custom domains (sorted, without duplicates)."""
        default = self.default_domain
        return (default, *(domain for domain in self.domains if domain != default))

    @property
    def web(self) -> ProcessSpec:
        """The web process (always present and first)."""
        return self.processes[0]


def build_app_spec(**fields: Any) -> AppSpec:
    """Build an AppSpec from raw values (mappings and lists are accepted and normalised)."""
    return AppSpec(**fields)


# ---------------------------------------------------------------------------------------------
# Field groups: each returns the normalised values of its fields
# ---------------------------------------------------------------------------------------------


def _identity(spec: AppSpec) -> dict[str, Any]:
    """Names, image and release."""
    return {
        "slug": validate_slug(spec.slug, "slug"),
        "team": validate_slug(spec.team, "team"),
        "image": validate_image(spec.image),
        "release": validate_release(spec.release),
        "git_sha": validate_git_sha(spec.git_sha),
        "deployment": 0
        if spec.deployment == 0
        else validate_release(spec.deployment, "deployment"),
    }


def _resources(spec: AppSpec) -> dict[str, Any]:
    """Port, check path, CPU and memory."""
    memory_mb = validate_memory_mb(spec.memory_mb)
    return {
        "port": validate_port(spec.port),
        "health_path": validate_health_path(spec.health_path),
        "cpu_mhz": validate_cpu_mhz(spec.cpu_mhz),
        "memory_mb": memory_mb,
        "memory_max_mb": validate_memory_max_mb(spec.memory_max_mb, memory_mb),
    }


def _processes(spec: AppSpec) -> dict[str, Any]:
    """Processes as ProcessSpecs, web first, the rest by name, names unique."""
    items = _as_list(spec.processes, "processes")
    processes = [item if isinstance(item, ProcessSpec) else _process(item) for item in items]
    names = [process.name for process in processes]
    if len(set(names)) != len(names):
        raise ValidationError("processes", "processes have duplicate names: name each once")
    if WEB not in names:
        raise ValidationError("processes", f"processes lack {WEB!r}: every app needs a web process")
    processes.sort(key=lambda process: (process.name != WEB, process.name))
    return {"processes": tuple(processes)}


def _process(item: object) -> ProcessSpec:
    """Build a ProcessSpec from a mapping such as {"name": "worker", "count": 2}."""
    if not isinstance(item, Mapping) or not set(item) <= {"name", "command", "count"}:
        raise ValidationError(
            "processes", "each process must be a ProcessSpec or {'name', 'command', 'count'}"
        )
    return ProcessSpec(**item)


def _environment(spec: AppSpec) -> dict[str, Any]:
    """Plain env sorted by key; secret names sorted; no name in both."""
    pairs = spec.env.items() if isinstance(spec.env, Mapping) else _as_list(spec.env, "env")
    env: dict[str, str] = {}
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValidationError("env", "env must be a mapping or (key, value) pairs")
        key = validate_env_key(pair[0])
        if key in env:
            raise ValidationError("env key", f"env key {key!r} is given twice: keep one value")
        env[key] = validate_env_value(pair[1])
    secret_keys = sorted({validate_env_key(k) for k in _as_list(spec.secret_keys, "secret_keys")})
    for key in secret_keys:
        if key in env:
            raise ValidationError(
                "env key", f"env key {key!r} is both plain and secret: remove one of them"
            )
    return {"env": tuple(sorted(env.items())), "secret_keys": tuple(secret_keys)}


def _routing(spec: AppSpec) -> dict[str, Any]:
    """Base domain, custom domains, datacenters and Traefik names."""
    base = validate_domain(spec.base_domain, "base_domain")
    resolver = spec.certresolver
    if resolver != "":
        resolver = validate_slug(resolver, "certresolver")
    datacenters = [validate_datacenter(dc) for dc in _as_list(spec.datacenters, "datacenters")]
    if not datacenters:
        raise ValidationError("datacenters", "datacenters is empty: name at least one, e.g. dc1")
    return {
        "base_domain": base,
        "domains": _custom_domains(spec.domains, f"{spec.slug}.{base}", base),
        "datacenters": tuple(dict.fromkeys(datacenters)),
        "certresolver": resolver,
        "entrypoint": validate_slug(spec.entrypoint, "entrypoint"),
    }


def _custom_domains(raw: object, default: str, base: str) -> tuple[str, ...]:
    """Custom domains lowercased and sorted; none may take a name under the platform domain."""
    domains = sorted({validate_domain(item) for item in _as_list(raw, "domains")})
    for domain in domains:
        if domain != default:  # the app's own platform name, listed again, is harmless
            validate_custom_domain(domain, base)
    if len({default, *domains}) > MAX_DOMAINS:
        raise ValidationError(
            "domains",
            f"an app can have at most {MAX_DOMAINS} hostnames (one certificate): remove some",
        )
    return tuple(domains)


def _policy(spec: AppSpec) -> dict[str, Any]:
    """Deployment policy: flags are booleans, min healthy < healthy deadline < progress deadline."""
    for name in ("canary", "auto_promote", "auto_revert"):
        if not isinstance(getattr(spec, name), bool):
            raise ValidationError(name, f"{name} must be true or false")
    min_healthy = validate_duration_s(spec.min_healthy_time_s, "min_healthy_time_s", 0, 3_600)
    healthy = validate_duration_s(spec.healthy_deadline_s, "healthy_deadline_s", 1)
    progress = validate_duration_s(spec.progress_deadline_s, "progress_deadline_s", 1)
    if not min_healthy < healthy < progress:
        raise ValidationError(
            "healthy_deadline_s",
            "deadlines must satisfy min_healthy_time_s < "
            f"healthy_deadline_s < progress_deadline_s (got {min_healthy} < {healthy} < "
            f"{progress}): e.g. 10, 300, 600",
        )
    return {
        "min_healthy_time_s": min_healthy,
        "healthy_deadline_s": healthy,
        "progress_deadline_s": progress,
    }


def _as_list(value: object, field: str) -> list[Any]:
    """Turn a non-string iterable into a list (a bare string is refused, not split into chars)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, f"{field} must be a list, not {type(value).__name__}")
    return list(value)
