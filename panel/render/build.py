"""BuildSpec → the Nomad batch job that builds and pushes one commit of an app (pure).

The job has one group, ``build``, on the build node pool, with two tasks that share the
allocation directory:

- ``fetch`` (a prestart task, git image): fetches exactly the commit into
  ``alloc/data/source``;
- ``build`` (the main task, rootless buildah): builds the Dockerfile with ``--layers`` and the
  app's layer cache in the registry, pushes ``<registry>/<repository>:<sha>`` and prints
  ``helios-build-digest sha256:…`` (also written to ``alloc/data/image-digest``).

No user string reaches a shell or a template language. Each task runs a fixed script (constant
text below) as ``/bin/sh -c RUNNER helios-<task> STEPS``; every user value reaches it through
the task's ``Env`` and is only ever used quoted (``"$HELIOS_GIT_URL"``). The scripts contain no
``${``, so Nomad's run-time interpolation of ``Env`` and docker ``args`` leaves them alone; the
``Env`` values that name Nomad's own directories use it on purpose (``${NOMAD_TASK_DIR}``).
User values that could carry ``${`` (build-arg values) refuse it, so Nomad never interpolates
into them either.

Credentials never go into the job. The git credential (private repositories) and the registry
credential reach the tasks through Nomad Variables: each task reads only its own path,
``nomad/jobs/<job>/build/<task>`` (Nomad lets a task read ``nomad/jobs/<job>``, its group's and
its own path below it, "Task Access to Variables",
https://developer.hashicorp.com/nomad/docs/concepts/variables), through a ``template`` block
that renders them into the task's environment. So the Dockerfile's ``RUN`` steps, which run in
the build task, never see the git credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from panel.render.buildpacks import BUILDPACKS_BUILDER, BUILDPACKS_SCRIPT, buildpacks_env
from panel.validation import (
    ValidationError,
    require_text,
    shown,
    validate_branch,
    validate_cpu_mhz,
    validate_datacenter,
    validate_duration_s,
    validate_image,
    validate_memory_mb,
    validate_release,
    validate_slug,
)

__all__ = [
    "BUILDER_IMAGE",
    "BUILD_SCRIPT",
    "DIGEST_MARKER",
    "FETCH_SCRIPT",
    "GIT_IMAGE",
    "GROUP",
    "RUNNER_SCRIPT",
    "SECURITY_OPT",
    "BuildSpec",
    "build_fields_from_settings",
    "build_job_id",
    "build_variable_path",
    "render_build_job",
    "render_build_variables",
    "validate_build_arg_key",
    "validate_build_arg_value",
    "validate_git_commit",
    "validate_git_url",
    "validate_registry",
    "validate_relative_path",
    "validate_repository",
]

NS_PER_SECOND = 1_000_000_000

# The builder: Buildah's own image (Fedora with buildah, fuse-overlayfs, coreutils), published
# by the Buildah project at quay.io/buildah/stable, pinned to one release tag. It has the user
# `build` (uid 1000) with subordinate uid/gid ranges, which rootless buildah maps into its user
# namespace, and sets BUILDAH_ISOLATION=chroot. Bump it deliberately (HELIOS_BUILDER_IMAGE
# overrides it, also with an @sha256: digest).
BUILDER_IMAGE = "quay.io/buildah/stable:v1.40.1"
BUILDER_USER = "build"
# The fetcher: git and a POSIX shell (BusyBox) on Alpine, pinned to one git release
# (HELIOS_BUILD_GIT_IMAGE overrides it). It runs as `nobody`.
GIT_IMAGE = "docker.io/alpine/git:v2.47.2"
GIT_USER = "nobody"

# Exactly what rootless buildah needs from the docker driver, nothing more (never privileged,
# no added capabilities, no devices):
# - seccomp=unconfined: Docker's default seccomp profile refuses unshare(CLONE_NEWUSER) and
#   the mount(2) calls of a process without CAP_SYS_ADMIN; rootless buildah needs a user
#   namespace of its own (with the image's subordinate ids) and mounts inside it.
# - apparmor=unconfined: Docker's default AppArmor profile (docker-default) denies mount(2),
#   which the chroot isolation of RUN steps uses inside that user namespace.
# /dev/fuse is not needed: the storage driver is vfs (plain directories, no fuse-overlayfs).
SECURITY_OPT = ("seccomp=unconfined", "apparmor=unconfined")

GROUP = "build"
FETCH_TASK = "fetch"
BUILD_TASK = "build"
KIND = "build"
DIGEST_MARKER = "helios-build-digest"
FETCH_TIME_LIMIT_S = 600  # fetching one commit; the build's own limit if that is lower
FETCH_CPU_MHZ = 200
FETCH_MEMORY_MB = 256
FETCH_KILL_TIMEOUT_S = 5
BUILD_KILL_TIMEOUT_S = 30  # buildah removes its working containers when stopped
BUILD_ARGS_MAX = 64
BUILD_ARG_VALUE_MAX_LEN = 4096  # characters
GIT_URL_MAX_LEN = 2048  # characters
PATH_MAX_LEN = 255  # characters, Dockerfile path and context
DISK_MB_RANGE = (300, 1_048_576)  # Nomad's ephemeral disk; 300 MB is Nomad's default
TIME_LIMIT_RANGE = (1, 86_400)  # seconds
# Where the tasks keep things, in Nomad's allocation (shared) and task (private) directories.
# Nomad interpolates these ${NOMAD_*} names in Env values when it starts the task.
SOURCE_DIR = "${NOMAD_ALLOC_DIR}/data/source"
DIGEST_FILE = "${NOMAD_ALLOC_DIR}/data/image-digest"
STORAGE_ROOT = "${NOMAD_TASK_DIR}/containers/storage"
STORAGE_RUNROOT = "${NOMAD_TASK_DIR}/containers/run"
AUTH_FILE = "${NOMAD_SECRETS_DIR}/registry-auth.json"
CREDENTIALS_DEST_PATH = "secrets/helios-credentials.env"
CERT_DIR = "${NOMAD_TASK_DIR}/registry-certs"
CA_DEST_PATH = "local/registry-certs/ca.crt"  # NOMAD_TASK_DIR is the task's local/
PEM_MAX_LEN = 65_536  # characters of registry_ca
_PEM_RE = re.compile(
    r"(?:-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/=]{1,76}\n)+-----END CERTIFICATE-----\n)+"
)
# The items Helios writes into each task's variable, and the env names the template gives them.
CREDENTIAL_ENV = {
    FETCH_TASK: {"username": "HELIOS_GIT_USERNAME", "password": "HELIOS_GIT_PASSWORD"},
    BUILD_TASK: {"username": "HELIOS_REGISTRY_USERNAME", "password": "HELIOS_REGISTRY_PASSWORD"},
}

# Runs a task's steps ($1) under a hard time limit and says so when the limit ends them.
# `timeout` is GNU coreutils' in the builder and BusyBox's in the fetcher; only the latter
# exits 143 instead of 124, hence the elapsed-time test.
RUNNER_SCRIPT = r"""set -u
start=$(date +%s)
timeout "$HELIOS_TIME_LIMIT" /bin/sh -c "$1" "$0"
status=$?
elapsed=$(( $(date +%s) - start ))
if [ "$status" -ne 0 ] && { [ "$status" -eq 124 ] || [ "$elapsed" -ge "$HELIOS_TIME_LIMIT" ]; }
then
  printf '%s: time limit of %s s exceeded: stopped after %s s\n' \
    "$0" "$HELIOS_TIME_LIMIT" "$elapsed" >&2
  exit 124
