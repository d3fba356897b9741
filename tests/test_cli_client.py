"""The `helios` client commands against a real panel (gunicorn) and worker, Nomad faked."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import stat
import struct
import subprocess
import termios

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.tokens import create_token, revoke_token
from panel.cli.client import ACTION_EXIT, STATUS_EXIT
from panel.models import ApiToken, Deployment
from panel.web.access import ACTION_STATUS

from conftest import REPO_ROOT, free_port, helios_command, process_env

SECRET_VALUE = "s3cret-do-not-print"
LONG_IMAGE = "registry.example.com/platform-team/" + "a-very-long-image-name-" * 4 + "x:1.2.3"
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
LOG_LINE_RE = re.compile(r"\b(DEBUG|INFO|WARNING)\s+panel\.")  # the text log format's level
CLIENT_COMMANDS = [
    ["login"], ["logout"], ["apps"], ["apps", "create"], ["apps", "set"], ["env"], ["env", "set"],
    ["env", "list"], ["env", "unset"], ["deploy"], ["cancel"], ["status"], ["rollback"],
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

    def env(self, **extra: str) -> dict[str, str]:
        env = process_env(
            self.settings, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), **extra
        )
        for name in ("HELIOS_URL", "HELIOS_TOKEN"):
            if name not in extra:
                env.pop(name, None)
        return env

    def __call__(self, *args: str, stdin: str | None = None, umask: int = -1, **extra: str):
        result = subprocess.run(
            helios_command(*args), input=stdin, capture_output=True, text=True,
            env=self.env(**extra), cwd=REPO_ROOT, timeout=120, umask=umask,
        )  # fmt: skip
        self.outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        # Client commands print their answer and errors, never log lines (HELIOS_LOG_LEVEL=info).
        assert not LOG_LINE_RE.search(result.stderr), result.stderr
        return result

    def on_terminal(self, *args: str, columns: int) -> tuple[int, str]:
        """Run with standard output on a pseudo-terminal ``columns`` wide; the exit code and
        what it showed, colours removed."""
        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = self.env(COLUMNS=str(columns), TERM="xterm-256color")
        proc = subprocess.Popen(
            helios_command(*args), stdin=subprocess.DEVNULL, stdout=child,
            stderr=subprocess.DEVNULL, env=env, cwd=REPO_ROOT,
        )  # fmt: skip
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        os.close(main)
        code = proc.wait(timeout=60)
        return code, ANSI_RE.sub("", shown.decode()).replace("\r\n", "\n")


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
    job = nomad_double.cluster.current("acme", "web")  # the team's own namespace
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "registry.local/web:1"

    table = helios("apps")
    # Piped: one line per app; `deploy --image` made web:2 the app's image, a rollback does not.
    assert "\nweb\tacme\tregistry.local/web:2\tsucceeded\t3\t" in table.stdout
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


def test_a_local_refusal_exits_as_the_same_refusal_through_the_api():
    """The database path maps an action's refusal to the exit code its HTTP status gives."""
    assert set(ACTION_EXIT) == set(ACTION_STATUS)
    for code, status in ACTION_STATUS.items():
        assert ACTION_EXIT[code] == STATUS_EXIT.get(status, 1), code


def test_rollback_errors_exit_alike_locally_and_through_the_api(
    helios, live_panel, owner, token, redis_conn
):
    web = create_app(actor=None, team=owner.memberships[0].team, slug="web", image="web:1")
    cases = {
        ("nope", "1"): 4,  # no such app
        ("web", "7"): 4,  # no such release
        ("web", "0"): 2,  # not a release number
        ("Not An App", "1"): 2,  # not an app name
    }
    api = {"HELIOS_URL": live_panel, "HELIOS_TOKEN": token.secret}
    for args, code in cases.items():
        local, remote = helios("rollback", *args), helios("rollback", *args, **api)
        assert (local.returncode, remote.returncode) == (code, code), local.stderr + remote.stderr
    assert Deployment.select().count() == 0
    request_deploy(actor=None, app=web, settings=helios.settings, redis_conn=redis_conn)
    # The same request passes both ways; through the API a weaker token or no panel refuses.
    assert helios("rollback", "web", "1").returncode == 0
    assert helios("rollback", "web", "1", **api).returncode == 0
    reader = create_token(owner, "reader", ["read"]).secret
    denied = helios("rollback", "web", "1", HELIOS_URL=live_panel, HELIOS_TOKEN=reader)
    assert denied.returncode == 3, denied.stderr
    down = helios("rollback", "web", "1", HELIOS_URL=f"http://127.0.0.1:{free_port()}",
                  HELIOS_TOKEN=token.secret)  # fmt: skip
    assert down.returncode == 5, down.stderr


def test_tables_fit_the_terminal_and_never_wrap_when_piped(logged_in, owner):
    helios = logged_in
    team = owner.memberships[0].team
    create_app(actor=None, team=team, slug="web", image=LONG_IMAGE)
    create_app(actor=None, team=team, slug="api", image="nginx:1.27")

    piped = helios("apps", COLUMNS="40")
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0] == "name\tteam\tsource\tstatus\trelease\tdeployed"
    assert lines[1:] == [
        "api\tacme\tnginx:1.27\tnever deployed\t-\t-",
        f"web\tacme\t{LONG_IMAGE}\tnever deployed\t-\t-",
    ]
    assert "\x1b" not in piped.stdout  # no colours in a pipe

    code, wide = helios.on_terminal("apps", columns=200)
    assert code == 0, wide
    [row] = [line for line in wide.splitlines() if line.startswith("web")]
    assert LONG_IMAGE in row and "never deployed" in row  # one line: the terminal is wide
    assert "\t" not in wide
    code, narrow = helios.on_terminal("apps", columns=60)
    assert code == 0, narrow
    assert LONG_IMAGE not in narrow and LONG_IMAGE[:12] in narrow  # folded to fit 60 columns
    assert all(len(line) <= 60 for line in narrow.splitlines()), narrow
    assert narrow.count("never") == 2 and narrow.count("deployed") >= 3

    assert helios("env", "set", "web", "GREETING=hello\tworld").returncode == 0
    listed = helios("env", "list", "web").stdout.splitlines()
    assert listed[0] == "key\tvalue\tupdated"
    assert listed[1].startswith("GREETING\thello\\tworld\t")  # a tab in a value is escaped
