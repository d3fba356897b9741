"""The JSON API through the Flask test client, on real SQLite and Redis."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from rq import Queue

from panel.actions.accounts import create_user
from panel.actions.apps import DEPLOY_QUEUE
from panel.actions.tokens import create_token, revoke_token
from panel.crypto import SecretCipher
from panel.models import (
    ApiToken,
    App,
    Deployment,
    Domain,
    Event,
    Membership,
    Release,
    Role,
    Team,
    utcnow,
)

PASSWORD = "correct horse battery"
SECRET_VALUE = "pa55-w0rd-never-shown"
API = "/api/v1"


class Caller:
    """A test client that sends one bearer token with every request."""

    def __init__(self, client, secret: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {secret}"}

    def __getattr__(self, method: str):
        def send(path: str, **kwargs):
            return getattr(self.client, method)(API + path, headers=self.headers, **kwargs)

        return send


def member(email: str, team: str, role: Role):
    """A user with ``role`` in ``team`` (created if needed)."""
    user = create_user(email, PASSWORD, team_slug=f"solo-{email.split('@')[0]}")
    team_row, _ = Team.get_or_create(slug=team, defaults={"name": team.title()})
    Membership.create(user=user, team=team_row, role=role.value)
    return user


def caller_for(client, user, scopes=("admin",), **kwargs) -> Caller:
    return Caller(client, create_token(user, "test", list(scopes), **kwargs).secret)


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def api(client, owner) -> Caller:
    return caller_for(client, owner)


@pytest.fixture
def web(api):
    response = api.post("/apps", json={"slug": "web", "image": "registry.local/web:1"})
    assert response.status_code == 201, response.json
    return App.get(App.slug == "web")


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert body["error"] == code
    assert body["message"]
    assert body.get("field") == field
    assert set(body) <= {"error", "message", "field", "errors", "request_id"}
    assert body["request_id"] == response.headers["X-Request-Id"]
    if "errors" in body:  # every field at fault; the first one leads
        assert body["errors"][0] == {"field": field, "message": body["message"]}
    return body


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(client, owner):
    response = client.get(f"{API}/me")
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="helios"'
    assert "Authorization: Bearer" in response.json["message"]


@pytest.mark.parametrize("header", ["Bearer hel_wrong", "Basic b3duZXI6cHc=", "Bearer ", "hel_x"])
def test_unknown_or_malformed_tokens_are_401(client, owner, header):
    assert_error(client.get(f"{API}/me", headers={"Authorization": header}), 401, "unauthorized")


def test_revoked_and_expired_tokens_are_401(client, owner):
    revoked = create_token(owner, "old", ["read"])
    revoke_token(owner, revoked.row.id)
    expired = create_token(owner, "expired", ["read"])
    ApiToken.update(expires_at=utcnow() - timedelta(seconds=1)).where(
        ApiToken.id == expired.row.id
    ).execute()
    for token in (revoked, expired):
        response = Caller(client, token.secret).get("/me")
        assert_error(response, 401, "unauthorized")
        assert "expired or revoked" in response.json["message"]


def test_a_browser_session_does_not_drive_the_api(client, auth, owner):
    auth.login("owner@example.com", PASSWORD)
    assert client.get("/").status_code == 200  # signed in for the panel
    assert_error(client.get(f"{API}/apps"), 401, "unauthorized")
    response = client.post(f"{API}/apps", json={"slug": "csrf", "image": "x:1"})
    assert_error(response, 401, "unauthorized")
    assert not App.select().where(App.slug == "csrf").exists()


def test_me_describes_the_user_teams_and_token(client, owner):
    Membership.create(user=owner, team=Team.create(slug="beta", name="Beta"), role="viewer")
    token = create_token(owner, "laptop", ["read", "deploy"], days=30)
    body = Caller(client, token.secret).get("/me").json
    assert body["user"] == {"email": "owner@example.com", "name": ""}
    assert body["teams"] == [
        {"slug": "acme", "name": "Acme", "role": "owner", "nomad_namespace": "acme"},
        # A team from before namespaces per team: NOMAD_NAMESPACE until moved.
        {"slug": "beta", "name": "Beta", "role": "viewer", "nomad_namespace": None},
    ]
    assert body["token"]["name"] == "laptop"
    assert body["token"]["scopes"] == ["deploy", "read"]
    assert body["token"]["expires_at"].endswith("Z")
    assert body["token"]["current"] is True
    assert token.secret not in json.dumps(body)


# ---------------------------------------------------------------------------------------------
# Scopes and roles
# ---------------------------------------------------------------------------------------------


def test_scopes_limit_what_a_token_may_do(client, owner, web):
    read = caller_for(client, owner, ["read"])
    deploy = caller_for(client, owner, ["deploy"])
    assert read.get("/apps/web").status_code == 200
    assert_error(read.post("/apps/web/deployments"), 403, "forbidden")
    assert_error(read.put("/apps/web/env/A", json={"value": "1"}), 403, "forbidden")
    assert "'deploy' scope" in read.post("/apps/web/deployments").json["message"]
    assert deploy.post("/apps/web/deployments").status_code == 202
    assert_error(deploy.put("/apps/web/env/A", json={"value": "1"}), 403, "forbidden")
    assert_error(deploy.post("/tokens", json={"name": "x", "scopes": ["admin"]}), 403, "forbidden")


@pytest.mark.parametrize(
    ("role", "read", "deploy", "configure"),
    [
        (Role.VIEWER, 200, 403, 403),
        (Role.DEPLOYER, 200, 202, 403),
        (Role.ADMIN, 200, 202, 200),
        (Role.OWNER, 200, 202, 200),
    ],
)
def test_roles_limit_what_a_member_may_do(client, web, role, read, deploy, configure):
    caller = caller_for(client, member(f"{role}-member@example.com", "acme", role))
    assert caller.get("/apps/web").status_code == read
    assert caller.get("/apps/web/env").status_code == read
    assert caller.post("/apps/web/deployments").status_code == deploy
    assert caller.post("/apps/web/rollback", json={"release": 1}).status_code in {deploy, 404}
    assert caller.put("/apps/web/env/A", json={"value": "1"}).status_code == configure
    assert caller.patch("/apps/web", json={"count": 2}).status_code == configure
    assert caller.post(
        "/apps/web/domains", json={"hostname": f"{role}.example.com"}
    ).status_code == (201 if configure == 200 else 403)


def test_another_teams_objects_are_404_never_403(client, api, web):
    deployment_id = api.post("/apps/web/deployments").json["id"]
    stranger = caller_for(client, create_user("x@example.com", PASSWORD, team_slug="other"))
    for method, path, body in [
        ("get", "/apps/web", None),
        ("patch", "/apps/web", {"count": 2}),
        ("get", "/apps/web/env", None),
        ("put", "/apps/web/env/A", {"value": "1"}),
        ("delete", "/apps/web/env/A", None),
        ("get", "/apps/web/domains", None),
        ("post", "/apps/web/domains", {"hostname": "a.example.com"}),
        ("delete", "/apps/web/domains/a.example.com", None),
        ("get", "/apps/web/releases", None),
        ("get", "/apps/web/deployments", None),
        ("post", "/apps/web/deployments", None),
        ("post", "/apps/web/rollback", {"release": 1}),
        ("get", f"/deployments/{deployment_id}", None),
    ]:
        response = getattr(stranger, method)(path, json=body)
        assert_error(response, 404, "not_found")
    assert "web" not in [a["slug"] for a in stranger.get("/apps").json["items"]]
    response = stranger.post("/apps", json={"team": "acme", "slug": "mine", "image": "x:1"})
    assert_error(response, 404, "not_found", "team")


# ---------------------------------------------------------------------------------------------
# Apps
# ---------------------------------------------------------------------------------------------


def test_create_app_from_image_and_from_repo(api, redis_conn):
    response = api.post(
        "/apps",
        json={"team": "acme", "slug": "web", "image": "nginx:1.27", "port": 80, "count": 2,
              "command": ["nginx", "-g", "daemon off;"]},
    )  # fmt: skip
    assert response.status_code == 201
    assert response.headers["Location"] == f"{API}/apps/web"
    body = response.json
    assert body["team"] == "acme" and body["port"] == 80 and body["count"] == 2
    assert body["command"] == "nginx -g 'daemon off;'"
    assert body["last_deployment"] is None
    repo = api.post("/apps", json={"slug": "api", "repo": "acme/api", "branch": "dev"})
    assert repo.status_code == 201
    assert (repo.json["repo"], repo.json["branch"], repo.json["image"]) == ("acme/api", "dev", None)
    created = Event.select().where(Event.subject == "v1.app.created").count()
    assert created == 2


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"slug": "web", "image": "Nginx!"}, "image", "is not a valid image reference"),
        ({"slug": "Web", "image": "nginx:1"}, "slug", "lowercase letters"),
        ({"slug": "web"}, "image", "either an image or a GitHub repo"),
        ({"slug": "web", "image": "nginx:1", "repo": "a/b"}, "image", "either an image"),
        ({"image": "nginx:1"}, "slug", "slug is required"),
        ({"slug": "web", "image": "nginx:1", "port": "80"}, "port", "must be a whole number"),
        ({"slug": "web", "image": "nginx:1", "port": True}, "port", "must be a whole number"),
        ({"slug": "web", "image": "nginx:1", "port": 70000}, "port", "out of range"),
        ({"slug": "web", "image": "nginx:1", "memory_mb": 64, "memory_max_mb": 32},
         "memory_max_mb", "out of range"),
        ({"slug": "web", "image": "nginx:1", "owner": "me"}, "owner", "unknown field 'owner'"),
        ({"slug": "web", "image": "nginx:1", "command": [1]}, "command", "list of strings"),
    ],
)  # fmt: skip
def test_create_app_rejects_bad_fields_with_422(api, body, field, message):
    response = api.post("/apps", json=body)
    assert_error(response, 422, "invalid", field)
    assert message in response.json["message"]
    assert not App.select().exists()


def test_bodies_that_are_not_json_objects(api):
    assert_error(api.post("/apps", data="slug=web"), 415, "unsupported_media_type")
    response = api.post("/apps", data="{nope", content_type="application/json")
    assert_error(response, 400, "bad_request")
    assert "not valid JSON" in response.json["message"]
    response = api.post("/apps", data='{"slug": NaN}', content_type="application/json")
    assert_error(response, 400, "bad_request")
    response = api.post("/apps", data='"\\ud800"', content_type="application/json")
    assert_error(response, 400, "bad_request")
    assert_error(api.post("/apps", json=["web"]), 422, "invalid")
    assert_error(api.post("/apps", data="[" * 100_000, content_type="application/json"), 400,
                 "bad_request")  # fmt: skip


def test_a_key_given_twice_is_refused_by_name(api):
    body = '{"slug": "web", "image": "nginx:1.27", "slug": "other"}'
    response = api.post("/apps", data=body, content_type="application/json")
    assert_error(response, 400, "bad_request", "slug")
    assert "the key 'slug' twice" in response.json["message"]
    nested = '{"name": "ci", "scopes": ["read"], "days": 1, "days": null}'
    assert_error(api.post("/tokens", data=nested, content_type="application/json"), 400,
                 "bad_request", "days")  # fmt: skip
    assert App.select().count() == 0


def test_duplicate_app_is_409(api, web):
    response = api.post("/apps", json={"slug": "web", "image": "nginx:1"})
    assert_error(response, 409, "conflict", "slug")


def test_new_app_needs_a_team_when_the_caller_has_several(client, owner):
    Membership.create(user=owner, team=Team.create(slug="beta", name="Beta"), role="owner")
    api = caller_for(client, owner)
    response = api.post("/apps", json={"slug": "web", "image": "nginx:1"})
    assert_error(response, 422, "invalid", "team")
    assert "acme, beta" in response.json["message"]
    assert api.post("/apps", json={"team": "beta", "slug": "web", "image": "x:1"}).json["team"] == (
        "beta"
    )


def test_apps_are_paginated(api):
    for name in ["e", "d", "c", "b", "a"]:
        assert api.post("/apps", json={"slug": name, "image": "nginx:1"}).status_code == 201
    first = api.get("/apps?per_page=2").json
    assert [a["slug"] for a in first["items"]] == ["a", "b"]
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 5)
    assert first["next"] == f"{API}/apps?page=2&per_page=2"
    last = api.get("/apps?page=3&per_page=2").json
    assert [a["slug"] for a in last["items"]] == ["e"]
    assert last["next"] is None
    assert api.get("/apps?page=9").json["items"] == []
    bad = [("per_page=0", "per_page"), ("per_page=101", "per_page"), ("page=0", "page"),
           ("page=x", "page"), ("page=1&page=2", "page"), ("sort=slug", "sort")]  # fmt: skip
    for query, field in bad:
        assert_error(api.get(f"/apps?{query}"), 422, "invalid", field)


def test_patch_changes_settings_and_emits_an_event(api, web):
    response = api.patch("/apps/web", json={"count": 3, "memory_mb": 512, "image": "web:2"})
    assert response.status_code == 200
    assert (response.json["count"], response.json["memory_mb"]) == (3, 512)
    assert response.json["image"] == "web:2"
    event = Event.get(Event.subject == "v1.app.updated")
    assert sorted(event.data["fields"]) == ["count", "image", "memory_mb"]
    assert_error(api.patch("/apps/web", json={}), 422, "invalid")
    assert_error(api.patch("/apps/web", json={"slug": "new"}), 422, "invalid", "slug")
    assert_error(api.patch("/apps/web", json={"count": 0}), 422, "invalid", "count")
    assert_error(api.patch("/apps/nope", json={"count": 1}), 404, "not_found")


def test_patch_switches_the_source_and_null_leaves_a_setting_as_is(api, web):
    switched = api.patch("/apps/web", json={"image": "", "repo": "acme/web", "count": None})
    assert switched.status_code == 200, switched.json
    assert (switched.json["image"], switched.json["repo"]) == (None, "acme/web")
    assert switched.json["count"] == 1
    both_gone = api.patch("/apps/web", json={"repo": ""})
    assert_error(both_gone, 422, "invalid", "image")


# ---------------------------------------------------------------------------------------------
# Environment and domains
# ---------------------------------------------------------------------------------------------


def test_secret_values_never_leave_the_api(api, web):
    assert api.put("/apps/web/env/PLAIN", json={"value": "visible"}).json == {
        "key": "PLAIN", "value": "visible", "secret": False,
        "updated_at": api.get("/apps/web/env").json["items"][0]["updated_at"],
    }  # fmt: skip
    stored = api.put("/apps/web/env/DB_PASSWORD", json={"value": SECRET_VALUE, "secret": True})
    assert stored.status_code == 200
    assert stored.json["value"] is None and stored.json["secret"] is True
    listed = api.get("/apps/web/env").json["items"]
    assert [(v["key"], v["value"], v["secret"]) for v in listed] == [
        ("DB_PASSWORD", None, True),
        ("PLAIN", "visible", False),
    ]
    api.post("/apps/web/deployments")
    releases = api.get("/apps/web/releases").json["items"]
    assert releases[0]["config"]["secrets"] == ["DB_PASSWORD"]
    assert releases[0]["config"]["env"] == {"PLAIN": "visible"}
    everything = [
        api.get(path).get_data(as_text=True)
        for path in ["/apps", "/apps/web", "/apps/web/env", "/apps/web/releases",
                     "/apps/web/deployments", "/me", "/tokens"]
    ]  # fmt: skip
    assert not any(SECRET_VALUE in text for text in everything)
    assert not any(SECRET_VALUE in json.dumps(e.data) for e in Event.select())


def test_env_rejects_bad_keys_and_values(api, web):
    assert_error(api.put("/apps/web/env/lower", json={"value": "1"}), 422, "invalid", "key")
    assert_error(api.put("/apps/web/env/NOMAD_X", json={"value": "1"}), 422, "invalid", "key")
    assert_error(api.put("/apps/web/env/A", json={"value": 1}), 422, "invalid", "value")
    assert_error(api.put("/apps/web/env/A", json={}), 422, "invalid", "value")
    assert_error(api.put("/apps/web/env/A", json={"value": "a\x00b"}), 422, "invalid", "value")
    assert_error(
        api.put("/apps/web/env/A", json={"value": "1", "secret": "yes"}), 422, "invalid", "secret"
    )


def test_unset_env_removes_the_variable_and_says_so(api, web):
    api.put("/apps/web/env/TOKEN", json={"value": "x", "secret": True})
    assert api.delete("/apps/web/env/TOKEN").status_code == 204
    assert api.get("/apps/web/env").json["items"] == []
    event = Event.select().where(Event.subject == "v1.env.changed").order_by(Event.id.desc()).get()
    assert event.data == {"app": "web", "app_id": web.id, "key": "TOKEN", "secret": True,
                          "removed": True}  # fmt: skip
    assert_error(api.delete("/apps/web/env/TOKEN"), 404, "not_found", "key")
    assert_error(api.delete("/apps/web/env/bad-key"), 404, "not_found", "key")


def test_domains_are_added_listed_and_removed(api, web):
    added = api.post("/apps/web/domains", json={"hostname": "Shop.Example.com"})
    assert added.status_code == 201
    assert added.json["hostname"] == "shop.example.com"
    assert added.headers["Location"] == f"{API}/apps/web/domains/shop.example.com"
    assert [d["hostname"] for d in api.get("/apps/web/domains").json["items"]] == [
        "shop.example.com"
    ]
    again = api.post("/apps/web/domains", json={"hostname": "shop.example.com"})
    assert_error(again, 409, "conflict", "hostname")
    bad = api.post("/apps/web/domains", json={"hostname": "not a host"})
    assert_error(bad, 422, "invalid", "hostname")
    assert api.delete("/apps/web/domains/shop.example.com").status_code == 204
    assert api.get("/apps/web/domains").json["items"] == []
    assert Event.get(Event.subject == "v1.domain.removed").data["hostname"] == "shop.example.com"
    assert_error(api.delete("/apps/web/domains/shop.example.com"), 404, "not_found", "hostname")


@pytest.mark.parametrize("hostname", ["x.apps.localhost", "apps.localhost", "WEB.Apps.Localhost"])
def test_a_domain_under_the_platform_domain_is_refused_when_added(api, web, settings, hostname):
    """Refused at the edge with the renderer's own words, so the app can still deploy."""
    response = api.post("/apps/web/domains", json={"hostname": hostname})
    assert_error(response, 422, "invalid", "hostname")
    assert response.json["message"] == (
        f"domain {hostname.lower()!r} is under the platform domain 'apps.localhost', whose "
        "names belong to other apps: use a domain you own, e.g. 'www.example.com'"
    )
    assert Domain.select().count() == 0
    assert api.post("/apps/web/deployments").status_code == 202


