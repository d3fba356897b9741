"""`helios run APP -- CMD` as a real process against a real panel (gunicorn), a real worker and
a real follower, the command's job run by the Nomad double."""

from __future__ import annotations

import subprocess

import pytest
import redis

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.models import Deployment, DeploymentStatus, OneOffRun

from conftest import REPO_ROOT, helios_command, process_env
from nomad_double import TaskScript

PASSWORD = "correct horse battery"


def script(job: dict) -> dict:
    """The run task stands for its command: `echo ARGS` prints them, `sh -c 'exit N'` exits N."""
    config = job["TaskGroups"][0]["Tasks"][0]["Config"]
    argv = [config["command"], *config.get("args", [])]
    if argv[0] == "echo":
        return {"run": TaskScript(stdout=[" ".join(argv[1:])])}
    if argv[:2] == ["sh", "-c"] and argv[2].startswith("exit "):
        return {"run": TaskScript(stderr=["bye"], exit_code=int(argv[2].split()[1]))}
    return {"run": TaskScript(stderr=[f"{argv[0]}: not found"], exit_code=127)}


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def web(owner, deploy_env):
    """An app whose release 1 is live (its deployment recorded as succeeded, nothing queued)."""
    team = owner.memberships[0].team
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1")
    create_app(actor=None, team=team, slug="fresh", image="registry.local/fresh:1")
    nowhere = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing is queued
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=nowhere
    )
    Deployment.update(status=DeploymentStatus.SUCCEEDED.value).where(
        Deployment.id == requested.deployment.id
    ).execute()
    return app


@pytest.fixture
def helios(settings, tmp_path, live_panel, owner, web, nomad_double, nomad_clock, deploy_env,
           start_worker, start_follower):  # fmt: skip
    nomad_double.set_batch_script(script, kind="run")
    start_worker(**deploy_env)
    start_follower(**deploy_env)
    env = process_env(
        settings, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"),
        HELIOS_URL=live_panel, HELIOS_TOKEN=create_token(owner, "cli", ["deploy"]).secret,
    )  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(helios_command(*args), capture_output=True, text=True, env=env,
                                cwd=REPO_ROOT, timeout=120)  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run


@pytest.mark.slow
def test_run_streams_the_output_and_exits_with_the_commands_code(helios):
    hi = helios("run", "web", "--", "echo", "hi")
    assert (hi.returncode, hi.stdout) == (0, "hi\n"), hi.stderr
    assert "run #1 of web (release 1) queued" in hi.stderr
    assert "the command exited with code 0" in hi.stderr
    assert OneOffRun.get_by_id(1).exit_code == 0

    three = helios("run", "web", "--timeout", "60", "--", "sh", "-c", "exit 3")
    assert three.returncode == 3, three.stderr
    assert three.stdout == ""
    assert "bye\n" in three.stderr and "exited with code 3 (failed)" in three.stderr

    detached = helios("run", "web", "--detach", "--", "echo", "later")
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout == "3\n"
    assert OneOffRun.get_by_id(3).command == ["echo", "later"]


@pytest.mark.slow
def test_helios_refusals_keep_their_exit_codes(helios):
    fresh = helios("run", "fresh", "--", "ls")
    assert fresh.returncode == 2
    assert "fresh has no live release" in fresh.stderr and "deploy it first" in fresh.stderr
    missing = helios("run", "nope", "--", "ls")
    assert missing.returncode == 4
    nothing = helios("run", "web")
    assert nothing.returncode == 2 and "COMMAND" in nothing.stderr
    empty = helios("run", "web", "--", "")
    assert empty.returncode == 2 and "names no program" in empty.stderr
    assert OneOffRun.select().count() == 0
