"""The panel's pages via the Flask test client: rendering, forms, roles, CSRF, read-only GETs."""

from __future__ import annotations

import html
import logging
import re

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import add_domain, create_app, request_deploy, set_env
from panel.actions.common import ActionError
from panel.actions.tokens import create_token, resolve_token
from panel.crypto import SecretCipher
from panel.models import (
    MODELS,
    ApiToken,
    App,
    Deployment,
    Domain,
    EnvVar,
    Event,
    Membership,
    Role,
    Team,
    User,
)
from panel.schema.accounts import MemberIn

PASSWORD = "correct horse battery"
SECRET = "s3cr3t-Value-never-shown"
MY_BLUEPRINTS = ("dashboard", "apps", "deployments", "team")
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


# ---------------------------------------------------------------------------------------------
# Fixtures: a team with an owner, a deployer and a viewer, an app with history; another team
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def acme(owner):
    return Team.get(Team.slug == "acme")


def member(email: str, team: Team, role: Role) -> User:
    user = create_user(email, PASSWORD, team_slug=f"home-{email.split('@')[0]}")
    Membership.create(user=user, team=team, role=role.value)
    return user


@pytest.fixture
def viewer(acme):
    return member("viewer@example.com", acme, Role.VIEWER)


@pytest.fixture
def deployer(acme):
    return member("deployer@example.com", acme, Role.DEPLOYER)


@pytest.fixture
def web(acme, owner, settings, redis_conn):
    """The app ``web``: a secret, a plain variable, a domain and one deployment of release 1."""
    app = create_app(actor=owner, team=acme, slug="web", image="registry.local/web:1")
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=owner, app=app, key="API_KEY", value=SECRET, secret=True, cipher=cipher)
    set_env(actor=owner, app=app, key="LOG_LEVEL", value="debug", secret=False, cipher=cipher)
    add_domain(actor=owner, app=app, hostname="web.example.com", base_domain=settings.base_domain)
    request_deploy(actor=owner, app=app, settings=settings, redis_conn=redis_conn)
    return App.get_by_id(app.id)


@pytest.fixture
def theirs(db, settings, redis_conn):
    """Another team's app, with a deployment of its own."""
    team = Team.create(slug="other", name="Other")
    app = create_app(actor=None, team=team, slug="theirs-app", image="registry.local/theirs:1")
    request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    return app


def sign_in(auth, user: User) -> None:
    assert auth.login(user.email, PASSWORD).status_code == 302


def token_of(client) -> str:
    return CSRF_RE.search(client.get("/tokens").get_data(as_text=True)).group(1)


def post(client, path: str, data: dict | None = None, csrf: bool = True):
    data = dict(data or {})
    if csrf:
        data["csrf_token"] = token_of(client)
    return client.post(path, data=data)


def field_error(page: str, field_id: str) -> str:
    """The error text shown under a field, or '' when there is none."""
    match = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', page)
    return match.group(1) if match else ""


def last_deployment(app: App) -> Deployment:
    return Deployment.select().where(Deployment.app == app.id).order_by(Deployment.id.desc()).get()


APP_FORM = {
    "image": "registry.local/api:3",
    "repo": "",
    "branch": "main",
    "command": "",
    "port": "8000",
    "health_path": "/up",
    "count": "2",
    "cpu_mhz": "300",
    "memory_mb": "256",
    "memory_max_mb": "0",
}


# ---------------------------------------------------------------------------------------------
# Every page renders
# ---------------------------------------------------------------------------------------------


def test_every_page_renders_for_an_owner(client, auth, owner, web):
    sign_in(auth, owner)
    deployment = last_deployment(web)
    pages = {
        "/": "Apps",
        "/apps/new": "Create an app",
        "/apps/web": "Deploy",
        "/apps/web/settings": "Settings",
        "/apps/web/env": "Variables and secrets",
        "/apps/web/deployments": f"#{deployment.id}",
        f"/apps/web/deployments/{deployment.id}": f"Deployment #{deployment.id}",
        "/teams": "Teams",
        "/teams/acme": "Add a member",
        "/tokens": "Create a token",
        "/audit": "v1.app.created",
    }
    for path, text in pages.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert text in response.get_data(as_text=True), path


