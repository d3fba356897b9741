"""App manifests: the documented example loads and renders a valid job; bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from panel.config import Settings
from panel.render.nomad import render_job
from panel.schema.manifest import FIELDS, ManifestError, load_manifest
from panel.spec import AppSpec

from nomad_double import NOMAD_SPEC, REPO_ROOT, reference_file
from nomad_double.schema import load_strict_spec, validate_body

SPEC_PATH = reference_file(NOMAD_SPEC)

EXAMPLE = REPO_ROOT / "docs" / "app.example.toml"
DOCS = REPO_ROOT / "docs" / "manifest.md"
MINIMAL = 'slug = "shop"\nimage = "nginx:1.27"\n'


@pytest.fixture
def settings() -> Settings:
    """Settings with a non-default policy, so tests can tell where each value came from."""
    return Settings.from_env(
        environ={
            "HELIOS_BASE_DOMAIN": "apps.example.net",
            "HELIOS_NOMAD_DATACENTERS": "eu-1,eu-2",
            "HELIOS_DEPLOY_AUTO_PROMOTE": "false",
            "HELIOS_TLS_CERTRESOLVER": "",
        }
    )


def write(tmp_path: Path, text: str, name: str = "app.toml") -> Path:
    """Write a manifest into the test's directory."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads_and_renders_a_strictly_valid_job(settings: Settings) -> None:
    """docs/app.example.toml sets every key; its job passes the strict Nomad schema."""
    spec = load_manifest(EXAMPLE, settings)
    assert (spec.slug, spec.team, spec.release, spec.git_sha) == ("shop", "acme", 7, "3f2a9c1")
    assert spec.web.command == ("gunicorn", "app:app", "--bind", "0.0.0.0:5000")
    assert (spec.web.count, spec.port, spec.memory_max_mb) == (2, 5000, 512)
    assert spec.secret_keys == ("DATABASE_PASSWORD", "STRIPE_API_KEY")
    assert dict(spec.env)["WEB_CONCURRENCY"] == "4"
    assert spec.all_domains == ("shop.apps.example.net", "shop.example.com", "www.shop.example.com")
    body = render_job(spec)
    assert validate_body(body, "JobRegisterRequest", load_strict_spec(SPEC_PATH)) == []


def test_example_sets_every_key_and_the_docs_describe_every_key(settings: Settings) -> None:
    """Adding a manifest key without documenting it (or showing it) fails here."""
    import tomllib

    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(example) == set(FIELDS)
    docs = DOCS.read_text(encoding="utf-8")
    for key in FIELDS:
        assert f"| `{key}` |" in docs, f"docs/manifest.md does not describe {key!r}"


def test_minimal_manifest_uses_defaults_and_policy_from_settings(
    tmp_path: Path, settings: Settings
) -> None:
    """Only slug and image: every other field is AppSpec's default; policy is the settings'."""
    spec = load_manifest(write(tmp_path, MINIMAL), settings)
    defaults = AppSpec(slug="shop", team="t", image="nginx:1.27", release=1, base_domain="x.y")
    for name in ("port", "health_path", "cpu_mhz", "memory_mb", "memory_max_mb", "processes"):
        assert getattr(spec, name) == getattr(defaults, name)
    assert (spec.team, spec.release, spec.git_sha) == ("default", 1, "")
    assert (spec.env, spec.secret_keys, spec.domains) == ((), (), ())
    assert spec.base_domain == "apps.example.net"
    assert spec.datacenters == ("eu-1", "eu-2")
    assert spec.auto_promote is False
    assert spec.certresolver == ""


def test_command_as_a_string_is_split_like_a_shell(tmp_path: Path, settings: Settings) -> None:
    """command = "..." becomes argv; an empty command runs the image's default."""
    text = MINIMAL + "command = \"gunicorn app:app --bind '0.0.0.0:8080'\"\n"
    spec = load_manifest(write(tmp_path, text), settings)
    assert spec.web.command == ("gunicorn", "app:app", "--bind", "0.0.0.0:8080")
    empty = load_manifest(write(tmp_path, MINIMAL + 'command = ""\n', "empty.toml"), settings)
    assert empty.web.command == ()


