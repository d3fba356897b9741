"""An app's addresses and what the last domain check found for each: the API's answer (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from panel.schema.base import Resource

__all__ = ["AddressOut", "CheckPartOut"]

_Time = Annotated[datetime | None, Field(description="UTC, ISO 8601 with a trailing Z.")]


class CheckPartOut(Resource):
    """One part of an address's check (DNS, routing or TLS): how it was found, and the facts."""

    state: Literal["ok", "warning", "error", "unknown"] = Field(
        description="ok, warning, error, or unknown (not read: says nothing either way)."
    )
    label: str = Field(description="A few words, as the app page's badge shows them.")
    message: str = Field(description="One sentence: what was found and what to do about it.")
    facts: dict[str, Any] = Field(
        description="What was read. DNS: addresses, edge, error. Routing: router, status, "
        "errors, tls, certresolver. TLS: edge, verified, verify_error, subject, names, issuer, "
        "not_after, days_left, self_signed, error."
    )


class AddressOut(Resource):
    """An address the app is reached at: its default host or a custom domain, with what the
    last domain check found (every HELIOS_DOMAIN_CHECK_INTERVAL seconds)."""

    hostname: str
    url: str = Field(description="https://<hostname>/")
    default: bool = Field(description="true for <app>.<HELIOS_BASE_DOMAIN>.")
    state: Literal["ok", "warning", "error"] | None = Field(
        description="The address as a whole; null: not checked yet (added since, or checks "
        "are off)."
    )
    summary: str = Field(description="Why, in one sentence (the first error or warning).")
    dns: CheckPartOut | None
    routing: CheckPartOut | None
    tls: CheckPartOut | None
    checked_at: _Time
