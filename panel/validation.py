"""Allow-list validators for every user-supplied field (pure; no I/O).

Each validator takes the raw value, returns it normalised (e.g. a domain lowercased, a port as
``int``) or raises :class:`ValidationError` naming the field, what was wrong and how to fix it.
Patterns are explicit ASCII classes matched with ``re.fullmatch``, so a trailing newline or a
look-alike Unicode letter (the Kelvin sign lowercases to ``k``) never slips through.
Values are not stripped: forms strip whitespace before calling these.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = [
    "ValidationError",
    "require_text",
    "shown",
    "validate_branch",
    "validate_command",
    "validate_count",
    "validate_cpu_mhz",
    "validate_custom_domain",
    "validate_datacenter",
    "validate_domain",
    "validate_duration_s",
    "validate_env_key",
    "validate_env_value",
    "validate_git_sha",
    "validate_health_path",
    "validate_image",
    "validate_memory_max_mb",
    "validate_memory_mb",
    "validate_panel_url",
    "validate_port",
    "validate_release",
    "validate_repo",
    "validate_slug",
    "validate_team_limit",
]

SLUG_MAX_LEN = 63  # characters: one DNS label, and Nomad's service name limit
IMAGE_MAX_LEN = 512  # characters, the whole reference (App.image column)
IMAGE_NAME_MAX_LEN = 255  # characters, registry + path (Docker's limit)
BRANCH_MAX_LEN = 255  # characters
DOMAIN_MAX_LEN = 253  # characters, RFC 1035 without the trailing dot
ENV_KEY_MAX_LEN = 128  # characters (EnvVar.key column)
ENV_VALUE_MAX_BYTES = 32 * 1024  # bytes of UTF-8
HEALTH_PATH_MAX_LEN = 256  # characters
URL_MAX_LEN = 2048  # characters
COMMAND_ARG_MAX_LEN = 4096  # characters per argv element
COMMAND_MAX_ARGS = 256  # argv elements
COUNT_RANGE = (1, 50)  # instances per process
CPU_MHZ_RANGE = (100, 64_000)
MEMORY_MB_RANGE = (32, 262_144)
PORT_RANGE = (1, 65_535)
RELEASE_RANGE = (1, 2**31 - 1)
RESERVED_ENV_PREFIXES = ("NOMAD_", "HELIOS_")
# A team's limits (panel.actions.limits): the most each may be set to; "none" is no limit.
TEAM_LIMIT_RANGES = {
    "cpu_mhz": ((1, 10_000_000), " MHz"),
    "memory_mb": ((1, 100_000_000), " MB"),
    "instances": ((1, 100_000), " instances"),
    "apps": ((1, 10_000), " apps"),
}

_SLUG_RE = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"(?:(?P<registry>{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]{{1,5}})?)/)?"
    rf"(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)
_GITHUB_OWNER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?")
_GITHUB_REPO_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BRANCH_RE = re.compile(r"[A-Za-z0-9._/-]+")
_DOMAIN_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ENV_KEY_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_PCT = r"%[0-9A-Fa-f]{2}"
_HEALTH_PATH_RE = re.compile(rf"/(?:[A-Za-z0-9._~/-]|{_PCT})*(?:\?(?:[A-Za-z0-9._~/=&-]|{_PCT})*)?")
_DIGITS_RE = re.compile(r"[0-9]{1,12}")
_GIT_SHA_RE = re.compile(r"[0-9a-f]{7,40}")
_URL_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\]")
_URL_PATH_RE = re.compile(rf"(?:/(?:[A-Za-z0-9._~-]|{_PCT})*)*")
_DATACENTER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?")


class ValidationError(ValueError):
    """A user field failed validation: ``field`` names it, ``message`` says how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        """Keep the field name and the human-readable message."""
        super().__init__(message)
        self.field = field
        self.message = message


