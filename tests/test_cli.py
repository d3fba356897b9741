"""The operator commands of `helios`, run as real processes."""

from __future__ import annotations

import os
import pwd
import subprocess
from importlib import metadata

import pytest

from panel.db import MIGRATIONS_DIR

from conftest import REPO_ROOT, helios_command, process_env

STRONG = "Violet Anchor Drizzle 58"
COMMANDS = [
    [], ["up"], ["panel"], ["worker"], ["db"], ["db", "upgrade"], ["db", "downgrade"],
    ["db", "new"], ["db", "status"], ["admin"], ["admin", "create"], ["admin", "reset-password"],
    ["config"],
]  # fmt: skip


def run(settings, *args, stdin: str | None = None, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        helios_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        env=process_env(settings, **env),
        cwd=REPO_ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "helios")
def test_every_command_explains_itself(settings, command):
    result = run(settings, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: helios")
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command}: help says too little: {summary!r}"


def test_db_upgrade_status_downgrade(settings):
    names = [p.stem for p in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.py"))]
    assert len(names) >= 2
    assert f"applied: {', '.join(names)}" in run(settings, "db", "upgrade").stdout
    assert run(settings, "db", "status").stdout == "".join(f"[x] {n}\n" for n in names)
    assert "already up to date" in run(settings, "db", "upgrade").stdout
    assert f"rolled back: {names[-1]}\n" == run(settings, "db", "downgrade").stdout
    assert run(settings, "db", "status").stdout.endswith(f"[ ] {names[-1]}\n")
    undone = run(settings, "db", "downgrade", "--all").stdout
    assert undone == f"rolled back: {', '.join(names[-2::-1])}\n"
    assert run(settings, "db", "status").stdout == "".join(f"[ ] {n}\n" for n in names)


def test_admin_create_reads_the_password_from_stdin(settings):
    run(settings, "db", "upgrade")
    result = run(settings, "admin", "create", "ops@example.com", stdin="a long password 123\n")
    assert result.returncode == 0, result.stderr
    assert "created ops@example.com" in result.stdout
    assert "a long password" not in result.stdout + result.stderr
    again = run(settings, "admin", "create", "ops@example.com", stdin="another password 1\n")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    short = run(settings, "admin", "create", "new@example.com", stdin="short\n")
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr


def _account(settings, email: str):
    from panel.db import open_database
    from panel.models import User

    handle = open_database(settings.effective_database_url)
    with handle.connection_context():
        return User.get_or_none(User.email == email)


def test_admin_create_makes_operators_only_when_asked(settings):
    run(settings, "db", "upgrade")
    plain = run(settings, "admin", "create", "dev@example.com", stdin=STRONG + "\n")
    assert plain.returncode == 0, plain.stderr
    assert not _account(settings, "dev@example.com").is_operator
    ops = run(settings, "admin", "create", "ops@example.com", "--operator", stdin=STRONG + "\n")
    assert ops.returncode == 0, ops.stderr
    assert "operator" in ops.stdout
    assert _account(settings, "ops@example.com").is_operator
    # Each creation is in the audit log, under the OS account that ran the command.
    from panel.db import open_database
    from panel.models import Event

    handle = open_database(settings.effective_database_url)
    with handle.connection_context():
        created = Event.select().where(Event.subject == "v1.account.created").order_by(Event.id)
        found = [(e.actor, e.data["email"], e.data["operator"]) for e in created]
    who = f"operator {pwd.getpwuid(os.geteuid()).pw_name} (local shell)"
    assert found == [(who, "dev@example.com", False), (who, "ops@example.com", True)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dev@example.com", "--team", "Bad Team!"], "team 'Bad Team!' is not allowed"),
        (["dev@example.com", "--team", "a--b"], "is not allowed"),
        (["not an email"], "is not an email address"),
    ],
)
def test_admin_create_refuses_bad_input_with_exit_2(settings, args, message):
    run(settings, "db", "upgrade")
    result = run(settings, "admin", "create", *args, stdin=STRONG + "\n")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert _account(settings, "dev@example.com") is None


