"""Pending changes: what the app's next deploy would change over its live release (pure)."""

from __future__ import annotations

from pydantic import Field

from panel.schema.base import Resource

__all__ = ["PendingOut"]


class PendingOut(Resource):
    """The settings, variables, secrets and domains changed since the app's live release."""

    live_release: int | None = Field(
        description="The release that runs now; null before the app's first successful deploy "
        "(then there is nothing to compare with and `changes` is empty)."
    )
    changes: list[str] = Field(
        description="One readable line per change, e.g. `count: 1 → 3` or `secret TOKEN: set "
        "to a new value` (secret values are never shown); empty: the next deploy changes no "
        "setting. `helios deploy APP` applies them."
    )