# ---------------------------------------------------------------------------------------------
# Releases and deployments
# ---------------------------------------------------------------------------------------------


def test_deploy_is_queued_and_readable_at_its_location(api, web, redis_conn):
    response = api.post("/apps/web/deployments", json={"image": "registry.local/web:2"})
    assert response.status_code == 202
    body = response.json
    assert (body["status"], body["release"], body["image"]) == ("queued", 1, "registry.local/web:2")
    assert body["triggered_by"] == "owner@example.com"
    assert response.headers["Location"] == f"{API}/deployments/{body['id']}"
    assert api.get(f"/deployments/{body['id']}").json == body
    assert f"deploy-{body['id']}" in Queue(DEPLOY_QUEUE, connection=redis_conn).job_ids
    app = api.get("/apps/web").json
    assert app["last_deployment"]["id"] == body["id"]


def test_deploy_without_a_body_and_bad_deploys(api, web):
    assert api.post("/apps/web/deployments").status_code == 202
    assert api.post("/apps/web/deployments", json={}).status_code == 202
    bad = api.post("/apps/web/deployments", json={"image": "web:bad tag"})
    assert_error(bad, 422, "invalid", "image")
    assert_error(api.post("/apps/web/deployments", json={"git_sha": "xyz"}), 422, "invalid",
                 "git_sha")  # fmt: skip
    assert_error(api.post("/apps/web/deployments", json={"tag": "1"}), 422, "invalid", "tag")