fi
exit "$status"
"""

# Fetches exactly one commit into $HELIOS_SOURCE_DIR: by its id when the server allows it
# (GitHub, GitLab and git's protocol v2 do), else the branch's history, then checks it out.
FETCH_SCRIPT = r"""set -eu
export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_ALLOW_PROTOCOL=https:http:file
set -- git -c advice.detachedHead=false
if [ "$HELIOS_GIT_AUTH" = 1 ]; then
  set -- "$@" -c 'credential.helper=!f() { test "$1" = get &&
    printf "username=%s\npassword=%s\n" "$HELIOS_GIT_USERNAME" "$HELIOS_GIT_PASSWORD"; }; f'
fi
mkdir -p "$HELIOS_SOURCE_DIR"
cd "$HELIOS_SOURCE_DIR"
"$@" init -q
"$@" remote add origin "$HELIOS_GIT_URL"
if ! "$@" fetch -q --depth 1 origin "$HELIOS_GIT_SHA"; then
  printf '%s: the server would not send commit %s by its id: fetching branch %s\n' \
    "$0" "$HELIOS_GIT_SHA" "$HELIOS_GIT_BRANCH" >&2
  "$@" fetch -q origin "+refs/heads/$HELIOS_GIT_BRANCH:refs/remotes/origin/$HELIOS_GIT_BRANCH"
