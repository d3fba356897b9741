"""Pages authenticate by session only, the API by token only; a token is never stronger than
its scope. The review's exploit: a signed-in person sends someone else's leaked *read* token in
an Authorization header on page routes, to make themselves owner of that person's team and to
mint a never-expiring admin token in their name."""

from __future__ import annotations

import re

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.tokens import create_token
from panel.models import ApiToken, Membership, Role, Team, User

PASSWORD = "Quartz-Lantern-Orbit-71"
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def alpha_owner(db) -> User:
    owner = create_user("alpha@example.com", PASSWORD, team_slug="alpha")
    create_app(actor=None, team=Team.get(Team.slug == "alpha"), slug="web", image="nginx:1.27")
    return owner


@pytest.fixture
def attacker(db) -> User:
    return create_user("mallory@example.com", PASSWORD, team_slug="mallory")


def _signed_in(client, auth, user: User) -> str:
    assert auth.login(user.email, PASSWORD).status_code == 302
    return CSRF_RE.search(client.get("/tokens").get_data(as_text=True)).group(1)


def test_a_foreign_bearer_header_lends_nothing_to_a_session(client, auth, alpha_owner, attacker):
    leaked = create_token(alpha_owner, "leaked", ["read"], days=30).secret
    csrf = _signed_in(client, auth, attacker)
    header = {"Authorization": f"Bearer {leaked}"}

    joined = client.post(
        "/teams/alpha/members",
        data={"csrf_token": csrf, "email": attacker.email, "role": "owner"},
        headers=header,
    )
    assert joined.status_code == 404  # the session's own view: mallory is not in alpha
    assert (
        not Membership.select()
        .where(Membership.user == attacker.id)
        .join(Team)
        .where(Team.slug == "alpha")
        .exists()
    )

    minted = client.post(
        "/tokens",
        data={"csrf_token": csrf, "name": "x", "scopes": "admin", "expires": "never"},
        headers=header,
    )
    assert minted.status_code == 200
    made = ApiToken.get(ApiToken.name == "x")
    assert made.user_id == attacker.id  # the session's person, never the header's
    assert (
        not ApiToken.select()
        .where((ApiToken.user == alpha_owner.id) & (ApiToken.name == "x"))
        .exists()
    )
    assert client.get("/apps/web", headers=header).status_code == 404


def test_a_bearer_header_alone_does_not_sign_in_to_pages(client, alpha_owner):
    secret = create_token(alpha_owner, "admin", ["admin"], days=30).secret
    answer = client.get("/apps/web", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_a_session_cookie_does_not_reach_the_api(client, auth, alpha_owner):
    _signed_in(client, auth, alpha_owner)
    assert client.get("/api/v1/apps").status_code == 401


@pytest.mark.parametrize(
    ("scope", "needed", "allowed"),
    [("read", Role.DEPLOYER, False), ("deploy", Role.DEPLOYER, True), ("deploy", Role.ADMIN, False),
     ("admin", Role.OWNER, True)],
)  # fmt: skip
def test_effective_permission_is_the_smaller_of_role_and_scope(
    app, alpha_owner, scope, needed, allowed
):
    from werkzeug.exceptions import Forbidden

    from panel.web.access import Principal, app_or_404

    token = create_token(alpha_owner, "t", [scope], days=1).row
    with app.test_request_context():
        if allowed:
            assert app_or_404("web", Principal(alpha_owner, token), needed).slug == "web"
        else:
            with pytest.raises(Forbidden):
                app_or_404("web", Principal(alpha_owner, token), needed)
