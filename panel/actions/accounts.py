"""Accounts: the writers of User and Team rows (team membership changes: panel.actions.members)."""

from __future__ import annotations

import enum
import functools
import re
import secrets
import threading
from dataclasses import dataclass

import redis
from zxcvbn import zxcvbn

from panel.actions.sessions import revoke_all_sessions
from panel.crypto import check_password, generate_password, hash_password
from panel.db import database
from panel.events import emit
from panel.models import Membership, Role, Team, User, UserSession, utcnow

__all__ = [
    "AccountError",
    "Bootstrap",
    "SignInCheck",
    "SignInFailure",
    "authenticate",
    "bootstrap_admin",
    "change_password",
    "check_sign_in",
    "create_user",
    "dummy_password_hash",
    "set_password",
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

# zxcvbn keeps the user inputs of the current call in a module-level dictionary.
_zxcvbn_lock = threading.Lock()


class AccountError(ValueError):
    """An account request that cannot be carried out; the message says why.

    ``field`` names the form field at fault, when there is one.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def validate_email(email: str) -> str:
    """Normalise an email address or raise AccountError."""
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or ".." in email:
        raise AccountError(f"{email!r} is not an email address: use the form name@example.com")
    return email


def validate_password(password: str, email: str = "") -> str:
    """Refuse passwords that are short, easy to guess (zxcvbn) or contain the email address."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(
            f"the password is too long: use at most {MAX_PASSWORD_LENGTH} characters"
        )
    email = email.strip().lower()
    local = email.partition("@")[0]
    lowered = password.lower()
    if email and (email in lowered or (len(local) >= MIN_LOCAL_PART and local in lowered)):
        raise AccountError("the password contains the email address: choose one without it")
    inputs = [part for part in (email, local) if part]
    with _zxcvbn_lock:
        # A strong beginning makes the whole password strong; past it zxcvbn only slows down.
        verdict = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=inputs)
    if verdict["score"] < MIN_PASSWORD_SCORE:
        feedback = verdict["feedback"]
        parts = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        advice = " ".join(part for part in parts if part) or "Add another word or two."
        raise AccountError(f"the password is too easy to guess: {advice}")
    return password


def create_user(
    email: str,
    password: str,
    *,
    team_slug: str = DEFAULT_TEAM,
    role: Role = Role.OWNER,
    is_operator: bool = False,
) -> User:
    """Create a local account and make it a member of ``team_slug`` (created if needed)."""
    email = validate_email(email)
    validate_password(password, email)
    with database.atomic():
        if User.get_or_none(User.email == email) is not None:
            raise AccountError(f"an account for {email} exists already: sign in or pick another")
        user = User.create(
            email=email, password_hash=hash_password(password), is_operator=is_operator
        )
        team, _ = Team.get_or_create(slug=team_slug, defaults={"name": team_slug.title()})
        Membership.create(user=user, team=team, role=role.value)
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
        raise AccountError(
            "this account signs in with GitHub and has no password to change", "current"
        )
    if not check_password(user.password_hash, current):
        raise AccountError("the current password is wrong", "current")
    if new == current:
        raise AccountError("the new password is the current one: choose another", "new")
    try:
        validate_password(new, user.email)
    except AccountError as exc:
        raise AccountError(str(exc), "new") from None
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
        create_user(BOOTSTRAP_EMAIL, password, is_operator=True)
    return Bootstrap(BOOTSTRAP_EMAIL, password)