def test_releases_and_deployments_are_newest_first_and_paginated(api, web):
    ids = [api.post("/apps/web/deployments").json["id"] for _ in range(3)]
    deployments = api.get("/apps/web/deployments?per_page=2").json
    assert [d["id"] for d in deployments["items"]] == ids[::-1][:2]
    assert deployments["next"] == f"{API}/apps/web/deployments?page=2&per_page=2"
    assert [d["status"] for d in deployments["items"]] == ["queued", "superseded"]
    releases = api.get("/apps/web/releases").json
    assert [r["number"] for r in releases["items"]] == [3, 2, 1]
    assert releases["total"] == 3 and releases["next"] is None


def test_rollback_deploys_an_earlier_release(api, web):
    api.post("/apps/web/deployments")
    api.post("/apps/web/deployments", json={"image": "registry.local/web:2"})
    response = api.post("/apps/web/rollback", json={"release": 1})
    assert response.status_code == 202
    # A rollback is a new release with the old image and settings (and current secrets).
    rolled = (response.json["release"], response.json["image"], response.json["rollback_of"])
    assert rolled == (3, "registry.local/web:1", 1)
    assert Deployment.select().count() == 3
    missing = api.post("/apps/web/rollback", json={"release": 9})
    assert_error(missing, 404, "not_found")
    assert "no release 9" in missing.json["message"]
    assert_error(api.post("/apps/web/rollback", json={"release": 0}), 422, "invalid", "release")
    assert_error(api.post("/apps/web/rollback", json={}), 422, "invalid", "release")