BAD_MANIFESTS = [
    # (id, manifest text, expected field, fragments the message must contain)
    (
        "syntax-unquoted-string",
        'slug = "shop"\nimage = nginx:1.27\n',
        "",
        ["line 2, column 9", "TOML syntax error", "strings need double quotes"],
    ),
    (
        "syntax-unterminated-string",
        'slug = "shop"\nimage = "nginx:1.27\n',
        "",
        ["line 2, column 20", "close the string with a matching quote"],
    ),
    (
        "syntax-duplicate-key",
        'slug = "shop"\nslug = "cart"\nimage = "nginx"\n',
        "",
        ["line 2", "may appear only once"],
    ),
    (
        "unknown-key-close-to-a-known-one",
        MINIMAL + "prot = 5000\n",
        "prot",
        ["unknown key 'prot'", "did you mean 'port'?", "allowed keys are slug, image, team"],
    ),
    (
        "unknown-key",
        MINIMAL + "[[processes]]\nname = 'worker'\n",
        "processes",
        ["unknown key 'processes'", "allowed keys are", "secrets"],
    ),
    ("missing-image", 'slug = "shop"\n', "image", ["missing required key 'image'", "image = "]),
    (
        "port-as-string",
        MINIMAL + 'port = "5000"\n',
        "port",
        ["port must be a whole number, not a string", "port = 5000"],
    ),
    ("count-as-float", MINIMAL + "count = 2.0\n", "count", ["not a float"]),
    ("count-as-boolean", MINIMAL + "count = true\n", "count", ["not a boolean"]),
    ("domains-as-string", MINIMAL + 'domains = "a.example"\n', "domains", ["a list of strings"]),
    (
        "command-with-a-number",
        MINIMAL + 'command = ["sleep", 5]\n',
        "command",
        ["a string or a list of strings", "non-string item"],
    ),
    (
        "bad-slug",
        'slug = "My App"\nimage = "nginx"\n',
        "slug",
        ["slug 'My App' is not allowed", "lowercase letters"],
    ),
    ("count-out-of-range", MINIMAL + "count = 51\n", "count", ["from 1 to 50"]),
    (
        "memory-cap-below-reservation",
        MINIMAL + "memory_max_mb = 100\n",
        "memory_max_mb",
        ["memory_max_mb 100 is out of range", "from 256"],
    ),
    (
        "secret-values-table",
        MINIMAL + '[secrets]\nDATABASE_PASSWORD = "hunter2"\n',
        "secrets",
        ["never holds secret values", "helios env set shop KEY=VALUE --secret"],
    ),
    (
        "secret-value-in-the-list",
        MINIMAL + 'secrets = ["API_KEY=hunter2"]\n',
        "secrets",
        ["names only", "helios env set shop KEY=VALUE --secret"],
    ),
    (
        "secret-name-invalid",
        MINIMAL + 'secrets = ["api-key"]\n',
        "secrets",
        ["secret name 'api-key' is not allowed"],
    ),
    (
        "env-integer-value",
        MINIMAL + "[env]\nWORKERS = 4\n",
        "env",
        ["env.WORKERS is an integer", 'quote it, e.g. WORKERS = "4"'],
    ),
    (
        "env-boolean-value",
        MINIMAL + "[env]\nDEBUG = false\n",
        "env",
        ['DEBUG = "false"'],
    ),
    (
        "env-reserved-key",
        MINIMAL + '[env]\nNOMAD_ADDR = "x"\n',
        "env",
        ["env key 'NOMAD_ADDR' is reserved"],
    ),
    (
        "env-and-secret-with-one-name",
        MINIMAL + 'secrets = ["TOKEN"]\n[env]\nTOKEN = "x"\n',
        "env",
        ["both plain and secret"],
    ),
    (
        "domain-invalid",
        MINIMAL + 'domains = ["shop_example.com"]\n',
        "domains",
        ["domain 'shop_example.com' is not allowed", "app.example.com"],
    ),
    (
        "domain-wildcard",
        MINIMAL + 'domains = ["*.example.com"]\n',
        "domains",
        ["wildcard"],
    ),
    (
        "domain-under-the-platform-domain",
        MINIMAL + 'domains = ["other.apps.example.net"]\n',
        "domains",
        ["under the platform domain"],
    ),
]


