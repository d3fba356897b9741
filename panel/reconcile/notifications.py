"""The delivery job: one attempt of sending one event to one notifier, its outcome recorded.

Receivers that cannot be reached, or answer 5xx or 429, get another attempt after the next of
HELIOS_NOTIFY_RETRY_DELAYS; any other answer is final (3xx included: redirects are never
followed). A refused URL (an internal address) fails at once, and nothing is sent.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import peewee as pw
import redis
from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from panel.actions.notifiers import claim_attempt, record_attempt
from panel.config import Settings
from panel.crypto import SecretCipher, SecretKeyError
from panel.db import database
from panel.models import Event, Notifier, NotifierDelivery, utcnow
from panel.notify import (
    DeliveryError,
    OutgoingURLError,
    Response,
    check_url,
    delivery_job_id,
    enqueue_delivery,
    post,
    render_body,
    sign,
)
from panel.queue import connect_redis

__all__ = ["deliver_notification", "document_of", "resume_notifications"]

logger = logging.getLogger(__name__)

RESUME_LOCK = "helios:notify:resume"  # one worker looks for lost deliveries per interval
RESUME_INTERVAL = 60  # seconds
RESUME_AFTER = 60  # seconds a pending delivery may wait for its job before it counts as lost
_OVER = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def document_of(event: Event) -> dict:
    """What a notifier receives of an event."""
    return {
        "id": event.id,
        "subject": event.subject,
        "team": event.team.slug if event.team_id else None,
        "data": event.data,
        "created_at": event.created_at.isoformat() + "Z",
    }


def _judge(response: Response) -> tuple[str, str, bool]:
    """(status, error, worth another attempt) of a receiver's answer."""
    code = response.status
    if 200 <= code < 300:
        return "delivered", "", False
    if 300 <= code < 400:
        return "failed", f"answered {code}: redirects are not followed", False
    said = f": {response.excerpt}" if response.excerpt else ""
    return "failed", f"answered {code}{said}", code >= 500 or code == 429


def _send(delivery: NotifierDelivery, notifier: Notifier, settings: Settings) -> Response:
    """Check the URL again, then POST the signed event; raises what post and check_url do."""
    event = Event.get_or_none(Event.id == delivery.event_id)
    if event is None:
        raise OutgoingURLError("its event is gone")
    target, addresses = check_url(notifier.url, settings)
    body = render_body(notifier.format, document_of(event))
    secret = SecretCipher.from_settings(settings).decrypt(notifier.secret)
    headers = {
        "X-Helios-Event": event.subject,
        "X-Helios-Delivery": str(delivery.id),
        "X-Helios-Signature-256": sign(secret, body),
    }
    return post(target, addresses, body, headers)


def deliver_notification(delivery_id: int, attempt: int = 1) -> str:
    """Make ``attempt`` of a delivery and record it; queue the next one when worth it."""
    settings = Settings.from_env()
    delivery = claim_attempt(delivery_id, attempt)
    if delivery is None:
        return "nothing to do"
    notifier = delivery.notifier
    retry, code = False, None
    try:
        response = _send(delivery, notifier, settings)
        code = response.status
        status, error, retry = _judge(response)
    except OutgoingURLError as exc:
        status, error = "failed", f"refused: {exc}"
    except DeliveryError as exc:
        status, error, retry = "failed", str(exc), True
    except SecretKeyError as exc:
        record_attempt(delivery, status="failed", status_code=None, error=str(exc))
        raise
    delays = settings.notify_retry_delays
    again = retry and attempt <= len(delays)
    if again:
        status = "pending"
        error = f"{error}; attempt {attempt + 1} in {delays[attempt - 1]} s"
    record_attempt(delivery, status=status, status_code=code, error=error)
    if again:
        job = get_current_job()
        connection = job.connection if job is not None else connect_redis(settings)
        enqueue_delivery(connection, delivery.id, attempt=attempt + 1, delay=delays[attempt - 1])
    logger.info("notification delivery #%d attempt %d: %s", delivery.id, attempt,
                json.dumps({"status": status, "code": code}))  # fmt: skip
    return status


def _job_status(connection: redis.Redis, job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=connection).get_status(refresh=False)
    except NoSuchJobError:
        return None


def _lost(connection: redis.Redis, delivery: NotifierDelivery) -> bool:
    """True when no job will make the delivery's next attempt: none is queued or scheduled
    for it, and the job of its last attempt is over (or gone)."""
    if _job_status(connection, delivery_job_id(delivery.id, delivery.attempts + 1)) is not None:
        return False
    if delivery.attempts == 0:
        return True
    current = _job_status(connection, delivery_job_id(delivery.id, delivery.attempts))
    return current is None or current in _OVER


def resume_notifications(
    connection: redis.Redis, older_than: int = RESUME_AFTER, *, locked: bool = True
) -> int:
    """Queue again the pending deliveries whose job was lost (Redis down when the event came,
    or restarted since), at most once per RESUME_INTERVAL across the workers; how many
    (never raises)."""
    try:
        if locked and not connection.set(RESUME_LOCK, 1, nx=True, ex=RESUME_INTERVAL):
            return 0
        before = utcnow() - timedelta(seconds=older_than)
        with database.connection_context():
            waiting = list(
                NotifierDelivery.select().where(
                    (NotifierDelivery.status == "pending") & (NotifierDelivery.created_at <= before)
                )
            )
        lost = [delivery for delivery in waiting if _lost(connection, delivery)]
        for delivery in lost:
            enqueue_delivery(connection, delivery.id, attempt=delivery.attempts + 1)
    except (pw.PeeweeException, redis.RedisError) as exc:
        logger.warning("could not look for lost notification deliveries now: %s", exc)
        return 0
    if lost:
        logger.info("queued %d lost notification deliveries again", len(lost))
    return len(lost)
