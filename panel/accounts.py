"""Accounts: the writers of User and Team rows (team membership changes: panel.members)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from panel.crypto import check_password, generate_password, hash_password
from panel.db import database
from panel.models import Membership, Role, Team, User, utcnow

__all__ = [
    "AccountError",
    "Bootstrap",
    "authenticate",
    "bootstrap_admin",
    "create_user",
]

EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,189}$")
MIN_PASSWORD_LENGTH = 12
DEFAULT_TEAM = "default"
BOOTSTRAP_EMAIL = "admin@localhost"


class AccountError(ValueError):
    """An account request that cannot be carried out; the message says why."""


def validate_email(email: str) -> str:
    """Normalise an email address or raise AccountError."""
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or ".." in email:
        raise AccountError(f"{email!r} is not an email address: use the form name@example.com")
    return email


def validate_password(password: str) -> str:
    """Refuse passwords too short to resist guessing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
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
    validate_password(password)
    with database.atomic():
        if User.get_or_none(User.email == email) is not None:
            raise AccountError(f"an account for {email} exists already: sign in or pick another")
        user = User.create(
            email=email, password_hash=hash_password(password), is_operator=is_operator
        )
        team, _ = Team.get_or_create(slug=team_slug, defaults={"name": team_slug.title()})
        Membership.create(user=user, team=team, role=role.value)
    return user


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password, else None."""
    user = User.get_or_none(User.email == email.strip().lower())
    if user is None or not user.is_active or not check_password(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    user.save(only=[User.last_login_at])
    return user


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
