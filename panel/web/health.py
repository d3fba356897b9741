"""Liveness and readiness for load balancers and `helios up`."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from panel.health import check_readiness

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving requests."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The database and Redis answer; 503 with the reason when one does not."""
    problems = check_readiness(
        current_app.extensions["helios.database"], current_app.extensions["helios.redis"]
    )
    if problems:
        return jsonify({"status": "unavailable", "problems": problems}), 503
    return jsonify({"status": "ready"})
