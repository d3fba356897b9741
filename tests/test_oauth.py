"""Sign in with GitHub against a small OAuth provider served on loopback by the tests."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask, jsonify, redirect
from flask import request as provider_request
from werkzeug.serving import make_server

from panel.actions.accounts import create_user
from panel.models import User
from panel.web import create_app

CLIENT_ID = "helios-test-client"
CLIENT_SECRET = "helios-test-secret"


@dataclass
class GitHubUser:
    id: int
    login: str
    email: str
    orgs: list[str] = field(default_factory=list)


class FakeGitHub:
    """Just enough of GitHub's OAuth and REST API, checking PKCE like GitHub does."""

    def __init__(self) -> None:
        self.user = GitHubUser(4242, "octo", "octo@example.com")
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, GitHubUser] = {}
        self.app = self._build()

    def _build(self) -> Flask:
        app = Flask("fake-github")

        @app.get("/login/oauth/authorize")
        def authorize():
            args = provider_request.args
            code = secrets.token_hex(8)
            self.codes[code] = {
                "challenge": args["code_challenge"],
                "method": args["code_challenge_method"],
                "user": self.user,
                "used": False,
            }
            return redirect(f"{args['redirect_uri']}?code={code}&state={args['state']}")

        @app.post("/login/oauth/access_token")
        def access_token():
            form = provider_request.form
            grant = self.codes.get(form.get("code", ""))
            if form.get("client_secret") != CLIENT_SECRET or grant is None or grant["used"]:
                return jsonify(error="bad_verification_code")
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if grant["method"] != "S256" or expected != grant["challenge"]:
                return jsonify(error="invalid_grant", error_description="PKCE check failed")
            grant["used"] = True
            token = secrets.token_hex(16)
            self.tokens[token] = grant["user"]
            return jsonify(access_token=token, token_type="bearer", scope="read:user")

        def current() -> GitHubUser:
            return self.tokens[provider_request.headers["Authorization"].removeprefix("Bearer ")]

        @app.get("/user")
        def user():
            who = current()
            return jsonify(id=who.id, login=who.login, name=who.login.title())

        @app.get("/user/emails")
        def emails():
            return jsonify([{"email": current().email, "primary": True, "verified": True}])

        @app.get("/user/orgs")
        def orgs():
            return jsonify([{"login": org} for org in current().orgs])

        return app


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()
    server = make_server("127.0.0.1", 0, fake.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def oauth_client(settings, db, github, monkeypatch):
    _fake, url = github
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the loopback provider is plain HTTP
    app = create_app(
        settings.replace(
            github_client_id=CLIENT_ID,
            github_client_secret=CLIENT_SECRET,
            github_url=url,
            github_api_url=url,
        )
    )
    return app.test_client(), app


def begin(client) -> tuple[str, dict[str, list[str]]]:
    response = client.get("/login/github")
    assert response.status_code == 302
    location = response.headers["Location"]
    return location, parse_qs(urlsplit(location).query)


def authorize(location: str) -> str:
    """What GitHub redirects the browser back to: the callback path with code and state."""
    answer = requests.get(location, allow_redirects=False, timeout=5)
    parts = urlsplit(answer.headers["Location"])
    return f"{parts.path}?{parts.query}"


def signed_in(client) -> bool:
    return client.get("/").status_code == 200


def test_authorize_url_carries_state_and_s256_challenge(oauth_client):
    client, _app = oauth_client
    _location, query = begin(client)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256, unpadded
    assert len(query["state"][0]) >= 20
    assert query["client_id"] == [CLIENT_ID]


def test_full_flow_binds_the_account_to_the_github_id(oauth_client):
    client, _app = oauth_client
    location, _query = begin(client)
    response = client.get(authorize(location))
    assert response.status_code == 302
    assert signed_in(client)
    user = User.get(User.github_id == 4242)
    assert user.email == "octo@example.com"
    assert user.github_login == "octo"


def test_replayed_callback_is_refused(oauth_client):
    client, _app = oauth_client
    location, _query = begin(client)
    callback = authorize(location)
    assert client.get(callback).status_code == 302
    client.post("/logout", data={})  # no CSRF token: refused, but irrelevant here
    with client.session_transaction() as sess:
        sess.clear()
    replay = client.get(callback)
    assert replay.status_code == 400
    assert not signed_in(client)


@pytest.mark.parametrize("tamper", ["missing", "mismatched"])
def test_missing_or_mismatched_state_is_refused(oauth_client, tamper):
    client, _app = oauth_client
    location, _query = begin(client)
    callback = authorize(location)
    path, query = callback.split("?")
    params = parse_qs(query)
    if tamper == "missing":
        params.pop("state")
    else:
        params["state"] = ["forged-state-value-0123456789"]
    forged = path + "?" + "&".join(f"{k}={v[0]}" for k, v in params.items())
    response = client.get(forged)
    assert response.status_code == 400
    assert b"stale or was tampered with" in response.data
    assert not signed_in(client)


def test_replayed_code_is_refused(oauth_client):
    client, _app = oauth_client
    location, _query = begin(client)
    used_callback = authorize(location)
    assert client.get(used_callback).status_code == 302
    with client.session_transaction() as sess:
        sess.clear()
    _location, query = begin(client)  # a fresh state in the session
    old_code = parse_qs(urlsplit(used_callback).query)["code"][0]
    response = client.get(f"/login/github/callback?code={old_code}&state={query['state'][0]}")
    assert response.status_code == 400
    assert b"code may be used or expired" in response.data
    assert not signed_in(client)


def test_same_email_different_github_id_gets_a_new_account(oauth_client, github):
    client, _app = oauth_client
    fake, _url = github
    local = create_user("octo@example.com", "a long local password")
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    assert signed_in(client)
    github_user = User.get(User.github_id == fake.user.id)
    assert github_user.id != local.id
    assert github_user.email == "4242+octo@users.noreply.github.com"
    assert User.get_by_id(local.id).github_id is None


def test_organisation_allow_list(settings, db, github, monkeypatch):
    fake, url = github
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    app = create_app(
        settings.replace(
            github_client_id=CLIENT_ID, github_client_secret=CLIENT_SECRET,
            github_url=url, github_api_url=url, github_orgs=("acme",),
        )
    )  # fmt: skip
    client = app.test_client()
    fake.user.orgs = ["someone-else"]
    location, _query = begin(client)
    refused = client.get(authorize(location))
    assert refused.status_code == 403
    assert b"not a member of an organisation allowed here" in refused.data
    assert not signed_in(client)
    fake.user.orgs = ["Acme"]
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    assert signed_in(client)


def test_login_page_says_when_github_is_not_configured(client):
    page = client.get("/login").get_data(as_text=True)
    assert "GitHub sign-in is not configured" in page
    response = client.get("/login/github")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/login")


def test_redirect_uri_comes_from_the_external_url_never_the_host_header(oauth_client):
    client, app = oauth_client
    response = client.get("/login/github", headers={"Host": "evil.example"})
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    external = app.extensions["helios.settings"].effective_external_url
    assert query["redirect_uri"] == [f"{external}/login/github/callback"]
    assert "evil.example" not in response.headers["Location"]


def test_github_sign_in_starts_a_server_side_session_and_records_it(oauth_client):
    from panel.models import Event, UserSession

    client, _app = oauth_client
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    user = User.get(User.github_id == 4242)
    assert UserSession.select().where(UserSession.user == user.id).count() == 1
    event = Event.get(Event.subject == "v1.signin.succeeded")
    assert event.user_id == user.id and event.data["method"] == "github"
    UserSession.update(revoked_at=UserSession.created_at).execute()
    assert not signed_in(client)


def test_refused_github_sign_in_is_recorded(settings, db, github, monkeypatch):
    from panel.models import Event

    _fake, url = github
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    app = create_app(
        settings.replace(
            github_client_id=CLIENT_ID, github_client_secret=CLIENT_SECRET,
            github_url=url, github_api_url=url, github_orgs=("acme",),
        )
    )  # fmt: skip
    client = app.test_client()
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 403
    event = Event.get(Event.subject == "v1.signin.failed")
    assert event.data["reason"] == "github_refused" and event.data["method"] == "github"
    assert "organisation" in event.data["detail"]


# ---------------------------------------------------------------------------------------------
# The person's GitHub token: the scopes asked for, kept encrypted, forgotten on request
# ---------------------------------------------------------------------------------------------


def _database_text(app) -> str:
    """Every row of every table, and the database files' bytes, as one text to search."""
    from panel.models import MODELS

    rows = [str(row) for model in MODELS for row in model.select().dicts()]
    path = app.extensions["helios.settings"].effective_database_url.removeprefix("sqlite:///")
    files = [Path(path), Path(f"{path}-wal")]
    raw = [file.read_bytes().decode("latin-1") for file in files if file.exists()]
    return "\n".join(rows + raw)


def test_sign_in_asks_for_repository_and_hook_scopes_by_default(oauth_client):
    client, _app = oauth_client
    _location, query = begin(client)
    assert query["scope"][0].split() == [
        "read:user", "user:email", "read:org", "repo", "admin:repo_hook",
    ]  # fmt: skip


def test_an_operator_can_keep_sign_in_read_only(settings, db, github, monkeypatch):
    _fake, url = github
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    app = create_app(
        settings.replace(
            github_client_id=CLIENT_ID, github_client_secret=CLIENT_SECRET,
            github_url=url, github_api_url=url, github_repo_scopes=False,
        )
    )  # fmt: skip
    _location, query = begin(app.test_client())
    assert query["scope"][0].split() == ["read:user", "user:email", "read:org"]


def test_the_token_is_kept_encrypted_never_in_clear(oauth_client, github, caplog):
    from panel.crypto import SecretCipher
    from panel.models import Event

    client, app = oauth_client
    fake, _url = github
    # Helios's own logs at every level; the libraries at INFO, where `helios` keeps the ones
    # that log tokens at DEBUG (panel.run.runtime.QUIET_LOGGERS).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="panel")
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    (token,) = fake.tokens
    user = User.get(User.github_id == 4242)
    assert user.github_token and token not in user.github_token
    cipher = SecretCipher.from_settings(app.extensions["helios.settings"])
    assert cipher.decrypt(user.github_token) == token
    assert token not in _database_text(app)
    assert token not in caplog.text
    event = Event.get(Event.subject == "v1.github_token.stored")
    assert event.data == {"user_id": user.id, "email": user.email, "scopes": ["read:user"]}
    assert token not in client.get("/account").get_data(as_text=True)


def test_signing_in_again_replaces_the_token(oauth_client, github):
    from panel.crypto import SecretCipher

    client, app = oauth_client
    fake, _url = github
    for _ in range(2):
        location, _query = begin(client)
        assert client.get(authorize(location)).status_code == 302
    newest = list(fake.tokens)[-1]
    cipher = SecretCipher.from_settings(app.extensions["helios.settings"])
    assert cipher.decrypt(User.get(User.github_id == 4242).github_token) == newest


def _csrf(client) -> str:
    page = client.get("/account").get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)


def test_signing_out_keeps_the_token_and_the_account_page_forgets_it(oauth_client):
    from panel.models import Event

    client, _app = oauth_client
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    assert client.post("/logout", data={"csrf_token": _csrf(client)}).status_code == 302
    assert not signed_in(client)
    assert User.get(User.github_id == 4242).github_token is not None  # signing out keeps it
    location, _query = begin(client)
    assert client.get(authorize(location)).status_code == 302
    page = client.get("/account").get_data(as_text=True)
    assert "Forget my GitHub token" in page
    answer = client.post("/account/github/forget", data={"csrf_token": _csrf(client)})
    assert answer.status_code == 302
    user = User.get(User.github_id == 4242)
    assert user.github_token is None
    assert Event.get(Event.subject == "v1.github_token.forgotten").data["user_id"] == user.id
    page = client.get("/account").get_data(as_text=True)
    assert "Helios forgot your GitHub token" in page
    assert "Forget my GitHub token" not in page
    refused = client.post("/account/github/forget", data={})  # no CSRF token
    assert refused.status_code == 400
