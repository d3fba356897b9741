"""Per-team limits on CPU, memory, instances and apps, enforced when a change is admitted.

Site admins (operators) set a team's limits (``set_team_limits``: the team page, ``PUT
/api/v1/teams/<team>/limits``, `helios teams limits`); anyone in the team reads its usage
against them. Every action that could make a team use more calls :func:`check_team_limits`
inside its own write transaction, before it writes: creating an app, changing an app's count,
CPU or memory, scaling it, and recording any deployment (a deploy, a build's, a rollback, a
re-apply, a restart, a start: a deployment of a stopped app starts it). How usage is counted
is in ``panel.schema.limits``: a stopped app counts as an app but uses no instance, CPU or
memory, so starting it is checked like any growth.

Two requests at once must not both pass when together they cross a limit: the check locks the
team's row (``SELECT … FOR UPDATE`` on PostgreSQL) and reads usage in the same transaction as
the change it admits; on SQLite every write transaction begins IMMEDIATE, holding the
database's write lock from its start, so admissions there happen one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee as pw
import redis

from panel.actions.common import ActionError, FieldError, actor_name, authorize_operator
from panel.db import database
from panel.events import emit
from panel.models import App, Deployment, DeploymentStatus, Release, Team, User
from panel.schema.limits import (
    MEASURES,
    AppClaim,
    Change,
    Limits,
    Resources,
    Usage,
    apply_change,
    describe_overrun,
    overruns,
    team_usage,
)
from panel.validation import ValidationError, validate_team_limit

__all__ = [
    "Change",
    "Resources",
    "check_team_limits",
    "limits_of",
    "release_resources",
    "set_team_limits",
    "usage_of",
]

# Deployments that say what an app runs or is about to (failed ones were rolled back, or never
# ran; superseded and cancelled ones never reached Nomad).
_TARGETS = (
    DeploymentStatus.QUEUED.value,
    DeploymentStatus.RUNNING.value,
    DeploymentStatus.SUCCEEDED.value,
)


def limits_of(team: Team) -> Limits:
    """The team's limits as its row has them."""
    return Limits(**{measure: getattr(team, f"limit_{measure}") for measure in MEASURES})


def release_resources(config: Mapping[str, Any], instance_count: int | None = None) -> Resources:
    """What a release's frozen configuration runs (``instance_count``: a scaled count)."""
    count = instance_count if instance_count is not None else int(config.get("count") or 1)
    return Resources(count, int(config.get("cpu_mhz") or 0), int(config.get("memory_mb") or 0))


def _claims(team_id: int) -> list[AppClaim]:
    """Every live app of the team, as usage counts it (two queries)."""
    apps = list(
        App.live(App.id, App.count, App.cpu_mhz, App.memory_mb, App.stopped_at).where(
            App.team == team_id
        )
    )
    if not apps:
        return []
    newest = (
        Deployment.select(pw.fn.MAX(Deployment.id))
        .where(Deployment.app.in_([a.id for a in apps]) & Deployment.status.in_(_TARGETS))
        .group_by(Deployment.app)
    )
    targets = {
        row.app_id: release_resources(row.release.config or {}, row.instance_count)
        for row in Deployment.select(
            Deployment.id, Deployment.app, Deployment.instance_count, Release.id, Release.config
        )
        .join(Release)
        .where(Deployment.id.in_(newest))
    }
    return [
        AppClaim(
            app.id,
            Resources(app.count, app.cpu_mhz, app.memory_mb),
            targets.get(app.id),
            stopped=app.stopped_at is not None,
        )
        for app in apps
    ]


def usage_of(team: Team | int) -> Usage:
    """What the team's apps use now."""
    return team_usage(_claims(team if isinstance(team, int) else team.id))


def _locked_team(team_id: int) -> Team:
    """The team's row, locked until the transaction ends (PostgreSQL; SQLite's IMMEDIATE
    transaction holds the whole database's write lock already)."""
    query = Team.select().where(Team.id == team_id)
    if not isinstance(database.obj, pw.SqliteDatabase):
        query = query.for_update()
    team = query.first()
    if team is None:
        raise ActionError("not_found", "no such app or team")
    return team


def check_team_limits(team: Team | int, change: Change) -> Usage:
    """Refuse (``conflict``, one sentence per limit crossed) a change that would take the team
    past a limit; the usage after it otherwise. Call it inside the transaction that makes the
    change, before writing it."""
    if not database.in_transaction():
        raise RuntimeError("check_team_limits must run inside the change's transaction")
    row = _locked_team(team if isinstance(team, int) else team.id)
    limits = limits_of(row)
    claims = _claims(row.id)
    before = team_usage(claims)
    after = team_usage(apply_change(claims, change))
    crossed = overruns(before, after, limits)
    if crossed:
        raise ActionError("conflict", "; ".join(describe_overrun(row.slug, o) for o in crossed))
    return after


def set_team_limits(
    *,
    actor: User | None,
    team: Team,
    limits: Mapping[str, object],
    redis_conn: redis.Redis | None = None,
) -> Team:
    """Set some of a team's limits (site admins only): ``limits`` maps a measure (apps,
    instances, cpu_mhz, memory_mb) to a whole number or None / "none" (no limit); measures
    left out stay. A limit below what the team uses already is allowed: nothing stops, but
    nothing may grow until usage is under it. ``v1.team.limits_changed`` when one changed."""
    authorize_operator(actor)
    problems, wanted = [], {}
    for measure, value in limits.items():
        if measure not in MEASURES:
            problems.append(FieldError(measure[:40], f"unknown limit {measure[:40]!r}: use "
                                       f"{', '.join(MEASURES)}"))  # fmt: skip
            continue
        try:
            wanted[measure] = validate_team_limit(value, measure)
        except ValidationError as exc:
            problems.append(FieldError(measure, exc.message))
    if problems:
        raise ActionError.invalid(problems)
    with database.atomic():
        row = _locked_team(team.id)
        before = limits_of(row).as_dict()
        changed = {m: v for m, v in wanted.items() if before[m] != v}
        if changed:
            Team.update(**{f"limit_{m}": v for m, v in changed.items()}).where(
                Team.id == row.id
            ).execute()
            emit(
                "v1.team.limits_changed",
                {"team": row.slug, "fields": sorted(changed),
                 "limits": {**before, **changed}},
                actor=actor_name(actor), team=row, redis_conn=redis_conn,
            )  # fmt: skip
    for measure, value in changed.items():
        setattr(team, f"limit_{measure}", value)
    return team