def test_a_deployer_cannot_deploy_another_image(client, api, owner, web):
    """Another image receives every secret: admin role (and admin scope) by default."""
    deployer = create_user("deployer@example.com", PASSWORD, team_slug="acme", role=Role.DEPLOYER)
    body = {"image": "evil.example/steal:1"}
    as_deployer = caller_for(client, deployer, scopes=("admin",))
    assert_error(as_deployer.post("/apps/web/deployments", json=body), 403, "forbidden")
    owner_with_deploy_scope = caller_for(client, owner, scopes=("deploy",))
    assert_error(owner_with_deploy_scope.post("/apps/web/deployments", json=body), 403, "forbidden")
    same = {"image": "registry.local/web:1"}  # the app's own image is fine for deployers
    assert as_deployer.post("/apps/web/deployments", json=same).status_code == 202
    assert api.post("/apps/web/deployments", json=body).status_code == 202
    assert (
        not Release.select()
        .where((Release.image == "evil.example/steal:1") & (Release.created_by == deployer.id))
        .exists()
    )


def test_rollback_uses_the_current_secrets_not_the_old_ones(api, web, settings):
    api.put("/apps/web/env/API_KEY", json={"value": "old-leaked-value", "secret": True})
    api.post("/apps/web/deployments")
    api.put("/apps/web/env/API_KEY", json={"value": "rotated-value", "secret": True})
    api.post("/apps/web/deployments", json={"image": "registry.local/web:2"})
    rolled = api.post("/apps/web/rollback", json={"release": 1}).json
    release = Release.get((Release.app == web.id) & (Release.number == rolled["release"]))
    cipher = SecretCipher.from_settings(settings)
    assert cipher.decrypt(release.config["secrets"]["API_KEY"]) == "rotated-value"
    assert release.image == "registry.local/web:1"