def shown(value: object, limit: int = 40) -> str:
    """Quote a rejected value for a message, shortened so huge inputs stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def require_text(value: object, field: str, example: str) -> str:
    """Return value if it is a str, else raise a ValidationError naming the field."""
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be text, e.g. {example!r}")
    return value


def _int_in_range(value: object, field: str, bounds: tuple[int, int], unit: str = "") -> int:
    """Accept an int (not bool) or a string of digits inside bounds; return the int."""
    low, high = bounds
    hint = f"use a whole number from {low} to {high}{unit}"
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        value = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():  # too many digits
        raise ValidationError(field, f"{field} {shown(value)} is out of range: {hint}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"{field} {shown(value)} is not a number: {hint}")
    if not low <= value <= high:
        raise ValidationError(field, f"{field} {value} is out of range: {hint}")
    return value


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def validate_slug(value: object, field: str = "slug") -> str:
    """Validate a Nomad job/service/group name: [a-z][a-z0-9-]{0,62}, no '--', no trailing '-'."""
    text = require_text(value, field, "my-app")
    if (
        len(text) > SLUG_MAX_LEN
        or not _SLUG_RE.fullmatch(text)
        or "--" in text  # also keeps <slug>.<base> out of the reserved 'ab--' DNS label form
    ):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use 1-{SLUG_MAX_LEN} lowercase letters, "
            "digits and single '-', starting with a letter and not ending with '-', "
            "e.g. 'my-app'",
        )
    return text


def validate_datacenter(value: object, field: str = "datacenter") -> str:
    """Validate a Nomad datacenter name (letters, digits, '_', '.', '-'; no wildcards)."""
    text = require_text(value, field, "dc1")
    if not _DATACENTER_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use 1-128 letters, digits, '_', '.' or '-' "
            "starting and ending with a letter or digit, e.g. 'dc1' (wildcards are not allowed)",
        )
    return text


# ---------------------------------------------------------------------------------------------
# Source and image
# ---------------------------------------------------------------------------------------------


def validate_image(value: object, field: str = "image") -> str:
    """Validate a Docker image reference: [registry[:port]/]path[:tag][@sha256:<64 hex>]."""
    text = require_text(value, field, "registry.example.com/team/app:1.2")
    fix = (
        "use registry[:port]/path[:tag][@sha256:<64 hex>] with a lowercase path, "
        "e.g. 'registry.example.com/team/app:1.2' or 'nginx:1.27'"
    )
    if len(text) > IMAGE_MAX_LEN:
        raise ValidationError(
            field,
            f"{field} is {len(text)} characters long: {fix}, at most {IMAGE_MAX_LEN} characters",
        )
    match = _IMAGE_RE.fullmatch(text)
    if match is None:
        raise ValidationError(field, f"{field} {shown(text)} is not a valid image reference: {fix}")
    name_len = len(match["path"]) + (len(match["registry"]) + 1 if match["registry"] else 0)
    if name_len > IMAGE_NAME_MAX_LEN:
        raise ValidationError(
            field, f"{field} name is {name_len} characters: keep registry and path under 256"
        )
    return text


def validate_repo(value: object, field: str = "repo") -> str:
    """Validate a GitHub OWNER/REPO; a trailing '.git' is dropped."""
    text = require_text(value, field, "octo-org/my-app")
    owner, slash, repo = text.partition("/")
    if repo.endswith(".git"):
        repo = repo[: -len(".git")]
    if (
        not slash
        or not _GITHUB_OWNER_RE.fullmatch(owner)
        or "--" in owner
        or not _GITHUB_REPO_RE.fullmatch(repo)
        or repo in {".", ".."}
    ):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use the GitHub OWNER/REPO, e.g. "
            "'octo-org/my-app' (owner: letters, digits, single '-'; repo: letters, digits, "
            "'.', '_', '-')",
        )
    return f"{owner}/{repo}"


def validate_branch(value: object, field: str = "branch") -> str:
    """Validate a git branch name against git's ref rules and a conservative allow-list."""
    text = require_text(value, field, "main")
    parts = text.split("/")
    if (
        len(text) > BRANCH_MAX_LEN
        or not _BRANCH_RE.fullmatch(text)
        or text.startswith("-")
        or text == "HEAD"
        or ".." in text
        or text.endswith(".")
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use letters, digits, '.', '_', '-' and "
            "'/' between parts, e.g. 'main' or 'release/1.2' (no '..', no leading '-' or '.', "
            f"no empty part, no '.lock' ending, at most {BRANCH_MAX_LEN} characters)",
        )
    return text


def validate_git_sha(value: object, field: str = "git_sha") -> str:
    """Validate a git commit id: empty (unknown) or 7-40 lowercase hex digits."""
    text = require_text(value, field, "3f2a9c1")
    if text and not _GIT_SHA_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use 7-40 lowercase hex digits, "
            "e.g. '3f2a9c1', or leave it empty",
        )
    return text


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


