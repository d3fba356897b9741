"""Edge validators: table-driven good and bad values for every user field."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from panel import validation as v
from panel.validation import ValidationError

SHA = "0123456789abcdef" * 4
CUSTOM = partial(v.validate_custom_domain, base_domain="apps.localhost")
FIX_WORDS = (
    "use ",
    "remove",
    "e.g.",
    "keep",
    "pick",
    "write",
    "add ",
    "close",
    "name ",
    "re-enter",
    "leave",
    "start",
    "move",
    "at most",
)

# (validator, raw value, normalised value)
GOOD: list[tuple[Callable[..., Any], Any, Any]] = [
    (v.validate_slug, "a", "a"),
    (v.validate_slug, "my-app", "my-app"),
    (v.validate_slug, "app2", "app2"),
    (v.validate_slug, "a" * 63, "a" * 63),
    (v.validate_datacenter, "dc1", "dc1"),
    (v.validate_datacenter, "eu-west_1.a", "eu-west_1.a"),
    (v.validate_image, "nginx", "nginx"),
    (v.validate_image, "app--x", "app--x"),
    (v.validate_image, "nginx:1.27", "nginx:1.27"),
    (v.validate_image, "library/nginx:1.27-alpine", "library/nginx:1.27-alpine"),
    (v.validate_image, "registry.local/shop:42", "registry.local/shop:42"),
    (
        v.validate_image,
        "localhost:5000/team/app_x__y.z-w:v1",
        "localhost:5000/team/app_x__y.z-w:v1",
    ),
    (v.validate_image, "ghcr.io/octo-org/app", "ghcr.io/octo-org/app"),
    (v.validate_image, f"r.io/app@sha256:{SHA}", f"r.io/app@sha256:{SHA}"),
    (v.validate_image, f"r.io:443/a/b:tag@sha256:{SHA}", f"r.io:443/a/b:tag@sha256:{SHA}"),
    (v.validate_repo, "octo-org/my-app", "octo-org/my-app"),
    (v.validate_repo, "Octo/My.App_2", "Octo/My.App_2"),
    (v.validate_repo, "octo/app.git", "octo/app"),
    (v.validate_branch, "main", "main"),
    (v.validate_branch, "release/1.2", "release/1.2"),
    (v.validate_branch, "feature/ABC-12_x", "feature/ABC-12_x"),
    (v.validate_git_sha, "", ""),
    (v.validate_git_sha, "3f2a9c1", "3f2a9c1"),
    (v.validate_git_sha, SHA[:40], SHA[:40]),
    (v.validate_domain, "example.com", "example.com"),
    (v.validate_domain, "WWW.Example.COM", "www.example.com"),
    (v.validate_domain, "a-b.c1.example.org", "a-b.c1.example.org"),
    (v.validate_domain, "xn--bcher-kva.example", "xn--bcher-kva.example"),
    (v.validate_domain, "app.localhost", "app.localhost"),
    (v.validate_domain, ("a" * 63 + ".") * 3 + "b" * 61, ("a" * 63 + ".") * 3 + "b" * 61),
    (v.validate_health_path, "/", "/"),
    (CUSTOM, "WWW.Example.COM", "www.example.com"),
    (CUSTOM, "apps.localhost.example.com", "apps.localhost.example.com"),
    (CUSTOM, "myapps.localhost", "myapps.localhost"),  # a sibling name, not under the base
    (v.validate_panel_url, "https://helios.example.com/", "https://helios.example.com"),
    (v.validate_panel_url, "http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    (v.validate_panel_url, "http://localhost", "http://localhost"),
    (v.validate_panel_url, "http://[::1]:8080/panel", "http://[::1]:8080/panel"),
    (v.validate_health_path, "/healthz", "/healthz"),
    (v.validate_health_path, "/api/v1/health.json", "/api/v1/health.json"),
    (v.validate_health_path, "/health?full=1&x=%2F", "/health?full=1&x=%2F"),
    (v.validate_health_path, "/~user/a_b-c", "/~user/a_b-c"),
    (v.validate_port, 1, 1),
    (v.validate_port, 8080, 8080),
    (v.validate_port, "65535", 65535),
    (v.validate_env_key, "DATABASE_URL", "DATABASE_URL"),
    (v.validate_env_key, "_X", "_X"),
    (v.validate_env_key, "A" * 128, "A" * 128),
    (v.validate_env_key, "NOMAD", "NOMAD"),
    (v.validate_env_value, "", ""),
    (v.validate_env_value, "postgres://u:p@db/app?x=1", "postgres://u:p@db/app?x=1"),
    (
        v.validate_env_value,
        '{{ .V }} ${NOMAD_TOKEN} `x` "q"\n☃',
        '{{ .V }} ${NOMAD_TOKEN} `x` "q"\n☃',
    ),
    (v.validate_env_value, "x" * 32768, "x" * 32768),
    (v.validate_command, "", ()),
    (v.validate_command, None, ()),
    (v.validate_command, [], ()),
    (
        v.validate_command,
        "gunicorn app:app -b '0.0.0.0:8080'",
        ("gunicorn", "app:app", "-b", "0.0.0.0:8080"),
    ),
    (
        v.validate_command,
        ["rq", "worker", "--url", "${REDIS_URL}"],
        ("rq", "worker", "--url", "${REDIS_URL}"),
    ),
    (v.validate_command, ("sh", "-c", ""), ("sh", "-c", "")),
    (v.validate_count, 1, 1),
    (v.validate_count, "50", 50),
    (v.validate_cpu_mhz, 100, 100),
    (v.validate_cpu_mhz, 64000, 64000),
    (v.validate_memory_mb, 32, 32),
    (v.validate_memory_mb, 262144, 262144),
    (partial(v.validate_memory_max_mb, memory_mb=256), 0, 0),
    (partial(v.validate_memory_max_mb, memory_mb=256), None, 0),
    (partial(v.validate_memory_max_mb, memory_mb=256), "", 0),
    (partial(v.validate_memory_max_mb, memory_mb=256), 256, 256),
    (partial(v.validate_memory_max_mb, memory_mb=256), "1024", 1024),
    (v.validate_release, 1, 1),
    (partial(v.validate_duration_s, field="min_healthy_time_s"), 0, 0),
    (partial(v.validate_duration_s, field="min_healthy_time_s"), 86400, 86400),
    (partial(v.validate_team_limit, kind="memory_mb"), "2048", 2048),
    (partial(v.validate_team_limit, kind="apps"), 10_000, 10_000),
    (partial(v.validate_team_limit, kind="cpu_mhz"), "none", None),
    (partial(v.validate_team_limit, kind="instances"), None, None),
]

# (validator, field name expected in the message, raw value)
BAD: list[tuple[Callable[..., Any], str, Any]] = [
    (v.validate_slug, "slug", "My App"),
    (v.validate_slug, "slug", ""),
    (v.validate_slug, "slug", "1app"),
    (v.validate_slug, "slug", "app-"),
    (v.validate_slug, "slug", "-app"),
    (v.validate_slug, "slug", "my--app"),
    (v.validate_slug, "slug", "a" * 64),
    (v.validate_slug, "slug", "app\n"),
    (v.validate_slug, "slug", "app_x"),
    (v.validate_slug, "slug", "appé"),
    (v.validate_slug, "slug", None),
    (v.validate_slug, "slug", 42),
    (partial(v.validate_slug, field="team"), "team", "Team!"),
    (v.validate_datacenter, "datacenter", "*"),
    (v.validate_datacenter, "datacenter", "dc 1"),
    (v.validate_datacenter, "datacenter", ""),
    (v.validate_image, "image", ""),
    (v.validate_image, "image", "Nginx"),
    (v.validate_image, "image", "nginx:"),
    (v.validate_image, "image", "nginx latest"),
    (v.validate_image, "image", " nginx"),
    (v.validate_image, "image", "nginx\n"),
    (v.validate_image, "image", "nginx:${TAG}"),
    (v.validate_image, "image", "nginx:{{ .tag }}"),
    (v.validate_image, "image", "nginx:'1'"),
    (v.validate_image, "image", 'nginx:"1"'),
    (v.validate_image, "image", "nginx:-x"),
    (v.validate_image, "image", "nginx:" + "a" * 129),
    (v.validate_image, "image", "r.io/app@sha256:abc"),
    (v.validate_image, "image", f"r.io/app@md5:{SHA}"),
    (v.validate_image, "image", "r.io//app"),
    (v.validate_image, "image", "r.io/app/"),
    (v.validate_image, "image", "a" * 513),
    (v.validate_image, "image", "r.io/" + "a/" * 130 + "a"),
    (v.validate_image, "image", "https://r.io/app"),
    (v.validate_image, "image", b"nginx"),
    (v.validate_repo, "repo", "octo"),
    (v.validate_repo, "repo", "octo/"),
    (v.validate_repo, "repo", "/app"),
    (v.validate_repo, "repo", "octo/app/x"),
    (v.validate_repo, "repo", "-octo/app"),
    (v.validate_repo, "repo", "oc--to/app"),
    (v.validate_repo, "repo", "octo/.."),
    (v.validate_repo, "repo", "octo/a b"),
    (v.validate_repo, "repo", "https://github.com/octo/app"),
    (v.validate_repo, "repo", "a" * 40 + "/app"),
    (v.validate_branch, "branch", ""),
    (v.validate_branch, "branch", "-rf"),
    (v.validate_branch, "branch", "a..b"),
    (v.validate_branch, "branch", "a/"),
    (v.validate_branch, "branch", "/a"),
    (v.validate_branch, "branch", "a//b"),
    (v.validate_branch, "branch", ".hidden"),
    (v.validate_branch, "branch", "a/.b"),
    (v.validate_branch, "branch", "x.lock"),
    (v.validate_branch, "branch", "a.lock/b"),
    (v.validate_branch, "branch", "a."),
    (v.validate_branch, "branch", "HEAD"),
    (v.validate_branch, "branch", "a@{1}"),
    (v.validate_branch, "branch", "a b"),
    (v.validate_branch, "branch", "a~1"),
    (v.validate_branch, "branch", "a:b"),
    (v.validate_branch, "branch", "a" * 256),
    (v.validate_git_sha, "git_sha", "XYZ"),
    (v.validate_git_sha, "git_sha", "abc"),
    (v.validate_git_sha, "git_sha", SHA[:40].upper()),
    (v.validate_git_sha, "git_sha", SHA),
    (v.validate_domain, "domain", "localhost"),
    (v.validate_domain, "domain", "example.com."),
    (v.validate_domain, "domain", "*.example.com"),
    (v.validate_domain, "domain", "-a.example.com"),
    (v.validate_domain, "domain", "a-.example.com"),
    (v.validate_domain, "domain", "a..example.com"),
    (v.validate_domain, "domain", ".example.com"),
    (v.validate_domain, "domain", "a_b.example.com"),
    (v.validate_domain, "domain", "a.example.com/x"),
    (v.validate_domain, "domain", "a.example.com`) || Host(`evil.com"),
    (v.validate_domain, "domain", "bücher.example"),
    (v.validate_domain, "domain", "\u212aa.example.com"),  # Kelvin sign lowercases to 'k'
    (v.validate_domain, "domain", "1.2.3.4"),
    (v.validate_domain, "domain", "a" * 64 + ".com"),
    (v.validate_domain, "domain", ("a" * 63 + ".") * 3 + "b" * 62),
    (v.validate_domain, "domain", "ab--cd.example.com"),
    (v.validate_domain, "domain", "example.com\n"),
    (v.validate_domain, "domain", ""),
    (CUSTOM, "domain", "x.apps.localhost"),
    (CUSTOM, "domain", "apps.localhost"),
    (CUSTOM, "domain", "WEB.APPS.LOCALHOST"),
    (CUSTOM, "domain", "not a domain"),
    (v.validate_panel_url, "url", "ftp://example.com"),
    (v.validate_panel_url, "url", "example.com"),
    (v.validate_panel_url, "url", "http://"),
    (v.validate_panel_url, "url", "http://user:pass@example.com"),
    (v.validate_panel_url, "url", "http://example.com/?next=x"),
    (v.validate_panel_url, "url", "http://example.com/#x"),
    (v.validate_panel_url, "url", "http://example.com:99999"),
    (v.validate_panel_url, "url", "http://exa mple.com"),
    (v.validate_panel_url, "url", "http://example.com/\r\nX: y"),
    (v.validate_panel_url, "url", "http://ex\udcffample.com"),
    (v.validate_panel_url, "url", "http://example.com/{{ x }}"),
    (v.validate_health_path, "health_path", ""),
    (v.validate_health_path, "health_path", "healthz"),
    (v.validate_health_path, "health_path", "/a b"),
    (v.validate_health_path, "health_path", "/${NOMAD_TOKEN}"),
    (v.validate_health_path, "health_path", "/{{ x }}"),
    (v.validate_health_path, "health_path", "/a#frag"),
    (v.validate_health_path, "health_path", "/a?b?c"),
    (v.validate_health_path, "health_path", "/%zz"),
    (v.validate_health_path, "health_path", "/a\n"),
    (v.validate_health_path, "health_path", '/"x"'),
    (v.validate_health_path, "health_path", "http://x/health"),
    (v.validate_health_path, "health_path", "/" + "a" * 256),
    (v.validate_port, "port", 0),
    (v.validate_port, "port", 65536),
    (v.validate_port, "port", -1),
    (v.validate_port, "port", True),
    (v.validate_port, "port", 80.0),
    (v.validate_port, "port", "80x"),
    (v.validate_port, "port", " 80"),
    (v.validate_port, "port", "٨٠"),  # Arabic-Indic digits: int() would accept them
    (v.validate_env_key, "env key", ""),
    (v.validate_env_key, "env key", "lower"),
    (v.validate_env_key, "env key", "1ABC"),
    (v.validate_env_key, "env key", "A-B"),
    (v.validate_env_key, "env key", "A B"),
    (v.validate_env_key, "env key", "A\n"),
    (v.validate_env_key, "env key", "A" * 129),
    (v.validate_env_key, "env key", "NOMAD_TOKEN"),
    (v.validate_env_key, "env key", "HELIOS_APP"),
    (v.validate_env_value, "env value", "a\x00b"),
    (v.validate_env_value, "env value", "x" * 32769),
    (v.validate_env_value, "env value", "é" * 16385),  # 32770 bytes of UTF-8
    (v.validate_env_value, "env value", "\ud800"),
    (v.validate_env_value, "env value", 5),
    (v.validate_env_value, "env value", None),
    (v.validate_command, "command", "echo 'unterminated"),
    (v.validate_command, "command", "a\x00b"),
    (v.validate_command, "command", ["a\x00"]),
    (v.validate_command, "command", ["ok", 1]),
    (v.validate_command, "command", ["", "x"]),
    (v.validate_command, "command", ["x" * 4097]),
    (v.validate_command, "command", ["x"] * 257),
    (v.validate_command, "command", 42),
    (v.validate_count, "count", 0),
    (v.validate_count, "count", 51),
    (v.validate_count, "count", "two"),
    (v.validate_cpu_mhz, "cpu_mhz", 99),
    (v.validate_cpu_mhz, "cpu_mhz", 64001),
    (v.validate_memory_mb, "memory_mb", 31),
    (v.validate_memory_mb, "memory_mb", 262145),
    (v.validate_memory_mb, "memory_mb", None),
    (partial(v.validate_memory_max_mb, memory_mb=256), "memory_max_mb", 128),
    (partial(v.validate_memory_max_mb, memory_mb=256), "memory_max_mb", 262145),
    (partial(v.validate_memory_max_mb, memory_mb=256), "memory_max_mb", -1),
    (partial(v.validate_memory_max_mb, memory_mb=256), "memory_max_mb", False),
    (v.validate_release, "release", 0),
    (v.validate_release, "release", "r1"),
    (partial(v.validate_duration_s, field="healthy_deadline_s"), "healthy_deadline_s", 86401),
    (partial(v.validate_team_limit, kind="memory_mb"), "memory_mb", 0),
    (partial(v.validate_team_limit, kind="apps"), "apps", 10_001),
    (partial(v.validate_team_limit, kind="instances"), "instances", "lots"),
    (partial(v.validate_team_limit, kind="cpu_mhz"), "cpu_mhz", -5),
]


def _name(func: Callable[..., Any]) -> str:
    """The validator's function name (through functools.partial)."""
    return (func.func if isinstance(func, partial) else func).__name__


