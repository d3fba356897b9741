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
