"""`helios teams` as a real process against a real panel (gunicorn), through its API."""

from __future__ import annotations

import json

import pytest
from test_cli_client import Helios

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.tokens import create_token
from panel.models import Event, Membership, Role, Team

PASSWORD = "teams password 1234"
COMMANDS = ["list", "create", "delete", "limits"]


@pytest.fixture
def helios(settings, tmp_path) -> Helios:
    home = tmp_path / "home"
    home.mkdir()
    return Helios(settings, home)


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def logged_in(helios, live_panel, owner) -> Helios:
    token = create_token(owner, "laptop", ["admin"])
    result = helios("login", live_panel, stdin=token.secret + "\n")
    assert result.returncode == 0, result.stderr
    return helios


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=str)
def test_every_teams_command_explains_itself(helios, command):
    result = helios("teams", *command, "--help")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command}: help says too little: {summary!r}"


def test_create_list_and_delete(logged_in, owner):
    helios = logged_in
    made = helios("teams", "create", "platform", "--name", "Platform team")
    assert made.returncode == 0, made.stderr
    assert "Created the team platform (Platform team): you are its owner." in made.stdout
    team = Team.get(Team.slug == "platform")
    assert Membership.get(Membership.team == team.id).role == "owner"

    listed = helios("teams", "list")
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout and "Platform team" in listed.stdout
    as_json = json.loads(helios("teams", "list", "--json").stdout)
    assert [(t["slug"], t["role"]) for t in as_json] == [("acme", "owner"), ("platform", "owner")]

    typo = helios("teams", "delete", "platform", stdin="platfrom\n")
    assert typo.returncode == 2 and "nothing deleted" in typo.stderr
    gone = helios("teams", "delete", "platform", stdin="platform\n")
    assert gone.returncode == 0, gone.stderr
    assert "Deleted the team platform" in gone.stdout
    assert not Team.select().where(Team.slug == "platform").exists()
    subjects = [e.subject for e in Event.select().order_by(Event.id) if "team" in e.subject]
    assert subjects == ["v1.team.created", "v1.team.deleted"]


def test_refusals_and_their_exit_codes(logged_in, owner):
    helios = logged_in
    taken = helios("teams", "create", "acme")
    assert taken.returncode == 2 and "a team named 'acme' exists already" in taken.stderr
    bad = helios("teams", "create", "Not A Team")
    assert bad.returncode == 2 and "lowercase letters" in bad.stderr

    create_app(actor=None, team=Team.get(Team.slug == "acme"), slug="web", image="nginx:1.27")
    busy = helios("teams", "delete", "acme", "--yes")
    assert busy.returncode == 2 and "acme still has apps (web): delete them first" in busy.stderr
    elsewhere = helios("teams", "delete", "rival", "--yes")
    assert elsewhere.returncode == 4 and "not in a team named 'rival'" in elsewhere.stderr

    create_user("rival@example.com", PASSWORD, team_slug="rival")
    Membership.create(user=owner, team=Team.get(Team.slug == "rival"), role=Role.ADMIN.value)
    not_owner = helios("teams", "delete", "rival", "--yes")
    assert not_owner.returncode == 3 and "owner role" in not_owner.stderr
    assert Team.select().count() == 2
