"""Settings: defaults, overrides from the environment, clear errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from panel.config import SETTINGS_DOC, ConfigError, Settings, mask_url


def test_defaults_without_environment():
    settings = Settings.from_env(environ={})
    assert settings.bind == "127.0.0.1:8080"
    assert settings.log_format == "text"
    assert settings.queues == ("deploys", "default")
    assert settings.data_dir == Path("./var").absolute()
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir / 'helios.db'}"
    assert settings.effective_redis_url == "redis://127.0.0.1:6379/0"
    assert settings.nomad_addr == ""


def test_environment_overrides_every_field():
    env = {
        "HELIOS_DATA_DIR": "/srv/helios",
        "HELIOS_DATABASE_URL": "postgresql://h:pw@db:5432/helios",
        "HELIOS_BIND": "0.0.0.0:9000",
        "HELIOS_WEB_WORKERS": "4",
        "HELIOS_LOG_FORMAT": "JSON",
        "HELIOS_QUEUES": "a, b",
        "HELIOS_SECURE_COOKIES": "yes",
        "NOMAD_ADDR": "https://nomad:4646",
    }
    settings = Settings.from_env(environ=env)
    assert settings.data_dir == Path("/srv/helios")
    assert settings.database_url == "postgresql://h:pw@db:5432/helios"
    assert settings.bind == "0.0.0.0:9000"
    assert settings.web_workers == 4
    assert settings.log_format == "json"
    assert settings.queues == ("a", "b")
    assert settings.secure_cookies is True
    assert settings.nomad_addr == "https://nomad:4646"


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("HELIOS_WEB_WORKERS", "many", "whole number"),
        ("HELIOS_WEB_WORKERS", "0", "from 1 to 64"),
        ("HELIOS_LOG_FORMAT", "xml", "text, json"),
        ("HELIOS_BIND", "8080", "HOST:PORT"),
        ("HELIOS_SECURE_COOKIES", "maybe", "true or false"),
        ("HELIOS_QUEUES", "a b", "letters, digits"),
        ("HELIOS_QUEUES", " , ", "at least one queue"),
        ("HELIOS_DEPLOY_RETRY_DELAYS", "5,soon", "list of seconds"),
        ("HELIOS_DEPLOY_RETRY_DELAYS", "5,7200", "from 0 to 3600"),
        ("HELIOS_DEPLOY_LOCK_TTL", "1", "from 2 to 60"),
        ("NOMAD_ADDR", "127.0.0.1:4646", "write http://127.0.0.1:4646 or https://127.0.0.1:4646"),
        ("NOMAD_ADDR", "ftp://x", "use http:// or https://"),
        ("NOMAD_ADDR", "https://nomad:4646/v1", "nothing after it"),
        ("NOMAD_ADDR", "https://admin:pw@nomad:4646", "use http:// or https://"),
    ],
)
def test_bad_values_say_what_to_do(name, value, hint):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ={name: value})
    assert name in str(caught.value)
    assert hint in str(caught.value)


def test_describe_masks_secrets_and_lists_every_setting():
    settings = Settings.from_env(
        environ={
            "HELIOS_DATABASE_URL": "postgresql://helios:hunter2@db/helios",
            "HELIOS_SECRET_KEY": "s3cr3t-session",
            "NOMAD_TOKEN": "nomad-token-value",
        }
    )
    rows = settings.describe()
    assert [r[0] for r in rows] == [spec[0] for spec in SETTINGS_DOC]
    text = repr(rows)
    for secret in ("hunter2", "s3cr3t-session", "nomad-token-value"):
        assert secret not in text
    assert rows[1][:2] == ("HELIOS_DATABASE_URL", "postgresql://helios:********@db/helios")


def test_mask_url_keeps_urls_without_password():
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("redis://:pw@host:6379/0") == "redis://:********@host:6379/0"


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [spec[0] for spec in SETTINGS_DOC if f"`{spec[0]}`" not in readme]
    assert missing == []


def test_every_bad_variable_is_reported_in_one_error():
    env = {
        "HELIOS_WEB_WORKERS": "lots",
        "HELIOS_LOG_LEVEL": "loud",
        "HELIOS_SECURE_COOKIES": "maybe",
        "NOMAD_SKIP_VERIFY": "perhaps",
        "HELIOS_DEPLOY_RETRY_DELAYS": "5,7200",
        "HELIOS_QUEUES": "a b",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ=env)
    assert str(caught.value).splitlines() == [
        "HELIOS_WEB_WORKERS='lots' is not a whole number: use e.g. 1",
        "HELIOS_LOG_LEVEL='loud' is not allowed: use one of debug, info, warning, error",
        "HELIOS_QUEUES has 'a b': queue names use letters, digits, '-' and '_'",
        "HELIOS_SECURE_COOKIES='maybe' is not a boolean: use true or false",
        "NOMAD_SKIP_VERIFY='perhaps' is not a boolean: use true or false",
        "HELIOS_DEPLOY_RETRY_DELAYS=7200 is out of range: use a number from 0 to 3600",
    ]


def test_checks_across_settings_are_reported_with_the_rest():
    env = {
        "HELIOS_STREAM_MAX": "1000",
        "HELIOS_DEPLOY_PROGRESS_DEADLINE": "300",
        "HELIOS_BIND": "8080",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ=env)
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert "HELIOS_BIND='8080' is not HOST:PORT" in lines[0]
    assert "HELIOS_STREAM_MAX=1000 leaves no connection" in lines[1]
    assert "HELIOS_DEPLOY_PROGRESS_DEADLINE must exceed" in lines[2]


def test_a_single_bad_value_keeps_the_message_as_written():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ={"HELIOS_WEB_WORKERS": " lots"})
    assert str(caught.value) == "HELIOS_WEB_WORKERS=' lots' is not a whole number: use e.g. 1"


def test_every_setting_has_a_variable_and_help_text():
    assert len(SETTINGS_DOC) == len(Settings.model_fields)
    assert len({doc.env for doc in SETTINGS_DOC}) == len(SETTINGS_DOC)
    for doc in SETTINGS_DOC:
        assert doc.env.startswith(("HELIOS_", "NOMAD_")), doc
        assert len(doc.help) > 5 and doc.help.endswith("."), doc
        assert Settings.model_fields[doc.field].description == doc.help


def test_describe_masks_every_secret():
    secrets = [doc for doc in SETTINGS_DOC if doc.secret]
    assert {doc.env for doc in secrets} >= {
        "HELIOS_DATABASE_URL",
        "HELIOS_REDIS_URL",
        "HELIOS_SECRET_KEY",
        "HELIOS_ENCRYPTION_KEY",
        "HELIOS_GITHUB_CLIENT_SECRET",
        "NOMAD_TOKEN",
    }
    env = {doc.env: f"value-of-{doc.field}" for doc in secrets}
    env["HELIOS_REDIS_URL"] = "redis://:redis-pw@cache:6379/0"
    settings = Settings.from_env(environ=env)
    shown = {name: value for name, value, _help in settings.describe()}
    for doc in secrets:
        assert "value-of-" not in shown[doc.env]
        assert shown[doc.env]
    assert shown["HELIOS_REDIS_URL"] == "redis://:********@cache:6379/0"
    assert shown["HELIOS_SECRET_KEY"] == "********"
    assert "value-of-" not in repr(settings) and "redis-pw" not in repr(settings)
    assert shown["HELIOS_BIND"] == "127.0.0.1:8080"  # not secret, shown as is


def test_settings_are_immutable_hashable_and_compare_by_value():
    one, two = Settings.from_env(environ={}), Settings.from_env(environ={})
    assert one == two and hash(one) == hash(two)
    with pytest.raises(ValueError, match="frozen"):
        one.web_workers = 3  # type: ignore[misc]
    changed = one.replace(web_workers=3)
    assert changed.web_workers == 3 and one.web_workers == 2 and changed != one


def test_overrides_and_replace_are_checked_like_the_environment():
    settings = Settings.from_env(environ={"HELIOS_WEB_CONNECTIONS": "lots"}, web_connections=100)
    assert settings.web_connections == 100 and settings.stream_max == 90
    with pytest.raises(ConfigError, match="HELIOS_WEB_WORKERS=0 is out of range"):
        settings.replace(web_workers=0)
    with pytest.raises(ConfigError, match="below HELIOS_WEB_CONNECTIONS=90"):
        settings.replace(web_connections=90)
    with pytest.raises(TypeError, match="no_such_setting"):
        settings.replace(no_such_setting=1)


def test_lists_and_addresses_are_normalised():
    settings = Settings.from_env(
        environ={
            "HELIOS_GITHUB_ORGS": " Acme, ,Widgets ",
            "HELIOS_GITHUB_URL": "https://ghe.example.com/",
            "HELIOS_NOMAD_DATACENTERS": "eu-1, eu-2",
            "HELIOS_DEPLOY_RETRY_DELAYS": " 1 , 2 ",
            "HELIOS_EXTERNAL_URL": "https://helios.example.com/",
            "HELIOS_STREAM_MAX": " ",
        }
    )
    assert settings.github_orgs == ("acme", "widgets")
    assert settings.github_url == "https://ghe.example.com"
    assert settings.nomad_datacenters == ("eu-1", "eu-2")
    assert settings.deploy_retry_delays == (1, 2)
    assert settings.effective_external_url == "https://helios.example.com"
    assert settings.stream_max == 900


def test_the_consul_address_needs_a_scheme_and_its_token_is_secret():
    settings = Settings.from_env(
        environ={
            "HELIOS_CONSUL_ADDR": "https://consul.internal:8501/",
            "HELIOS_CONSUL_TOKEN": "t0k",
        }
    )
    assert settings.consul_addr == "https://consul.internal:8501"
    assert "t0k" not in repr(settings)
    assert dict((n, v) for n, v, _ in settings.describe())["HELIOS_CONSUL_TOKEN"] == "********"
    for value, hint in [
        ("consul:8500", "write http://consul:8500 or https://consul:8500"),
        ("https://consul:8501/v1", "nothing after it"),
        ("https://t0k@consul:8501", "use http:// or https://"),
    ]:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(environ={"HELIOS_CONSUL_ADDR": value})
        assert str(caught.value).startswith(f"HELIOS_CONSUL_ADDR={value!r} is not Consul's HTTP")
        assert hint in str(caught.value)
    assert Settings.from_env(environ={}).consul_addr == ""  # empty: checks are not read
