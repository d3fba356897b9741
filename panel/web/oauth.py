"""Sign in with GitHub: OAuth 2 authorization code flow with PKCE (S256) and a checked state.

Accounts are bound to GitHub's numeric user id, never to an email address: a GitHub user whose
email matches an existing local account still gets an account of their own. An optional
allow-list of organisations limits who may sign in. This blueprint talks to GitHub; the account
is found or created by :func:`panel.actions.accounts.sign_in_with_github`.

With HELIOS_GITHUB_REPO_SCOPES (the default) GitHub is also asked for ``repo`` (private
repositories) and ``admin:repo_hook`` (push webhooks); the access token is kept, encrypted, by
:func:`panel.actions.github.store_github_token` to list the person's repositories and create
webhooks. Signing out keeps it; the account page forgets it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from typing import Any

import requests
from flask import Blueprint, abort, current_app, flash, redirect, request, session, url_for
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session

from panel.actions.accounts import GitHubProfile, sign_in_with_github
from panel.actions.common import ActionError
from panel.actions.github import store_github_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers.github import GitHubClient, GitHubError
from panel.models import User
from panel.web.auth import finish_sign_in, record_failed_sign_in

bp = Blueprint("oauth", __name__)
logger = logging.getLogger(__name__)

SCOPES = ["read:user", "user:email", "read:org"]
# Private repositories in the repo picker, and the webhook Helios creates on each repo app.
REPO_SCOPES = ["repo", "admin:repo_hook"]
API_TIMEOUT = 10  # seconds per call to GitHub
_STATE_KEY = "github_oauth"


class GitHubLoginError(Exception):
    """Sign-in with GitHub did not succeed; the message is safe to show."""


def _settings() -> Settings:
    return current_app.extensions["helios.settings"]


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return verifier, challenge


def scopes_for(settings: Settings) -> list[str]:
    """The scopes sign-in asks GitHub for: read-only, plus repositories and hooks if enabled."""
    return SCOPES + (REPO_SCOPES if settings.github_repo_scopes else [])


def _client(settings: Settings, state: str | None = None) -> OAuth2Session:
    # The callback's session asks for no scope: GitHub reports granted scopes in its own format
    # (comma-separated, possibly fewer), which oauthlib would otherwise treat as an error.
    # The callback address comes from HELIOS_EXTERNAL_URL, never from the request's Host header.
    return OAuth2Session(
        settings.github_client_id,
        redirect_uri=settings.effective_external_url + url_for("oauth.callback"),
        scope=None if state else scopes_for(settings),
        state=state,
    )


@bp.get("/login/github")
def start():
    """Send the browser to GitHub with a fresh state and PKCE challenge."""
    settings = _settings()
    if not settings.github_client_id:
        flash("GitHub sign-in is not configured on this installation.", "error")
        return redirect(url_for("auth.login"))
    verifier, challenge = _pkce_pair()
    url, state = _client(settings).authorization_url(
        f"{settings.github_url}/login/oauth/authorize",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    session[_STATE_KEY] = {"state": state, "verifier": verifier}
    return redirect(url)


def _github_get(token: dict[str, Any], settings: Settings, path: str) -> Any:
    client = GitHubClient(settings.github_api_url, token["access_token"])
    try:
        return client.get(path, f"read {path}")
    except GitHubError as exc:
        raise GitHubLoginError(f"GitHub answered {exc.status} to {path}: try again") from None


def _primary_email(token: dict[str, Any], settings: Settings, profile: GitHubProfile) -> str:
    emails = _github_get(token, settings, "/user/emails")
    for entry in emails:
        if entry.get("primary") and entry.get("verified") and entry.get("email"):
            return str(entry["email"]).lower()
    return profile.noreply_email


def _check_orgs(token: dict[str, Any], settings: Settings) -> None:
    if not settings.github_orgs:
        return
    orgs = {str(org.get("login", "")).lower() for org in _github_get(token, settings, "/user/orgs")}
    if not orgs & set(settings.github_orgs):
        raise GitHubLoginError(
            "your GitHub account is not a member of an organisation allowed here "
            f"({', '.join(settings.github_orgs)}); ask an administrator"
        )


def _account_for(token: dict[str, Any], settings: Settings) -> User:
    """The account of the GitHub user behind ``token`` (created on their first sign-in)."""
    document = _github_get(token, settings, "/user")
    try:
        profile = GitHubProfile(
            github_id=document.get("id"),
            login=str(document.get("login", "")),
            name=str(document.get("name") or ""),
        )
        _check_orgs(token, settings)
        return sign_in_with_github(profile, lambda: _primary_email(token, settings, profile))
    except ActionError as exc:
        raise GitHubLoginError(str(exc)) from None


@bp.get("/login/github/callback")
def callback():
    """Finish the flow: check state, redeem the code with the PKCE verifier, sign in."""
    settings = _settings()
    if not settings.github_client_id:
        abort(404)
    saved = session.pop(_STATE_KEY, None)  # single use: a replayed callback finds nothing
    state = request.args.get("state", "")
    if not saved or not state or not hmac.compare_digest(saved["state"], state):
        abort(
            400, "This sign-in link is stale or was tampered with. Start again from the login page."
        )
    if "error" in request.args:
        abort(403, "GitHub sign-in was cancelled or refused.")
    try:
        token = _client(settings, state=saved["state"]).fetch_token(
            f"{settings.github_url}/login/oauth/access_token",
            client_secret=settings.github_client_secret,
            code=request.args.get("code", ""),
            code_verifier=saved["verifier"],
            include_client_id=True,
            timeout=API_TIMEOUT,
        )
        user = _account_for(token, settings)
    except (OAuth2Error, requests.RequestException) as exc:
        logger.warning("GitHub sign-in failed: %s", exc)
        abort(
            400,
            "GitHub did not accept this sign-in (the code may be used or expired). Start again.",
        )
    except GitHubLoginError as exc:
        record_failed_sign_in(None, "github", "github_refused", detail=str(exc)[:300])
        abort(403, str(exc))
    _keep_token(user, token, settings)
    return finish_sign_in(user, "github", url_for("dashboard.index"))


def _keep_token(user: User, token: dict[str, Any], settings: Settings) -> None:
    """Keep the access token (encrypted) for the repository picker and webhooks."""
    try:
        store_github_token(
            user=user, token=token.get("access_token"), scopes=token.get("scope"),
            cipher=SecretCipher.from_settings(settings),
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:  # sign-in works without it; the message never holds the token
        logger.warning("GitHub token of account #%d not kept: %s", user.id, exc)
