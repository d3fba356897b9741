"""Security headers on every kind of response; templates with nothing inline for CSP to block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from panel.web import create_app
from panel.web.headers import content_security_policy

TEMPLATES = Path(__file__).resolve().parents[1] / "panel" / "templates"
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)
ALWAYS = {
    "Content-Security-Policy": STRICT_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _boom():
    raise RuntimeError("a bug")


@pytest.fixture
def panel_client(app):
    """The test client of an app with one extra route that fails, for the 500 page."""
    app.config["TESTING"] = False  # errors go through the error handlers, as in production
    app.add_url_rule("/test-boom", "test_boom", _boom)
    return app.test_client()


# (what, method, path, request headers, expected status)
RESPONSES = [
    ("page", "GET", "/login", {}, 200),
    ("redirect", "GET", "/", {}, 302),
    ("404 page", "GET", "/no-such-page", {}, 404),
    ("405 page", "GET", "/logout", {}, 405),
    ("500 page", "GET", "/test-boom", {}, 500),
    ("500 as JSON", "GET", "/test-boom", {"Accept": "application/json"}, 500),
    ("API JSON error", "GET", "/api/v1/apps", {}, 401),
    ("API JSON 404", "GET", "/api/v1/no-such-thing", {}, 404),
    ("API document", "GET", "/api/v1/openapi.json", {}, 200),
    ("static script", "GET", "/static/helios.js", {}, 200),
    ("static 404", "GET", "/static/nothing.css", {}, 404),
    ("health", "GET", "/healthz", {}, 200),
    ("HEAD", "HEAD", "/login", {}, 200),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [r[1:] for r in RESPONSES],
    ids=[r[0] for r in RESPONSES],
)
def test_every_kind_of_response_carries_the_headers(panel_client, method, path, headers, status):
    response = panel_client.open(path, method=method, headers=headers)
    assert response.status_code == status
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert "Strict-Transport-Security" not in response.headers  # not served over TLS


def test_hsts_only_with_secure_cookies(settings, db):
    secure = create_app(settings.replace(secure_cookies=True)).test_client()
    for path in ("/login", "/no-such-page", "/static/helios.css", "/api/v1/apps"):
        response = secure.get(path)
        assert response.headers["Strict-Transport-Security"] == (
            "max-age=31536000; includeSubDomains"
        ), path
        assert response.headers["Content-Security-Policy"] == STRICT_CSP


def test_form_action_allows_only_the_configured_github_when_github_sign_in_is_on(settings):
    assert "form-action 'self';" in content_security_policy(settings)
    # The URL only matters once sign-in with GitHub is configured.
    assert "form-action 'self';" in content_security_policy(
        settings.replace(github_url="https://ghe.example.com")
    )
    enterprise = settings.replace(
        github_client_id="Iv1.abc", github_url="https://ghe.example.com:8443/sub"
    )
    assert "form-action 'self' https://ghe.example.com:8443;" in content_security_policy(enterprise)


def test_templates_have_no_inline_script_style_or_handler():
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        checks = {
            "inline <script>": re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text),
            "<style>": re.findall(r"<style\b", text),
            "style attribute": re.findall(r"\sstyle\s*=", text),
            "event handler attribute": re.findall(r"\son[a-z]+\s*=", text),
            "javascript: URL": re.findall(r"javascript:", text, re.IGNORECASE),
        }
        found += [f"{path.relative_to(TEMPLATES)}: {what}" for what, hits in checks.items() if hits]
    assert found == []
