"""Actions on what the sampler saw: an app's health and its CPU and memory points.

``record_health`` keeps one row per app and says when the state changes: ``v1.app.down`` when
an app that had instances healthy has none any more, ``v1.app.recovered`` when it has again
(audit events, so notifications can follow them), and a ``live.app.health`` notice for live
pages on every change. ``record_usage`` adds a sample to the app's points at each resolution
(one upsert each); ``prune_metrics`` removes points older than their resolution keeps.
"""

from __future__ import annotations

from typing import Any

import peewee as pw
import redis

from panel.db import database
from panel.events import emit, notify
from panel.live import RESOLUTIONS, bucket_of
from panel.models import App, AppHealth, AppMetric, utcnow

__all__ = ["HEALTH_NOTICE", "mark_checked", "prune_metrics", "record_health", "record_usage"]

HEALTH_NOTICE = "live.app.health"
USAGE_BATCH = 200  # rows per statement (SQLite allows 32,766 variables; 10 per row)


def record_health(
    app: App, health: dict[str, Any], redis_conn: redis.Redis | None,
    row: AppHealth | None = None, *, known: bool = False,
) -> bool:  # fmt: skip
    """Store the app's health when it changed (its stored ``row``, read by the caller when
    ``known``); True when it changed (then published, and ``v1.app.down`` or
    ``v1.app.recovered`` emitted on those transitions)."""
    now = utcnow()
    fields = {name: health[name] for name in ("state", "reason", "wanted", "running", "healthy")}
    fields["instances"] = health["instances"]
    if not known:
        row = AppHealth.get_or_none(AppHealth.app == app.id)
    before = row.state if row else None
    if row is not None and all(getattr(row, k) == v for k, v in fields.items()):
        return False
    with database.atomic():  # the row and its event are one change
        if row is None:
            AppHealth.create(app=app, changed_at=now, checked_at=now, **fields)
        else:
            changed_at = now if before != health["state"] else row.changed_at
            AppHealth.update(**fields, checked_at=now, changed_at=changed_at).where(
                AppHealth.id == row.id
            ).execute()
        data = {"app": app.slug, "app_id": app.id, "reason": health["reason"][:2000],
                "wanted": health["wanted"], "healthy": health["healthy"]}  # fmt: skip
        if health["state"] == "down" and before in ("healthy", "degraded"):
            emit("v1.app.down", data, team=app.team_id, redis_conn=redis_conn)
        elif before == "down" and health["state"] in ("healthy", "degraded"):
            emit("v1.app.recovered", {**data, "state": health["state"]}, team=app.team_id,
                 redis_conn=redis_conn)  # fmt: skip
    if redis_conn is not None:
        notify(redis_conn, HEALTH_NOTICE, {"app_id": app.id, "state": health["state"]})
    return True


def mark_checked(app_ids: list[int]) -> None:
    """The sampler looked at these apps now (one statement)."""
    if app_ids:
        AppHealth.update(checked_at=utcnow()).where(AppHealth.app.in_(app_ids)).execute()


def record_usage(samples: list[dict[str, Any]], *, at: int) -> None:
    """Add one sample per app (``app_id``, ``cpu``, ``memory``, ``cpu_limit``,
    ``memory_limit``: its instances together, at epoch second ``at``) to its points at each
    resolution: one statement per resolution, whatever the number of apps."""
    if not samples:
        return
    excluded = pw.EXCLUDED
    for resolution, _kept in RESOLUTIONS:
        rows = [
            {"app": s["app_id"], "resolution": resolution, "bucket": bucket_of(at, resolution),
             "samples": 1, "cpu_sum": s["cpu"], "cpu_max": s["cpu"], "memory_sum": s["memory"],
             "memory_max": s["memory"], "cpu_limit": s["cpu_limit"],
             "memory_limit": s["memory_limit"]}
            for s in samples
        ]  # fmt: skip
        for start in range(0, len(rows), USAGE_BATCH):
            AppMetric.insert_many(rows[start : start + USAGE_BATCH]).on_conflict(
                conflict_target=[AppMetric.app, AppMetric.resolution, AppMetric.bucket],
                update={
                    AppMetric.samples: AppMetric.samples + 1,
                    AppMetric.cpu_sum: AppMetric.cpu_sum + excluded.cpu_sum,
                    AppMetric.memory_sum: AppMetric.memory_sum + excluded.memory_sum,
                    AppMetric.cpu_max: pw.Case(
                        None, [(excluded.cpu_max > AppMetric.cpu_max, excluded.cpu_max)],
                        AppMetric.cpu_max,
                    ),
                    AppMetric.memory_max: pw.Case(
                        None, [(excluded.memory_max > AppMetric.memory_max, excluded.memory_max)],
                        AppMetric.memory_max,
                    ),
                    AppMetric.cpu_limit: excluded.cpu_limit,
                    AppMetric.memory_limit: excluded.memory_limit,
                },
            ).execute()  # fmt: skip


def prune_metrics(now: int) -> int:
    """Remove points older than their resolution keeps; how many."""
    removed = 0
    for resolution, kept in RESOLUTIONS:
        removed += (
            AppMetric.delete()
            .where((AppMetric.resolution == resolution) & (AppMetric.bucket < now - kept))
            .execute()
        )
    return removed