def _id(func: Callable[..., Any], raw: Any) -> str:
    """Readable test id: validator name and a short repr of the value."""
    return f"{_name(func)}-{repr(raw)[:30]}"


@pytest.mark.parametrize(
    ("validator", "raw", "expected"), GOOD, ids=[_id(func, raw) for func, raw, _ in GOOD]
)
def test_good_values_are_accepted_and_normalised(
    validator: Callable[..., Any], raw: Any, expected: Any
) -> None:
    assert validator(raw) == expected


@pytest.mark.parametrize(
    ("validator", "field", "raw"), BAD, ids=[_id(func, raw) for func, _, raw in BAD]
)
def test_bad_values_are_refused_with_field_and_fix(
    validator: Callable[..., Any], field: str, raw: Any
) -> None:
    with pytest.raises(ValidationError) as caught:
        validator(raw)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.message == str(error)
    assert field in error.message
    assert any(word in error.message for word in FIX_WORDS), error.message
    assert len(error.message) < 400


def test_every_public_validator_has_good_and_bad_cases() -> None:
    public = {name for name in v.__all__ if name.startswith("validate_")}
    assert public <= {_name(case[0]) for case in GOOD}
    assert public <= {_name(case[0]) for case in BAD}


def test_env_value_is_never_echoed_in_messages() -> None:
    secret = "hunter2-" + "x" * 40000
    with pytest.raises(ValidationError) as caught:
        v.validate_env_value(secret)
    assert "hunter2" not in caught.value.message


def test_long_rejected_values_are_shortened_in_messages() -> None:
    with pytest.raises(ValidationError) as caught:
        v.validate_slug("B" * 5000)
    assert len(caught.value.message) < 300


def test_reserved_env_prefix_message_suggests_a_name() -> None:
    with pytest.raises(ValidationError, match="APP_TOKEN"):
        v.validate_env_key("NOMAD_TOKEN")


def test_command_string_is_split_like_a_posix_shell() -> None:
    assert v.validate_command('python -c "print(1)"  --flag') == (
        "python",
        "-c",
        "print(1)",
        "--flag",
    )
