"""The operator commands of `helios`, run as real processes."""

from __future__ import annotations

import subprocess

import pytest

from panel.db import MIGRATIONS_DIR

from conftest import REPO_ROOT, helios_command, process_env

COMMANDS = [
    [], ["up"], ["panel"], ["worker"], ["db"], ["db", "upgrade"], ["db", "downgrade"],
    ["db", "new"], ["db", "status"], ["admin"], ["admin", "create"], ["config"],
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
    assert short.returncode == 1
    assert "at least 12 characters" in short.stderr


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
