"""Outgoing notifications: a team's admins register webhooks; the delivery job records outcomes.

The events themselves fan out to the notifiers in ``panel.events.emit``; sending (and the URL
checks against internal addresses) is ``panel.notify``; the job is
``panel.reconcile.notifications``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.db import database
from panel.events import SCHEMAS, emit
from panel.models import Notifier, NotifierDelivery, Role, Team, User, utcnow
from panel.notify import (
    NOTIFY_SUBJECTS,
    DeliveryError,
    OutgoingURLError,
    check_url,
    enqueue_delivery,
)

__all__ = [
    "FORMATS",
    "KEEP_DELIVERIES",
    "NewNotifier",
    "claim_attempt",
    "create_notifier",
    "delete_notifier",
    "list_notifiers",
    "recent_deliveries",
    "record_attempt",
    "rotate_notifier_secret",
    "send_test_notification",
    "set_notifier_enabled",
    "subject_choices",
]

FORMATS = ("json", "slack")
KEEP_DELIVERIES = 200  # per notifier; older finished deliveries are removed
RECENT_DELIVERIES = 10  # shown per notifier on the team page
MAX_NOTIFIERS = 20  # per team
MAX_ERROR = 500  # characters of a delivery's last error
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


@dataclass(frozen=True)
class NewNotifier:
    """A notifier as created: ``secret`` signs its deliveries and is shown once."""

    row: Notifier
    secret: str


def subject_choices() -> dict[str, str]:
    """The subjects a notifier may ask for now (those whose events exist), with their names."""
    return {subject: label for subject, label in NOTIFY_SUBJECTS.items() if subject in SCHEMAS}


def _check_fields(
    team: Team, name: str, url: str, fmt: str, subjects: list[str], settings: Settings
) -> tuple[str, list[str]]:
    """The name and subjects as kept; ActionError listing every field at fault."""
    problems = []
    name = (name or "").strip()
    if not _NAME.match(name):
        problems.append(FieldError("name", "use 1 to 100 letters, digits, spaces, '.', '_' or "
                                           "'-', starting with a letter or digit"))  # fmt: skip
    elif Notifier.select().where((Notifier.team == team.id) & (Notifier.name == name)).exists():
        problems.append(FieldError("name", f"{team.slug} has a notifier named {name!r}: "
                                           "pick another name"))  # fmt: skip
    try:
        check_url(url or "", settings)
    except (OutgoingURLError, DeliveryError) as exc:
        problems.append(FieldError("url", f"this URL is refused: {exc}"))
    if fmt not in FORMATS:
        problems.append(FieldError("format", "pick json or slack"))
    choices = subject_choices()
    chosen = list(dict.fromkeys(subjects or []))
    if not chosen or any(subject not in choices for subject in chosen):
        problems.append(FieldError("subjects", "tick at least one of the events offered"))
    if problems:
        raise ActionError.invalid(problems)
    return name, chosen


def create_notifier(
    *,
    actor: User | None,
    team: Team,
    name: str,
    url: str,
    format: str,
    subjects: list[str],
    settings: Settings,
    redis_conn: redis.Redis | None = None,
) -> NewNotifier:
    """Register an outgoing webhook of ``team`` for ``subjects``; its URL must pass the
    checks against internal addresses now (and passes them again at every send)."""
    authorize(actor, team, Role.ADMIN)
    name, subjects = _check_fields(team, name, url, format, subjects, settings)
    if Notifier.select().where(Notifier.team == team.id).count() >= MAX_NOTIFIERS:
        raise ActionError("conflict", f"a team has at most {MAX_NOTIFIERS} notifiers: "
                                      "delete one first")  # fmt: skip
    secret = secrets.token_hex(32)
    cipher = SecretCipher.from_settings(settings)
    with database.atomic():
        row = Notifier.create(
            team=team.id, name=name, url=url, format=format, subjects=subjects,
            secret=cipher.encrypt(secret), created_by=actor.id if actor else None,
            created_at=utcnow(),
        )  # fmt: skip
        data = {"notifier_id": row.id, "name": name, "host": _host(url), "format": format,
                "subjects": subjects}  # fmt: skip
        emit("v1.notifier.created", data, actor=actor_name(actor), team=team.id,
             redis_conn=redis_conn)  # fmt: skip
    return NewNotifier(row, secret)


def _host(url: str) -> str:
    return (url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1])[:253]


def _notifier(team: Team, notifier_id: int) -> Notifier:
    row = Notifier.get_or_none((Notifier.id == notifier_id) & (Notifier.team == team.id))
    if row is None:
        raise ActionError("not_found", "no such notifier in this team")
    return row


def set_notifier_enabled(
    *,
    actor: User | None,
    team: Team,
    notifier_id: int,
    enabled: bool,
    redis_conn: redis.Redis | None = None,
) -> Notifier:
    """Turn a notifier on or off (off: events no longer reach it)."""
    authorize(actor, team, Role.ADMIN)
    with database.atomic():
        row = _notifier(team, notifier_id)
        if row.enabled != enabled:
            Notifier.update(enabled=enabled).where(Notifier.id == row.id).execute()
            row.enabled = enabled
            emit("v1.notifier.changed", {"notifier_id": row.id, "name": row.name,
                 "enabled": enabled}, actor=actor_name(actor), team=team.id,
                 redis_conn=redis_conn)  # fmt: skip
    return row


def delete_notifier(
    *, actor: User | None, team: Team, notifier_id: int, redis_conn: redis.Redis | None = None
) -> Notifier:
    """Delete a notifier and its deliveries (a queued attempt then finds nothing to send)."""
    authorize(actor, team, Role.ADMIN)
    with database.atomic():
        row = _notifier(team, notifier_id)
        Notifier.delete().where(Notifier.id == row.id).execute()
        emit("v1.notifier.deleted", {"notifier_id": row.id, "name": row.name},
             actor=actor_name(actor), team=team.id, redis_conn=redis_conn)  # fmt: skip
    return row


def send_test_notification(
    *, actor: User | None, team: Team, notifier_id: int, redis_conn: redis.Redis
) -> NotifierDelivery:
    """Send a ``v1.notifier.tested`` event to this notifier only, enabled or not."""
    authorize(actor, team, Role.ADMIN)
    with database.atomic():
        row = _notifier(team, notifier_id)
        event = emit("v1.notifier.tested", {"notifier_id": row.id, "name": row.name},
                     actor=actor_name(actor), team=team.id, redis_conn=redis_conn)  # fmt: skip
        delivery = NotifierDelivery.create(
            notifier=row.id, event=event.id, subject=event.subject, created_at=utcnow()
        )
        database.after_commit(lambda: enqueue_delivery(redis_conn, delivery.id))
    return delivery


def rotate_notifier_secret(
    *,
    actor: User | None,
    team: Team,
    notifier_id: int,
    settings: Settings,
    redis_conn: redis.Redis | None = None,
) -> NewNotifier:
    """Give a notifier a new signing secret, shown once; the old one signs nothing from now
    on: every attempt made after this commits, retries of older deliveries included, is signed
    with the new secret (a delivery is signed when it is sent, not when it is queued)."""
    authorize(actor, team, Role.ADMIN)
    secret = secrets.token_hex(32)
    cipher = SecretCipher.from_settings(settings)
    with database.atomic():
        row = _notifier(team, notifier_id)
        row.secret = cipher.encrypt(secret)
        Notifier.update(secret=row.secret).where(Notifier.id == row.id).execute()
        emit("v1.notifier.secret_rotated", {"notifier_id": row.id, "name": row.name},
             actor=actor_name(actor), team=team.id, redis_conn=redis_conn)  # fmt: skip
    return NewNotifier(row, secret)


def list_notifiers(team: Team) -> list[tuple[Notifier, list[NotifierDelivery]]]:
    """A team's notifiers by name, each with its most recent deliveries."""
    rows = Notifier.select().where(Notifier.team == team.id).order_by(Notifier.name)
    return [(row, recent_deliveries(row)) for row in rows]