def validate_domain(value: object, field: str = "domain") -> str:
    """Validate an RFC 1123 hostname with 2+ labels and return it lowercased (no wildcards)."""
    text = require_text(value, field, "app.example.com")
    fix = (
        "use a hostname such as 'app.example.com': ASCII letters, digits and '-', at least two "
        f"labels of 1-63 characters, {DOMAIN_MAX_LEN} characters in all, no trailing dot"
    )
    if not text.isascii():
        raise ValidationError(
            field, f"{field} {shown(text)} is not ASCII: write it in punycode ('xn--…'); {fix}"
        )
    host = text.lower()
    if host.startswith("*."):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is a wildcard, which Helios does not route: add each "
            "hostname, e.g. 'www.example.com'",
        )
    labels = host.split(".")
    if (
        len(host) > DOMAIN_MAX_LEN
        or len(labels) < 2
        or not all(_DOMAIN_LABEL_RE.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValidationError(field, f"{field} {shown(text)} is not allowed: {fix}")
    if any(label[2:4] == "--" and not label.startswith("xn--") for label in labels):
        raise ValidationError(
            field,
            f"{field} {shown(text)} has a label with '--' in the 3rd and 4th place, "
            "which certificate authorities refuse: move or remove the '--'",
        )
    return host


def validate_custom_domain(value: object, base_domain: str, field: str = "domain") -> str:
    """Validate a domain an app routes besides its own: a hostname not under ``base_domain``.

    Names under the platform's base domain (``<app>.<base domain>``) belong to apps: one app
    must not take another's. Returns the hostname lowercased.
    """
    host = validate_domain(value, field)
    base = base_domain.lower()
    if host == base or host.endswith("." + base):
        raise ValidationError(
            field,
            f"{field} {host!r} is under the platform domain {base!r}, whose names belong "
            "to other apps: use a domain you own, e.g. 'www.example.com'",
        )
    return host


def validate_health_path(value: object, field: str = "health_path") -> str:
    """Validate an HTTP check path: '/' then [A-Za-z0-9._~/-] or %XX, optional ?query (=&)."""
    text = require_text(value, field, "/healthz")
    if len(text) > HEALTH_PATH_MAX_LEN or not _HEALTH_PATH_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: start with '/' and use letters, digits, "
            "'.', '_', '~', '-', '/' or %XX escapes, optionally one '?' query with '=' and '&', "
            f"at most {HEALTH_PATH_MAX_LEN} characters, e.g. '/healthz' or '/health?full=1'",
        )
    return text


def validate_port(value: object, field: str = "port") -> int:
    """Validate the container port the app listens on (1-65535)."""
    return _int_in_range(value, field, PORT_RANGE)


def validate_panel_url(value: object, field: str = "url") -> str:
    """Validate the http(s) URL of a Helios panel: scheme, host[:port], optional path; no
    credentials, query or fragment. Returns it without trailing '/'."""
    text = require_text(value, field, "https://helios.example.com")
    fix = (
        "use http(s)://HOST[:PORT][/PATH] with an ASCII host name or address, "
        "e.g. 'https://helios.example.com' or 'http://127.0.0.1:8080'"
    )
    url = text.rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or len(url) > URL_MAX_LEN
        or parts.scheme not in {"http", "https"}
        or not url.startswith(f"{parts.scheme}://")
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or "?" in url
        or "#" in url
        or not _URL_HOST_RE.fullmatch(parts.netloc.rsplit(":", 1)[0] if port else parts.netloc)
        or port == 0
        or not _URL_PATH_RE.fullmatch(parts.path)
    ):
        raise ValidationError(field, f"{field} {shown(text)} is not a panel URL: {fix}")
    return url


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


def validate_env_key(value: object, field: str = "env key") -> str:
    """Validate an environment variable name: [A-Z_][A-Z0-9_]*, not NOMAD_* or HELIOS_*."""
    text = require_text(value, field, "DATABASE_URL")
    if len(text) > ENV_KEY_MAX_LEN or not _ENV_KEY_RE.fullmatch(text):
        raise ValidationError(
            field,
            f"{field} {shown(text)} is not allowed: use uppercase letters, digits and '_', "
            f"not starting with a digit, at most {ENV_KEY_MAX_LEN} characters, "
            "e.g. 'DATABASE_URL'",
        )
    for prefix in RESERVED_ENV_PREFIXES:
        if text.startswith(prefix):
            raise ValidationError(
                field,
                f"{field} {shown(text)} is reserved: names starting with {prefix!r} belong to "
                "the platform; pick another name, e.g. 'APP_" + text[len(prefix) :] + "'",
            )
    return text