def test_unknown_deployment_is_404(api):
    assert_error(api.get("/deployments/12345"), 404, "not_found")
    assert_error(api.get(f"/deployments/{2**70}"), 404, "not_found")


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


def test_token_secret_is_shown_once_and_works(client, api, owner):
    response = api.post("/tokens", json={"name": "ci", "scopes": ["deploy"], "days": 7})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    secret = response.json["secret"]
    assert secret.startswith("hel_")
    assert response.json["token"]["scopes"] == ["deploy"]
    listed = api.get("/tokens").get_data(as_text=True)
    assert secret not in listed and "token_hash" not in listed
    names = [t["name"] for t in json.loads(listed)["items"]]
    assert names == ["ci", "test"]
    assert Caller(client, secret).get("/me").json["token"]["name"] == "ci"
    assert response.json["token"]["parent_id"] == api.get("/me").json["token"]["id"]


def test_a_token_never_mints_a_stronger_or_longer_lived_token(client, owner):
    deployer = caller_for(client, owner, scopes=("deploy",), days=30)
    admin = caller_for(client, owner, scopes=("admin",), days=30)
    # Minting needs the admin scope at all; an admin token within its own scope and expiry.
    assert_error(deployer.post("/tokens", json={"name": "x", "scopes": ["read"]}), 403,
                 "forbidden")  # fmt: skip
    never = admin.post("/tokens", json={"name": "forever", "scopes": ["read"], "days": None})
    assert_error(never, 403, "forbidden", "days")
    assert "expire no later" in never.json["message"]
    later = admin.post("/tokens", json={"name": "later", "scopes": ["read"], "days": 90})
    assert_error(later, 403, "forbidden", "days")
    child = admin.post("/tokens", json={"name": "child", "scopes": ["deploy"], "days": 30})
    assert child.status_code == 201, child.json
    assert child.json["token"]["parent_id"] == admin.get("/me").json["token"]["id"]
    # The child cannot climb back to admin through a grandchild either.
    assert_error(Caller(client, child.json["secret"]).post(
        "/tokens", json={"name": "up", "scopes": ["admin"], "days": 1}), 403, "forbidden"
    )  # fmt: skip


