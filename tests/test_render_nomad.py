"""AppSpec building, Traefik tags and the Nomad job renderer on canonical inputs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from panel.render.nomad import job_id_for, render_job, render_secret_items, variable_path_for
from panel.render.traefik import render_canary_tags, render_router_rule, render_traefik_tags
from panel.spec import AppSpec, ProcessSpec, build_app_spec
from panel.validation import ValidationError

from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

SECONDS = 1_000_000_000
SECRET_VALUE = "s3cr3t-value-never-in-the-job"

CANONICAL: dict[str, Any] = {
    "slug": "shop",
    "team": "acme",
    "image": "registry.local/acme/shop:42",
    "git_sha": "3f2a9c1",
    "release": 7,
    "base_domain": "apps.example.com",
    "port": 5000,
    "health_path": "/healthz",
    "cpu_mhz": 500,
    "memory_mb": 256,
    "memory_max_mb": 512,
    "processes": [
        {"name": "worker", "command": "rq worker --url ${REDIS_URL}", "count": 1},
        {"name": "web", "command": ["gunicorn", "app:app"], "count": 2},
    ],
    "env": {"LOG_LEVEL": "info", "DATABASE_HOST": "db.internal"},
    "secret_keys": ["DATABASE_PASSWORD", "API_TOKEN"],
    "domains": ["WWW.Shop.example", "shop.example"],
}

ENV = {
    "DATABASE_HOST": "db.internal",
    "HELIOS_APP": "shop",
    "HELIOS_RELEASE": "7",
    "LOG_LEVEL": "info",
}
RESOURCES = {"CPU": 500, "MemoryMB": 256, "MemoryMaxMB": 512}
TEMPLATE = {
    # Release 7 renders only its own items of the app's variable (r7.KEY), one per line.
    "EmbeddedTmpl": '{{ with nomadVar "nomad/jobs/shop" }}{{ range .Tuples }}'
    '{{ $k := split "." .K }}{{ if eq (len $k) 2 }}{{ if eq (index $k 0) "r7" }}'
    "{{ index $k 1 }}={{ .V | toJSON }}\n{{ end }}{{ end }}{{ end }}{{ end }}",
    "DestPath": "secrets/helios.env",
    "Envvars": True,
    "ChangeMode": "restart",
}
EXPECTED_JOB: dict[str, Any] = {
    "Job": {
        "ID": "shop",
        "Name": "shop",
        "Type": "service",
        "Datacenters": ["dc1"],
        "Meta": {
            "helios.app": "shop",
            "helios.team": "acme",
            "helios.release": "7",
            "helios.git_sha": "3f2a9c1",
        },
        "Update": {
            "MaxParallel": 1,
            "Canary": 2,
            "AutoPromote": True,
            "AutoRevert": True,
            "HealthCheck": "checks",
            "MinHealthyTime": 10 * SECONDS,
            "HealthyDeadline": 300 * SECONDS,
            "ProgressDeadline": 600 * SECONDS,
        },
        "TaskGroups": [
            {
                "Name": "web",
                "Count": 2,
                "Migrate": {
                    "MaxParallel": 1,
                    "HealthCheck": "checks",
                    "MinHealthyTime": 10 * SECONDS,
                    "HealthyDeadline": 300 * SECONDS,
                },
                "Networks": [{"DynamicPorts": [{"Label": "http", "To": 5000}]}],
                "Services": [
                    {
                        "Name": "shop",
                        "Provider": "consul",
                        "PortLabel": "http",
                        "Tags": [
                            "traefik.enable=true",
                            "traefik.http.routers.shop.rule=Host(`shop.apps.example.com`)"
                            " || Host(`shop.example`) || Host(`www.shop.example`)",
                            "traefik.http.routers.shop.entrypoints=websecure",
                            "traefik.http.routers.shop.tls=true",
                            "traefik.http.routers.shop.tls.certresolver=le",
                        ],
                        "CanaryTags": ["traefik.enable=false"],
                        "Checks": [
                            {
                                "Name": "alive",
                                "Type": "http",
                                "Path": "/healthz",
                                "PortLabel": "http",
                                "Interval": 10 * SECONDS,
                                "Timeout": 2 * SECONDS,
                            }
                        ],
                    }
                ],
                "Tasks": [
                    {
                        "Name": "web",
                        "Driver": "docker",
                        "Config": {
                            "image": "registry.local/acme/shop:42",
                            "ports": ["http"],
                            "command": "gunicorn",
                            "args": ["app:app"],
                        },
                        "Env": ENV,
                        "Resources": RESOURCES,
                        "Templates": [TEMPLATE],
                    }
                ],
            },
            {
                "Name": "worker",
                "Count": 1,
                "Migrate": {
                    "MaxParallel": 1,
                    "HealthCheck": "task_states",
                    "MinHealthyTime": 10 * SECONDS,
                    "HealthyDeadline": 300 * SECONDS,
                },
                "Update": {"Canary": 1},
                "Tasks": [
                    {
                        "Name": "worker",
                        "Driver": "docker",
                        "Config": {
                            "image": "registry.local/acme/shop:42",
                            "command": "rq",
                            "args": ["worker", "--url", "${REDIS_URL}"],
                        },
                        "Env": ENV,
                        "Resources": RESOURCES,
                        "Templates": [TEMPLATE],
                    }
                ],
            },
        ],
    }
}


def canonical(**changes: Any) -> AppSpec:
    """The canonical spec, with some fields changed."""
    return build_app_spec(**{**CANONICAL, **changes})


def walk(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, leaf) of a JSON-like document."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, (*path, key))]
    if isinstance(node, list):
        return [item for index, value in enumerate(node) for item in walk(value, (*path, index))]
    return [(path, node)]


@pytest.fixture(scope="module")
def strict_spec() -> dict[str, Any]:
    return load_strict_spec(reference_file(NOMAD_SPEC))


# ---------------------------------------------------------------------------------------------
# The rendered job
# ---------------------------------------------------------------------------------------------


def test_canonical_spec_renders_the_expected_job() -> None:
    assert render_job(canonical()) == EXPECTED_JOB


def test_canonical_job_is_strictly_valid(strict_spec: dict[str, Any]) -> None:
    assert validate_body(render_job(canonical()), "JobRegisterRequest", strict_spec) == []


def test_minimal_job_is_strictly_valid_and_lean(strict_spec: dict[str, Any]) -> None:
    spec = build_app_spec(slug="a", team="t", image="nginx", release=1, base_domain="x.test")
    job = render_job(spec)
    assert validate_body(job, "JobRegisterRequest", strict_spec) == []
    task = job["Job"]["TaskGroups"][0]["Tasks"][0]
    assert task["Config"] == {"image": "nginx", "ports": ["http"]}
    assert task["Resources"] == {"CPU": 250, "MemoryMB": 256}
    assert "Templates" not in task
    assert task["Env"] == {"HELIOS_APP": "a", "HELIOS_RELEASE": "1"}


def test_strict_check_would_catch_a_misspelt_key(strict_spec: dict[str, Any]) -> None:
    job = render_job(canonical())
    job["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMb"] = 1
    assert validate_body(job, "JobRegisterRequest", strict_spec)


def test_job_has_no_nulls_and_survives_json() -> None:
    job = render_job(canonical())
    assert all(leaf is not None for _, leaf in walk(job))
    assert json.loads(json.dumps(job)) == job


def test_durations_are_integer_nanoseconds() -> None:
    job = render_job(canonical(min_healthy_time_s=5, healthy_deadline_s=60, progress_deadline_s=90))
    update = job["Job"]["Update"]
    assert (update["MinHealthyTime"], update["HealthyDeadline"], update["ProgressDeadline"]) == (
        5 * SECONDS,
        60 * SECONDS,
        90 * SECONDS,
    )
    durations = [leaf for path, leaf in walk(job) if path[-1] in {"Interval", "Timeout"}]
    assert durations and all(type(value) is int for value in durations)


def test_render_is_deterministic_whatever_the_input_order() -> None:
    shuffled = {
        **CANONICAL,
        "env": dict(reversed(list(CANONICAL["env"].items()))),
        "secret_keys": list(reversed(CANONICAL["secret_keys"])),
        "domains": list(reversed(CANONICAL["domains"])),
        "processes": list(reversed(CANONICAL["processes"])),
    }
    first = json.dumps(render_job(canonical()))
    assert json.dumps(render_job(canonical())) == first
    assert json.dumps(render_job(build_app_spec(**shuffled))) == first


def test_render_does_not_share_mutable_state() -> None:
    spec = canonical()
    job = render_job(spec)
    before = copy.deepcopy(job)
    job["Job"]["TaskGroups"][0]["Services"][0]["Tags"].append("x")
    job["Job"]["TaskGroups"][0]["Services"][0]["CanaryTags"].append("x")
    assert render_job(spec) == before


def test_env_holds_non_secrets_only_and_secrets_come_from_the_variable() -> None:
    text = json.dumps(render_job(canonical()))
    for key in CANONICAL["secret_keys"]:
        assert key not in text
    for group in EXPECTED_JOB["Job"]["TaskGroups"]:
        assert set(group["Tasks"][0]["Env"]) == {*CANONICAL["env"], "HELIOS_APP", "HELIOS_RELEASE"}
    items = render_secret_items(7, {"API_TOKEN": SECRET_VALUE})
    assert items == {"r7.API_TOKEN": SECRET_VALUE}
    assert SECRET_VALUE not in text


def test_worker_groups_have_no_network_service_or_port() -> None:
    worker = render_job(canonical())["Job"]["TaskGroups"][1]
    assert worker["Name"] == "worker"
    assert "Networks" not in worker and "Services" not in worker
    assert "ports" not in worker["Tasks"][0]["Config"]


def test_without_canaries_nothing_auto_promotes() -> None:
    job = render_job(canonical(canary=False, auto_promote=True))
    assert job["Job"]["Update"]["Canary"] == 0
    assert job["Job"]["Update"]["AutoPromote"] is False
    assert all("Update" not in group for group in job["Job"]["TaskGroups"])


def test_policy_flags_pass_through() -> None:
    update = render_job(canonical(auto_promote=False, auto_revert=False))["Job"]["Update"]
    assert (update["Canary"], update["AutoPromote"], update["AutoRevert"]) == (2, False, False)


def test_hard_memory_cap_is_left_out_when_zero() -> None:
    job = render_job(canonical(memory_max_mb=0))
    assert job["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"] == {"CPU": 500, "MemoryMB": 256}


def test_job_id_and_variable_path() -> None:
    spec = canonical()
    assert job_id_for(spec) == render_job(spec)["Job"]["ID"] == "shop"
    assert variable_path_for("shop") == "nomad/jobs/shop"
    with pytest.raises(ValidationError):
        variable_path_for("../other")


@pytest.mark.parametrize(
    "secrets",
    [{"lower": "x"}, {"NOMAD_TOKEN": "x"}, {"OK": "a\x00b"}, {"OK": 5}],
    ids=["bad-key", "reserved-key", "nul-value", "non-text"],
)
def test_secret_items_refuse_bad_input(secrets: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        render_secret_items(3, secrets)


def test_secret_items_are_sorted_strings_keyed_by_release() -> None:
    items = render_secret_items(3, {"B": "2", "A": "{{ 1 }}"})
    assert list(items) == ["r3.A", "r3.B"]
    assert items["r3.A"] == "{{ 1 }}"


# ---------------------------------------------------------------------------------------------
# Traefik
# ---------------------------------------------------------------------------------------------


def test_router_rule_joins_validated_hosts() -> None:
    assert (
        render_router_rule(["a.example", "B.example"]) == "Host(`a.example`) || Host(`b.example`)"
    )


@pytest.mark.parametrize(
    "domains",
    [[], ["a.example`) || PathPrefix(`/"], ["a.example", "*.example"], ["localhost"]],
    ids=["empty", "injection", "wildcard", "single-label"],
)
def test_router_rule_refuses_invalid_hosts(domains: list[str]) -> None:
    with pytest.raises(ValidationError):
        render_router_rule(domains)


def test_traefik_tags_without_certresolver() -> None:
    tags = render_traefik_tags(canonical(certresolver="", entrypoint="https"))
    assert "traefik.http.routers.shop.entrypoints=https" in tags
    assert not any("certresolver" in tag for tag in tags)
    assert render_canary_tags() == ["traefik.enable=false"]


# ---------------------------------------------------------------------------------------------
# AppSpec
# ---------------------------------------------------------------------------------------------


def test_spec_is_normalised() -> None:
    spec = canonical()
    assert [process.name for process in spec.processes] == ["web", "worker"]
    assert spec.web == ProcessSpec(name="web", command=("gunicorn", "app:app"), count=2)
    assert spec.env == (("DATABASE_HOST", "db.internal"), ("LOG_LEVEL", "info"))
    assert spec.secret_keys == ("API_TOKEN", "DATABASE_PASSWORD")
    assert spec.domains == ("shop.example", "www.shop.example")
    assert spec.default_domain == "shop.apps.example.com"
    assert spec.all_domains == ("shop.apps.example.com", "shop.example", "www.shop.example")
    assert AppSpec.build(**CANONICAL) == spec
    assert hash(spec) == hash(canonical())


def test_all_domains_drops_a_repeated_default() -> None:
    spec = canonical(domains=["shop.apps.example.com", "b.example", "B.example"])
    assert spec.all_domains == ("shop.apps.example.com", "b.example")


def test_spec_is_frozen() -> None:
    spec = canonical()
    with pytest.raises(AttributeError):
        spec.slug = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slug": "Shop"}, "slug"),
        ({"team": ""}, "team"),
        ({"image": "shop latest"}, "image"),
        ({"release": 0}, "release"),
        ({"git_sha": "main"}, "git_sha"),
        ({"port": 0}, "port"),
        ({"health_path": "healthz"}, "health_path"),
        ({"memory_max_mb": 100}, "memory_max_mb"),
        ({"processes": [{"name": "worker"}]}, "processes"),
        ({"processes": [{"name": "web"}, {"name": "web"}]}, "processes"),
        ({"processes": [{"name": "web", "cmd": "x"}]}, "processes"),
        ({"processes": [{"name": "web", "count": 0}]}, "count"),
        ({"processes": "web"}, "processes"),
        ({"env": {"lower": "x"}}, "env key"),
        ({"env": [("A", "1"), ("A", "2")]}, "env key"),
        ({"env": [("A",)]}, "env"),
        ({"env": {"API_TOKEN": "x"}}, "env key"),
        ({"secret_keys": "API_TOKEN"}, "secret_keys"),
        ({"domains": ["other.apps.example.com"]}, "domain"),
        ({"domains": ["apps.example.com"]}, "domain"),
        ({"domains": [f"d{i}.example" for i in range(100)]}, "domains"),
        ({"domains": ["bad domain"]}, "domain"),
        ({"base_domain": "localhost"}, "base_domain"),
        ({"datacenters": []}, "datacenters"),
        ({"datacenters": ["*"]}, "datacenter"),
        ({"canary": "yes"}, "canary"),
        ({"min_healthy_time_s": 300}, "healthy_deadline_s"),
        ({"progress_deadline_s": 300}, "healthy_deadline_s"),
        ({"certresolver": "LE!"}, "certresolver"),
        ({"entrypoint": ""}, "entrypoint"),
    ],
)
def test_spec_refuses_invalid_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        canonical(**changes)
    assert caught.value.field == field


def test_spec_constructor_validates_too() -> None:
    with pytest.raises(ValidationError):
        AppSpec(slug="ok", team="t", image="nginx", release=1, base_domain="apps.test", port=-1)
