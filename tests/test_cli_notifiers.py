"""`helios notifiers` as a real process against a real panel (gunicorn), through its API."""

from __future__ import annotations

import json
import re

import pytest
from test_cli_client import Helios

from panel.actions.accounts import create_user
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Event, Membership, Notifier, NotifierDelivery, Role, Team

PASSWORD = "notifier password 123"
URL = "https://1.1.1.1/T0/s3cr3t-path"  # a public address as such: no DNS lookup
COMMANDS = ["list", "add", "remove", "enable", "disable", "test", "rotate-secret"]
SECRET_RE = re.compile(r"^[0-9a-f]{64}$", re.MULTILINE)


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


def _secret(settings: Settings) -> str:
    return SecretCipher.from_settings(settings).decrypt(Notifier.get().secret)


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=str)
def test_every_notifiers_command_explains_itself(helios, command):
    result = helios("notifiers", *command, "--help")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command}: help says too little: {summary!r}"


def test_add_list_test_disable_rotate_and_remove(logged_in, settings):
    helios = logged_in
    assert "acme has no notifiers" in helios("notifiers", "list").stdout

    added = helios("notifiers", "add", "chat", URL, "--event", "v1.build.failed",
                   "--event", "v1.app.down", "--format", "slack")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Created notifier chat" in added.stdout and "https://1.1.1.1/…" in added.stdout
    [secret] = SECRET_RE.findall(added.stdout)
    assert _secret(settings) == secret
    row = Notifier.get()
    assert (row.format, row.subjects, row.url) == ("slack", ["v1.build.failed", "v1.app.down"],
                                                   URL)  # fmt: skip

    table = helios("notifiers", "list")
    assert table.returncode == 0, table.stderr
    assert "chat" in table.stdout and "slack" in table.stdout
    assert "v1.build.failed" in table.stdout and "v1.app.down" in table.stdout
    assert "none yet" in table.stdout
    assert secret not in table.stdout and "s3cr3t-path" not in table.stdout

    tested = helios("notifiers", "test", "chat")
    assert tested.returncode == 0, tested.stderr
    delivery = NotifierDelivery.get()
    assert f"Test delivery #{delivery.id} to chat queued" in tested.stdout
    assert delivery.subject == "v1.notifier.tested"
    assert "pending" in helios("notifiers", "list").stdout

    off = helios("notifiers", "disable", "chat")
    assert off.returncode == 0 and "is off" in off.stdout
    assert not Notifier.get().enabled
    on = helios("notifiers", "enable", str(row.id))  # by id as well
    assert on.returncode == 0 and "is on" in on.stdout
    assert Notifier.get().enabled

    rotated = helios("notifiers", "rotate-secret", "chat")
    assert rotated.returncode == 0, rotated.stderr
    [new] = SECRET_RE.findall(rotated.stdout)
    assert new != secret and _secret(settings) == new
    as_json = json.loads(helios("notifiers", "rotate-secret", "chat", "--json").stdout)
    assert as_json["secret"] == _secret(settings) and as_json["notifier"]["name"] == "chat"

    listed = json.loads(helios("notifiers", "list", "--json").stdout)
    assert [(n["name"], n["enabled"]) for n in listed] == [("chat", True)]
    assert as_json["secret"] not in json.dumps(listed)

    removed = helios("notifiers", "remove", "chat")
    assert removed.returncode == 0 and "Removed notifier chat from acme." in removed.stdout
    assert Notifier.select().count() == 0
    subjects = [e.subject for e in Event.select().order_by(Event.id) if "notifier" in e.subject]
    assert subjects == [
        "v1.notifier.created", "v1.notifier.tested", "v1.notifier.changed",
        "v1.notifier.changed", "v1.notifier.secret_rotated", "v1.notifier.secret_rotated",
        "v1.notifier.deleted",
    ]  # fmt: skip


def test_errors_and_their_exit_codes(logged_in, owner):
    helios = logged_in
    missing = helios("notifiers", "remove", "nope")
    assert missing.returncode == 4 and "acme has no notifier named 'nope'" in missing.stderr
    refused = helios("notifiers", "add", "chat", "https://10.0.0.8/x", "--event",
                     "v1.build.failed")  # fmt: skip
    assert refused.returncode == 2 and "10.0.0.8 is private" in refused.stderr
    assert helios("notifiers", "add", "chat", URL).returncode == 2  # no --event
    bad_event = helios("notifiers", "add", "chat", URL, "--event", "v1.nope")
    assert bad_event.returncode == 2 and "tick at least one of the events" in bad_event.stderr
    assert helios("notifiers", "list", "--team", "Not A Team").returncode == 2
    elsewhere = helios("notifiers", "list", "--team", "rival")
    assert elsewhere.returncode == 4 and "not in a team named 'rival'" in elsewhere.stderr

    # A second team where the caller is an admin: --team is then needed.
    create_user("rival@example.com", PASSWORD, team_slug="rival")
    Membership.create(user=owner, team=Team.get(Team.slug == "rival"), role=Role.ADMIN.value)
    which = helios("notifiers", "list")
    assert which.returncode == 2 and "name the team with --team TEAM" in which.stderr
    assert helios("notifiers", "list", "--team", "rival").returncode == 0

    # A deployer of a team is not allowed (exit 3), whatever its token's scope.
    Membership.update(role=Role.DEPLOYER.value).where(Membership.user == owner.id).execute()
    denied = helios("notifiers", "list", "--team", "acme")
    assert denied.returncode == 3 and "admin role" in denied.stderr
    assert Notifier.select().count() == 0