def test_a_token_without_expiry_mints_tokens_without_expiry(client, owner):
    forever = caller_for(client, owner, scopes=("admin",), days=None)
    child = forever.post("/tokens", json={"name": "forever", "scopes": ["read"], "days": None})
    assert child.status_code == 201 and child.json["token"]["expires_at"] is None


def test_revoking_a_token_revokes_every_token_it_minted(client, owner):
    root = caller_for(client, owner, scopes=("admin",), days=30)
    child = root.post("/tokens", json={"name": "child", "scopes": ["admin"], "days": 10}).json
    grandchild = (
        Caller(client, child["secret"])
        .post("/tokens", json={"name": "grandchild", "scopes": ["read"], "days": 5})
        .json
    )
    other = caller_for(client, owner, scopes=("read",), days=30)
    assert Caller(client, grandchild["secret"]).get("/me").status_code == 200
    assert root.delete(f"/tokens/{root.get('/me').json['token']['id']}").status_code == 204
    for secret in (child["secret"], grandchild["secret"]):
        assert Caller(client, secret).get("/me").status_code == 401
    assert other.get("/me").status_code == 200  # a sibling made elsewhere lives on
    revoked = Event.select().where(Event.subject == "v1.token.revoked").get()
    ids = [child["token"]["id"], grandchild["token"]["id"]]
    assert sorted(revoked.data["revoked_with_parent"]) == sorted(ids)
    assert revoked.user_id == owner.id and revoked.team_id is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "days": 0}, "days"),
        ({"name": "x", "scopes": ["read"], "days": 400}, "days"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["read"]}, "name"),
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": "read"}, "scopes"),
    ],
)
def test_bad_token_requests_are_422(api, body, field):
    assert_error(api.post("/tokens", json=body), 422, "invalid", field)


