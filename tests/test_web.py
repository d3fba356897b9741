"""Signing in and out, and the dashboard's list of apps."""

from __future__ import annotations

import pytest

from panel.actions.accounts import create_user
from panel.models import App, Deployment, DeploymentStatus, Release, Team

PASSWORD = "correct horse battery"


@pytest.fixture
def user(db):
    return create_user("dev@example.com", PASSWORD, team_slug="acme")


def test_dashboard_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_wrong_password_is_refused(client, auth, user):
    response = auth.login("dev@example.com", "wrong password")
    assert response.status_code == 401
    assert b"Email or password is wrong." in response.data
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(client, user):
    response = client.post("/login", data={"email": "dev@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert b"CSRF" in response.data
    assert client.get("/").status_code == 302


def test_session_cookie_flags(client, auth, user):
    response = auth.login("dev@example.com", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:x"])
def test_login_never_redirects_off_site(client, user, target):
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = client.post(
        f"/login?next={target}",
        data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_dashboard_lists_own_teams_apps_with_last_deployment(client, auth, user):
    acme = Team.get(Team.slug == "acme")
    other = Team.create(slug="other", name="Other")
    web = App.create(team=acme, slug="web", image="nginx:1.27")
    App.create(team=acme, slug="api", repo="acme/api", branch="main")
    App.create(team=other, slug="secret-app", image="x:1")
    release = Release.create(app=web, number=1, image="nginx:1.27")
    Deployment.create(app=web, release=release, status=DeploymentStatus.FAILED)
    Deployment.create(app=web, release=release, status=DeploymentStatus.SUCCEEDED)

    auth.login("dev@example.com", PASSWORD)
    page = client.get("/").get_data(as_text=True)
    assert "web" in page and "api" in page
    assert "secret-app" not in page
    assert 'class="badge succeeded"' in page
    assert 'class="badge failed"' not in page
    assert "never deployed" in page
    assert "acme/api@main" in page


def test_logout_is_a_post_and_ends_the_session(client, auth, user):
    auth.login("dev@example.com", PASSWORD)
    assert client.get("/").status_code == 200
    assert client.get("/logout").status_code == 405
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def _limited_client(settings, proxies: int = 0, **login):
    from panel.web import create_app

    app = create_app(settings.replace(trusted_proxies=proxies, **login))
    app.config["WTF_CSRF_ENABLED"] = False  # this test is about counting attempts
    return app.test_client()


def _attempt(client, email: str, ip: str | None = None) -> int:
    headers = {"X-Forwarded-For": ip} if ip else {}
    data = {"email": email, "password": "wrong password"}
    return client.post("/login", data=data, headers=headers).status_code


def test_sign_in_backs_off_per_account_and_address(settings, db, user):
    client = _limited_client(settings, login_free_failures=3)
    codes = [_attempt(client, "dev@example.com") for _ in range(5)]
    assert codes == [401, 401, 401, 401, 429]  # the 4th failure starts a 2 s wait


def test_sign_in_is_limited_per_address_and_ignores_forwarded_for(settings, db, user):
    client = _limited_client(settings, login_address_failures=3)
    codes = [_attempt(client, f"user{n}@example.com", ip=f"10.0.0.{n}") for n in range(5)]
    assert codes == [401, 401, 401, 429, 429]  # X-Forwarded-For is not trusted by default


def test_forwarded_for_is_trusted_only_for_configured_proxies(settings, db, user):
    client = _limited_client(settings, proxies=1, login_address_failures=3)
    codes = [_attempt(client, f"user{n}@example.com", ip=f"10.0.0.{n}") for n in range(5)]
    assert codes == [401] * 5  # one trusted proxy: each client address has its own budget
