"""GitHub as Helios keeps it: people's tokens, and each repo app's repository, hook and secret.

The only writers of ``User.github_token`` and of an app's GitHub columns (``github_repo_id``,
``github_hook_id``, ``webhook_secret``, ``connected_by``). Tokens and webhook secrets are stored
as Fernet tokens (:class:`~panel.crypto.SecretCipher`): never logged, never in an event, never
in the API's answers. GitHub is asked through :mod:`panel.drivers.github`; what it refuses comes
back as an :class:`ActionError` whose message says what to do. A repository is known by its
numeric id from the moment it is connected: a name that later points elsewhere is refused.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from panel.actions.builds import RequestedBuild, request_build
from panel.actions.common import ActionError, actor_name, authorize
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.db import database
from panel.drivers.github import GitHubClient, GitHubError, HookDelivery
from panel.events import emit
from panel.models import App, Role, User, utcnow

__all__ = [
    "WEBHOOK_PATH",
    "Connection",
    "check_webhook",
    "connect_repository",
    "describe_delivery",
    "forget_github_token",
    "github_client",
    "github_token_of",
    "payload_url",
    "request_branch_build",
    "rotate_webhook_secret",
    "set_repo_id",
    "store_github_token",
    "webhook_secret_of",
]

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/github"  # where GitHub delivers pushes (panel.web.webhooks)
SECRET_BYTES = 32  # a webhook secret is 64 hex characters
REPO_ID_MAX = 2**63 - 1  # the largest id a BIGINT column holds
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.~+/=-]{1,512}")
_SCOPE_RE = re.compile(r"[a-z][a-z:_]{0,39}")
_REFUSED = (401, 403, 404)  # another token (or none, for a public repository) may do better
WHY_NO_HOOK = (
    "Helios has no GitHub token of yours: sign in with GitHub to let it create the webhook, "
    "or add the webhook by hand with the payload URL and secret shown in the GitHub section "
    "of the app's settings"
)


def payload_url(settings: Settings) -> str:
    """The address GitHub delivers pushes to: the panel's public address (HELIOS_EXTERNAL_URL)."""
    return settings.effective_external_url + WEBHOOK_PATH


def github_client(settings: Settings, token: str | None) -> GitHubClient:
    """A client of the configured GitHub API with one person's token (None: anonymous)."""
    return GitHubClient(settings.github_api_url, token)


def _action_error(exc: GitHubError, field: str | None = None) -> ActionError:
    code = "invalid" if exc.status in (*_REFUSED, 422) else "unreachable"
    return ActionError(code, str(exc), field)


def _new_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


# ---------------------------------------------------------------------------------------------
# People's tokens
# ---------------------------------------------------------------------------------------------


def _scopes(granted: str | Iterable[str] | None) -> list[str]:
    """GitHub's granted scopes ("repo,read:user", or oauthlib's list of such text), checked."""
    text = granted if isinstance(granted, str) else ",".join(granted or ())
    return sorted({part for part in re.split(r"[,\s]+", text) if _SCOPE_RE.fullmatch(part)})