def test_deployment_json_twin(client, auth, owner, web):
    sign_in(auth, owner)
    deployment = last_deployment(web)
    response = client.get(f"/apps/web/deployments/{deployment.id}.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["id"] == deployment.id
    assert body["status"] == "queued" and body["terminal"] is False
    assert body["release"] == 1 and body["image"] == "registry.local/web:1"
    assert body["requested_at"].endswith("Z") and body["finished_at"] is None


def test_pages_need_a_session(client, web):
    deployment = last_deployment(web)
    for path in (
        "/",
        "/apps/web",
        "/teams",
        "/tokens",
        "/audit",
        f"/apps/web/deployments/{deployment.id}",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login")
    json_response = client.get(
        f"/apps/web/deployments/{deployment.id}.json", headers={"Accept": "application/json"}
    )
    assert json_response.status_code in {302, 401}


# ---------------------------------------------------------------------------------------------
# Apps: create and edit, errors next to the field
# ---------------------------------------------------------------------------------------------


def test_create_app(client, auth, owner, acme):
    sign_in(auth, owner)
    response = post(client, "/apps/new", {**APP_FORM, "team": "acme", "slug": "api"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/apps/api"
    app = App.get(App.slug == "api")
    assert (app.team_id, app.port, app.count, app.health_path) == (acme.id, 8000, 2, "/up")
    assert Event.get(Event.subject == "v1.app.created").actor == "owner@example.com"
    assert "Created api." in client.get("/apps/api").get_data(as_text=True)


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"slug": "Not A Slug"}, "slug", "is not allowed"),
        ({"slug": ""}, "slug", "is not allowed: use 1-63 lowercase letters"),
        ({"port": "http"}, "port", "port must be a whole number"),
        ({"port": "70000"}, "port", "out of range"),
        ({"repo": "acme/api"}, "image", "either an image or a GitHub repo"),
        ({"image": "", "repo": ""}, "image", "either an image or a GitHub repo"),
        ({"repo": "not a repo", "image": ""}, "repo", ""),
        ({"memory_max_mb": "100"}, "memory_max_mb", "out of range"),
        ({"health_path": "up"}, "health_path", ""),
        ({"command": "'unclosed"}, "command", "close every quote"),
    ],
)
def test_create_app_shows_errors_next_to_the_field(client, auth, owner, acme, changes, field, says):
    sign_in(auth, owner)
    response = post(client, "/apps/new", {**APP_FORM, "team": "acme", "slug": "api", **changes})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert says in field_error(page, field)
    assert f'aria-describedby="{field}-hint {field}-error"' in page
    assert not App.select().where(App.slug == "api").exists()


def test_a_form_with_four_bad_fields_shows_four_errors_after_one_submit(client, auth, owner, acme):
    sign_in(auth, owner)
    bad = {"slug": "Bad Name", "port": "http", "count": "0", "health_path": "up"}
    response = post(client, "/apps/new", {**APP_FORM, "team": "acme", **bad})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    for field in bad:
        assert field_error(page, field), f"no error shown next to {field}"
    assert not App.select().exists()


def test_an_existing_name_is_a_conflict_on_the_name(client, auth, owner, web):
    sign_in(auth, owner)
    response = post(client, "/apps/new", {**APP_FORM, "team": "acme", "slug": "web"})
    assert response.status_code == 409
    assert "exists already" in field_error(response.get_data(as_text=True), "slug")


def test_update_settings(client, auth, owner, web):
    sign_in(auth, owner)
    command = "gunicorn -b 0.0.0.0:8080 'app:create()'"
    form = {
        **APP_FORM,
        "image": web.image,
        "port": "8080",
        "health_path": "/healthz",
        "count": "3",
        "cpu_mhz": "250",
        "command": command,
    }
    response = post(client, "/apps/web/settings", form)
    assert response.status_code == 302
    app = App.get_by_id(web.id)
    assert app.count == 3
    assert app.command == command  # quoted arguments stay whole
    event = Event.select().where(Event.subject == "v1.app.updated").get()
    assert event.data["fields"] == ["command", "count"]

    # Saving the same values again changes nothing and says nothing.
    assert post(client, "/apps/web/settings", form).status_code == 302
    assert Event.select().where(Event.subject == "v1.app.updated").count() == 1

    response = post(client, "/apps/web/settings", {**form, "health_path": "nope"})
    assert response.status_code == 422
    assert field_error(response.get_data(as_text=True), "health_path")
    assert App.get_by_id(web.id).health_path == "/healthz"


