"""Security headers on every response: pages, errors, JSON, static files, redirects, streams.

The Content-Security-Policy allows scripts, styles, images and connections from the panel's own
origin only: there is no inline script or style anywhere (behaviour lives in static/helios.js,
looks in static/helios.css), so an injected tag or attribute runs nothing. No page may be
framed by anyone (frame-ancestors and, for older browsers, X-Frame-Options).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response

from panel.config import Settings

__all__ = ["content_security_policy", "init_app", "security_headers"]

HSTS_MAX_AGE = 365 * 24 * 3600  # seconds: one year


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(settings: Settings) -> str:
    """The panel's CSP: its own origin only, nothing inline, never framed."""
    form_action = ["'self'"]
    # Chromium applies form-action to the redirects that follow a form post as well: should
    # GitHub sign-in ever start from a form, its redirect to GitHub must stay allowed.
    github = _origin(settings.github_url) if settings.github_client_id else ""
    if github:
        form_action.append(github)
    directives = {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": form_action,
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def security_headers(settings: Settings) -> dict[str, str]:
    """Every header the panel adds to each response, for these settings."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    if settings.secure_cookies:  # served over TLS: browsers must never fall back to HTTP
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}; includeSubDomains"
    return headers


def init_app(app: Flask) -> None:
    """Add the security headers to every response of ``app``, error pages included."""
    headers = security_headers(app.extensions["helios.settings"])

    def add_security_headers(response: Response) -> Response:
        response.headers.update(headers)
        return response

    app.after_request(add_security_headers)
