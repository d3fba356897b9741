"""Creating and deleting teams: the Teams page, the team page's danger zone and the JSON API.

Real SQLite and Redis through the Flask test client; the actions underneath are
``panel.actions.teams`` (the CLI's side is tests/test_cli_teams.py).
"""

from __future__ import annotations

import re

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.deletion import delete_app, record_purged
from panel.actions.sessions import create_session
from panel.actions.tokens import create_token
from panel.models import App, Event, Membership, Notifier, Role, Team, User, UserSession

PASSWORD = "team password 1234"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


@pytest.fixture
def owner(db) -> User:
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def empty(owner) -> Team:
    """A team of the owner's without apps, with a second member and a notifier."""
    team = Team.create(slug="spare", name="Spare")
    Membership.create(user=owner, team=team, role=Role.OWNER.value)
    Notifier.create(team=team, name="chat", url="https://1.1.1.1/hook",
                    subjects=["v1.build.failed"], secret="x")  # fmt: skip
    return team


def _csrf(client, path: str) -> str:
    return CSRF_RE.search(client.get(path).get_data(as_text=True)).group(1)


def _signed_in(client, auth, email: str = "owner@example.com"):
    assert auth.login(email, PASSWORD).status_code == 302
    return client


def _member(email: str, team: Team, role: Role) -> User:
    user = create_user(email, PASSWORD, team_slug=f"home-{email.split('@')[0]}")
    Membership.create(user=user, team=team, role=role.value)
    return user


def _bearer(user: User, scopes=("admin",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user, 'test', list(scopes)).secret}"}


# ---------------------------------------------------------------------------------------------
# The panel
# ---------------------------------------------------------------------------------------------