def test_admin_create_refuses_weak_passwords_with_zxcvbn_advice(settings):
    run(settings, "db", "upgrade")
    weak = run(settings, "admin", "create", "dev@example.com", stdin="password123456\n")
    assert weak.returncode == 2
    assert "too easy to guess" in weak.stderr
    assert "similar to a commonly used password" in weak.stderr
    own = run(settings, "admin", "create", "walter@example.com", stdin="Walter Quartz Lamp 9\n")
    assert own.returncode == 2
    assert "contains the email address" in own.stderr


def test_admin_reset_password(settings):
    from panel.actions.accounts import authenticate
    from panel.actions.sessions import create_session
    from panel.db import open_database
    from panel.models import Event, UserSession

    run(settings, "db", "upgrade")
    assert run(settings, "admin", "create", "dev@example.com", stdin=STRONG + "\n").returncode == 0
    handle = open_database(settings.effective_database_url)
    with handle.connection_context():
        create_session(_account(settings, "dev@example.com"), address="192.0.2.1")

    fresh = "Quartz Lantern Meadow 47"
    result = run(settings, "admin", "reset-password", "DEV@example.com", stdin=fresh + "\n")
    assert result.returncode == 0, result.stderr
    assert "1 session(s) signed out" in result.stdout
    assert fresh not in result.stdout + result.stderr
    with handle.connection_context():
        assert authenticate("dev@example.com", fresh) is not None
        assert authenticate("dev@example.com", STRONG) is None
        assert UserSession.select().where(UserSession.revoked_at.is_null()).count() == 0
        subjects = [e.subject for e in Event.select().where(Event.user.is_null(False))]
        assert "v1.password.changed" in subjects and "v1.session.revoked" in subjects
        operator = f"operator {pwd.getpwuid(os.geteuid()).pw_name} (local shell)"
        changed = Event.get(Event.subject == "v1.password.changed")
        assert changed.actor == operator  # the OS account that ran the command
    assert result.stderr == ""  # a one-shot command prints its answer, no log lines

    weak = run(settings, "admin", "reset-password", "dev@example.com", stdin="aaaaaaaaaaaaaa\n")
    assert weak.returncode == 2 and "too easy to guess" in weak.stderr
    nobody = run(settings, "admin", "reset-password", "nobody@example.com", stdin=fresh + "\n")
    assert nobody.returncode == 4 and "no account uses" in nobody.stderr


def test_version_is_the_installed_packages(settings):
    result = run(settings, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"helios {metadata.version('helios')}\n"
    assert "--version" in run(settings, "--help").stdout


def test_config_masks_secrets_and_reports_bad_values(settings):
    result = run(
        settings, "config", HELIOS_SECRET_KEY="very-secret-session-key", NOMAD_TOKEN="tok-123"
    )
    assert result.returncode == 0
    assert "HELIOS_SECRET_KEY=********" in result.stdout
    assert "very-secret-session-key" not in result.stdout
    assert "tok-123" not in result.stdout
    bad = run(settings, "config", HELIOS_WEB_WORKERS="lots")
    assert bad.returncode == 1
    assert "HELIOS_WEB_WORKERS='lots' is not a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_unsupported_database_url_is_a_clear_error(settings):
    result = run(settings, "db", "status", HELIOS_DATABASE_URL="mysql://x@y/z")
    assert result.returncode == 1
    assert "use sqlite:/// or postgresql://" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["render", "Bad App!"], "app 'Bad App!' is not allowed"),
        (["rollback", "web", "99999999999999999999"], "is out of range"),
        (["plan", "web\r\nX"], "is not allowed"),
        (["db", "new", "a" * 300], "use 1-60 letters, digits and '_'"),
        (["db", "downgrade", "--steps", "99999999999999999999"], "is not in the range"),
    ],
    ids=lambda value: " ".join(value)[:30] if isinstance(value, list) else None,
)
def test_operator_arguments_are_validated_before_anything_runs(settings, args, says):
    result = run(settings, *args)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
