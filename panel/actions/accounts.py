"""Accounts: the writers of User and Team rows (team membership changes: panel.actions.members).

Local accounts, sign-in with a password or with GitHub (the account is bound to GitHub's numeric
user id, never to an email address), the failed sign-ins of the audit log, and passwords.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from zxcvbn import zxcvbn

from panel.actions.common import ActionError
from panel.actions.sessions import revoke_all_sessions
from panel.crypto import check_password, generate_password, hash_password
from panel.db import database
from panel.events import emit
from panel.models import Membership, Role, Team, User, UserSession, utcnow
from panel.namespaces import valid_namespace

__all__ = [
    "Bootstrap",
    "GitHubProfile",
    "SignInCheck",
    "SignInFailure",
    "authenticate",
    "bootstrap_admin",
    "change_password",
    "check_sign_in",
    "create_user",
    "dummy_password_hash",
    "record_failed_sign_in",
    "set_password",
    "sign_in_with_github",
    "validate_email",
    "validate_password",
]

EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,189}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
# zxcvbn's scores: 3 is "safely unguessable" (about 10^8 guesses or more), 4 "very unguessable".
MIN_PASSWORD_SCORE = 3
ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input and slows down fast past it
MIN_LOCAL_PART = 4  # a shorter local part (e.g. "al@") is too common a string to forbid
DEFAULT_TEAM = "default"
BOOTSTRAP_EMAIL = "admin@localhost"

logger = logging.getLogger(__name__)

# zxcvbn keeps the user inputs of the current call in a module-level dictionary.
_zxcvbn_lock = threading.Lock()


def validate_email(email: str) -> str:
    """Normalise an email address or raise ActionError (``invalid``)."""
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or ".." in email:
        raise ActionError(
            "invalid", f"{email!r} is not an email address: use the form name@example.com"
        )
    return email


def validate_password(password: str, email: str = "") -> str:
    """Refuse passwords that are short, easy to guess (zxcvbn) or contain the email address."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ActionError(
            "invalid", f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ActionError(
            "invalid", f"the password is too long: use at most {MAX_PASSWORD_LENGTH} characters"
        )
    email = email.strip().lower()
    local = email.partition("@")[0]
    lowered = password.lower()
    if email and (email in lowered or (len(local) >= MIN_LOCAL_PART and local in lowered)):
        raise ActionError(
            "invalid", "the password contains the email address: choose one without it"
        )
    inputs = [part for part in (email, local) if part]
    with _zxcvbn_lock:
        # A strong beginning makes the whole password strong; past it zxcvbn only slows down.
        verdict = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=inputs)
    if verdict["score"] < MIN_PASSWORD_SCORE:
        feedback = verdict["feedback"]
        parts = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        advice = " ".join(part for part in parts if part) or "Add another word or two."
        raise ActionError("invalid", f"the password is too easy to guess: {advice}")
    return password


def create_user(
    email: str,
    password: str,
    *,
    team_slug: str = DEFAULT_TEAM,
    role: Role = Role.OWNER,
    is_operator: bool = False,
    actor: str | None = None,
    redis_conn: redis.Redis | None = None,
) -> User:
    """Create a local account and make it a member of ``team_slug`` (created if needed).
    With ``actor`` (who created it: the operator at the shell, ``helios up``), the audit log
    records v1.account.created."""
    email = validate_email(email)
    validate_password(password, email)
    with database.atomic():
        if User.get_or_none(User.email == email) is not None:
            raise ActionError(
                "conflict", f"an account for {email} exists already: sign in or pick another"
            )
        user = User.create(
            email=email, password_hash=hash_password(password), is_operator=is_operator
        )
        # A team made here runs its apps in a Nomad namespace of its own, as create_team's do.
        team, _ = Team.get_or_create(
            slug=team_slug,
            defaults={"name": team_slug.title(), "nomad_namespace": valid_namespace(team_slug)},
        )
        Membership.create(user=user, team=team, role=role.value)
        if actor is not None:
            emit(
                "v1.account.created",
                {"user_id": user.id, "email": user.email, "team": team.slug,
                 "role": role.value, "operator": is_operator},
                actor=actor, team=team, user=user, redis_conn=redis_conn,
            )  # fmt: skip
    return user


# ---------------------------------------------------------------------------------------------
# Signing in and passwords
# ---------------------------------------------------------------------------------------------


class SignInFailure(enum.StrEnum):
    """Why an email and password did not sign anyone in (for the audit log, never the page)."""

    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - a reason, not a password
    UNKNOWN_ACCOUNT = "unknown_account"
    DISABLED_ACCOUNT = "disabled_account"
    NO_PASSWORD = "no_password"  # noqa: S105 - the account signs in with GitHub only


@dataclass(frozen=True)
class SignInCheck:
    """The account an email names (if any), and why the password did not match (None: it did)."""

    account: User | None
    failure: SignInFailure | None

    @property
    def user(self) -> User | None:
        """The person signed in, when the email and password match an active account."""
        return self.account if self.failure is None else None


@functools.cache
def dummy_password_hash() -> str:
    """A hash of a random password, made the way real ones are (checked when none exists)."""
    return hash_password(secrets.token_urlsafe(24))