def test_create_a_team_from_the_teams_page(client, auth, owner):
    _signed_in(client, auth)
    page = client.get("/teams").get_data(as_text=True)
    assert "Create a team" in page and 'name="slug"' in page
    token = _csrf(client, "/teams")
    answer = client.post("/teams", data={"slug": "platform", "name": "", "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/teams/platform")
    team = Team.get(Team.slug == "platform")
    assert team.name == "Platform"
    membership = Membership.get((Membership.team == team.id) & (Membership.user == owner.id))
    assert membership.role == "owner"
    event = Event.get(Event.subject == "v1.team.created")
    assert (event.team_id, event.actor, event.data) == (
        team.id, "owner@example.com", {"team": "platform", "name": "Platform"},
    )  # fmt: skip
    assert "platform" in client.get("/teams").get_data(as_text=True)


def test_a_taken_or_bad_slug_is_refused_next_to_the_field(client, auth, owner):
    _signed_in(client, auth)
    token = _csrf(client, "/teams")
    taken = client.post("/teams", data={"slug": "acme", "csrf_token": token})
    assert taken.status_code == 409
    assert "a team named &#39;acme&#39; exists already: pick another slug" in taken.get_data(
        as_text=True
    )
    bad = client.post("/teams", data={"slug": "Not A Slug", "csrf_token": token})
    assert bad.status_code == 422
    assert "lowercase letters" in bad.get_data(as_text=True)
    assert Team.select().count() == 1
    assert not Event.select().where(Event.subject == "v1.team.created").exists()


def test_delete_is_refused_with_the_reason_while_the_team_has_apps(client, auth, owner):
    acme = Team.get(Team.slug == "acme")
    create_app(actor=None, team=acme, slug="web", image="nginx:1.27")
    _signed_in(client, auth)
    page = client.get("/teams/acme").get_data(as_text=True)
    assert "Delete team" in page and "Type <code>acme</code> to confirm" in page
    token = _csrf(client, "/teams/acme")
    answer = client.post("/teams/acme/delete", data={"confirm": "acme", "csrf_token": token})
    assert answer.status_code == 409
    assert "acme still has apps (web): delete them first" in answer.get_data(as_text=True)
    wrong = client.post("/teams/acme/delete", data={"confirm": "acne", "csrf_token": token})
    assert wrong.status_code == 422
    assert "type the team&#39;s slug, acme, to confirm" in wrong.get_data(as_text=True)
    assert Team.select().where(Team.slug == "acme").exists()


def test_delete_an_empty_team_with_its_members_and_notifiers(client, auth, owner, empty):
    member = _member("dev@example.com", empty, Role.DEPLOYER)
    Membership.delete().where(
        (Membership.user == member.id) & (Membership.team != empty.id)
    ).execute()  # spare is their only team: they are signed out with it
    create_session(member)
    _signed_in(client, auth)
    token = _csrf(client, "/teams/spare")
    answer = client.post("/teams/spare/delete", data={"confirm": "spare", "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/teams")
    assert not Team.select().where(Team.slug == "spare").exists()
    assert not Membership.select().where(Membership.team == empty.id).exists()
    assert not Notifier.select().where(Notifier.team == empty.id).exists()
    assert (
        not UserSession.select()
        .where((UserSession.user == member.id) & UserSession.revoked_at.is_null())
        .exists()
    )
    event = Event.get(Event.subject == "v1.team.deleted")
    assert (event.team_id, event.user_id, event.data) == (
        None, owner.id, {"team": "spare", "name": "Spare", "members": 2},
    )  # fmt: skip
    # The owner still has acme, and is still signed in.
    assert client.get("/teams").status_code == 200


def test_only_owners_delete_and_other_teams_are_not_found(client, auth, owner, empty):
    _member("admin@example.com", empty, Role.ADMIN)
    _signed_in(client, auth, "admin@example.com")
    assert "Delete team" not in client.get("/teams/spare").get_data(as_text=True)
    token = _csrf(client, "/teams")
    refused = client.post("/teams/spare/delete", data={"confirm": "spare", "csrf_token": token})
    assert refused.status_code == 403
    elsewhere = client.post("/teams/acme/delete", data={"confirm": "acme", "csrf_token": token})
    assert elsewhere.status_code == 404
    assert Team.select().where(Team.slug.in_(["spare", "acme"])).count() == 2


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


def test_api_creates_a_team_and_refuses_a_taken_slug(client, owner):
    headers = _bearer(owner)
    made = client.post("/api/v1/teams", json={"slug": "platform", "name": "Platform team"},
                       headers=headers)  # fmt: skip
    assert made.status_code == 201, made.get_json()
    assert made.get_json() == {"slug": "platform", "name": "Platform team", "role": "owner",
                               "nomad_namespace": "platform"}  # fmt: skip
    taken = client.post("/api/v1/teams", json={"slug": "platform"}, headers=headers)
    assert taken.status_code == 409
    assert taken.get_json()["message"] == (
        "a team named 'platform' exists already: pick another slug"
    )
    bad = client.post("/api/v1/teams", json={"slug": "-x", "name": "a\nb"}, headers=headers)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.get_json()["errors"]} == {"slug", "name"}
    read_only = client.post(
        "/api/v1/teams", json={"slug": "other"}, headers=_bearer(owner, ["read"])
    )
    assert read_only.status_code == 403
    assert Team.select().count() == 2


def test_api_deletes_an_empty_team_only(client, owner, empty, settings, redis_conn):
    headers = _bearer(owner)
    web = create_app(actor=None, team=empty, slug="web", image="nginx:1.27")
    has_app = client.delete("/api/v1/teams/spare", json={"confirm": "spare"}, headers=headers)
    assert has_app.status_code == 409
    assert has_app.get_json()["message"] == "spare still has apps (web): delete them first"

    # A deleted app blocks until Nomad has purged its job (the purge job needs the row).
    delete_app(actor=None, app=web, confirm="web", settings=settings, redis_conn=redis_conn)
    purging = client.delete("/api/v1/teams/spare", json={"confirm": "spare"}, headers=headers)
    assert purging.status_code == 409
    assert "still being purged from Nomad" in purging.get_json()["message"]

    unconfirmed = client.delete("/api/v1/teams/spare", json={"confirm": ""}, headers=headers)
    assert unconfirmed.status_code == 422
    assert unconfirmed.get_json()["field"] == "confirm"

    # Purged, the tombstone goes with the team.
    record_purged(web.id, "purged")
    gone = client.delete("/api/v1/teams/spare", json={"confirm": "spare"}, headers=headers)
    assert gone.status_code == 204
    assert not Team.select().where(Team.slug == "spare").exists()
    assert not App.select().where(App.id == web.id).exists()


def test_api_delete_needs_the_owner_role_in_that_team(client, owner, empty):
    admin = _member("admin@example.com", empty, Role.ADMIN)
    refused = client.delete("/api/v1/teams/spare", json={"confirm": "spare"},
                            headers=_bearer(admin))  # fmt: skip
    assert refused.status_code == 403
    stranger = create_user("stranger@example.com", PASSWORD, team_slug="rival")
    unknown = client.delete("/api/v1/teams/spare", json={"confirm": "spare"},
                            headers=_bearer(stranger))  # fmt: skip
    assert unknown.status_code == 404
    assert "you are not in a team named 'spare'" in unknown.get_json()["message"]
    assert Team.select().where(Team.slug == "spare").exists()
