"""The data model on SQLite and PostgreSQL: constraints, secrets at rest, hashed tokens."""

from __future__ import annotations

import peewee as pw
import pytest

from panel.actions.accounts import authenticate, bootstrap_admin, create_user
from panel.actions.common import ActionError
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError, hash_token, new_token
from panel.db import migrate_up, open_database
from panel.models import (
    ApiToken,
    App,
    Deployment,
    DeploymentStatus,
    EnvVar,
    Membership,
    Release,
    Role,
    Team,
    User,
)


@pytest.fixture
def model_db(any_database_url):
    database = open_database(any_database_url)
    migrate_up()
    with database.connection_context():
        yield database
    database.close()


def _app(team: Team, slug: str = "web") -> App:
    return App.create(team=team, slug=slug, image="nginx:1.27")


def test_user_team_membership(model_db):
    user = create_user("Dev@Example.com", "correct horse battery", team_slug="acme")
    membership = Membership.get(Membership.user == user)
    assert user.email == "dev@example.com"
    assert membership.team.slug == "acme"
    assert membership.role == Role.OWNER
    assert user.password_hash and "correct horse" not in user.password_hash
    assert authenticate("dev@example.com", "correct horse battery") == user
    assert authenticate("dev@example.com", "wrong password!!") is None
    with pytest.raises(ActionError, match="exists already"):
        create_user("dev@example.com", "another long password")
    with pytest.raises(ActionError, match="at least 12"):
        create_user("x@example.com", "short")
    with pytest.raises(ActionError, match="not an email"):
        create_user("not-an-email", "long enough password")


def test_bootstrap_admin_only_once(model_db):
    first = bootstrap_admin()
    assert first is not None and len(first.password) >= 20
    assert authenticate(first.email, first.password).is_operator
    assert bootstrap_admin() is None
    assert User.select().count() == 1


def test_unique_and_foreign_keys_are_enforced(model_db):
    team = Team.create(slug="acme", name="Acme")
    app = _app(team)
    with pytest.raises(pw.IntegrityError), model_db.atomic():
        _app(team)  # slug is unique
    with pytest.raises(pw.IntegrityError), model_db.atomic():
        App.create(team=9999, slug="orphan", image="x")  # no such team
    EnvVar.create(app=app, key="PORT", value="80")
    with pytest.raises(pw.IntegrityError), model_db.atomic():
        EnvVar.create(app=app, key="PORT", value="81")
    release = Release.create(app=app, number=1, image="nginx:1.27", config={"count": 1})
    with pytest.raises(pw.IntegrityError), model_db.atomic():
        Release.create(app=app, number=1, image="nginx:1.28")
    deployment = Deployment.create(app=app, release=release)
    assert deployment.status == DeploymentStatus.QUEUED
    assert Release.get_by_id(release.id).config == {"count": 1}
    app.delete_instance()  # cascades to env vars, releases, deployments
    assert EnvVar.select().count() == Release.select().count() == Deployment.select().count() == 0


def test_secret_values_are_encrypted_at_rest(model_db, tmp_path):
    settings = Settings.from_env(environ={}, data_dir=tmp_path)
    cipher = SecretCipher.from_settings(settings)
    assert (tmp_path / "encryption.key").stat().st_mode & 0o777 == 0o600
    app = _app(Team.create(slug="acme", name="Acme"))
    EnvVar.create(app=app, key="API_KEY", value=cipher.encrypt("sk-live-123456"), is_secret=True)
    (stored,) = model_db.execute_sql("SELECT value FROM env_var").fetchall()[0]
    assert "sk-live-123456" not in stored
    assert cipher.decrypt(stored) == "sk-live-123456"
    other = SecretCipher(_fresh_key())
    with pytest.raises(SecretKeyError, match="restore the HELIOS_ENCRYPTION_KEY"):
        other.decrypt(stored)
    with pytest.raises(SecretKeyError, match="not a Fernet key"):
        SecretCipher("not-a-key")


def _fresh_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def test_api_tokens_are_stored_hashed(model_db):
    user = create_user("ops@example.com", "long enough password")
    token = new_token()
    ApiToken.create(
        user=user, name="ci", token_hash=hash_token(token), prefix=token[:8], scopes=["read"]
    )
    row = ApiToken.get(ApiToken.token_hash == hash_token(token))
    assert row.scopes == ["read"]
    dump = repr(model_db.execute_sql("SELECT * FROM api_token").fetchall())
    assert token not in dump
