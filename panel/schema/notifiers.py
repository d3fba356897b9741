"""A team's outgoing webhooks (notifiers) in the API: what is sent and answered (pure).

The actions (``panel.actions.notifiers``) check every value again, the URL against internal
addresses included; these models give the API its strict JSON types and its description.
A notifier's answer never holds its URL's path (often a secret itself) nor its signing secret,
except the secret in the one answer that creates or rotates it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from panel.schema.apps import Time
from panel.schema.base import Meta, Resource, checked
from panel.validation import ValidationError, validate_slug

__all__ = [
    "NOTIFIER_NAME_MAX",
    "NOTIFIER_URL_MAX",
    "DeliveryOut",
    "NotifierCreated",
    "NotifierIn",
    "NotifierOut",
    "NotifierPatch",
    "NotifierPath",
    "NotifierRotated",
]

NOTIFIER_NAME_MAX = 100  # characters
NOTIFIER_URL_MAX = 2048  # characters, as panel.notify.MAX_URL_LENGTH
ROW_ID_MAX = 2**63 - 1  # the largest row id any supported database stores
SUBJECTS_MAX = 20  # subjects one notifier may name (there are fewer to choose from)


def validate_notifier_name(value: Any, name: str = "name") -> str:
    """A notifier's name: 1 to 100 printable characters (surrounding spaces dropped); the
    action allows letters, digits, spaces, '.', '_' and '-' only, and says so."""
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > NOTIFIER_NAME_MAX or not text.isprintable():
        raise ValidationError(
            name, f"use 1 to {NOTIFIER_NAME_MAX} letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit",
        )  # fmt: skip
    return text


class NotifierPath(Resource):
    """The team and notifier a request is about (path parameters)."""

    team: Annotated[str, checked(validate_slug, "team"), Meta(label="Team")] = Field(
        description="The team's name, as `GET /api/v1/me` lists your teams.", examples=["acme"]
    )
    notifier_id: int = Field(
        ge=1, le=ROW_ID_MAX, description="The notifier's id, as the team's notifiers list it."
    )


class NotifierIn(Resource):
    """A new outgoing webhook of a team: where to POST which events, and in which form."""

    example: ClassVar[dict[str, Any] | None] = {
        "name": "team chat",
        "url": "https://203.0.113.7/hooks/helios",
        "format": "json",
        "subjects": ["v1.deployment.failed", "v1.build.failed"],
    }

    name: Annotated[
        str, checked(validate_notifier_name, "name"), Meta(label="Name", placeholder="team chat")
    ] = Field(description="What it is for, unique in the team: 1 to 100 letters, digits, "
              "spaces, '.', '_' or '-'.", examples=["team chat"])  # fmt: skip
    url: Annotated[str, Meta(label="URL", placeholder="https://hooks.example.com/helios")] = Field(
        min_length=1,
        max_length=NOTIFIER_URL_MAX,
        description="The https:// address that receives a POST per event (e.g. a Slack incoming "
        "webhook). It must lead to public addresses only; it is checked now and at every send.",
        examples=["https://hooks.example.com/helios"],
    )
    format: Annotated[
        Literal["json", "slack"], Meta(label="Format", kind="json or slack", widget="select")
    ] = Field("json", description="json: the event, signed; slack: one line of text.")
    subjects: Annotated[
        list[Annotated[str, Field(max_length=100)]],
        Meta(label="Events", kind="a list of event subjects"),
    ] = Field(
        min_length=1,
        max_length=SUBJECTS_MAX,
        description="The events to send, one or more of: v1.deployment.succeeded, "
        "v1.deployment.failed, v1.build.failed, v1.app.down, v1.app.drift_detected.",
        examples=[["v1.deployment.failed"]],
    )


class NotifierPatch(Resource):
    """Turn a notifier on or off."""

    example: ClassVar[dict[str, Any] | None] = {"enabled": False}

    enabled: Annotated[bool, Meta(label="Enabled", kind="true or false")] = Field(
        description="false: events no longer reach it (a test still does); true: they do again."
    )


class DeliveryOut(Resource):
    """One event sent, or being sent, to a notifier, and how it went."""

    id: int = Field(description="The delivery's id: the X-Helios-Delivery header it is sent with.")
    subject: str = Field(description="The event's subject, e.g. v1.build.failed.")
    status: str = Field(description="pending (an attempt is to come), delivered or failed.")
    attempts: int = Field(description="Attempts made so far.", ge=0)
    last_status_code: int | None = Field(description="The receiver's last HTTP status, if any.")
    last_error: str = Field(description="Why the last attempt failed; empty when it did not.")
    created_at: Time
    delivered_at: Time


class NotifierOut(Resource):
    """A notifier as its team's admins see it: never its secret, nor its URL's path."""

    id: int
    name: str
    origin: str = Field(
        description="The URL's scheme, host and port only: a webhook URL's path is often a "
        "secret itself, so it is never shown again."
    )
    format: Literal["json", "slack"]
    subjects: list[str]
    enabled: bool
    created_by: str | None = Field(description="The email of who created it, if still known.")
    created_at: Time
    deliveries: list[DeliveryOut] = Field(description="Its most recent deliveries, newest first.")


class NotifierCreated(Resource):
    """A new notifier and its signing secret, shown in this answer only."""

    notifier: NotifierOut
    secret: str = Field(
        description="The HMAC-SHA256 key of the X-Helios-Signature-256 header (64 hex digits)."
    )


class NotifierRotated(NotifierCreated):
    """A notifier and its new signing secret, shown in this answer only (the old one is void)."""
