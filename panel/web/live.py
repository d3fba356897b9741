"""What runs, on the pages: an app's instances and health, its CPU and memory charts, and the
dashboard's health column and sparklines, from what the sampler stored
(``panel.reconcile.observe``); the app page follows its health live (``/apps/<slug>/live``).

Charts are SVG drawn here (no script, no chart library): the mean of each point as a line and
the reservation (the limit Nomad enforces) as a dashed one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from flask import Blueprint
from flask_login import login_required

from panel.actions.observe import HEALTH_NOTICE
from panel.events import CHANNEL
from panel.live import RESOLUTIONS
from panel.models import App, AppHealth, AppMetric, utcnow
from panel.web.access import app_or_404
from panel.web.pages import signed_in
from panel.web.streams import Frame, StateFeed, events_about, live_stream

__all__ = ["bp", "health_of", "live_state", "sparklines"]

bp = Blueprint("live", __name__)

WIDTH, HEIGHT = 600, 120  # the charts' drawing box
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
MB = 1024 * 1024
WINDOWS = {"hour": (10, 3600), "day": (60, 86_400), "week": (600, 7 * 86_400)}


def health_of(app_ids: list[int]) -> dict[int, AppHealth]:
    """The stored health of these apps (one query)."""
    if not app_ids:
        return {}
    return {row.app_id: row for row in AppHealth.select().where(AppHealth.app.in_(app_ids))}


def _points(app_ids: list[int], resolution: int, since: int) -> dict[int, list[AppMetric]]:
    rows = (
        AppMetric.select()
        .where(
            AppMetric.app.in_(app_ids)
            & (AppMetric.resolution == resolution)
            & (AppMetric.bucket >= since)
        )
        .order_by(AppMetric.bucket)
    )
    found: dict[int, list[AppMetric]] = defaultdict(list)
    for row in rows:
        found[row.app_id].append(row)
    return found


def _line(values: list[tuple[int, float]], start: int, span: int, top: float, w: int, h: int):
    """SVG polyline points of (time, value) pairs in a w by h box (time left to right)."""
    return " ".join(
        f"{(at - start) / span * w:.1f},{h - min(value / top, 1.0) * h:.1f}" for at, value in values
    )


def sparklines(app_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each app's CPU over the last hour (1 min points) against its reservation (one query)."""
    if not app_ids:
        return {}
    now = int(time.time())
    start = now - 3600
    lines = {}
    for app_id, rows in _points(app_ids, 60, start).items():
        top = max(max((r.cpu_limit for r in rows), default=0.0), 1.0)
        values = [(r.bucket, r.cpu_sum / r.samples) for r in rows if r.samples]
        last = values[-1][1] if values else 0.0
        lines[app_id] = {
            "points": _line(values, start, 3600, top, SPARK_WIDTH, SPARK_HEIGHT),
            "label": f"CPU over the last hour; now {last:.0f} of {top:.0f} MHz",
        }
    return lines


def _chart(rows: list[AppMetric], start: int, span: int, kind: str) -> dict[str, Any]:
    if kind == "cpu":
        values = [(r.bucket, r.cpu_sum / r.samples) for r in rows if r.samples]
        peaks = [(r.bucket, r.cpu_max) for r in rows]
        limits = [(r.bucket, r.cpu_limit) for r in rows]
        unit, scale = "MHz", 1.0
    else:
        values = [(r.bucket, r.memory_sum / r.samples) for r in rows if r.samples]
        peaks = [(r.bucket, float(r.memory_max)) for r in rows]
        limits = [(r.bucket, float(r.memory_limit)) for r in rows]
        unit, scale = "MB", MB
    top = max([v for _, v in peaks + limits] + [1.0]) * 1.1
    last = values[-1][1] / scale if values else None
    limit = limits[-1][1] / scale if limits else None
    return {
        "mean": _line(values, start, span, top, WIDTH, HEIGHT),
        "limit": _line(limits, start, span, top, WIDTH, HEIGHT),
        "now": None if last is None else f"{last:.0f} {unit}",
        "limit_now": None if limit is None else f"{limit:.0f} {unit}",
        "top": f"{top / scale:.0f} {unit}",
    }


def live_state(app: App, window: str = "hour") -> dict[str, Any]:
    """What the app page shows of what runs: health, instances and both charts."""
    resolution, span = WINDOWS.get(window, WINDOWS["hour"])
    start = int(time.time()) - span
    rows = _points([app.id], resolution, start).get(app.id, [])
    health = health_of([app.id]).get(app.id)
    return {
        "health": health,
        "window": window if window in WINDOWS else "hour",
        "windows": list(WINDOWS),
        "cpu": _chart(rows, start, span, "cpu"),
        "memory": _chart(rows, start, span, "memory"),
        "width": WIDTH,
        "height": HEIGHT,
        "kept": {resolution: kept for resolution, kept in RESOLUTIONS},
    }


def describe_health(row: AppHealth | None) -> dict[str, Any]:
    """The health as the live stream sends it."""
    if row is None:
        return {"state": "unknown", "reason": "not sampled yet", "instances": []}
    age = (utcnow() - row.checked_at).total_seconds()
    return {
        "state": row.state,
        "reason": row.reason,
        "wanted": row.wanted,
        "running": row.running,
        "healthy": row.healthy,
        "instances": row.instances,
        "checked_seconds_ago": round(age),
    }


class _HealthFeed(StateFeed):
    """The app's health now, then again whenever the sampler found it changed."""

    def __init__(self, app_id: int) -> None:
        self.app_id = app_id
        self.sent: dict[str, Any] | None = None

    def _frames(self) -> list[Frame]:
        state = describe_health(AppHealth.get_or_none(AppHealth.app == self.app_id))
        state.pop("checked_seconds_ago", None)
        if state == self.sent:
            return []
        self.sent = state
        return [Frame("health", state, id=self.cursor)]


@bp.get("/apps/<slug>/live")
@login_required
def stream(slug: str):
    """Server-Sent Events: ``health`` (state, counts, reason, instances) now and after each
    change the sampler records."""
    app = app_or_404(slug, signed_in())
    feed = _HealthFeed(app.id)
    return live_stream(
        [CHANNEL], feed.snapshot, feed.render, accept=events_about(HEALTH_NOTICE, app_id=app.id)
    )