def store_github_token(
    *,
    user: User,
    token: object,
    scopes: str | Iterable[str] | None,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> None:
    """Keep the person's GitHub access token, encrypted (it replaces an older one)."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ActionError("invalid", "GitHub sent an access token Helios cannot use: sign in again")
    stored = cipher.encrypt(token)
    with database.atomic():
        User.update(github_token=stored).where(User.id == user.id).execute()
        emit(
            "v1.github_token.stored",
            {"user_id": user.id, "email": user.email, "scopes": _scopes(scopes)},
            actor=user.email, user=user, redis_conn=redis_conn,
        )  # fmt: skip
    user.github_token = stored


def forget_github_token(*, user: User, redis_conn: redis.Redis | None = None) -> bool:
    """Delete the person's GitHub token; False when Helios kept none."""
    with database.atomic():
        forgotten = (
            User.update(github_token=None)
            .where((User.id == user.id) & User.github_token.is_null(False))
            .execute()
        )
        if forgotten:
            emit(
                "v1.github_token.forgotten", {"user_id": user.id, "email": user.email},
                actor=user.email, user=user, redis_conn=redis_conn,
            )  # fmt: skip
    user.github_token = None
    return bool(forgotten)


def github_token_of(user: User | None, cipher: SecretCipher) -> str | None:
    """The person's GitHub token in clear for a call to GitHub; None without a usable one."""
    if user is None or not user.github_token:
        return None
    try:
        return cipher.decrypt(user.github_token)
    except SecretKeyError:
        # Another encryption key wrote it: signing in with GitHub again stores a fresh one.
        logger.warning("the GitHub token of account #%d cannot be decrypted: ignored", user.id)
        return None


def webhook_secret_of(app: App, cipher: SecretCipher) -> str | None:
    """The app's webhook secret in clear (to check a delivery, or to show an admin)."""
    if not app.webhook_secret:
        return None
    try:
        return cipher.decrypt(app.webhook_secret)
    except SecretKeyError:
        logger.warning("the webhook secret of app %s cannot be decrypted", app.slug)
        return None


# ---------------------------------------------------------------------------------------------
# An app's repository and webhook
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """What connecting an app's repository achieved; ``problem`` says why no hook was made."""

    repo_id: int | None
    hook_id: int | None
    problem: str = ""


def _repo_app(app: App) -> str:
    if not app.repo:
        raise ActionError(
            "invalid", f"{app.slug} runs an image, not a GitHub repository: there is nothing "
            "to connect",
        )  # fmt: skip
    return app.repo


def _hook_on_github(
    app: App, token: str, settings: Settings, secret: str
) -> tuple[int | None, int | None, str]:
    """(repository id, hook id, problem) after asking GitHub for both with ``token``."""
    client = github_client(settings, token)
    repo_id = app.github_repo_id
    try:
        found = client.repository(app.repo)
        if repo_id is not None and found.id != repo_id:
            return repo_id, None, (
                f"{app.repo} is now GitHub repository #{found.id}, not #{repo_id} that "
                f"{app.slug} was connected to (renamed or replaced?): no webhook was created; "
                "check the repository in the app's settings"
            )  # fmt: skip
        repo_id = found.id
        return repo_id, client.create_push_hook(app.repo, payload_url(settings), secret), ""
    except GitHubError as exc:
        return repo_id, None, str(exc)


def connect_repository(
    *,
    actor: User,
    app: App,
    settings: Settings,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> Connection:
    """Connect a repo app to GitHub with the person's token: its repository's numeric id, a
    fresh webhook secret and the push webhook.

    Whatever GitHub refuses (no token, no admin rights, unreachable), the app keeps what was
    learnt and a secret, so the webhook can be added by hand; ``problem`` says why.
    """
    authorize(actor, app.team, Role.ADMIN)
    full_name = _repo_app(app)
    if app.github_hook_id is not None:
        raise ActionError(
            "conflict", f"Helios made {app.slug}'s webhook already (#{app.github_hook_id}): "
            "rotate its secret instead",
        )  # fmt: skip
    token = github_token_of(actor, cipher)
    if token is None and app.webhook_secret:
        raise ActionError("invalid", WHY_NO_HOOK)  # nothing would change
    secret = _new_secret()
    repo_id, hook_id, problem = app.github_repo_id, None, WHY_NO_HOOK
    if token is not None:
        repo_id, hook_id, problem = _hook_on_github(app, token, settings, secret)
    # A secret pasted by hand stays unless GitHub now has the new one.
    stored = cipher.encrypt(secret) if hook_id is not None or not app.webhook_secret else None
    connected_by = actor.id if token is not None and repo_id is not None else app.connected_by_id
    changes = {
        "github_repo_id": repo_id, "github_hook_id": hook_id, "connected_by": connected_by,
        "webhook_secret": stored or app.webhook_secret,
    }  # fmt: skip
    data = {"app": app.slug, "app_id": app.id, "repo": full_name, "github_repo_id": repo_id,
            "hook_id": hook_id, "method": "token"}  # fmt: skip
    if problem:
        data["problem"] = problem[:500]
    with database.atomic():
        App.update(updated_at=utcnow(), **changes).where(App.id == app.id).execute()
        emit("v1.app.repo_connected", data, actor=actor_name(actor), team=app.team_id,
             redis_conn=redis_conn)  # fmt: skip
    app.github_repo_id, app.github_hook_id = repo_id, hook_id
    app.webhook_secret, app.connected_by_id = changes["webhook_secret"], connected_by
    if problem:
        logger.info("app %s: webhook not created: %s", app.slug, problem)
    return Connection(repo_id, hook_id, problem)


def _repo_id(value: object) -> int:
    text = value.strip() if isinstance(value, str) else str(value if value is not None else "")
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not (
        1 <= int(text) <= REPO_ID_MAX
    ):
        raise ActionError(
            "invalid", f"{text[:40]!r} is not a GitHub repository id: give the number GitHub "
            "shows for the repository (e.g. 'gh api repos/OWNER/REPO --jq .id' prints it)",
            "repo_id",
        )  # fmt: skip
    return int(text)


def set_repo_id(
    *,
    actor: User | None,
    app: App,
    repo_id: object,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> App:
    """Record the repository's numeric id by hand (for a webhook added by hand, without a
    GitHub token); the app gets a webhook secret if it has none yet."""
    authorize(actor, app.team, Role.ADMIN)
    full_name = _repo_app(app)
    number = _repo_id(repo_id)
    if app.github_repo_id is not None and app.github_repo_id != number:
        raise ActionError(
            "conflict", f"{app.slug} is connected to GitHub repository #{app.github_repo_id} "
            "already", "repo_id",
        )  # fmt: skip
    if app.github_repo_id == number:
        return app
    secret = app.webhook_secret or cipher.encrypt(_new_secret())
    data = {"app": app.slug, "app_id": app.id, "repo": full_name, "github_repo_id": number,
            "hook_id": app.github_hook_id, "method": "hand"}  # fmt: skip
    with database.atomic():
        App.update(github_repo_id=number, webhook_secret=secret, updated_at=utcnow()).where(
            App.id == app.id
        ).execute()
        emit("v1.app.repo_connected", data, actor=actor_name(actor), team=app.team_id,
             redis_conn=redis_conn)  # fmt: skip
    app.github_repo_id, app.webhook_secret = number, secret
    return app


def rotate_webhook_secret(
    *,
    actor: User,
    app: App,
    settings: Settings,
    cipher: SecretCipher,
    redis_conn: redis.Redis | None = None,
) -> bool:
    """Give the app a new webhook secret; True when GitHub's hook (one Helios made) has it too.

    A hook Helios made gets the new secret on GitHub first, with the person's own token;
    should GitHub refuse, nothing changes. A hook added by hand needs the new secret pasted.
    """
    authorize(actor, app.team, Role.ADMIN)
    full_name = _repo_app(app)
    secret = _new_secret()
    updated = False
    if app.github_hook_id is not None:
        token = github_token_of(actor, cipher)
        if token is None:
            raise ActionError(
                "invalid", f"Helios made the webhook on {full_name}, so GitHub must get the new "
                "secret too: sign in with GitHub (as someone with admin rights on the "
                "repository) and rotate again; the secret was not changed",
            )  # fmt: skip
        try:
            github_client(settings, token).update_hook_secret(
                full_name, app.github_hook_id, payload_url(settings), secret
            )
        except GitHubError as exc:
            raise ActionError(
                _action_error(exc).code, f"the secret was not changed: {exc}"
            ) from None
        updated = True
    stored = cipher.encrypt(secret)
    with database.atomic():
        App.update(webhook_secret=stored, updated_at=utcnow()).where(App.id == app.id).execute()
        emit(
            "v1.app.webhook_secret_rotated",
            {"app": app.slug, "app_id": app.id, "hook_updated": updated},
            actor=actor_name(actor), team=app.team_id, redis_conn=redis_conn,
        )  # fmt: skip
    app.webhook_secret = stored
    return updated


# ---------------------------------------------------------------------------------------------
# Reading GitHub for an app: its webhook's last delivery, the commit to build
# ---------------------------------------------------------------------------------------------


def _tokens(actor: User | None, app: App, cipher: SecretCipher) -> list[str | None]:
    """Tokens to read the app's repository with, in order: the person's, that of who
    connected the repository, then none (a public repository needs none)."""
    owner = User.get_or_none(User.id == app.connected_by_id) if app.connected_by_id else None
    found = [github_token_of(actor, cipher), github_token_of(owner, cipher)]
    return [*dict.fromkeys(token for token in found if token), None]


def describe_delivery(last: HookDelivery | None, branch: str) -> str:
    """GitHub's last delivery of a hook, in plain words."""
    if last is None:
        return (
            "GitHub has not delivered anything to this webhook yet: push a commit to "
            f"{branch}, or send a ping from the webhook's page on GitHub."
        )
    what = f"GitHub's last delivery (a {last.event or 'delivery'} event, {last.delivered_at})"
    code, status = last.status_code, last.status[:200]
    if 200 <= code < 300:
        return f"{what} reached Helios, which accepted it ({code})."
    if code == 0:
        return (
            f"{what} did not reach Helios ({status or 'no answer'}): GitHub must be able to "
            "reach the payload URL, the panel's HELIOS_EXTERNAL_URL."
        )
    if code in (401, 403):
        return (
            f"{what} was refused by Helios ({code}): the secret on GitHub is not the app's. "
            "Rotate the secret (or paste it into the webhook on GitHub again)."
        )
    if code == 404:
        return f"{what} found nothing at the payload URL (404): check the webhook's URL."
    return f"{what} got the answer {code} {status}."


def check_webhook(*, actor: User, app: App, settings: Settings, cipher: SecretCipher) -> str:
    """Ask GitHub how the last delivery of the app's webhook went, in plain words."""
    authorize(actor, app.team, Role.DEPLOYER)
    full_name = _repo_app(app)
    if app.github_hook_id is None:
        raise ActionError(
            "invalid", "Helios did not make this app's webhook, so it cannot ask GitHub about "
            "it: see 'Recent Deliveries' of the webhook on GitHub, and the app's deliveries "
            "page for what Helios received",
        )  # fmt: skip
    tokens = [token for token in _tokens(actor, app, cipher) if token]
    if not tokens:
        raise ActionError(
            "invalid", "checking asks GitHub with your GitHub token (or that of who connected "
            "the repository): sign in with GitHub first",
        )  # fmt: skip
    try:
        last = github_client(settings, tokens[0]).last_delivery(full_name, app.github_hook_id)
    except GitHubError as exc:
        raise _action_error(exc) from None
    return describe_delivery(last, app.branch)


def _commit_to_build(
    actor: User | None, app: App, settings: Settings, cipher: SecretCipher, ref: str
) -> str:
    refused: GitHubError | None = None
    for token in _tokens(actor, app, cipher):
        client = github_client(settings, token)
        try:
            return (
                client.commit_sha(app.repo, ref)
                if ref
                else client.branch_head(app.repo, app.branch)
            )
        except GitHubError as exc:
            if exc.status not in _REFUSED:
                raise _action_error(exc, "git_sha" if ref else None) from None
            refused = exc
    assert refused is not None  # the loop ran at least once: the anonymous try
    raise _action_error(refused, "git_sha" if ref else None)


def request_branch_build(
    *,
    actor: User | None,
    app: App,
    settings: Settings,
    cipher: SecretCipher,
    redis_conn: redis.Redis,
    ref: str = "",
) -> RequestedBuild:
    """Build the head of the repo app's branch (or the commit ``ref`` names), then deploy it.

    The commit is read from GitHub with the person's token, else that of who connected the
    repository, else none (public repositories).
    """
    authorize(actor, app.team, Role.DEPLOYER)
    _repo_app(app)
    sha = _commit_to_build(actor, app, settings, cipher, ref)
    return request_build(
        actor=actor, app=app, settings=settings, redis_conn=redis_conn, git_sha=sha,
        branch=app.branch, reason="deploy",
    )  # fmt: skip