def recent_deliveries(row: Notifier) -> list[NotifierDelivery]:
    """A notifier's most recent deliveries, newest first."""
    return list(row.deliveries.order_by(NotifierDelivery.id.desc()).limit(RECENT_DELIVERIES))


# ---------------------------------------------------------------------------------------------
# The delivery job's records
# ---------------------------------------------------------------------------------------------


def claim_attempt(delivery_id: int, attempt: int) -> NotifierDelivery | None:
    """Count ``attempt`` of a pending delivery as started; None when it is no longer pending
    or that attempt was claimed already (a duplicate job sends nothing)."""
    claimed = (
        NotifierDelivery.update(attempts=attempt)
        .where(
            (NotifierDelivery.id == delivery_id)
            & (NotifierDelivery.status == "pending")
            & (NotifierDelivery.attempts == attempt - 1)
        )
        .execute()
    )
    return NotifierDelivery.get_or_none(NotifierDelivery.id == delivery_id) if claimed else None


def record_attempt(
    delivery: NotifierDelivery, *, status: str, status_code: int | None, error: str
) -> None:
    """Record how an attempt went (``pending``: another attempt follows); finished deliveries
    past the newest KEEP_DELIVERIES of the notifier are removed."""
    changes = {
        NotifierDelivery.status: status,
        NotifierDelivery.last_status_code: status_code,
        NotifierDelivery.last_error: error[:MAX_ERROR],
    }
    if status == "delivered":
        changes[NotifierDelivery.delivered_at] = utcnow()
    with database.atomic():
        NotifierDelivery.update(changes).where(NotifierDelivery.id == delivery.id).execute()
        if status != "pending":
            keep = (
                NotifierDelivery.select(NotifierDelivery.id)
                .where(NotifierDelivery.notifier == delivery.notifier_id)
                .order_by(NotifierDelivery.id.desc())
                .limit(KEEP_DELIVERIES)
            )
            NotifierDelivery.delete().where(
                (NotifierDelivery.notifier == delivery.notifier_id)
                & (NotifierDelivery.status != "pending")
                & NotifierDelivery.id.not_in(keep)
            ).execute()