def validate_env_value(value: object, field: str = "env value") -> str:
    """Validate an environment value: text without NUL, at most 32 KiB of UTF-8 (never echoed)."""
    text = require_text(value, field, "postgres://db/app")
    if "\x00" in text:
        raise ValidationError(field, f"{field} contains a NUL character: remove it")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise ValidationError(
            field, f"{field} is not valid Unicode text (lone surrogate): re-enter it as UTF-8"
        ) from error
    if size > ENV_VALUE_MAX_BYTES:
        raise ValidationError(
            field,
            f"{field} is {size} bytes: keep it at most {ENV_VALUE_MAX_BYTES} bytes "
            "(store large data in a file or a service instead)",
        )
    return text


# ---------------------------------------------------------------------------------------------
# Processes and resources
# ---------------------------------------------------------------------------------------------


def validate_command(value: object, field: str = "command") -> tuple[str, ...]:
    """Validate a process command (argv list, or a string split like a POSIX shell); () = none."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(field, f"{field} contains a NUL character: remove it")
        try:
            value = shlex.split(value)
        except ValueError as error:
            raise ValidationError(
                field,
                f"{field} {shown(value)} cannot be split ({error}): close every quote, "
                "e.g. 'gunicorn app:app --bind \"0.0.0.0:8080\"'",
            ) from error
    if not isinstance(value, Sequence) or not all(isinstance(arg, str) for arg in value):
        raise ValidationError(
            field, f"{field} must be a list of strings or a string, e.g. ['gunicorn', 'app:app']"
        )
    return _check_argv(tuple(value), field)


def _check_argv(argv: tuple[str, ...], field: str) -> tuple[str, ...]:
    """Check argv element count, size and characters."""
    if len(argv) > COMMAND_MAX_ARGS:
        raise ValidationError(
            field,
            f"{field} has {len(argv)} arguments: use at most "
            f"{COMMAND_MAX_ARGS} (move long argument lists into a script)",
        )
    if argv and not argv[0]:
        raise ValidationError(
            field,
            f"{field} starts with an empty program name: name the program first, e.g. 'gunicorn'",
        )
    for arg in argv:
        if "\x00" in arg or len(arg) > COMMAND_ARG_MAX_LEN or not _encodable(arg):
            raise ValidationError(
                field,
                f"{field} argument {shown(arg)} is not allowed: each argument must be "
                f"UTF-8 text without NUL, at most {COMMAND_ARG_MAX_LEN} characters",
            )
    return argv


def _encodable(text: str) -> bool:
    """Return whether text encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_count(value: object, field: str = "count") -> int:
    """Validate the number of instances of a process (1-50; stop an app to run none)."""
    return _int_in_range(value, field, COUNT_RANGE, " instances")


def validate_cpu_mhz(value: object, field: str = "cpu_mhz") -> int:
    """Validate reserved CPU in MHz (100-64000)."""
    return _int_in_range(value, field, CPU_MHZ_RANGE, " MHz")


def validate_memory_mb(value: object, field: str = "memory_mb") -> int:
    """Validate reserved memory in MB (32-262144)."""
    return _int_in_range(value, field, MEMORY_MB_RANGE, " MB")


def validate_team_limit(value: object, kind: str, field: str | None = None) -> int | None:
    """Validate one of a team's limits (``kind``: cpu_mhz, memory_mb, instances, apps): a
    whole number within TEAM_LIMIT_RANGES, or None / "none" for no limit."""
    bounds, unit = TEAM_LIMIT_RANGES[kind]
    name = field or kind
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        return _int_in_range(value, name, bounds, unit)
    except ValidationError as exc:
        raise ValidationError(name, f'{exc.message}, or "none" for no limit') from None


def validate_memory_max_mb(value: object, memory_mb: int, field: str = "memory_max_mb") -> int:
    """Validate the memory hard cap: 0/None/'' for none, else from memory_mb to 262144 MB."""
    if value is None or value in ("", "0") or (type(value) is int and value == 0):
        return 0
    return _int_in_range(value, field, (memory_mb, MEMORY_MB_RANGE[1]), " MB (or 0 for none)")


def validate_duration_s(value: object, field: str, low: int = 0, high: int = 86_400) -> int:
    """Validate a duration in whole seconds within [low, high] (default up to one day)."""
    return _int_in_range(value, field, (low, high), " seconds")


def validate_release(value: object, field: str = "release") -> int:
    """Validate a release number (a positive integer)."""
    return _int_in_range(value, field, RELEASE_RANGE)