def check_sign_in(email: str, password: str) -> SignInCheck:
    """Check an email and password with exactly one password-hash verification.

    An unknown email, a disabled account or one without a password (GitHub only) is checked
    against a dummy hash of the same cost, so the answer takes as long as for a real account
    and does not tell which emails have one.
    """
    account = User.get_or_none(User.email == email.strip().lower()[:254])
    stored = account.password_hash if account is not None and account.is_active else None
    matches = check_password(stored or dummy_password_hash(), password)
    if account is None:
        failure = SignInFailure.UNKNOWN_ACCOUNT
    elif not account.is_active:
        failure = SignInFailure.DISABLED_ACCOUNT
    elif not stored:
        failure = SignInFailure.NO_PASSWORD
    else:
        failure = None if matches else SignInFailure.WRONG_PASSWORD
    if failure is None:
        account.last_login_at = utcnow()
        account.save(only=[User.last_login_at])
    return SignInCheck(account, failure)


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password, else None."""
    return check_sign_in(email, password).user


def record_failed_sign_in(
    email: str | None,
    method: str,
    reason: str,
    *,
    address: str,
    account: User | None = None,
    redis_conn: redis.Redis | None = None,
    **extra: Any,
) -> None:
    """Record ``v1.signin.failed``; the email only when it looks like one (never a password).

    ``extra`` adds the schema's optional fields (``backoff_seconds``, ``detail``) when set.
    """
    try:
        shown = validate_email(email or "")
    except ActionError:
        shown = None
    data: dict[str, Any] = {"email": shown, "method": method, "reason": reason, "address": address}
    if account is not None:
        data["user_id"] = account.id
    data.update({key: value for key, value in extra.items() if value})
    emit("v1.signin.failed", data, actor="anonymous", user=account, redis_conn=redis_conn)


# ---------------------------------------------------------------------------------------------
# Signing in with GitHub
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitHubProfile:
    """Who GitHub says signed in: the numeric id binds the account, the login and name show."""

    github_id: int
    login: str
    name: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.github_id, int)
            or isinstance(self.github_id, bool)
            or self.github_id <= 0
            or not self.login
        ):
            raise ActionError("invalid", "GitHub sent an incomplete profile: try again")

    @property
    def noreply_email(self) -> str:
        """The address GitHub keeps for a user who shares none."""
        return f"{self.github_id}+{self.login}@users.noreply.github.com".lower()


def sign_in_with_github(profile: GitHubProfile, primary_email: Callable[[], str]) -> User:
    """The account bound to ``profile``'s GitHub id, created on the first sign-in.

    ``primary_email`` is asked only when the account is new; an address another account uses
    already gives a separate account (the GitHub no-reply address), never the existing one.
    Raises ActionError (``forbidden``) for a disabled account.
    """
    login = profile.login[:100]
    with database.atomic():
        user = User.get_or_none(User.github_id == profile.github_id)
        if user is None:
            email = primary_email().lower()
            if User.select().where(User.email == email).exists():
                # Same email, different GitHub id: a separate account, never the existing one.
                email = profile.noreply_email
            user = User.create(
                email=email, name=(profile.name or profile.login)[:200],
                github_id=profile.github_id, github_login=login,
            )  # fmt: skip
            logger.info(
                "created account %s for GitHub user %s (%d)",
                email, profile.login, profile.github_id,
            )  # fmt: skip
        if not user.is_active:
            raise ActionError("forbidden", "this account is disabled")
        user.github_login, user.last_login_at = login, utcnow()
        user.save(only=[User.github_login, User.last_login_at])
    return user


def set_password(
    user: User,
    password: str,
    *,
    actor: str,
    reset: bool = False,
    keep: UserSession | None = None,
    redis_conn: redis.Redis | None = None,
) -> int:
    """Give ``user`` a new password and end their other sessions; return how many ended.

    ``reset`` marks an operator's reset (``helios admin reset-password``) rather than the
    person's own change; ``keep`` is the session to leave signed in, if any.
    """
    validate_password(password, user.email)
    with database.atomic():
        user.password_hash = hash_password(password)
        user.save(only=[User.password_hash])
        emit(
            "v1.password.changed",
            {"user_id": user.id, "email": user.email, "method": "reset" if reset else "change"},
            actor=actor, user=user, redis_conn=redis_conn,
        )  # fmt: skip
        return revoke_all_sessions(
            user, reason="password_reset" if reset else "password_changed", actor=actor,
            keep=keep, redis_conn=redis_conn,
        )  # fmt: skip


def change_password(
    user: User,
    current: str,
    new: str,
    *,
    keep: UserSession | None = None,
    redis_conn: redis.Redis | None = None,
) -> int:
    """The person's own change: check the current password, then set_password."""
    if not user.password_hash:
        raise ActionError(
            "conflict", "this account signs in with GitHub and has no password to change", "current"
        )
    if not check_password(user.password_hash, current):
        raise ActionError("invalid", "the current password is wrong", "current")
    if new == current:
        raise ActionError("invalid", "the new password is the current one: choose another", "new")
    try:
        validate_password(new, user.email)
    except ActionError as exc:
        raise ActionError(exc.code, exc.message, "new") from None
    return set_password(user, new, actor=user.email, keep=keep, redis_conn=redis_conn)


@dataclass(frozen=True)
class Bootstrap:
    """The first administrator, with the password that is shown exactly once."""

    email: str
    password: str


def bootstrap_admin() -> Bootstrap | None:
    """Create the first operator account when there is none; return its one-time password."""
    with database.atomic():
        if User.select().exists():
            return None
        password = generate_password()
        create_user(BOOTSTRAP_EMAIL, password, is_operator=True, actor="helios up")
    return Bootstrap(BOOTSTRAP_EMAIL, password)
