"""The `helios` client commands against a real panel (gunicorn) and worker, Nomad faked."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.tokens import create_token, revoke_token
from panel.models import ApiToken, Deployment

from conftest import REPO_ROOT, free_port, helios_command, process_env

SECRET_VALUE = "s3cret-do-not-print"
CLIENT_COMMANDS = [
    ["login"], ["logout"], ["apps"], ["apps", "create"], ["apps", "set"], ["env"], ["env", "set"],
    ["env", "list"], ["env", "unset"], ["deploy"], ["status"], ["rollback"],
]  # fmt: skip


class Helios:
    """Runs `helios` as a real process with its own HOME and config dir."""

    def __init__(self, settings, home) -> None:
        self.settings = settings
        self.home = home
        self.outputs: list[str] = []

    @property
    def credentials(self):
        return self.home / ".config" / "helios" / "credentials.json"

    def __call__(self, *args: str, stdin: str | None = None, umask: int = -1, **extra: str):
        env = process_env(
            self.settings, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), **extra
        )
        for name in ("HELIOS_URL", "HELIOS_TOKEN"):
            if name not in extra:
                env.pop(name, None)
        result = subprocess.run(
            helios_command(*args), input=stdin, capture_output=True, text=True, env=env,
            cwd=REPO_ROOT, timeout=120, umask=umask,
        )  # fmt: skip
        self.outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def helios(settings, tmp_path) -> Helios:
    home = tmp_path / "home"
    home.mkdir()
    return Helios(settings, home)


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", "correct horse battery", team_slug="acme")


@pytest.fixture
def token(owner):
    return create_token(owner, "laptop", ["admin"])


@pytest.fixture
def logged_in(helios, live_panel, token) -> Helios:
    result = helios("login", live_panel, stdin=token.secret + "\n")
    assert result.returncode == 0, result.stderr
    return helios


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=" ".join)
def test_every_client_command_explains_itself(helios, command):
    result = helios(*command, "--help")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command}: help says too little: {summary!r}"


@pytest.mark.slow
def test_login_deploy_rollback_logout(
    helios, live_panel, start_worker, start_follower, deploy_env, nomad_double, nomad_clock, token
):
    start_worker(**deploy_env)
    start_follower(**deploy_env)
    login = helios("login", live_panel, stdin=token.secret + "\n")
    assert login.returncode == 0, login.stderr
    assert f"Logged in to {live_panel} as owner@example.com" in login.stdout
    assert token.secret not in login.stdout + login.stderr
    assert stat.S_IMODE(helios.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(helios.credentials.parent.stat().st_mode) == 0o700
    assert json.loads(helios.credentials.read_text()) == {"url": live_panel, "token": token.secret}

    created = helios("apps", "create", "web", "--image", "registry.local/web:1", "--count", "2")
    assert created.returncode == 0, created.stderr
    assert "Created app web in team acme" in created.stdout
    assert helios("env", "set", "web", "PLAIN=hello").returncode == 0
    secret = helios("env", "set", "web", "DB_PASSWORD=-", "--secret", stdin=SECRET_VALUE + "\n")
    assert secret.returncode == 0, secret.stderr
    assert "Set DB_PASSWORD (secret) on web." in secret.stdout

    listed = helios("env", "list", "web")
    assert "hello" in listed.stdout and "(secret)" in listed.stdout
    as_json = json.loads(helios("env", "list", "web", "--json").stdout)
    assert {v["key"]: (v["value"], v["secret"]) for v in as_json} == {
        "DB_PASSWORD": (None, True),
        "PLAIN": ("hello", False),
    }

    deployed = helios("deploy", "web", "--wait", "--interval", "0.2", "--timeout", "60")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "Deployment #1 succeeded: web release 1" in deployed.stdout
    assert "queued" in deployed.stderr and "succeeded" in deployed.stderr
    again = helios("deploy", "web", "--image", "registry.local/web:2", "--wait", "--interval",
                   "0.2", "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["image"] == "registry.local/web:2"

    rolled = helios("rollback", "web", "1", "--wait", "--interval", "0.2")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "succeeded: web release 3 (registry.local/web:1), rollback to release 1" in rolled.stdout
    status = helios("status", "web")
    assert status.returncode == 0
    assert "web (team acme)" in status.stdout and "succeeded" in status.stdout
    state = json.loads(helios("status", "web", "--json").stdout)
    assert [d["release"] for d in state["deployments"]] == [3, 2, 1]
    assert state["app"]["last_deployment"]["status"] == "succeeded"
    job = nomad_double.cluster.current("default", "web")
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "registry.local/web:1"

    table = helios("apps")
    assert "web" in table.stdout and "registry.local/web:1" in table.stdout
    assert [a["slug"] for a in json.loads(helios("apps", "--json").stdout)] == ["web"]

    logout = helios("logout")
    assert logout.returncode == 0, logout.stderr
    assert "token revoked" in logout.stdout
    assert not helios.credentials.exists()
    assert ApiToken.get_by_id(token.row.id).revoked_at is not None
    after = helios("apps")
    assert after.returncode == 3
    assert "not logged in" in after.stderr
    assert not any(SECRET_VALUE in text for text in helios.outputs)


def test_error_exit_codes(logged_in, live_panel, owner, token):
    helios = logged_in
    unknown = helios("status", "nope")
    assert unknown.returncode == 4
    assert "no app named 'nope'" in unknown.stderr
    invalid = helios("apps", "create", "web", "--image", "Not An Image")
    assert invalid.returncode == 2
    assert "is not a valid image reference" in invalid.stderr
    assert helios("apps", "create", "web").returncode == 2  # neither --image nor --repo
    assert helios("env", "set", "web", "NOEQUALS").returncode == 2
    assert helios("apps", "create", "web", "--image", "nginx:1.27").returncode == 0
    assert helios("apps", "create", "web", "--image", "nginx:1.27").returncode == 2  # exists
    changed = helios("apps", "set", "web", "--count", "3", "--memory-mb", "512")
    assert changed.returncode == 0, changed.stderr
    assert "Changed web: count=3, memory_mb=512." in changed.stdout
    assert helios("apps", "set", "web").returncode == 2  # nothing to change
    too_many = helios("apps", "set", "web", "--count", "99")
    assert too_many.returncode == 2
    assert "count 99 is out of range" in too_many.stderr
    bad_key = helios("env", "set", "web", "lower=1")
    assert bad_key.returncode == 2
    assert "uppercase letters" in bad_key.stderr
    assert helios("deploy", "web", "--image", "UPPER CASE").returncode == 2
    assert helios("env", "set", "web", "ODD=[/bold] [red]x").returncode == 0
    odd = helios("env", "list", "web")  # rich markup in a value prints as it is
    assert odd.returncode == 0, odd.stderr
    assert "[/bold] [red]x" in odd.stdout
    assert helios("rollback", "web", "7").returncode == 4

    revoke_token(owner, token.row.id)
    revoked = helios("apps")
    assert revoked.returncode == 3
    assert "unknown, expired or revoked" in revoked.stderr


def test_login_checks_the_token_and_keeps_it_private(helios, live_panel, owner, token):
    ci = create_token(owner, "ci", ["read"]).secret  # CI needs no login: the environment will do
    from_env = helios("apps", "--json", HELIOS_URL=live_panel + "/", HELIOS_TOKEN=ci)
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout) == []
    assert helios("apps", HELIOS_URL=live_panel).returncode == 2  # the token is missing

    refused = helios("login", live_panel, stdin="hel_not-a-real-token\n")
    assert refused.returncode == 3
    assert "unknown, expired or revoked" in refused.stderr
    assert not helios.credentials.exists()
    assert helios("login", "ftp://example.com", stdin="x\n").returncode == 2
    assert helios("login", live_panel, stdin="\n").returncode == 2

    helios.credentials.parent.mkdir(parents=True, mode=0o755)
    accepted = helios("login", live_panel, stdin=token.secret + "\n", umask=0)
    assert accepted.returncode == 0, accepted.stderr
    assert stat.S_IMODE(helios.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(helios.credentials.parent.stat().st_mode) == 0o700


def test_unreachable_panel_is_exit_5(helios, owner):
    down = f"http://127.0.0.1:{free_port()}"
    result = helios("apps", HELIOS_URL=down, HELIOS_TOKEN="hel_x")
    assert result.returncode == 5
    assert f"cannot reach the panel at {down}" in result.stderr
    assert helios("login", down, stdin="hel_x\n").returncode == 5


def test_rollback_without_credentials_uses_the_database(helios, settings, owner, redis_conn):
    web = create_app(actor=None, team=owner.memberships[0].team, slug="web", image="web:1")
    request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    result = helios("rollback", "web", "1")
    assert result.returncode == 0, result.stderr
    assert "back to release 1" in result.stdout
    assert Deployment.select().count() == 2
    assert helios("rollback", "web", "1", "--wait").returncode == 2
