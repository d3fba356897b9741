"""Drift: what the scheduled check (``panel.reconcile.drift``) found, recorded per app.

A check changes nothing in Nomad. It records the app's state in ``AppDrift`` and emits
``v1.app.drift_detected`` when the app becomes drifted (or the kind of drift changes) and
``v1.app.drift_resolved`` when a drifted app matches again; a check that finds what the last
one found only moves ``checked_at``. Re-applying is a deployment
(:func:`panel.actions.apps.request_reapply`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import peewee as pw
import redis

from panel.db import database
from panel.events import emit
from panel.models import App, AppDrift, Deployment, DeploymentStatus, Release, Team, utcnow
from panel.schema.drift import DRIFTED_STATES, DriftState

__all__ = [
    "DRIFTED_STATES",
    "DriftState",
    "Finding",
    "busy_apps",
    "drift_rows",
    "live_deployments",
    "live_images",
    "record_drift",
    "touch_checked",
]


_BUSY = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)


@dataclass(frozen=True)
class Finding:
    """What one check found for one app (``diff``: scrubbed text, "" when in sync)."""

    state: DriftState
    diff: str = ""


# ---------------------------------------------------------------------------------------------
# Reading: live deployments, busy apps, stored rows (one query each, whatever the app count)
# ---------------------------------------------------------------------------------------------


def live_deployments(app_ids: Iterable[int] | None = None) -> dict[int, Deployment]:
    """Per app id, its live deployment: the last one that succeeded (its release, app and team
    loaded: rendering its job reads nothing more)."""
    newest = Deployment.select(pw.fn.MAX(Deployment.id)).where(
        Deployment.status == DeploymentStatus.SUCCEEDED.value
    )
    if app_ids is not None:
        newest = newest.where(Deployment.app.in_(list(app_ids)))
    newest = newest.group_by(Deployment.app)
    rows = (
        Deployment.select(Deployment, Release, App, Team)
        .join(Release)
        .switch(Deployment)
        .join(App)
        .join(Team)
        .where(Deployment.id.in_(newest) & App.deleted_at.is_null())  # deleted apps run nothing
    )
    return {row.app_id: row for row in rows}


def live_images(app_ids: Iterable[int]) -> dict[int, str]:
    """Per app id, the image its live release runs (apps never deployed are left out)."""
    ids = list(app_ids)
    if not ids:
        return {}
    # Per app, one seek down its own deployments, newest first, to the first that succeeded
    # (a grouped MAX over the page's apps reads every deployment they ever had).
    latest = Deployment.alias()
    image = (
        latest.select(Release.image)
        .join(Release, on=(latest.release == Release.id))
        .where((latest.app == App.id) & (latest.status == DeploymentStatus.SUCCEEDED.value))
        .order_by(latest.id.desc())
        .limit(1)
    )
    rows = App.select(App.id, image.alias("image")).where(App.id.in_(ids)).tuples()
    return {app_id: found for app_id, found in rows if found is not None}


def busy_apps(app_ids: Iterable[int] | None = None) -> set[int]:
    """Ids of apps with a deployment queued or running (their job is expected to change)."""
    query = Deployment.select(Deployment.app).where(Deployment.status.in_(_BUSY))
    if app_ids is not None:
        query = query.where(Deployment.app.in_(list(app_ids)))
    return {row.app_id for row in query.distinct()}


def drift_rows(app_ids: Iterable[int]) -> dict[int, AppDrift]:
    """The stored drift rows of these apps, by app id (one query)."""
    ids = list(app_ids)
    if not ids:
        return {}
    return {row.app_id: row for row in AppDrift.select().where(AppDrift.app.in_(ids))}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def touch_checked(app_ids: Iterable[int]) -> int:
    """Move ``checked_at`` of apps whose check found what the last one did; how many rows."""
    ids = list(app_ids)
    if not ids:
        return 0
    return AppDrift.update(checked_at=utcnow()).where(AppDrift.app.in_(ids)).execute()


def _event_data(deployment: Deployment) -> dict[str, object]:
    return {
        "app": deployment.app.slug,
        "app_id": deployment.app_id,
        "release": deployment.release.number,
        "deployment_id": deployment.id,
    }


def record_drift(
    deployment: Deployment, finding: Finding, redis_conn: redis.Redis | None
) -> AppDrift:
    """Store what a check of the app of ``deployment`` (its live one) found; emit on a change.

    ``unknown`` (Nomad did not answer) keeps an open drift open and emits nothing.
    """
    app, now = deployment.app, utcnow()
    with database.atomic():
        row = AppDrift.get_or_none(AppDrift.app == app.id)
        before = DriftState(row.state) if row else None
        if row is None:
            row = AppDrift(app=app, state=finding.state.value)
        opened = row.detected_at
        subject = None
        if finding.state in DRIFTED_STATES:
            if opened is None or (before in DRIFTED_STATES and before != finding.state):
                subject = "v1.app.drift_detected"
            opened = opened or now
        elif finding.state == DriftState.IN_SYNC:
            if opened is not None:
                subject = "v1.app.drift_resolved"
            opened = None
        row.state, row.diff, row.deployment = finding.state.value, finding.diff, deployment
        row.checked_at, row.detected_at = now, opened
        row.save()
        if subject == "v1.app.drift_detected":
            data = {**_event_data(deployment), "state": finding.state.value}
            emit(subject, data, team=app.team_id, redis_conn=redis_conn)
        elif subject:
            emit(subject, _event_data(deployment), team=app.team_id, redis_conn=redis_conn)
    return row