def test_revoking_tokens(client, owner):
    admin = caller_for(client, owner)
    reader_token = create_token(owner, "reader", ["read"])
    reader = Caller(client, reader_token.secret)
    other = create_token(owner, "other", ["read"])
    assert_error(reader.delete(f"/tokens/{other.row.id}"), 403, "forbidden")
    stranger = create_token(create_user("s@example.com", PASSWORD), "s", ["read"])
    assert_error(admin.delete(f"/tokens/{stranger.row.id}"), 404, "not_found")
    assert admin.delete(f"/tokens/{other.row.id}").status_code == 204
    assert reader.delete(f"/tokens/{reader_token.row.id}").status_code == 204
    assert_error(reader.get("/me"), 401, "unauthorized")


# ---------------------------------------------------------------------------------------------
# The document, and errors without internals
# ---------------------------------------------------------------------------------------------


def _rule_to_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.removeprefix(API))


def test_openapi_document_matches_the_routes_exactly(client, app):
    served = client.get(f"{API}/openapi.json")
    assert served.status_code == 200
    routes = {
        (_rule_to_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in served.json["paths"].items() for method in ops}
    assert routes == documented
    assert len(routes) >= 21  # every route of the API, the document and its page included


def test_openapi_document_is_valid_openapi_3_1(client):
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    document = client.get(f"{API}/openapi.json").json
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_openapi_bodies_are_the_schema_models(client):
    """The document's bodies are the models the views check input with, not a second copy."""
    from panel.schema.apps import AppPatch, NewApp

    document = client.get(f"{API}/openapi.json").json
    schemas = document["components"]["schemas"]
    create = document["paths"]["/apps"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/NewApp"}
    assert set(schemas["NewApp"]["properties"]) == set(NewApp.model_fields)
    assert schemas["NewApp"]["additionalProperties"] is False
    assert set(schemas["AppPatch"]["properties"]) == set(AppPatch.model_fields)
    assert schemas["NewApp"]["properties"]["port"]["maximum"] == 65535


def test_api_docs_page_lists_every_operation(client):
    document = client.get(f"{API}/openapi.json").json
    page = client.get(f"{API}/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    for path, methods in document["paths"].items():
        for method in methods:
            assert f"{method.upper()} {API}{path}" in text
    assert "memory_max_mb" in text and "The port the app listens on." in text


def test_a_body_with_four_bad_fields_gets_four_errors(api):
    body = {"slug": "web", "image": "nginx:1", "port": 0, "count": 99, "health_path": "x",
            "branch": "..", "color": "red"}  # fmt: skip
    response = api.post("/apps", json=body)
    assert_error(response, 422, "invalid", "branch")
    fields = [error["field"] for error in response.json["errors"]]
    assert fields == ["branch", "port", "health_path", "count", "color"]
    assert all(error["message"] for error in response.json["errors"])


def test_unexpected_errors_show_no_internals(api, web, monkeypatch):
    def explode(**_kwargs):
        raise RuntimeError("/work/main/panel/secret.py exploded")

    monkeypatch.setattr("panel.web.api.update_app", explode)
    response = api.patch("/apps/web", json={"count": 2})
    assert response.status_code == 500
    request_id = response.headers["X-Request-Id"]
    assert response.json == {
        "error": "internal_error",
        "message": "Something went wrong on Helios's side; it was logged for the operator.",
        "request_id": request_id,
    }
    assert "/work/" not in response.get_data(as_text=True)


def test_unknown_routes_and_methods_answer_json(api):
    assert_error(api.get("/nothing-here"), 404, "not_found")
    assert_error(api.delete("/apps"), 405, "method_not_allowed")


def test_each_token_has_its_own_request_budget(app, client, owner, settings, redis_conn):
    app.extensions["helios.api_limiter"] = None  # rebuilt from the new setting below
    app.extensions["helios.settings"] = settings.replace(api_rate_limit="3 per minute")
    first, second = caller_for(client, owner), caller_for(client, owner)
    assert [first.get("/me").status_code for _ in range(3)] == [200, 200, 200]
    refused = first.get("/me")
    assert_error(refused, 429, "too_many_requests")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "HELIOS_API_RATE_LIMIT" in refused.json["message"]
    assert second.get("/me").status_code == 200  # another token's budget is its own
    anonymous = [client.get("/api/v1/me").status_code for _ in range(4)]
    assert anonymous == [401, 401, 401, 429]  # guessing tokens spends the address's budget
