"""The panel's web layer: thin blueprints that parse, call actions and render."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from panel.db import database
from panel.models import User

__all__ = ["init_app"]

logger = logging.getLogger(__name__)

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.session_protection = "strong"
csrf = CSRFProtect()
# Limits are declared where they apply (sign-in); storage is the installation's Redis.
limiter = Limiter(key_func=get_remote_address, default_limits=[], strategy="fixed-window")


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The signed-in user of a session, if still active."""
    user_id = str(user_id)
    if not user_id.isdigit():
        return None
    user = User.get_or_none(User.id == int(user_id))
    return user if user is not None and user.is_active else None


def init_app(app: Flask) -> None:
    """Attach login, CSRF, per-request database connections, error pages and blueprints."""
    from panel.web import api, apps, auth, dashboard, deployments, health, hosts, oauth, team

    settings = app.extensions["helios.settings"]
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    storage = settings.effective_redis_url
    if storage.startswith("unix://"):  # the limits library names UNIX sockets this way
        storage = "redis+" + storage
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage)
    # Without Redis the panel is not ready anyway (/readyz); do not turn sign-in into 500s.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    app.before_request(_open_connection)
    app.teardown_request(_close_connection)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    for blueprint in (
        health.bp,
        auth.bp,
        oauth.bp,
        dashboard.bp,
        api.bp,
        apps.bp,
        deployments.bp,
        team.bp,
        hosts.bp,
    ):
        app.register_blueprint(blueprint)


def _open_connection() -> None:
    if request.endpoint not in {"health.healthz", "health.readyz", "static"}:
        database.connect(reuse_if_open=True)


def _close_connection(_exc: BaseException | None) -> None:
    if not database.is_closed():
        database.close()


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.path.startswith("/api/") or best == "application/json"


def _http_error(exc: HTTPException):
    if _wants_json():
        body = {
            "error": (exc.name or "error").lower().replace(" ", "_"),
            "message": exc.description,
        }
        return jsonify(body), exc.code
    return render_template("error.html", error=exc), exc.code


def _unexpected_error(exc: Exception):
    # The operator gets the traceback in the log; the user gets a page without internals.
    logger.exception("unhandled error on %s %s", request.method, request.path)
    if _wants_json():
        return jsonify({"error": "internal_error", "message": "Something went wrong."}), 500
    return render_template("error.html", error=None), 500
