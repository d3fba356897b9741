"""The strict Nomad job validator against HashiCorp's spec and real job documents."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.reference import example_names
from nomad_double.schema import (
    NEWER_FIELDS,
    JobSpecError,
    check_body,
    drop_nulls,
    load_strict_spec,
    validate_body,
)

SPEC_PATH = reference_file(NOMAD_SPEC)

# Which schema each reference example is (reference/README.md).
EXAMPLE_SCHEMAS = {
    "cmd-testdata-example-short.json": "JobRegisterRequest",
    # Nomad rejects this one semantically (ID contains a space, no Datacenters), but it is
    # schema-valid: the strict validator checks shape and types, not Nomad's Job.Validate.
    "cmd-testdata-example-short-bad.json": "JobRegisterRequest",
    "docs-json-jobs-example-job.json": "JobRegisterRequest",
    "docs-json-jobs-update-block.json": "UpdateStrategy",
    "docs-jobs-create-job-payload.json": "JobRegisterRequest",
    "docs-jobs-parse-job-response.json": "Job",
    "docs-jobs-read-job-response.json": "Job",
    "python-nomad-example-batch-parameterized.json": "JobRegisterRequest",
    "traefik-nomad-provider-fixture-job1.json": "Job",
    "traefik-nomad-provider-fixture-job5.json": "Job",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The strict spec."""
    return load_strict_spec(SPEC_PATH)


def example_text(name: str) -> str:
    """The text of one pinned example of nomad-examples/."""
    return reference_file(f"nomad-examples/{name}").read_text()


def load_example(name: str) -> Any:
    """Load an example (null-free), unwrapping the update block."""
    data = drop_nulls(json.loads(example_text(name)))
    return data["Update"] if EXAMPLE_SCHEMAS[name] == "UpdateStrategy" else data


def minimal_job() -> dict[str, Any]:
    """A small register body in the shape Helios renders."""
    return {
        "Job": {
            "ID": "web",
            "Datacenters": ["dc1"],
            "Update": {"MaxParallel": 1, "Canary": 1, "AutoPromote": True},
            "TaskGroups": [
                {
                    "Name": "web",
                    "Count": 2,
                    "Services": [
                        {
                            "Name": "web",
                            "PortLabel": "http",
                            "Checks": [{"Type": "http", "Path": "/", "Interval": 10**10}],
                        }
                    ],
                    "Tasks": [
                        {
                            "Name": "web",
                            "Driver": "docker",
                            "Config": {"image": "web:1", "anything": {"nested": [1]}},
                            "Env": {"A": "1"},
                            "Meta": {"free-form": "keys"},
                            "Resources": {"CPU": 250, "MemoryMB": 256},
                        }
                    ],
                }
            ],
        }
    }


def test_all_reference_examples_are_listed() -> None:
    """Every pinned file of nomad-examples/ is covered by the table above."""
    assert example_names() == sorted(EXAMPLE_SCHEMAS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_SCHEMAS))
def test_reference_examples_pass_strict_validation(name: str, spec: dict[str, Any]) -> None:
    """Real job documents from Nomad, python-nomad and Traefik are accepted."""
    assert validate_body(load_example(name), EXAMPLE_SCHEMAS[name], spec) == []


def test_allow_list_is_exactly_what_the_examples_need(spec: dict[str, Any]) -> None:
    """Each newer-than-1.4 field is used by some example (nothing more is allowed)."""
    text = "".join(example_text(n) for n in EXAMPLE_SCHEMAS)
    for fields in NEWER_FIELDS.values():
        for field in fields:
            assert f'"{field}"' in text
    body = minimal_job()
    body["Job"]["UI"] = {"Description": "newer than 1.4 and not allow-listed"}
    assert validate_body(body, "JobRegisterRequest", spec) == ["Job: unknown key 'UI'"]


