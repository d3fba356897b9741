"""`helios plan` against the Nomad double: exit codes, and a diff that compares like with like."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess

import pytest

from panel.actions.apps import create_app, preview_spec
from panel.config import Settings
from panel.drivers.nomad import NomadConnection, NomadDriver
from panel.models import Team
from panel.render.nomad import render_job

from conftest import REPO_ROOT, helios_command, process_env
from nomad_double import NomadDouble

PLAN = r"/v1/job/[^/]+/plan"


def plan(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `helios plan web …` as a real process."""
    return subprocess.run(
        helios_command("plan", "web", *args),
        capture_output=True,
        text=True,
        env=process_env(settings, **env),
        cwd=REPO_ROOT,
        timeout=60,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The last line of stderr: the error (log lines come before it)."""
    return result.stderr.splitlines()[-1]


@pytest.fixture
def web(db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    return create_app(actor=None, team=team, slug="web", image="registry.local/web:1")


def register_as_deployment(settings: Settings, web, double: NomadDouble, deployment: int) -> None:
    """Put the app's job into Nomad as deployment #deployment would have registered it."""
    spec = dataclasses.replace(preview_spec(web, settings), deployment=deployment)
    driver = NomadDriver(NomadConnection(address=double.url))
    driver.register_job("web", render_job(spec), modify_index=0)


def test_the_plan_does_not_show_bookkeeping_meta_as_removed(settings, web, nomad_double):
    register_as_deployment(settings, web, nomad_double, deployment=7)
    same = plan(settings, NOMAD_ADDR=nomad_double.url)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("No changes: the job in Nomad already matches.\n")
    assert "helios.deployment" not in same.stdout

    web.cpu_mhz = 500
    web.save()
    edited = plan(settings, NOMAD_ADDR=nomad_double.url)
    assert edited.returncode == 0, edited.stderr
    assert "~ Resources[CPU]: '250' => '500'" in edited.stdout
    assert "helios.deployment" not in edited.stdout
    planned = nomad_double.requests_to("POST", PLAN)[-1]
    assert planned.body["Job"]["Meta"]["helios.deployment"] == "7"


def test_the_json_plan_compares_like_with_like_too(settings, web, nomad_double):
    register_as_deployment(settings, web, nomad_double, deployment=7)
    result = plan(settings, "--json", NOMAD_ADDR=nomad_double.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Diff"]["Type"] == "None"


def test_a_first_plan_adds_the_job_without_deployment_meta(settings, web, nomad_double):
    result = plan(settings, NOMAD_ADDR=nomad_double.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('+ Job: "web"')
    assert "helios.deployment" not in result.stdout


def test_a_denied_plan_exits_3(settings, web, nomad_double):
    token = nomad_double.add_token(name="helios", deny=[("POST", PLAN)])["SecretID"]
    result = plan(settings, NOMAD_ADDR=nomad_double.url, NOMAD_TOKEN=token)
    assert result.returncode == 3, result.stderr
    assert error_line(result) == (
        f"Error: Nomad at {nomad_double.url} denied a plan for job 'web' (Permission denied): "
        "set NOMAD_TOKEN to a token whose policy allows it in namespace 'default'"
    )


def test_a_wrong_token_exits_3(settings, web, nomad_double):
    nomad_double.add_token(name="helios")
    result = plan(settings, NOMAD_ADDR=nomad_double.url, NOMAD_TOKEN="not-a-token")
    assert result.returncode == 3, result.stderr
    assert "(ACL token not found): set NOMAD_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_cluster_exits_5(settings, web):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        result = plan(settings, NOMAD_ADDR=address)
    assert result.returncode == 5, result.stderr
    assert error_line(result).startswith("Error: Nomad ")
    assert address in error_line(result)
    assert error_line(result).endswith("start the cluster or point NOMAD_ADDR at a server")


def test_no_cluster_configured_exits_5(settings, web):
    result = plan(settings)
    assert result.returncode == 5, result.stderr
    assert "set NOMAD_ADDR" in result.stderr
