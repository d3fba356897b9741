"""Helios: a self-hosted platform-as-a-service on Nomad, Consul and Traefik."""

from __future__ import annotations

from typing import TYPE_CHECKING

from panel.config import Settings

if TYPE_CHECKING:  # Flask is imported by create_app only: the pure core never loads it
    from flask import Flask

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the panel: settings → database → Redis → login and CSRF → blueprints."""
    from flask import Flask

    from panel import web
    from panel.crypto import load_or_create_key
    from panel.db import open_database
    from panel.queue import connect_redis

    settings = settings or Settings.from_env()
    app = Flask(__name__)
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
    app.extensions["helios.redis"] = connect_redis(settings)
    web.init_app(app)
    return app
