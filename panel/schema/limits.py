"""A team's usage and limits, and the rule that admits a change (pure: no database).

Usage counts the team's live apps (stopped ones included: they keep their name and settings)
and what its running apps ask Nomad for: instances, CPU and memory reserved over every
instance. A stopped app runs nothing, so it uses no instance, CPU or memory; starting it again
is admitted like any other growth. Per app the larger of two asks counts, per measure: what
its settings would run (the next deploy) and what its newest deployment runs or is about to
(which a rollback or the repository's helios.toml can make differ from the settings).

A change is refused only for a measure it makes grow past its limit: whatever lowers usage
(or keeps it) passes, even while the team is over a limit set below what it already uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar

from pydantic import Field

from panel.schema.base import Resource, checked
from panel.validation import validate_team_limit

__all__ = [
    "MEASURES",
    "AppClaim",
    "Change",
    "Limits",
    "Overrun",
    "Resources",
    "TeamLimitsIn",
    "TeamLimitsOut",
    "Usage",
    "apply_change",
    "describe_overrun",
    "overruns",
    "team_usage",
]

# The measures, in the order they are shown; each is a Usage field and a Team column
# ``limit_<measure>``.
MEASURES = ("apps", "instances", "cpu_mhz", "memory_mb")
# How each measure is written: its unit, and what it is of.
_UNITS = {"apps": ("apps", ""), "instances": ("instances", ""), "cpu_mhz": ("MHz", " of CPU"),
          "memory_mb": ("MB", " of memory")}  # fmt: skip
_OPTIONS = {"apps": "--apps", "instances": "--instances", "cpu_mhz": "--cpu-mhz",
            "memory_mb": "--memory-mb"}  # fmt: skip
_FIXES = {
    "apps": "delete an app of the team",
    "instances": "lower the app's count, or stop or scale down another app",
    "cpu_mhz": "lower the app's CPU or count",
    "memory_mb": "lower the app's memory or count",
}


@dataclass(frozen=True)
class Resources:
    """What one version of an app asks for: instances, and CPU and memory per instance."""

    count: int
    cpu_mhz: int
    memory_mb: int


@dataclass(frozen=True)
class AppClaim:
    """One live app as usage counts it: its settings, what its newest deployment runs (None
    before any), and whether it is stopped."""

    app_id: int | None
    settings: Resources
    target: Resources | None = None
    stopped: bool = False


@dataclass(frozen=True)
class Usage:
    apps: int = 0
    instances: int = 0
    cpu_mhz: int = 0
    memory_mb: int = 0

    def as_dict(self) -> dict[str, int]:
        return {measure: getattr(self, measure) for measure in MEASURES}


@dataclass(frozen=True)
class Limits:
    """A team's limits; None: no limit."""

    apps: int | None = None
    instances: int | None = None
    cpu_mhz: int | None = None
    memory_mb: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {measure: getattr(self, measure) for measure in MEASURES}


@dataclass(frozen=True)
class Change:
    """What a request would do to one app: ``app_id`` None creates one; ``settings`` and
    ``target`` replace the app's (None: as they are); ``start`` runs a stopped app."""

    app_id: int | None = None
    settings: Resources | None = None
    target: Resources | None = None
    start: bool = False


def _app_usage(claim: AppClaim) -> Usage:
    if claim.stopped:
        return Usage(apps=1)
    asks = [claim.settings] + ([claim.target] if claim.target is not None else [])
    return Usage(
        apps=1,
        instances=max(ask.count for ask in asks),
        cpu_mhz=max(ask.count * ask.cpu_mhz for ask in asks),
        memory_mb=max(ask.count * ask.memory_mb for ask in asks),
    )


def team_usage(claims: Iterable[AppClaim]) -> Usage:
    """What a team's live apps use, summed (see the module's description)."""
    total = {measure: 0 for measure in MEASURES}
    for claim in claims:
        for measure, value in _app_usage(claim).as_dict().items():
            total[measure] += value
    return Usage(**total)


def apply_change(claims: Iterable[AppClaim], change: Change) -> list[AppClaim]:
    """The team's claims once ``change`` is made."""
    after: list[AppClaim] = []
    found = False
    for claim in claims:
        if change.app_id is not None and claim.app_id == change.app_id:
            found = True
            claim = replace(
                claim,
                settings=change.settings or claim.settings,
                target=change.target or claim.target,
                stopped=claim.stopped and not change.start,
            )
        after.append(claim)
    if change.app_id is None or not found:
        settings = change.settings or change.target or Resources(1, 0, 0)
        after.append(AppClaim(change.app_id, settings, change.target))
    return after


@dataclass(frozen=True)
class Overrun:
    """One limit a change would cross: the usage now, after it, and the limit."""

    measure: str
    before: int
    after: int
    limit: int


def overruns(before: Usage, after: Usage, limits: Limits) -> list[Overrun]:
    """The limits a change from ``before`` to ``after`` crosses: only a measure that grows past
    its limit counts (lowering, or staying, is always allowed)."""
    found = []
    for measure in MEASURES:
        limit = getattr(limits, measure)
        was, will = getattr(before, measure), getattr(after, measure)
        if limit is not None and will > was and will > limit:
            found.append(Overrun(measure, was, will, limit))
    return found


def describe_overrun(team: str, overrun: Overrun) -> str:
    """Why a change is refused and how to fix it, in one sentence."""
    unit, what = _UNITS[overrun.measure]
    return (
        f"team {team} would use {overrun.after:,} {unit}{what}, over its limit of "
        f"{overrun.limit:,} {unit} ({overrun.before:,} {unit} in use, this change adds "
        f"{overrun.after - overrun.before:,} {unit}): {_FIXES[overrun.measure]}, or ask a site "
        f"admin to raise the limit (helios teams limits {team} {_OPTIONS[overrun.measure]} N)"
    )


# ---------------------------------------------------------------------------------------------
# The API's shapes
# ---------------------------------------------------------------------------------------------


def _limit(measure: str, what: str) -> Any:
    return Annotated[
        int | None,
        checked(validate_team_limit, measure, before=True),
        Field(description=f'{what}; null or "none": no limit. Left out: unchanged.'),
    ]


CpuLimit = _limit("cpu_mhz", "CPU in MHz, summed over every instance")
MemoryLimit = _limit("memory_mb", "memory in MB, summed over every instance")
InstancesLimit = _limit("instances", "instances of every app together")
AppsLimit = _limit("apps", "live apps")


class TeamLimitsIn(Resource):
    """New limits for a team (site admins); a field left out stays as it is."""

    example: ClassVar[dict[str, Any] | None] = {"memory_mb": 4096, "apps": None}

    cpu_mhz: CpuLimit = None
    memory_mb: MemoryLimit = None
    instances: InstancesLimit = None
    apps: AppsLimit = None

    def given(self) -> Mapping[str, int | None]:
        """The limits the request sets (left-out fields excluded)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class MeasureOut(Resource):
    """One measure: what the team uses and its limit (null: none)."""

    used: int
    limit: int | None


class TeamLimitsOut(Resource):
    """A team's usage against its limits, per measure."""

    team: str
    apps: MeasureOut
    instances: MeasureOut
    cpu_mhz: MeasureOut
    memory_mb: MeasureOut