def test_nulls_fail_until_dropped(spec: dict[str, Any]) -> None:
    """Nomad's own output has nulls; the spec has no nullable, so they must be dropped."""
    raw = json.loads(example_text("cmd-testdata-example-short.json"))
    errors = validate_body(raw, "JobRegisterRequest", spec)
    assert "Job.Region: null is not allowed (omit the key to leave it unset)" in errors
    assert validate_body(drop_nulls(raw), "JobRegisterRequest", spec) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda j: j["TaskGroups"][0]["Tasks"][0]["Resources"].update(MemoryMb=512),
            "Job.TaskGroups[0].Tasks[0].Resources: unknown key 'MemoryMb'",
        ),
        (
            lambda j: j["Update"].update(AutoPromte=True),
            "Job.Update: unknown key 'AutoPromte'",
        ),
        (
            lambda j: j["TaskGroups"][0]["Services"][0]["Checks"][0].update(interval=10),
            "Job.TaskGroups[0].Services[0].Checks[0]: unknown key 'interval'",
        ),
        (
            lambda j: j["Update"].update(Canary="1"),
            "Job.Update.Canary: expected integer, got string '1'",
        ),
        (
            lambda j: j["Update"].update(MinHealthyTime="10s"),
            "Job.Update.MinHealthyTime: expected integer, got string '10s'",
        ),
        (
            lambda j: j["TaskGroups"][0].update(Count=None),
            "Job.TaskGroups[0].Count: null is not allowed (omit the key to leave it unset)",
        ),
        (
            lambda j: j["TaskGroups"][0]["Tasks"][0]["Env"].update(PORT=8080),
            "Job.TaskGroups[0].Tasks[0].Env.PORT: expected string, got integer 8080",
        ),
        (lambda j: j.pop("ID"), "Job: missing required key 'ID'"),
        (lambda j: j.pop("TaskGroups"), "Job: missing required key 'TaskGroups'"),
        (
            lambda j: j["TaskGroups"][0]["Tasks"][0].pop("Driver"),
            "Job.TaskGroups[0].Tasks[0]: missing required key 'Driver'",
        ),
        (
            lambda j: j["Update"].update(HealthCheck="http"),
            "Job.Update.HealthCheck: 'http' is not one of ['checks', 'task_states', 'manual', '']",
        ),
    ],
    ids=[
        "MemoryMb",
        "AutoPromte",
        "lowercase-interval",
        "canary-string",
        "duration-string",
        "null",
        "env-int",
        "no-id",
        "no-groups",
        "no-driver",
        "bad-enum",
    ],
)
def test_mistakes_are_rejected_with_their_path(
    mutate: Any, expected: str, spec: dict[str, Any]
) -> None:
    """Typos, wrong types, nulls and missing keys are reported with a JSON path."""
    body = minimal_job()
    mutate(body["Job"])
    assert expected in validate_body(body, "JobRegisterRequest", spec)


def test_missing_job_wrapper(spec: dict[str, Any]) -> None:
    """A bare job where {"Job": ...} is expected (Nomad: 'Job must be specified')."""
    errors = validate_body(minimal_job()["Job"], "JobRegisterRequest", spec)
    assert "(root): missing required key 'Job'" in errors
    assert "(root): unknown key 'TaskGroups'" in errors


def test_plan_request_and_update_block(spec: dict[str, Any]) -> None:
    """Plan bodies and bare update blocks use their own schemas."""
    assert validate_body({**minimal_job(), "Diff": True}, "JobPlanRequest", spec) == []
    assert validate_body({"Diff": True}, "JobPlanRequest", spec) == [
        "(root): missing required key 'Job'"
    ]
    assert validate_body({"Canary": 1, "Stagger": 5}, "UpdateStrategy", spec) == []


def test_check_body_raises_with_all_messages(spec: dict[str, Any]) -> None:
    """check_body joins every problem into one JobSpecError (a ValueError)."""
    body = minimal_job()
    body["Job"]["Update"].update(Canary="1", AutoPromte=True)
    with pytest.raises(ValueError, match="AutoPromte") as info:
        check_body(body, "JobRegisterRequest", spec)
    assert isinstance(info.value, JobSpecError)
    assert len(info.value.messages) == 2
    assert "Job.Update.Canary" in str(info.value)
    check_body(minimal_job(), "JobRegisterRequest", spec)


def test_spec_is_cached_and_the_original_stays_loose(spec: dict[str, Any]) -> None:
    """load_strict_spec caches per path; the published spec itself accepts typos."""
    assert load_strict_spec(str(SPEC_PATH)) is spec
    loose = yaml.safe_load(SPEC_PATH.read_text())
    body = minimal_job()
    body["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMb"] = 1
    schema = {"$ref": "#/components/schemas/JobRegisterRequest", "components": loose["components"]}
    assert list(OAS30Validator(schema).iter_errors(body)) == []
    assert validate_body(body, "JobRegisterRequest", spec)


def test_unknown_schema_name(spec: dict[str, Any]) -> None:
    """Asking for a schema the spec lacks is a programming error."""
    with pytest.raises(KeyError):
        validate_body({}, "NoSuchSchema", spec)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@given(json_values)
def test_drop_nulls_removes_every_null_and_is_idempotent(value: Any) -> None:
    """No None survives drop_nulls, and the input is not modified."""
    before = copy.deepcopy(value)
    cleaned = drop_nulls(value)
    assert value == before
    assert "null" not in json.dumps(cleaned) or cleaned is None
    assert drop_nulls(cleaned) == cleaned