fi
"$@" checkout -q --detach "$HELIOS_GIT_SHA"
head=$("$@" rev-parse HEAD)
if [ "$head" != "$HELIOS_GIT_SHA" ]; then
  printf '%s: checked out %s instead of %s\n' "$0" "$head" "$HELIOS_GIT_SHA" >&2
  exit 1
fi
printf '%s: checked out %s (branch %s)\n' "$0" "$head" "$HELIOS_GIT_BRANCH"
"""

# Builds the fetched commit and pushes it. Dockerfile and context must stay inside the source
# (a symbolic link could point at the task's secrets); the registry credential, when there is
# one, is handed to `buildah login` on stdin and then forgotten.
BUILD_SCRIPT = r"""set -eu
b() {
  buildah --root "$HELIOS_STORAGE_ROOT" --runroot "$HELIOS_STORAGE_RUNROOT" \
    --storage-driver vfs "$@"
}
inside() {
  if [ ! -e "$HELIOS_SOURCE_DIR/$2" ]; then
    printf '%s: the %s %s is not in the repository\n' "$0" "$1" "$2" >&2
    exit 2
  fi
  found=$(realpath "$HELIOS_SOURCE_DIR/$2")
  case "$found/" in
    "$top"/*) ;;
    *)
      printf '%s: the %s %s leads outside the repository\n' "$0" "$1" "$2" >&2
      exit 2
      ;;
  esac
}
top=$(realpath "$HELIOS_SOURCE_DIR")
inside "build context" "$HELIOS_CONTEXT"
context=$found
inside Dockerfile "$HELIOS_DOCKERFILE"
dockerfile=$found
if [ ! -f "$dockerfile" ]; then
  printf '%s: the Dockerfile %s is not a file\n' "$0" "$HELIOS_DOCKERFILE" >&2
  exit 2
fi
if [ "$HELIOS_REGISTRY_AUTH" = 1 ]; then
  export REGISTRY_AUTH_FILE="$HELIOS_AUTH_FILE"
  printf '%s' "$HELIOS_REGISTRY_PASSWORD" | b login --tls-verify="$HELIOS_TLS_VERIFY" \
    --cert-dir "$HELIOS_CERT_DIR" \
    --username "$HELIOS_REGISTRY_USERNAME" --password-stdin "$HELIOS_REGISTRY" >/dev/null
  unset HELIOS_REGISTRY_PASSWORD
fi
set --
while IFS= read -r arg; do
  if [ -n "$arg" ]; then
    set -- "$@" --build-arg "$arg"
  fi
done <<EOF
$HELIOS_BUILD_ARGS
EOF
if [ "$HELIOS_CACHE_WRITE" = 1 ]; then
  set -- "$@" --cache-to "$HELIOS_CACHE_REPO"
fi
b build --isolation chroot --layers --tls-verify="$HELIOS_TLS_VERIFY" \
  --cert-dir "$HELIOS_CERT_DIR" --cache-from "$HELIOS_CACHE_REPO" "$@" \
  -f "$dockerfile" -t "$HELIOS_IMAGE" "$context"
b push --tls-verify="$HELIOS_TLS_VERIFY" --cert-dir "$HELIOS_CERT_DIR" \
  --digestfile "$HELIOS_DIGEST_FILE" "$HELIOS_IMAGE"
printf '%s %s\n' helios-build-digest "$(cat "$HELIOS_DIGEST_FILE")"
"""

# Go template text reading one task's credentials from its own variable path, known items
# only, each value JSON-quoted (the env file format Nomad reads).
CREDENTIALS_TEMPLATE = (
    '{{{{ with nomadVar "{path}" }}}}{{{{ range .Tuples }}}}{lines}{{{{ end }}}}{{{{ end }}}}'
)
CREDENTIAL_LINE = '{{{{ if eq .K "{item}" }}}}{env}={{{{ .V | toJSON }}}}\n{{{{ end }}}}'

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*"
_PORT = r"(?::[0-9]{1,5})?"
_URL_SEGMENT = r"(?:[A-Za-z0-9._~+-]|%[0-9A-Fa-f]{2})+"
_GIT_URL_RE = re.compile(
    rf"(?:(?P<scheme>https?)://{_HOST}{_PORT}|(?P<file>file)://)(?P<path>(?:/{_URL_SEGMENT})+)/?"
)
_REGISTRY_RE = re.compile(rf"{_HOST}{_PORT}")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_RELATIVE_PATH_RE = re.compile(r"[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*")
_BUILD_ARG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_GIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9-]{1,128}")
_NODE_POOL_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


# ---------------------------------------------------------------------------------------------
# Validators of the build's own fields
# ---------------------------------------------------------------------------------------------


def validate_git_url(value: object, field: str = "git_url") -> str:
    """Validate a repository clone URL: https://, http:// or file://, no credentials, no query.

    Credentials for private repositories come from the build's variable, never the URL.
    """
    text = require_text(value, field, "https://github.com/acme/shop.git")
    match = _GIT_URL_RE.fullmatch(text) if len(text) <= GIT_URL_MAX_LEN else None
    segments = match["path"].split("/")[1:] if match else []
    if match is None or any(segment in {".", ".."} for segment in segments):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not a clone URL Helios accepts: use "
            "https://HOST[:PORT]/PATH (or http://, or file:///PATH for a repository on the "
            "builder) with letters, digits, '.', '_', '~', '+', '-' or %XX in the path, no "
            "user or password (give a git credential instead), no '?' or '#', "
            f"at most {GIT_URL_MAX_LEN} characters, e.g. 'https://github.com/acme/shop.git'",
        )
    return text


def validate_git_commit(value: object, field: str = "git_sha") -> str:
    """Validate the full id of the commit to build: exactly 40 lowercase hex digits."""
    text = require_text(value, field, "3f2a9c1e" * 5)
    if not _GIT_SHA_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not a full commit id: use the 40 lowercase hex digits "
            "git prints for `git rev-parse HEAD`",
        )
    return text


def validate_relative_path(value: object, field: str) -> str:
    """Validate a path inside the repository: relative, no '..' or '.' parts except '.' alone."""
    text = require_text(value, field, "docker/Dockerfile")
    if text == ".":
        return text
    parts = text.split("/")
    if (
        len(text) > PATH_MAX_LEN
        or not _RELATIVE_PATH_RE.fullmatch(text)
        or any(part in {".", ".."} for part in parts)
        or text.startswith("-")
    ):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use a path inside the repository, relative "
            "to its top, with letters, digits, '.', '_', '@', '+' and '-' between single '/', "
            f"no '..' or '.' part, not starting with '/' or '-', at most {PATH_MAX_LEN} "
            "characters, e.g. 'Dockerfile', 'docker/web.Dockerfile' or '.'",
        )
    return text


def validate_build_arg_key(value: object, field: str = "build arg") -> str:
    """Validate a Dockerfile ARG name: a letter or '_', then letters, digits or '_'."""
    text = require_text(value, field, "NODE_ENV")
    if not _BUILD_ARG_KEY_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} name {shown(text)} is not allowed: use letters, digits and '_', starting "
            "with a letter or '_', at most 128 characters, e.g. 'NODE_ENV'",
        )
    return text


def validate_build_arg_value(value: object, field: str = "build arg value") -> str:
    """Validate a build-arg value: one line of text without NUL and without '${'."""
    text = require_text(value, field, "production")
    if "\x00" in text or "\n" in text or "\r" in text:
        raise ValidationError(
            field, f"{field} must be one line without NUL: remove line breaks and NUL characters"
        )
    if "${" in text:
        raise ValidationError(
            field,
            f"{field} contains '${{', which Nomad would replace with its own values: "
            "write the value without '${'",
        )
    if len(text) > BUILD_ARG_VALUE_MAX_LEN:
        raise ValidationError(
            field, f"{field} is {len(text)} characters: keep it at most {BUILD_ARG_VALUE_MAX_LEN}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValidationError(field, f"{field} is not valid Unicode text") from error
    return text


def validate_registry(value: object, field: str = "registry") -> str:
    """Validate a registry address: HOST[:PORT], e.g. registry.internal:5000."""
    text = require_text(value, field, "registry.internal:5000")
    port = text.rpartition(":")[2] if ":" in text else ""
    if not _REGISTRY_RE.fullmatch(text) or (port and not 0 < int(port) < 65_536):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not a registry address: use HOST[:PORT] without a "
            "scheme or path, e.g. 'registry.internal:5000' or '127.0.0.1:5000'",
        )
    return text


def validate_repository(value: object, field: str = "repository") -> str:
    """Validate an image repository name inside the registry, e.g. acme/shop."""
    text = require_text(value, field, "acme/shop")
    if len(text) > 200 or not _REPOSITORY_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use lowercase letters and digits, separated "
            "by '.', '_', '__' or '-', parts joined by '/', e.g. 'acme/shop'",
        )
    return text


def _whole(value: object, field: str, bounds: tuple[int, int], unit: str) -> int:
    """A whole number (not a bool) within bounds."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            field,
            f"{field} {value!r} is not allowed: use a whole number from {low} to {high} {unit}",
        )
    return value


def _validate_pattern(value: object, field: str, pattern: re.Pattern[str], hint: str) -> str:
    """Validate text against an allow-list pattern."""
    text = require_text(value, field, hint)
    if not pattern.fullmatch(text):
        raise ValidationError(field, f"{field} {shown(text)} is not allowed: use e.g. {hint!r}")
    return text


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildSpec:
    """Everything needed to render one build of one commit; validated on creation.

    Only builds of ``tracked_branch`` (the branch the app deploys) write the layer cache;
    every build reads it. ``git_auth`` / ``registry_auth`` say that the build's variable holds
    a git / registry credential (see ``render_build_variables``); the values are never here.
    """

    slug: str
    team: str
    release: int
    git_url: str
    git_sha: str
    branch: str
    tracked_branch: str
    registry: str
    repository: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: tuple[tuple[str, str], ...] = ()  # sorted by key
    registry_insecure: bool = False  # plain HTTP / no TLS verification (loopback, tests)
    git_auth: bool = False
    registry_auth: bool = False
    # PEM of the CA that signed the registry's certificate (the cluster's own CA), when the
    # system's roots do not cover it; public data, written into the build task as a file.
    registry_ca: str = ""
    datacenters: tuple[str, ...] = ("dc1",)
    namespace: str = "default"
    node_pool: str = "build"
    cpu_mhz: int = 1000
    memory_mb: int = 2048
    disk_mb: int = 4096
    time_limit_s: int = 1800
    builder_image: str = BUILDER_IMAGE
    git_image: str = GIT_IMAGE
    builder: str = "dockerfile"  # or "buildpacks": a repository without a Dockerfile
    buildpacks_image: str = BUILDPACKS_BUILDER

    def __post_init__(self) -> None:
        """Validate and normalise every field."""
        for name, value in _validated(self).items():
            object.__setattr__(self, name, value)

    @property
    def job_id(self) -> str:
        """The Nomad job ID: <slug>-build-<release>."""
        return build_job_id(self.slug, self.release)

    @property
    def image(self) -> str:
        """The image this build pushes: <registry>/<repository>:<sha>."""
        return f"{self.registry}/{self.repository}:{self.git_sha}"

    @property
    def cache_repository(self) -> str:
        """Where the layer cache lives: <registry>/<repository>/cache."""
        return f"{self.registry}/{self.repository}/cache"

    @property
    def writes_cache(self) -> bool:
        """Only builds of the tracked branch write the cache (others only read it)."""
        return self.branch == self.tracked_branch


def _validated(spec: BuildSpec) -> dict[str, Any]:
    """The normalised value of every field of a BuildSpec."""
    for name in ("registry_insecure", "git_auth", "registry_auth"):
        if not isinstance(getattr(spec, name), bool):
            raise ValidationError(name, f"{name} must be true or false")
    datacenters = [validate_datacenter(dc) for dc in _as_list(spec.datacenters, "datacenters")]
    if not datacenters:
        raise ValidationError("datacenters", "datacenters is empty: name at least one, e.g. dc1")
    memory_mb = validate_memory_mb(spec.memory_mb)
    if memory_mb < 256:
        raise ValidationError("memory_mb", "memory_mb must be at least 256 MB for a build")
    values: dict[str, Any] = {
        "slug": validate_slug(spec.slug, "slug"),
        "team": validate_slug(spec.team, "team"),
        "release": validate_release(spec.release),
        "git_url": validate_git_url(spec.git_url),
        "git_sha": validate_git_commit(spec.git_sha),
        "branch": validate_branch(spec.branch),
        "tracked_branch": validate_branch(spec.tracked_branch, "tracked_branch"),
        "registry": validate_registry(spec.registry),
        "repository": validate_repository(spec.repository),
        "dockerfile": validate_relative_path(spec.dockerfile, "dockerfile"),
        "context": validate_relative_path(spec.context, "context"),
        "build_args": _build_args(spec.build_args),
        "datacenters": tuple(dict.fromkeys(datacenters)),
        "namespace": _validate_pattern(spec.namespace, "namespace", _NAMESPACE_RE, "default"),
        "node_pool": _validate_pattern(spec.node_pool, "node_pool", _NODE_POOL_RE, "build"),
        "cpu_mhz": validate_cpu_mhz(spec.cpu_mhz),
        "memory_mb": memory_mb,
        "disk_mb": _whole(spec.disk_mb, "disk_mb", DISK_MB_RANGE, "MB"),
        "time_limit_s": validate_duration_s(spec.time_limit_s, "time_limit_s", *TIME_LIMIT_RANGE),
        "builder_image": validate_image(spec.builder_image, "builder_image"),
        "git_image": validate_image(spec.git_image, "git_image"),
        "builder": _builder(spec.builder),
        "registry_ca": validate_registry_ca(spec.registry_ca),
        "buildpacks_image": validate_image(spec.buildpacks_image, "buildpacks_image"),
    }
    if values["dockerfile"] == ".":
        raise ValidationError("dockerfile", "dockerfile must name a file, e.g. 'Dockerfile'")
    validate_image(f"{values['registry']}/{values['repository']}:{values['git_sha']}", "image")
    return values


def _build_args(raw: object) -> tuple[tuple[str, str], ...]:
    """Build args as sorted (key, value) pairs from a mapping or pairs; keys unique."""
    pairs = raw.items() if isinstance(raw, Mapping) else _as_list(raw, "build_args")
    args: dict[str, str] = {}
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValidationError(
                "build_args", "build_args must be a mapping or (key, value) pairs"
            )
        key = validate_build_arg_key(pair[0])
        if key in args:
            raise ValidationError("build arg", f"build arg {key!r} is given twice: keep one value")
        args[key] = validate_build_arg_value(pair[1], f"build arg {key}")
    if len(args) > BUILD_ARGS_MAX:
        raise ValidationError("build_args", f"{len(args)} build args: use at most {BUILD_ARGS_MAX}")
    return tuple(sorted(args.items()))


BUILDERS = ("dockerfile", "buildpacks")


def validate_registry_ca(value: object, field: str = "registry_ca") -> str:
    """PEM certificates only (what a CA file holds), normalised to \\n line ends; or ""."""
    if value in ("", None):
        return ""
    if not isinstance(value, str) or len(value) > PEM_MAX_LEN:
        raise ValidationError(
            field, f"{field} must be PEM text of at most {PEM_MAX_LEN} characters"
        )
    text = "\n".join(line.strip() for line in value.strip().splitlines() if line.strip()) + "\n"
    if not _PEM_RE.fullmatch(text):
        raise ValidationError(
            field, f"{field} must hold only PEM certificates (-----BEGIN CERTIFICATE----- …)"
        )
    return text


def _builder(value: object) -> str:
    """Which builder: the Dockerfile one, or buildpacks for a repository without one."""
    if value not in BUILDERS:
        raise ValidationError("builder", f"builder must be one of {', '.join(BUILDERS)}")
    return str(value)


def _as_list(value: object, field: str) -> list[Any]:
    """A non-string iterable as a list (a bare string is refused, not split into chars)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, f"{field} must be a list, not {type(value).__name__}")
    return list(value)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def build_fields_from_settings(settings: Any) -> dict[str, Any]:
    """The BuildSpec fields Helios's settings decide (HELIOS_REGISTRY*, HELIOS_BUILD*,
    HELIOS_BUILDER_IMAGE, NOMAD_NAMESPACE, HELIOS_NOMAD_DATACENTERS), read by attribute name
    from a ``panel.config.Settings``."""
    return {
        "registry": settings.registry,
        "registry_insecure": settings.registry_insecure,
        "node_pool": settings.build_node_pool,
        "cpu_mhz": settings.build_cpu,
        "memory_mb": settings.build_memory,
        "disk_mb": settings.build_disk,
        "time_limit_s": settings.build_timeout,
        "builder_image": settings.builder_image,
        "git_image": settings.build_git_image,
        "buildpacks_image": settings.buildpacks_builder,
        "namespace": settings.nomad_namespace,
        "datacenters": settings.nomad_datacenters,
    }


def build_job_id(slug: str, release: int) -> str:
    """The Nomad job ID of the build of one release: <slug>-build-<release>."""
    return f"{validate_slug(slug)}-build-{validate_release(release)}"


def build_variable_path(job_id: str, task: str) -> str:
    """The Nomad Variable path only this task of the build job may read."""
    if task not in CREDENTIAL_ENV:
        raise ValueError(f"the build job has no task {task!r}")
    return f"nomad/jobs/{job_id}/{GROUP}/{task}"


def render_build_variables(
    spec: BuildSpec,
    *,
    git_credential: tuple[str, str] | None = None,
    registry_credential: tuple[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """The Nomad Variables (path → items) the build's tasks read their credentials from.

    A credential is (username, password); one must be given exactly when the spec says so
    (``git_auth``, ``registry_auth``), since a task whose template reads a missing variable
    waits for it.
    """
    variables: dict[str, dict[str, str]] = {}
    for task, needed, credential in (
        (FETCH_TASK, spec.git_auth, git_credential),
        (BUILD_TASK, spec.registry_auth, registry_credential),
    ):
        if needed != (credential is not None):
            state = "needs" if needed else "has no use for"
            raise ValueError(f"the {task} task {state} a credential (the spec says {needed})")
        if credential is not None:
            username, password = credential
            for part, text in (("username", username), ("password", password)):
                if not isinstance(text, str) or not text or "\x00" in text:
                    raise ValidationError(
                        part, f"the {task} credential's {part} must be text without NUL"
                    )
            path = build_variable_path(spec.job_id, task)
            variables[path] = {"password": password, "username": username}
    return variables


def render_build_job(spec: BuildSpec) -> dict[str, Any]:
    """Render the register body {"Job": {...}} of the batch job that builds one commit."""
    job = {
        "ID": spec.job_id,
        "Name": spec.job_id,
        "Type": "batch",
        "Namespace": spec.namespace,
        "NodePool": spec.node_pool,
        "Datacenters": list(spec.datacenters),
        # Placement in the pool also on a Nomad older than node pools (1.6), where NodePool
        # is ignored: ${node.pool} does not resolve there, so the job places nowhere.
        "Constraints": [{"LTarget": "${node.pool}", "RTarget": spec.node_pool, "Operand": "="}],
        "Meta": {
            "helios.app": spec.slug,
            "helios.team": spec.team,
            "helios.release": str(spec.release),
            "helios.git_sha": spec.git_sha,
            "helios.branch": spec.branch,
            "helios.kind": KIND,
            "helios.builder": spec.builder,
        },
        "TaskGroups": [_render_group(spec)],
    }
    return {"Job": job}


def _render_group(spec: BuildSpec) -> dict[str, Any]:
    """One group: fetch, then build; a failed build fails, nothing restarts or reschedules."""
    return {
        "Name": GROUP,
        "Count": 1,
        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "EphemeralDisk": {"SizeMB": spec.disk_mb},
        "Tasks": [_render_fetch_task(spec), _render_build_task(spec)],
    }


def _render_fetch_task(spec: BuildSpec) -> dict[str, Any]:
    """The prestart task that fetches the commit into the shared allocation directory."""
    env = {
        "HELIOS_TIME_LIMIT": str(min(FETCH_TIME_LIMIT_S, spec.time_limit_s)),
        "HELIOS_SOURCE_DIR": SOURCE_DIR,
        "HELIOS_GIT_URL": spec.git_url,
        "HELIOS_GIT_SHA": spec.git_sha,
        "HELIOS_GIT_BRANCH": spec.branch,
        "HELIOS_GIT_AUTH": _flag(spec.git_auth),
    }
    task: dict[str, Any] = {
        "Name": FETCH_TASK,
        "Driver": "docker",
        "User": GIT_USER,
        "Lifecycle": {"Hook": "prestart", "Sidecar": False},
        "Config": _render_docker_config(spec.git_image, FETCH_TASK, FETCH_SCRIPT),
        "Env": dict(sorted(env.items())),
        "Resources": {"CPU": FETCH_CPU_MHZ, "MemoryMB": FETCH_MEMORY_MB},
        "KillTimeout": FETCH_KILL_TIMEOUT_S * NS_PER_SECOND,
    }
    if spec.git_auth:
        task["Templates"] = [_render_credentials_template(spec, FETCH_TASK)]
    return task


def _render_build_task(spec: BuildSpec) -> dict[str, Any]:
    """The main task: rootless buildah (a Dockerfile) or the buildpacks lifecycle (none)
    builds, caches and pushes."""
    env = {
        "HELIOS_APP": spec.slug,
        "HELIOS_RELEASE": str(spec.release),
        "HELIOS_TIME_LIMIT": str(spec.time_limit_s),
        "HELIOS_SOURCE_DIR": SOURCE_DIR,
        "HELIOS_CONTEXT": spec.context,
        "HELIOS_BUILD_ARGS": "".join(f"{key}={value}\n" for key, value in spec.build_args),
        "HELIOS_REGISTRY": spec.registry,
        "HELIOS_IMAGE": spec.image,
        "HELIOS_CACHE_REPO": spec.cache_repository,
        "HELIOS_CACHE_WRITE": _flag(spec.writes_cache),
        # Only a registry marked insecure is reached over plain HTTP without TLS checks.
        "HELIOS_TLS_VERIFY": "false" if spec.registry_insecure else "true",
        # Extra CAs for the registry (ca.crt, when the spec has one; an absent folder adds none).
        "HELIOS_CERT_DIR": CERT_DIR,
        "HELIOS_REGISTRY_AUTH": _flag(spec.registry_auth),
        "HELIOS_DIGEST_FILE": DIGEST_FILE,
    }
    task: dict[str, Any] = {"Name": BUILD_TASK, "Driver": "docker"}
    if spec.builder == "buildpacks":
        # The builder image's own unprivileged user, Docker's default security profiles.
        config = _render_docker_config(spec.buildpacks_image, BUILD_TASK, BUILDPACKS_SCRIPT)
        env = buildpacks_env(env)
    else:
        config = _render_docker_config(spec.builder_image, BUILD_TASK, BUILD_SCRIPT)
        config["security_opt"] = list(SECURITY_OPT)
        task["User"] = BUILDER_USER
        env.update(
            HELIOS_DOCKERFILE=spec.dockerfile, HELIOS_AUTH_FILE=AUTH_FILE,
            HELIOS_STORAGE_ROOT=STORAGE_ROOT, HELIOS_STORAGE_RUNROOT=STORAGE_RUNROOT,
        )  # fmt: skip
    task.update(
        Config=config,
        Env=dict(sorted(env.items())),
        Resources={"CPU": spec.cpu_mhz, "MemoryMB": spec.memory_mb},
        KillTimeout=BUILD_KILL_TIMEOUT_S * NS_PER_SECOND,
    )
    templates = []
    if spec.registry_auth:
        templates.append(_render_credentials_template(spec, BUILD_TASK))
    if spec.registry_ca:
        # Certificates only (validated), so the text holds no template syntax.
        templates.append(
            {"EmbeddedTmpl": spec.registry_ca, "DestPath": CA_DEST_PATH, "ChangeMode": "noop"}
        )
    if templates:
        task["Templates"] = templates
    return task


def _render_docker_config(image: str, task: str, steps: str) -> dict[str, Any]:
    """Docker config running the fixed steps under the runner: /bin/sh -c RUNNER NAME STEPS."""
    return {
        "image": image,
        "entrypoint": ["/bin/sh", "-c"],
        "args": [RUNNER_SCRIPT, f"helios-{task}", steps],
    }


def _render_credentials_template(spec: BuildSpec, task: str) -> dict[str, Any]:
    """A template turning this task's variable items into its env (values never in the job)."""
    lines = "".join(
        CREDENTIAL_LINE.format(item=item, env=env) for item, env in CREDENTIAL_ENV[task].items()
    )
    text = CREDENTIALS_TEMPLATE.format(path=build_variable_path(spec.job_id, task), lines=lines)
    return {
        "EmbeddedTmpl": text,
        "DestPath": CREDENTIALS_DEST_PATH,
        "Envvars": True,
        # A changed credential must not restart a build halfway (nothing restarts anyway).
        "ChangeMode": "noop",
    }


def _flag(value: bool) -> str:
    """A boolean as the scripts read it."""
    return "1" if value else "0"