@pytest.mark.parametrize(
    ("text", "field", "fragments"),
    [pytest.param(text, field, hints, id=case) for case, text, field, hints in BAD_MANIFESTS],
)
def test_bad_manifest_says_what_and_how(
    tmp_path: Path, settings: Settings, text: str, field: str, fragments: list[str]
) -> None:
    """Each bad manifest is refused with the file name first, the key, and a hint."""
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, settings)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert info.value.field == field
    for fragment in fragments:
        assert fragment in message
    assert "hunter2" not in message  # a secret value is never echoed


def test_unreadable_and_non_utf8_files(tmp_path: Path, settings: Settings) -> None:
    """A missing file and a file that is not UTF-8 are ManifestErrors too."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ManifestError, match=r"nope\.toml: cannot read the manifest"):
        load_manifest(missing, settings)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(MINIMAL.encode() + b'[env]\nCITY = "M\xfcnchen"\n')
    with pytest.raises(ManifestError, match="save the file as UTF-8"):
        load_manifest(latin1, settings)


def test_a_bad_setting_is_blamed_on_the_setting(tmp_path: Path, settings: Settings) -> None:
    """Policy values come from settings; when one is unusable the error names the variable."""
    bad = settings.replace(base_domain="not a domain")
    with pytest.raises(ManifestError, match="HELIOS_BASE_DOMAIN, not from the manifest"):
        load_manifest(write(tmp_path, MINIMAL), bad)


# ---------------------------------------------------------------------------------------------
# helios.toml in a repository: release settings only, the app schema's rules, the file wins
# ---------------------------------------------------------------------------------------------

PANEL_SETTINGS = {
    "image": None, "repo": "acme/shop", "branch": "main", "command": "", "port": 8080,
    "health_path": "/healthz", "count": 1, "cpu_mhz": 250, "memory_mb": 256, "memory_max_mb": 0,
}  # fmt: skip


def test_a_repository_file_sets_release_settings_and_wins():
    from panel.schema.manifest import effective_settings, read_repo_settings

    given = read_repo_settings(
        'port = 5000\ncommand = ["gunicorn", "app:app"]\nhealth_path = "/up"\ncount = 2\n'
    )
    assert given == {"port": 5000, "command": "gunicorn app:app", "health_path": "/up", "count": 2}
    merged, sources = effective_settings(PANEL_SETTINGS, given)
    assert (merged["port"], merged["count"], merged["memory_mb"]) == (5000, 2, 256)
    assert sources["port"] == "helios.toml" and sources["memory_mb"] == "panel"


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ('image = "nginx:1"\n', "image", "may set command, port"),
        ("prot = 80\n", "prot", "did you mean 'port'?"),
        ('port = "80"\n', "port", "must be a whole number"),
        ("port = 70000\n", "port", "out of range"),
        ("count = 0\n", "count", "out of range"),
        ('health_path = "up"\n', "health_path", "health_path"),
        ("port = \n", "", "TOML syntax error"),
    ],
)
def test_a_bad_repository_file_names_the_key_and_the_fix(text, field, says):
    from panel.schema.manifest import ManifestError, read_repo_settings

    with pytest.raises(ManifestError) as info:
        read_repo_settings(text)
    assert str(info.value).startswith("helios.toml: ")
    assert info.value.field == field
    assert says in str(info.value)


def test_the_merged_settings_are_checked_whole():
    from panel.schema.manifest import ManifestError, effective_settings, read_repo_settings

    given = read_repo_settings("memory_max_mb = 128\n")  # below the panel's 256 MB reservation
    with pytest.raises(ManifestError) as info:
        effective_settings(PANEL_SETTINGS, given)
    assert info.value.field == "memory_max_mb"
    assert str(info.value).startswith("helios.toml: memory_max_mb 128 is out of range")
