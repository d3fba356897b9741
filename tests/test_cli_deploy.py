"""`helios render`, `helios plan` and `helios rollback` as real processes."""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

from panel.actions.apps import create_app, request_deploy
from panel.config import Settings
from panel.models import AppLog, Deployment, DeploymentStatus, Event, Team
from panel.reconcile.jobs import deploy_app

from conftest import REPO_ROOT, helios_command, process_env
from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

SPEC_PATH = reference_file(NOMAD_SPEC)


def run(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        helios_command(*args),
        capture_output=True,
        text=True,
        env=process_env(settings, **env),
        cwd=REPO_ROOT,
        timeout=60,
    )


@pytest.fixture
def web(db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    return create_app(actor=None, team=team, slug="web", image="registry.local/web:1")


def test_render_prints_a_spec_valid_job(settings, web):
    result = run(settings, "render", "web")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["Job"]["ID"] == "web"
    assert validate_body(body, "JobRegisterRequest", load_strict_spec(SPEC_PATH)) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("render", "nope"), 4, "no app named 'nope'"),
        (("render",), 2, "name an APP or give --file"),
        (("plan", "nope"), 4, "no app named 'nope'"),
        (("rollback", "web", "3"), 4, "web has no release 3"),
        (("rollback", "nope", "1"), 4, "no app named 'nope'"),
        (("rollback", "web", "0"), 2, "release 0 is out of range: use a whole number from 1"),
    ],
)
def test_bad_requests_exit_with_their_code_and_a_clear_message(settings, web, args, code, message):
    result = run(settings, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_shows_nomads_diff(deploy_env, settings, web, redis_conn):
    fresh = run(settings, "plan", "web", **deploy_env)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith('+ Job: "web"')
    assert "Scheduler: web: 1 place" in fresh.stdout

    requested = request_deploy(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn
    )
    deploy_app(requested.deployment.id)
    web.cpu_mhz = 500
    web.save()
    edited = run(settings, "plan", "web", **deploy_env)
    assert edited.returncode == 0, edited.stderr
    assert "~ Resources[CPU]: '250' => '500'" in edited.stdout
    assert '~ Task Group: "web"' in edited.stdout


def test_plan_without_a_cluster_says_so(settings, web):
    result = run(settings, "plan", "web")
    assert result.returncode == 5  # no cluster to reach
    assert "set NOMAD_ADDR" in result.stderr


def test_rollback_queues_a_new_deployment(deploy_env, settings, web, redis_conn):
    first = request_deploy(actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn)
    deploy_app(first.deployment.id)
    result = run(settings, "rollback", "web", "1", **deploy_env)
    assert result.returncode == 0, result.stderr
    assert "back to release 1" in result.stdout
    assert result.stderr == ""  # no log lines: the answer is all it prints
    newest = Deployment.select().order_by(Deployment.id.desc()).first()
    assert newest.id != first.deployment.id
    assert (newest.release.number, newest.release.config["rollback_of"]) == (2, 1)
    assert newest.status == DeploymentStatus.QUEUED
    # No one logged in, yet the audit log and the deployment's log say who it was.
    operator = f"operator {pwd.getpwuid(os.geteuid()).pw_name} (local shell)"
    requested = [e for e in Event.select().where(Event.subject == "v1.deployment.requested")
                 if e.data["deployment_id"] == newest.id]  # fmt: skip
    assert [e.actor for e in requested] == [operator]
    steps = AppLog.select().where(AppLog.deployment == newest.id)
    assert any(f"by {operator}" in line.text for line in steps)
    # … and so does the deployment itself, in the history tables.
    assert (newest.requested_by, newest.reason) == (operator, "rollback")


def test_render_file_prints_the_manifests_job(settings, tmp_path):
    example = REPO_ROOT / "docs" / "app.example.toml"
    result = run(settings, "render", "--file", str(example))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert validate_body(body, "JobRegisterRequest", load_strict_spec(SPEC_PATH)) == []

    broken = tmp_path / "app.toml"
    broken.write_text('slug = "Shop!"\nimage = "shop:1"\n')
    refused = run(settings, "render", "--file", str(broken))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"Error: {broken}: ")
    assert "slug" in refused.stderr
    assert "Traceback" not in refused.stderr
