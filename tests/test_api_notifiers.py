"""A team's notifiers through the JSON API and the team page's "Rotate secret", for real.

The API runs through the Flask test client on real SQLite and Redis; deliveries are sent by a
real RQ worker (in burst mode) to a local HTTP receiver that checks each signature the way
docs/events.md tells receivers to. The receiver listens on 127.0.0.1 over plain http: the
panel's settings allow exactly that, as an operator would (HELIOS_NOTIFY_ALLOW_NETWORKS,
HELIOS_NOTIFY_ALLOW_HTTP).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from test_notifications import Receiver, _verified, _work

from panel.actions.accounts import create_user
from panel.actions.notifiers import create_notifier
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Event, Membership, Notifier, NotifierDelivery, Role, Team, User

PASSWORD = "notifier password 123"
API = "/api/v1/teams"
BODY = {"name": "chat", "url": "https://1.1.1.1/T0/s3cr3t-path", "subjects": ["v1.build.failed"]}


@pytest.fixture
def settings(settings: Settings, monkeypatch) -> Settings:
    """The panel's settings, and the same environment for the delivery job (it reads
    Settings.from_env, as in a worker): loopback over http allowed, retries without delay."""
    env = {
        "HELIOS_DATA_DIR": str(settings.data_dir),
        "HELIOS_DATABASE_URL": settings.effective_database_url,
        "HELIOS_REDIS_URL": settings.effective_redis_url,
        "HELIOS_NOTIFY_ALLOW_HTTP": "true",
        "HELIOS_NOTIFY_ALLOW_NETWORKS": "127.0.0.1/32",
        "HELIOS_NOTIFY_RETRY_DELAYS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings.replace(notify_allow_http=True, notify_allow_networks=("127.0.0.1/32",),
                            notify_retry_delays=(0,))  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def owner(db) -> User:
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


def _member(email: str, team: str, role: Role) -> User:
    user = create_user(email, PASSWORD, team_slug=f"solo-{email.split('@')[0]}")
    Membership.create(user=user, team=Team.get(Team.slug == team), role=role.value)
    return user


def _headers(user: User, scopes=("admin",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user, 'test', list(scopes)).secret}"}


@pytest.fixture
def admin_headers(owner) -> dict[str, str]:
    return _headers(owner)


def _create(client, headers, **changes):
    return client.post(f"{API}/acme/notifiers", json={**BODY, **changes}, headers=headers)


# ---------------------------------------------------------------------------------------------
# Managing notifiers
# ---------------------------------------------------------------------------------------------


def test_an_admin_manages_notifiers_and_the_secret_is_shown_once(client, admin_headers, settings):
    made = _create(client, admin_headers)
    assert made.status_code == 201, made.get_json()
    assert made.headers["Cache-Control"] == "no-store"
    body = made.get_json()
    secret, notifier = body["secret"], body["notifier"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert made.headers["Location"] == f"{API}/acme/notifiers/{notifier['id']}"
    assert notifier == {
        "id": notifier["id"], "name": "chat", "origin": "https://1.1.1.1", "format": "json",
        "subjects": ["v1.build.failed"], "enabled": True, "created_by": "owner@example.com",
        "created_at": notifier["created_at"], "deliveries": [],
    }  # fmt: skip
    row = Notifier.get_by_id(notifier["id"])
    assert SecretCipher.from_settings(settings).decrypt(row.secret) == secret

    tested = client.post(f"{API}/acme/notifiers/{notifier['id']}/test", headers=admin_headers)
    assert tested.status_code == 202
    assert tested.get_json()["subject"] == "v1.notifier.tested"
    assert tested.get_json()["status"] == "pending"
    off = client.patch(f"{API}/acme/notifiers/{notifier['id']}", json={"enabled": False},
                       headers=admin_headers)  # fmt: skip
    assert off.status_code == 200 and off.get_json()["enabled"] is False
    assert not Notifier.get_by_id(notifier["id"]).enabled

    listed = client.get(f"{API}/acme/notifiers", headers=admin_headers)
    one = client.get(f"{API}/acme/notifiers/{notifier['id']}", headers=admin_headers)
    for answer in (listed, one):
        assert answer.status_code == 200
        text = answer.get_data(as_text=True)
        # Never the secret, encrypted or not, nor the URL's path (often a secret itself).
        assert secret not in text and row.secret not in text and "s3cr3t-path" not in text
    [item] = listed.get_json()["items"]
    assert item == one.get_json()
    assert [d["subject"] for d in item["deliveries"]] == ["v1.notifier.tested"]

    gone = client.delete(f"{API}/acme/notifiers/{notifier['id']}", headers=admin_headers)
    assert gone.status_code == 204
    assert client.get(f"{API}/acme/notifiers", headers=admin_headers).get_json() == {"items": []}
    again = client.delete(f"{API}/acme/notifiers/{notifier['id']}", headers=admin_headers)
    assert again.status_code == 404 and "has no notifier" in again.get_json()["message"]
    subjects = [e.subject for e in Event.select().order_by(Event.id) if "notifier" in e.subject]
    assert subjects == ["v1.notifier.created", "v1.notifier.tested", "v1.notifier.changed",
                        "v1.notifier.deleted"]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"url": "https://10.0.0.8/x"}, "url", "10.0.0.8 is private"),
        ({"url": "http://1.1.1.1/x"}, "url", None),  # plain http is allowed here: accepted
        ({"subjects": ["v1.app.created"]}, "subjects", "tick at least one of the events"),
        ({"subjects": []}, "subjects", None),
        ({"format": "xml"}, "format", "json or slack"),
        ({"name": "-dash first"}, "name", "starting with a letter or digit"),
        ({"secret": "mine"}, "secret", "unknown field 'secret'"),
    ],
)
def test_bad_fields_are_refused_with_422_naming_them(
    client, admin_headers, changes, field, message
):
    answer = _create(client, admin_headers, **changes)
    if field == "url" and message is None:
        assert answer.status_code == 201
        return
    assert answer.status_code == 422, answer.get_json()
    error = answer.get_json()
    assert error["error"] == "invalid" and error["field"] == field
    if message:
        assert message in error["message"]
    assert Notifier.select().count() == 0


def test_a_name_in_use_is_refused(client, admin_headers):
    assert _create(client, admin_headers).status_code == 201
    twice = _create(client, admin_headers, url="https://1.1.1.1/other")
    assert twice.status_code == 422
    assert "acme has a notifier named 'chat'" in twice.get_json()["message"]


# ---------------------------------------------------------------------------------------------
# Who may
# ---------------------------------------------------------------------------------------------


def _routes(notifier_id: int) -> list[tuple[str, str, dict | None]]:
    base = f"{API}/acme/notifiers"
    one = f"{base}/{notifier_id}"
    return [
        ("get", base, None), ("post", base, {**BODY, "name": "another"}), ("get", one, None),
        ("patch", one, {"enabled": False}), ("post", f"{one}/test", None),
        ("post", f"{one}/rotate-secret", None), ("delete", one, None),
    ]  # fmt: skip


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_viewers_and_deployers_are_refused_even_with_an_admin_token(client, owner, settings, role):
    row = create_notifier(actor=owner, team=Team.get(Team.slug == "acme"), name="kept",
                          url="https://1.1.1.1/x", format="json", subjects=["v1.build.failed"],
                          settings=settings).row  # fmt: skip
    headers = _headers(_member(f"{role.value}@example.com", "acme", role))
    for method, path, body in _routes(row.id):
        answer = getattr(client, method)(path, json=body, headers=headers)
        assert answer.status_code == 403, (method, path)
        assert "admin role" in answer.get_json()["message"]
    assert Notifier.select().count() == 1 and Notifier.get().secret == row.secret


def test_tokens_need_the_admin_scope(client, owner, settings):
    row = create_notifier(actor=owner, team=Team.get(Team.slug == "acme"), name="kept",
                          url="https://1.1.1.1/x", format="json", subjects=["v1.build.failed"],
                          settings=settings).row  # fmt: skip
    headers = _headers(owner, scopes=("deploy",))
    for method, path, body in _routes(row.id):
        answer = getattr(client, method)(path, json=body, headers=headers)
        assert answer.status_code == 403, (method, path)
        assert "'admin' scope" in answer.get_json()["message"]


def test_another_teams_notifiers_are_404_never_403(client, owner, settings):
    theirs = create_user("rival@example.com", PASSWORD, team_slug="rival")
    row = create_notifier(actor=theirs, team=Team.get(Team.slug == "rival"), name="theirs",
                          url="https://1.1.1.1/x", format="json", subjects=["v1.build.failed"],
                          settings=settings).row  # fmt: skip
    headers = _headers(owner)
    for method, path, body in _routes(row.id):
        answer = getattr(client, method)(path.replace("/acme/", "/rival/"), json=body,
                                         headers=headers)  # fmt: skip
        assert answer.status_code == 404, (method, path)
        assert "you are not in a team named 'rival'" in answer.get_json()["message"]
        # Their notifier's id under the caller's own team is not found either.
        if "/notifiers/" in path:
            mine = getattr(client, method)(path, json=body, headers=headers)
            assert mine.status_code == 404, (method, path)
    assert Notifier.get_by_id(row.id).secret == row.secret and Notifier.get().enabled
    for path in ("/nope/notifiers", "/UPPER/notifiers", "/acme/notifiers/99999"):
        assert client.get(API + path, headers=headers).status_code == 404
    for method in ("get", "patch", "delete"):  # beyond any row id: 404, as with any other id
        answer = getattr(client, method)(f"{API}/acme/notifiers/{2**63}", headers=headers,
                                         json={"enabled": True})  # fmt: skip
        assert answer.status_code == 404, method


# ---------------------------------------------------------------------------------------------
# Rotating the secret
# ---------------------------------------------------------------------------------------------


def test_after_rotation_deliveries_verify_with_the_new_secret_only(
    client, admin_headers, settings, redis_conn, receiver
):
    made = _create(client, admin_headers, url=receiver.url).get_json()
    old, notifier_id = made["secret"], made["notifier"]["id"]
    one = f"{API}/acme/notifiers/{notifier_id}"
    assert client.post(f"{one}/test", headers=admin_headers).status_code == 202
    _work(redis_conn)
    assert len(receiver.requests) == 1 and _verified(old, *receiver.requests[0])

    # A delivery queued before the rotation but sent after it is signed with the new secret.
    assert client.post(f"{one}/test", headers=admin_headers).status_code == 202
    rotated = client.post(f"{one}/rotate-secret", headers=admin_headers)
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new = rotated.get_json()["secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", new) and new != old
    assert rotated.get_json()["notifier"]["id"] == notifier_id
    _work(redis_conn)
    assert client.post(f"{one}/test", headers=admin_headers).status_code == 202
    _work(redis_conn)

    assert len(receiver.requests) == 3
    for headers, body in receiver.requests[1:]:
        assert _verified(new, headers, body)
        assert not _verified(old, headers, body)
    statuses = [d.status for d in NotifierDelivery.select().order_by(NotifierDelivery.id)]
    assert statuses == ["delivered"] * 3

    event = Event.select().where(Event.subject == "v1.notifier.secret_rotated").get()
    assert event.data == {"notifier_id": notifier_id, "name": "chat"}
    assert event.actor == "owner@example.com"
    listed = client.get(f"{API}/acme/notifiers", headers=admin_headers).get_data(as_text=True)
    assert new not in listed and old not in listed
    assert SecretCipher.from_settings(settings).decrypt(Notifier.get().secret) == new


# ---------------------------------------------------------------------------------------------
# The team page's "Rotate secret"
# ---------------------------------------------------------------------------------------------


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def test_the_team_page_rotates_a_secret_and_shows_the_new_one_once(client, auth, owner, settings):
    row = create_notifier(actor=owner, team=Team.get(Team.slug == "acme"), name="chat",
                          url="https://1.1.1.1/x", format="json", subjects=["v1.build.failed"],
                          settings=settings).row  # fmt: skip
    auth.login("owner@example.com", PASSWORD)
    page = client.get("/teams/acme").get_data(as_text=True)
    action = f"/teams/acme/notifiers/{row.id}/rotate-secret"
    assert f'action="{action}"' in page and "Rotate secret" in page

    refused = client.post(action)  # no CSRF token
    assert refused.status_code == 400 and Notifier.get().secret == row.secret
    shown = client.post(action, data={"csrf_token": _csrf(page)})
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    text = shown.get_data(as_text=True)
    assert "New signing secret for" in text and "signs nothing from now on" in text
    secret = re.search(r'id="notifier-secret" type="text" value="([0-9a-f]{64})"', text).group(1)
    assert SecretCipher.from_settings(settings).decrypt(Notifier.get().secret) == secret
    assert secret not in client.get("/teams/acme").get_data(as_text=True)
    audit = client.get("/audit?subject=v1.notifier").get_data(as_text=True)
    assert "v1.notifier.secret_rotated" in audit and secret not in audit
    assert client.post(f"/teams/acme/notifiers/{row.id + 1}/rotate-secret",
                       data={"csrf_token": _csrf(page)}).status_code == 404  # fmt: skip


def test_a_deployer_may_not_rotate_on_the_team_page(client, auth, owner, settings):
    row = create_notifier(actor=owner, team=Team.get(Team.slug == "acme"), name="chat",
                          url="https://1.1.1.1/x", format="json", subjects=["v1.build.failed"],
                          settings=settings).row  # fmt: skip
    _member("dev@example.com", "acme", Role.DEPLOYER)
    auth.login("dev@example.com", PASSWORD)
    page = client.get("/teams/acme").get_data(as_text=True)
    assert "Rotate secret" not in page
    token = _csrf(client.get("/tokens").get_data(as_text=True))  # the team page has no form
    answer = client.post(f"/teams/acme/notifiers/{row.id}/rotate-secret",
                         data={"csrf_token": token})  # fmt: skip
    assert answer.status_code == 403 and Notifier.get().secret == row.secret