def test_domains_add_and_remove(client, auth, owner, web):
    sign_in(auth, owner)
    assert post(client, "/apps/web/domains", {"hostname": "WWW.Example.com"}).status_code == 302
    assert Domain.get(Domain.hostname == "www.example.com").app_id == web.id

    duplicate = post(client, "/apps/web/domains", {"hostname": "web.example.com"})
    assert duplicate.status_code == 409
    assert "already routed" in field_error(duplicate.get_data(as_text=True), "hostname")
    invalid = post(client, "/apps/web/domains", {"hostname": "*.example.com"})
    assert invalid.status_code == 422
    assert field_error(invalid.get_data(as_text=True), "hostname")

    assert post(client, "/apps/web/domains/www.example.com/remove").status_code == 302
    assert not Domain.select().where(Domain.hostname == "www.example.com").exists()
    assert Event.get(Event.subject == "v1.domain.removed").data["hostname"] == "www.example.com"
    assert post(client, "/apps/web/domains/www.example.com/remove").status_code == 404


def test_a_domain_under_the_platform_domain_is_refused_as_the_api_does(client, auth, owner, web):
    sign_in(auth, owner)
    refused = post(client, "/apps/web/domains", {"hostname": "x.apps.localhost"})
    assert refused.status_code == 422
    assert html.unescape(field_error(refused.get_data(as_text=True), "hostname")) == (
        "domain 'x.apps.localhost' is under the platform domain 'apps.localhost', whose names "
        "belong to other apps: use a domain you own, e.g. 'www.example.com'"
    )
    assert not Domain.select().where(Domain.hostname == "x.apps.localhost").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/apps/web/deployments/99999999999999999999",
        "/apps/web/deployments/9223372036854775808.json",
        "/apps/web/deployments/%D9%A3",  # an Arabic-Indic digit: int() reads it, the URL may not
        "/apps/Web",
        "/apps/web%0D%0A/settings",
        "/apps/{{7*7}}/env",
        "/teams/Bad%20Team!",
    ],
)
def test_path_values_no_row_can_hold_answer_404(client, auth, owner, web, path):
    sign_in(auth, owner)
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"Traceback" not in response.data


@pytest.mark.parametrize(
    "path",
    [
        "/apps/web/releases/99999999999999999999/rollback",
        "/apps/web/env/lower%20case/remove",
        "/apps/web/domains/not_a_host/remove",
        "/tokens/18446744073709551616/revoke",
        "/teams/acme/members/99999999999999999999/role",
    ],
)
def test_path_values_no_row_can_hold_answer_404_to_posts_too(client, auth, owner, web, path):
    sign_in(auth, owner)
    assert post(client, path, {"role": "viewer"}).status_code == 404, path


# ---------------------------------------------------------------------------------------------
# Environment: secrets are masked everywhere and never echoed
# ---------------------------------------------------------------------------------------------


def test_secrets_are_masked_and_never_in_any_page(client, auth, owner, web):
    sign_in(auth, owner)
    deployment = last_deployment(web)
    env_page = client.get("/apps/web/env").get_data(as_text=True)
    assert "API_KEY" in env_page and "••••••••" in env_page
    assert "debug" in env_page  # plain values are shown
    ciphertext = EnvVar.get(EnvVar.key == "API_KEY").value
    detail = f"/apps/web/deployments/{deployment.id}"
    paths = ["/", "/apps/web", "/apps/web/env", "/apps/web/settings", "/apps/web/deployments",
             detail, f"{detail}.json", "/audit", "/teams/acme", "/tokens"]  # fmt: skip
    for path in paths:
        body = client.get(path).get_data(as_text=True)
        assert SECRET not in body, path
        assert ciphertext not in body, path


