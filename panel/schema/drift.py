"""Drift of an app's job in Nomad from its live release: its states and its API answer (pure)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from pydantic import Field

from panel.schema.base import Resource

__all__ = ["DRIFTED_STATES", "DriftOut", "DriftState"]


class DriftState(enum.StrEnum):
    """How an app's job in Nomad compares with the job of its live release."""

    IN_SYNC = "in_sync"
    DRIFTED = "drifted"  # changed behind Helios's back
    MISSING = "missing"  # not in Nomad (purged)
    STOPPED = "stopped"  # stopped (``nomad job stop``)
    UNKNOWN = "unknown"  # Nomad did not answer the check


DRIFTED_STATES = frozenset({DriftState.DRIFTED, DriftState.MISSING, DriftState.STOPPED})

_Time = Annotated[datetime | None, Field(description="UTC, ISO 8601 with a trailing Z.")]


class DriftOut(Resource):
    """How the app's job in Nomad compared with its live release when last checked."""

    app: str
    state: DriftState | None = Field(
        description="in_sync, drifted (changed by hand), missing (purged), stopped, unknown "
        "(Nomad did not answer); null: not checked yet (no live release, or checks are off)."
    )
    diff: str = Field(
        description="What a re-apply would change, as `nomad job plan` prints it (secrets "
        "masked); for missing, stopped and unknown, why."
    )
    release: int | None = Field(description="The live release the job was compared with.")
    checked_at: _Time
    detected_at: _Time = Field(description="When the current drift was first seen.")
