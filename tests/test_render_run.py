"""The one-off run's job (pure): valid for Nomad, the release's image and env, the command as an
argument list, secrets only through the run's own variable, and the command's checks."""

from __future__ import annotations

import json

import pytest
from gotemplate import render_template

from panel.render.run import (
    render_run_job,
    render_run_variables,
    run_job_id,
    run_variable_path,
    validate_run_command,
    validate_run_timeout,
)
from panel.spec import AppSpec
from panel.validation import ValidationError

from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

SPEC = load_strict_spec(reference_file(NOMAD_SPEC))


def app_spec(**fields) -> AppSpec:
    values = {
        "slug": "web", "team": "acme", "image": "registry.local/web:7", "release": 7,
        "base_domain": "apps.example.com", "git_sha": "a" * 40,
        "env": (("MODE", "plain"),), "secret_keys": ("DATABASE_URL",), "memory_max_mb": 512,
    }  # fmt: skip
    return AppSpec(**{**values, **fields})


def test_the_job_is_a_valid_one_shot_batch_job_of_the_release():
    command = ["sh", "-c", "echo ${HOME} && rm -rf /tmp/x; `id`"]
    body = render_run_job(app_spec(), run_id=12, command=command, requested_by="dev@example.com")
    assert validate_body(body, "JobRegisterRequest", SPEC) == []
    job = body["Job"]
    assert (job["ID"], job["Type"]) == ("web-run-12", "batch")
    assert job["Meta"] == {
        "helios.app": "web", "helios.team": "acme", "helios.release": "7",
        "helios.git_sha": "a" * 40, "helios.kind": "run", "helios.run": "12",
        "helios.requested_by": "dev@example.com",
    }  # fmt: skip
    group = job["TaskGroups"][0]
    assert group["RestartPolicy"] == {"Attempts": 0, "Mode": "fail"}
    assert group["ReschedulePolicy"] == {"Attempts": 0, "Unlimited": False}
    task = group["Tasks"][0]
    # The argument list as given, each argument one whole JSON value: no shell line is made.
    assert task["Config"] == {"image": "registry.local/web:7", "command": "sh", "args": command[1:]}
    assert task["Env"] == {
        "HELIOS_APP": "web", "HELIOS_RELEASE": "7", "HELIOS_RUN": "12", "MODE": "plain",
    }  # fmt: skip
    assert task["Resources"] == {"CPU": 250, "MemoryMB": 256, "MemoryMaxMB": 512}


def test_secrets_come_from_the_runs_own_variable_never_the_job():
    spec = app_spec()
    body = render_run_job(spec, run_id=3, command=["env"], requested_by="operator")
    items = render_run_variables(spec, {"DATABASE_URL": "postgres://secret"})
    assert items == {"r7.DATABASE_URL": "postgres://secret"}
    assert "postgres://secret" not in json.dumps(body)
    template = body["Job"]["TaskGroups"][0]["Tasks"][0]["Templates"][0]
    path = run_variable_path(run_job_id("web", 3))
    assert path == "nomad/jobs/web-run-3"
    assert render_template(template["EmbeddedTmpl"], {path: items}) == (
        'DATABASE_URL="postgres://secret"\n'
    )
    # Another release's items in the variable are not rendered.
    assert render_template(template["EmbeddedTmpl"], {path: {"r6.DATABASE_URL": "old"}}) == ""
    plain = render_run_job(app_spec(secret_keys=()), run_id=3, command=["env"], requested_by="x")
    assert "Templates" not in plain["Job"]["TaskGroups"][0]["Tasks"][0]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([], "names no program"),
        ([""], "names no program"),
        ("ls -la", "is a list of strings"),
        (b"ls", "is a list of strings"),
        (["ls", None], "is a list of strings"),
        (["ls", "a\x00"], "contains NUL"),
        (["ls", "\udc80"], "not valid Unicode"),
        (["ls"] * 65, "at most 64"),
        (["ls", "é" * 2048], "within 4096 bytes"),
    ],
)
def test_a_bad_command_is_refused_with_how_to_fix_it(value, says):
    with pytest.raises(ValidationError) as refused:
        validate_run_command(value)
    assert refused.value.field == "command"
    assert says in refused.value.message


def test_commands_and_timeouts_within_the_bounds_pass():
    assert validate_run_command(["ls"] * 64) == ("ls",) * 64
    assert validate_run_command(["x" * 4096]) == ("x" * 4096,)
    assert validate_run_timeout(None) == 1800
    assert validate_run_timeout(86_400) == 86_400
    for bad in (0, 86_401, True, "60", 1.5):
        with pytest.raises(ValidationError, match="whole number of seconds"):
            validate_run_timeout(bad)