def test_set_and_unset_variables(client, auth, owner, web):
    sign_in(auth, owner)
    response = post(
        client, "/apps/web/env", {"key": "NEW_SECRET", "value": "hush-123", "secret": "y"}
    )
    assert response.status_code == 302
    row = EnvVar.get(EnvVar.key == "NEW_SECRET")
    assert row.is_secret and row.value != "hush-123"
    page = client.get("/apps/web/env").get_data(as_text=True)
    assert "Set secret NEW_SECRET" in page and "hush-123" not in page

    assert post(client, "/apps/web/env/NEW_SECRET/remove").status_code == 302
    assert not EnvVar.select().where(EnvVar.key == "NEW_SECRET").exists()
    removed = (
        Event.select().where(Event.subject == "v1.env.changed").order_by(Event.id.desc()).get()
    )
    assert removed.data == {"app": "web", "app_id": web.id, "key": "NEW_SECRET", "secret": True,
                            "removed": True}  # fmt: skip
    assert post(client, "/apps/web/env/NEW_SECRET/remove").status_code == 404


def test_a_rejected_secret_is_not_echoed(client, auth, owner, web):
    sign_in(auth, owner)
    response = post(client, "/apps/web/env", {"key": "bad key", "value": "hush-456", "secret": "y"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert field_error(page, "key")
    assert "hush-456" not in page
    reserved = post(client, "/apps/web/env", {"key": "NOMAD_TOKEN", "value": "x"})
    assert field_error(reserved.get_data(as_text=True), "key")


# ---------------------------------------------------------------------------------------------
# Deploy and roll back
# ---------------------------------------------------------------------------------------------


def test_deploy_then_roll_back(client, auth, owner, web):
    sign_in(auth, owner)
    response = post(client, "/apps/web/deploy", {"image": "registry.local/web:2"})
    assert response.status_code == 302
    second = last_deployment(web)
    assert response.headers["Location"] == f"/apps/web/deployments/{second.id}"
    assert second.release.number == 2 and second.release.image == "registry.local/web:2"
    assert second.triggered_by_id == owner.id

    rollback = post(client, "/apps/web/releases/1/rollback")
    assert rollback.status_code == 302
    third = last_deployment(web)
    assert (third.release.number, third.release.config["rollback_of"]) == (3, 1)
    assert third.release.image == "registry.local/web:1"
    assert post(client, "/apps/web/releases/9/rollback").status_code == 404

    history = client.get("/apps/web/deployments").get_data(as_text=True)
    assert history.index(f"#{third.id}") < history.index(f"#{second.id}")
    assert "owner@example.com" in history


def test_deploy_with_a_bad_image_shows_the_error_next_to_it(client, auth, owner, web):
    sign_in(auth, owner)
    before = Deployment.select().count()
    response = post(client, "/apps/web/deploy", {"image": "Not An Image"})
    assert response.status_code == 422
    assert "not" in field_error(response.get_data(as_text=True), "image")
    assert Deployment.select().count() == before


def test_history_pages(client, auth, owner, web, settings, redis_conn):
    for _ in range(30):
        request_deploy(actor=owner, app=web, settings=settings, redis_conn=redis_conn)
    sign_in(auth, owner)
    first = client.get("/apps/web/deployments").get_data(as_text=True)
    second = client.get("/apps/web/deployments?page=2").get_data(as_text=True)
    assert first.count("/apps/web/deployments/") == 25 and "Older" in first
    assert second.count("/apps/web/deployments/") == 6 and "Newer" in second


# ---------------------------------------------------------------------------------------------
# Who may do what: other teams 404, weaker roles 403 with a friendly page
# ---------------------------------------------------------------------------------------------


def test_viewer_reads_but_cannot_change(client, auth, viewer, web):
    sign_in(auth, viewer)
    overview = client.get("/apps/web").get_data(as_text=True)
    assert "needs the deployer role" in overview
    assert "Roll back" not in overview
    assert 'name="key"' not in client.get("/apps/web/env").get_data(as_text=True)
    assert "Save settings" not in client.get("/apps/web/settings").get_data(as_text=True)

    denied = post(client, "/apps/web/deploy")
    assert denied.status_code == 403
    page = denied.get_data(as_text=True)
    assert "This needs the deployer role" in page and "Back to the apps" in page
    changes = ["/apps/web/releases/1/rollback", "/apps/web/env", "/apps/web/settings",
               "/apps/web/domains", "/apps/web/env/API_KEY/remove",
               "/teams/acme/members"]  # fmt: skip
    for path in changes:
        assert post(client, path, {"key": "X", "value": "y"}).status_code == 403, path
    assert Deployment.select().count() == 1


def test_deployer_deploys_but_cannot_change_settings(client, auth, deployer, web):
    sign_in(auth, deployer)
    assert post(client, "/apps/web/deploy").status_code == 302
    assert post(client, "/apps/web/env", {"key": "X", "value": "y"}).status_code == 403


def test_another_teams_objects_answer_404(client, auth, owner, web, theirs):
    sign_in(auth, owner)
    other, number = "/apps/theirs-app", last_deployment(theirs).id
    reads = [other, f"{other}/env", f"{other}/settings", f"{other}/deployments",
             f"{other}/deployments/{number}", f"{other}/deployments/{number}.json", "/teams/other",
             # their deployment's id under one of my apps
             f"/apps/web/deployments/{number}", f"/apps/web/deployments/{number}.json"]  # fmt: skip
    for path in reads:
        assert client.get(path).status_code == 404, path
    changes = [f"{other}/deploy", f"{other}/releases/1/rollback", f"{other}/env",
               f"{other}/settings", "/teams/other/members"]  # fmt: skip
    for path in changes:
        assert post(client, path).status_code == 404, path
    dashboard = client.get("/").get_data(as_text=True)
    assert "theirs-app" not in dashboard
    assert "theirs-app" not in client.get("/audit").get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# Teams and members
# ---------------------------------------------------------------------------------------------


def test_owner_manages_members_and_keeps_an_owner(client, auth, owner, acme):
    newcomer = create_user("new@example.com", PASSWORD, team_slug="elsewhere")
    sign_in(auth, owner)
    added = post(client, "/teams/acme/members", {"email": "NEW@example.com", "role": "deployer"})
    assert added.status_code == 302
    assert (
        Membership.get(Membership.user == newcomer.id, Membership.team == acme.id).role
        == "deployer"
    )

    unknown = post(client, "/teams/acme/members", {"email": "nobody@example.com", "role": "viewer"})
    assert unknown.status_code == 422
    assert "no account uses" in field_error(unknown.get_data(as_text=True), "email")
    again = post(client, "/teams/acme/members", {"email": "new@example.com", "role": "viewer"})
    assert "already" in field_error(again.get_data(as_text=True), "email")

    assert (
        post(client, f"/teams/acme/members/{newcomer.id}/role", {"role": "admin"}).status_code
        == 302
    )
    assert (
        Membership.get(Membership.user == newcomer.id, Membership.team == acme.id).role == "admin"
    )

    alone = post(client, f"/teams/acme/members/{owner.id}/role", {"role": "viewer"})
    assert alone.status_code == 409
    assert "needs an owner" in alone.get_data(as_text=True)
    assert post(client, f"/teams/acme/members/{owner.id}/remove").status_code == 409
    assert Membership.get(Membership.user == owner.id, Membership.team == acme.id).role == "owner"

    assert post(client, f"/teams/acme/members/{newcomer.id}/remove").status_code == 302
    assert (
        not Membership.select()
        .where((Membership.user == newcomer.id) & (Membership.team == acme.id))
        .exists()
    )
    subjects = [e.subject for e in Event.select().where(Event.subject.startswith("v1.member"))]
    assert subjects == ["v1.member.added", "v1.member.role_changed", "v1.member.removed"]


def test_the_member_form_comes_from_the_schema_and_shows_each_error(client, auth, owner, acme):
    sign_in(auth, owner)
    page = html.unescape(client.get("/teams/acme").get_data(as_text=True))
    for info in MemberIn.model_fields.values():
        assert info.description in page
    assert '<option selected value="deployer">' in page  # MemberIn's default
    bad = post(client, "/teams/acme/members", {"email": "  ", "role": "boss"})
    assert bad.status_code == 422
    text = html.unescape(bad.get_data(as_text=True))
    assert "give the email of their account" in field_error(text, "email")
    assert field_error(text, "role") == "role must be one of: owner, admin, deployer, viewer"
    assert Membership.select().where(Membership.team == acme.id).count() == 1


def test_non_owners_cannot_manage_members(client, auth, deployer, owner):
    sign_in(auth, deployer)
    assert "Add a member" not in client.get("/teams/acme").get_data(as_text=True)
    assert post(client, f"/teams/acme/members/{owner.id}/remove").status_code == 403
    assert (
        post(client, f"/teams/acme/members/{owner.id}/role", {"role": "viewer"}).status_code == 403
    )


# ---------------------------------------------------------------------------------------------
# API tokens
# ---------------------------------------------------------------------------------------------


def test_token_secret_is_shown_once(client, auth, owner):
    sign_in(auth, owner)
    response = post(
        client, "/tokens", {"name": "laptop", "scopes": ["read", "deploy"], "expires": "30 days"}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(
        r'id="token-secret" type="text" value="([^"]+)"', response.get_data(as_text=True)
    ).group(1)
    row = resolve_token(secret)
    assert row is not None and row.scopes == ["deploy", "read"]
    listing = client.get("/tokens").get_data(as_text=True)
    assert "laptop" in listing and secret not in listing and row.prefix in listing

    assert post(client, f"/tokens/{row.id}/revoke").status_code == 302
    assert resolve_token(secret) is None
    assert "revoked" in client.get("/tokens").get_data(as_text=True)


def test_create_token_checks_every_field_by_the_schema(owner):
    with pytest.raises(ActionError) as refused:
        create_token(owner, " ", ["read", "root"], days=400)
    assert {error.field: error.message for error in refused.value.errors} == {
        "name": "give the token a name of 1 to 100 printable characters",
        "scopes": "scopes must be one or more of: read, deploy, admin",
        "days": "days must be 1 to 366, or null for no expiry",
    }
    made = create_token(owner, "  laptop ", ["read", "deploy", "read"], days=None)
    assert (made.row.name, made.row.scopes, made.row.expires_at) == (
        "laptop", ["deploy", "read"], None
    )  # fmt: skip


def test_token_form_errors_and_others_tokens(client, auth, owner, viewer):
    sign_in(auth, owner)
    response = post(client, "/tokens", {"name": "", "expires": "30 days"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Name the token" in field_error(page, "name")
    assert "Pick at least one scope" in page
    their_token = create_token(viewer, "theirs", ["read"]).row
    assert post(client, f"/tokens/{their_token.id}/revoke").status_code == 404
    assert ApiToken.get_by_id(their_token.id).revoked_at is None


# ---------------------------------------------------------------------------------------------
# Audit log
# ---------------------------------------------------------------------------------------------


def test_audit_log_filters_and_pages(client, auth, owner, web, theirs):
    for n in range(60):
        Event.create(subject="v1.env.changed", actor="owner@example.com", team=web.team_id,
                     data={"app": "web", "app_id": web.id, "key": f"K{n}", "secret": False,
                           "removed": False})  # fmt: skip
    sign_in(auth, owner)
    first = client.get("/audit").get_data(as_text=True)
    assert first.index("K59") < first.index("K58")  # newest first
    assert "Older" in first
    deploys = client.get("/audit?subject=v1.deployment").get_data(as_text=True)
    assert "v1.deployment.requested" in deploys and "v1.env.changed" not in deploys
    assert "theirs-app" not in deploys
    older = client.get("/audit?page=2").get_data(as_text=True)
    assert "Newer" in older and "v1.app.created" in older
    # LIKE wildcards are literal: '_' matches only '_'.
    assert "v1.env.changed" not in client.get("/audit?subject=v1_env").get_data(as_text=True)
    bad = client.get("/audit?subject=DROP TABLE")
    assert bad.status_code == 422
    assert field_error(bad.get_data(as_text=True), "subject")


# ---------------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------------


def test_dashboard_health_search_and_pages(client, auth, owner, acme, web):
    App.insert_many(
        [{"team": acme.id, "slug": f"svc-{n:03d}", "image": "x:1"} for n in range(60)]
    ).execute()
    sign_in(auth, owner)
    first = client.get("/").get_data(as_text=True)
    assert "Create app" in first and "61 apps" in first
    assert first.count('href="/apps/svc-') == 50 and "Next" in first
    second = client.get("/?page=2").get_data(as_text=True)
    assert 'href="/apps/web"' in second and 'class="badge queued"' in second
    found = client.get("/?q=svc-05").get_data(as_text=True)
    assert found.count('href="/apps/svc-') == 10
    # Characters no app name has are dropped, so '%' is no wildcard: it searches for nothing.
    assert "61 apps, 1\u201350 shown" in client.get("/?q=%25").get_data(as_text=True)
    assert "No app matches" in client.get("/?q=zzz").get_data(as_text=True)


def test_dashboard_hides_create_for_viewers(client, auth, viewer):
    Membership.delete().where(
        (Membership.user == viewer.id) & (Membership.role == Role.OWNER.value)
    ).execute()
    sign_in(auth, viewer)
    assert "Create app" not in client.get("/").get_data(as_text=True)
    assert client.get("/apps/new").status_code == 403


# ---------------------------------------------------------------------------------------------
# Route rules: CSRF on every POST, POST-only changes, GETs that write nothing
# ---------------------------------------------------------------------------------------------


def route_args(web: App, deployment: Deployment, owner: User) -> dict[str, str | int]:
    """A value for every URL parameter of the panel's pages."""
    return {
        "slug": web.slug,
        "deployment_id": deployment.id,
        "number": 1,
        "hostname": "web.example.com",
        "key": "LOG_LEVEL",
        "user_id": owner.id,
        "token_id": 1,
        "notifier_id": 1,
    }


def my_rules(app, method: str):
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in MY_BLUEPRINTS and method in rule.methods
    ]


def build(rule, args: dict) -> str:
    """The rule's path with test values (a ``slug`` under /teams/ names the team)."""
    missing = set(rule.arguments) - set(args)
    assert not missing, f"{rule.rule}: give test values for {missing}"
    if rule.rule.startswith("/teams/"):
        args = {**args, "slug": "acme"}
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:\w+:)?{name}>", str(args[name]), path)
    return path


def test_every_state_changing_route_is_post_only_and_needs_csrf(app, client, auth, owner, web):
    sign_in(auth, owner)
    args = route_args(web, last_deployment(web), owner)
    rules = my_rules(app, "POST")
    assert len(rules) >= 12
    for rule in rules:
        if "GET" in rule.methods:
            assert rule.endpoint == "apps.new", f"{rule.rule} changes state on GET"
        response = client.post(build(rule, args), data={"key": "X", "value": "y", "image": ""})
        assert response.status_code == 400, rule.rule
        assert "CSRF" in response.get_data(as_text=True), rule.rule
    assert EnvVar.select().where(EnvVar.key == "X").count() == 0


def test_no_get_writes_to_the_database(app, client, auth, owner, web, caplog):
    create_token(owner, "cli", ["read"])
    sign_in(auth, owner)
    args = route_args(web, last_deployment(web), owner)
    rules = my_rules(app, "GET")
    assert len(rules) >= 12

    def counts() -> dict[str, int]:
        return {model.__name__: model.select().count() for model in MODELS}

    before = counts()
    caplog.set_level(logging.DEBUG, logger="peewee")
    caplog.clear()
    for rule in rules:
        for query in ("", "?page=2", "?q=we", "?subject=v1.app"):
            response = client.get(build(rule, args) + query)
            assert response.status_code in {200, 422}, rule.rule
    statements = [str(record.msg) for record in caplog.records if record.name == "peewee"]
    assert statements, "the SQL log captured nothing: is peewee still logging at DEBUG?"
    writes = [s for s in statements if re.search(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", s)]
    assert writes == []
    assert counts() == before
