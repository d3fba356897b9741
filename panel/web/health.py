"""Liveness and readiness for load balancers and `helios up`."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from panel.health import check_readiness
from panel.web.errors import current_request_id

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving requests."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The database and Redis answer; 503 naming which does not. The endpoint answers anyone
    (load balancers, orchestrators): why it failed, with the addresses involved, goes to the
    log only, on a line that names the answer's request id."""
    problems = check_readiness(
        current_app.extensions["helios.database"], current_app.extensions["helios.redis"]
    )
    if problems:
        public = {name: f"{name} not reachable: the panel's log says why" for name in problems}
        body = {"status": "unavailable", "problems": public, "request_id": current_request_id()}
        return jsonify(body), 503
    return jsonify({"status": "ready"})
