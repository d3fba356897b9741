"""The panel's web layer: thin blueprints that parse, call actions and render."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request, session
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from panel import cluster_access
from panel.actions.sessions import SESSION_ID_KEY, user_for_session
from panel.config import Settings
from panel.crypto import load_or_create_key
from panel.db import cooperative, database, open_database
from panel.models import User
from panel.queue import connect_redis
from panel.web.fragments import FragmentCache

__all__ = ["create_app", "init_app"]

logger = logging.getLogger(__name__)

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
login_manager.session_protection = "strong"
csrf = CSRFProtect()


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The signed-in user, only while the cookie's server-side session is live."""
    found = user_for_session(str(user_id), session.get(SESSION_ID_KEY))
    if found is None:
        return None
    g.user_session = found[1]
    return found[0]


def init_app(app: Flask) -> None:
    """Attach login, CSRF, security headers, database connections, error pages, blueprints."""
    from panel.web import (
        account,
        api,
        apps,
        auth,
        builds,
        dashboard,
        deployments,
        errors,
        headers,
        health,
        hosts,
        lifecycle,
        live,
        logs,
        metrics,
        oauth,
        paths,
        runs,
        streams,
        team,
        webhooks,
    )

    paths.init_app(app)  # converters first: blueprints' rules are compiled when registered
    metrics.init_app(app)  # first, so a request's timing covers every other hook
    settings = app.extensions["helios.settings"]
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    login_manager.init_app(app)
    csrf.init_app(app)
    headers.init_app(app)
    streams.init_app(app)
    app.before_request(_open_connection)
    app.teardown_request(_close_connection)
    if cooperative():
        app.after_request(_take_turns)
    errors.init_app(app)
    for blueprint in (
        health.bp,
        metrics.bp,
        auth.bp,
        oauth.bp,
        account.bp,
        dashboard.bp,
        api.bp,
        apps.bp,
        deployments.bp,
        lifecycle.bp,
        builds.bp,
        logs.bp,
        runs.bp,
        live.bp,
        team.bp,
        hosts.bp,
        webhooks.bp,
    ):
        app.register_blueprint(blueprint)


def _open_connection() -> None:
    if request.endpoint not in {"health.healthz", "health.readyz", "metrics.metrics", "static"}:
        database.connect(reuse_if_open=True)


def _close_connection(_exc: BaseException | None) -> None:
    if not database.is_closed():
        database.close()


def _take_turns(response: Response) -> Response:
    """Once this response is sent, let the worker's other connections go first.

    A greenlet runs until it waits. A client on a kept-alive connection sends its next request
    while this one is still finishing, so without a pause the greenlet would find it ready and
    serve it at once, and again, while requests on the worker's other connections wait: under
    load most answers came in 2 ms and one in ten took 0.2 to 1 s. gevent.sleep(0) puts the
    greenlet behind every other that is ready to run: each connection gets a turn.
    """
    response.call_on_close(_yield)
    return response


def _yield() -> None:
    import gevent  # the panel's gevent workers only (cooperative)

    gevent.sleep(0)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the panel: settings → database → Redis → login and CSRF → blueprints."""
    settings = settings or Settings.from_env()
    app = Flask("panel")  # templates/ and static/ sit beside the package root
    app.config.update(
        SECRET_KEY=settings.secret_key or load_or_create_key(settings.data_dir / "session.key"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.extensions["helios.settings"] = settings
    app.extensions["helios.database"] = open_database(settings.effective_database_url)
    cluster_access.install()  # without NOMAD_ADDR: the cluster provisioning handed over
    app.extensions["helios.redis"] = connect_redis(settings)
    app.extensions["helios.fragments"] = FragmentCache(settings.page_cache)
    init_app(app)
    return app
