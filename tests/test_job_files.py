"""The cluster's own Nomad jobs under jobs/: every one strictly valid against the Nomad API
description, and what each must hold — the registry builds push to, and Helios itself (panel,
workers, follower) with its settings from a Nomad Variable, never inline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from gotemplate import render_template

from panel.cli.commands import cli
from panel.config import Settings
from panel.render.build import validate_image, validate_registry

from conftest import REPO_ROOT, SETTING_NAMES
from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

JOBS_DIR = REPO_ROOT / "jobs"
JOB_FILES = sorted(JOBS_DIR.glob("*.json"))
SECOND = 1_000_000_000
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def load(name: str) -> dict:
    return json.loads((JOBS_DIR / f"{name}.nomad.json").read_text())["Job"]


def tasks_of(job: dict) -> list[dict]:
    return [task for group in job["TaskGroups"] for task in group["Tasks"]]


def templates_of(task: dict) -> dict[str, dict]:
    return {template["DestPath"]: template for template in task.get("Templates", [])}


def test_the_cluster_jobs_are_all_there():
    assert {path.name for path in JOB_FILES} >= {
        "prometheus.nomad.json",
        "registry.nomad.json",
        "helios.nomad.json",
    }


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda path: path.name)
def test_every_job_file_is_strictly_valid_and_complete(path: Path):
    body = json.loads(path.read_text())
    spec = load_strict_spec(reference_file(NOMAD_SPEC))
    assert validate_body(body, "JobRegisterRequest", spec) == []
    job = body["Job"]
    assert path.name == f"{job['ID']}.nomad.json"
    assert job["Meta"]["helios.platform"] == job["ID"]
    assert "null" not in path.read_text()  # Nomad reads null as unset: say nothing instead
    for task in tasks_of(job):
        resources = task["Resources"]
        assert resources["CPU"] > 0 and resources["MemoryMB"] > 0, task["Name"]
        assert resources.get("MemoryMaxMB", resources["MemoryMB"]) >= resources["MemoryMB"]
        for template in task.get("Templates", []):
            # Secrets are read from the job's own Nomad Variable into the task's secrets/.
            if template["DestPath"].startswith("secrets/"):
                assert f'nomadVar "nomad/jobs/{job["ID"]}"' in template["EmbeddedTmpl"]
                assert template["Perms"] == "0400"
    assert "BEGIN" not in path.read_text()  # no key or certificate inline


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


def test_the_registry_job_serves_what_builds_and_clients_expect():
    job = load("registry")
    (group,) = job["TaskGroups"]
    (task,) = group["Tasks"]
    assert group["Count"] == 1
    assert re.fullmatch(r"registry:2(\.\d+)*", task["Config"]["image"])
    assert task["Config"]["args"] == ["/local/config.yml"]  # the image's entrypoint serves it
    templates = templates_of(task)
    config = yaml.safe_load(templates["local/config.yml"]["EmbeddedTmpl"])

    # The address: a fixed port, the registry role's, so HELIOS_REGISTRY is <node>:5000.
    (port,) = group["Networks"][0]["ReservedPorts"]
    role = yaml.safe_load((REPO_ROOT / "playbooks/roles/registry/defaults/main.yml").read_text())
    assert port["Value"] == role["registry_port"] == int(config["http"]["addr"].rpartition(":")[2])
    assert validate_registry(f"registry.internal:{port['Value']}")
    # Served on the node's address only (Nomad's client network), not on every interface.
    assert task["Env"]["REGISTRY_HTTP_ADDR"] == f"${{NOMAD_ADDR_{port['Label']}}}"

    # TLS and the password file come from the Variable into secrets/ (mounted at /secrets).
    secret_files = {config["http"]["tls"]["certificate"], config["http"]["tls"]["key"]}
    secret_files.add(config["auth"]["htpasswd"]["path"])
    assert {f"secrets/{Path(name).name}" for name in secret_files} <= set(templates)
    assert all(name.startswith("/secrets/") for name in secret_files)
    items = {"tls_cert": PEM, "tls_key": "registry-key-0123", "htpasswd": "helios:$2y$08$hash"}
    rendered = {
        dest: render_template(template["EmbeddedTmpl"], {"nomad/jobs/registry": items})
        for dest, template in templates.items()
        if dest.startswith("secrets/")
    }
    assert sorted(rendered.values()) == sorted(items.values())
    with pytest.raises(ValueError, match="no item 'htpasswd'"):
        render_template(templates["secrets/htpasswd"]["EmbeddedTmpl"], {"nomad/jobs/registry": {}})

    # Images live on the host volume, mounted where the configuration stores them.
    volume = group["Volumes"]["registry"]
    assert (volume["Type"], volume["Source"], volume["ReadOnly"]) == ("host", "registry", False)
    (mount,) = task["VolumeMounts"]
    assert mount["Volume"] == "registry"
    assert mount["Destination"] == config["storage"]["filesystem"]["rootdirectory"]
    assert config["storage"]["delete"]["enabled"] is True

    # Consul knows it, and checks it over its TLS port.
    (service,) = group["Services"]
    (check,) = service["Checks"]
    assert (service["Name"], service["Provider"], service["PortLabel"]) == (
        "registry",
        "consul",
        port["Label"],
    )
    assert (check["Type"], check["Protocol"], check["Path"]) == ("http", "https", "/")
    assert check["Interval"] >= 5 * SECOND and check["Timeout"] < check["Interval"]
    assert (
        "registry" in job["Meta"]["description"] and "HELIOS_REGISTRY" in job["Meta"]["description"]
    )


# ---------------------------------------------------------------------------------------------
# Helios on its own cluster
# ---------------------------------------------------------------------------------------------

HELIOS_VARIABLE = {
    "HELIOS_DATABASE_URL": "postgresql://helios:p%40ss@postgres.service.consul:5432/helios",
    "HELIOS_REDIS_URL": "redis://:secret@redis.service.consul:6379/0",
    "HELIOS_SECRET_KEY": "k" * 64,
    "HELIOS_ENCRYPTION_KEY": "n0B7kxhq6o3Hqg2oX2m1mN4u3x5j0rH5b0G0c2bQ1Ys=",
    "HELIOS_METRICS_TOKEN": "m" * 32,
    "NOMAD_ADDR": "https://nomad.service.consul:4646",
    "NOMAD_TOKEN": "00000000-0000-0000-0000-000000000000",
    "nomad_ca": PEM,
    "nomad_client_cert": PEM,
    "nomad_client_key": "client-key-0123",
}
SECRET_SETTINGS = {"HELIOS_DATABASE_URL", "HELIOS_REDIS_URL", "HELIOS_SECRET_KEY",
                   "HELIOS_ENCRYPTION_KEY", "HELIOS_METRICS_TOKEN", "NOMAD_TOKEN"}  # fmt: skip


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=<JSON string> lines, as the env template writes them."""
    env = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        env[name] = json.loads(value)
    return env


def test_helios_runs_a_panel_behind_traefik_two_workers_and_a_follower():
    job = load("helios")
    groups = {group["Name"]: group for group in job["TaskGroups"]}
    assert set(groups) == {"panel", "worker", "follower"}
    assert (groups["worker"]["Count"], groups["follower"]["Count"]) == (2, 1)
    assert groups["panel"]["Count"] >= 1

    # The panel: a Consul service Traefik routes to (the name Prometheus's job scrapes),
    # healthy when /readyz says the database and Redis answer.
    (service,) = groups["panel"]["Services"]
    assert service["Name"] == "helios-panel"
    tags = service["Tags"]
    assert "traefik.enable=true" in tags
    assert any(
        re.fullmatch(r"traefik\.http\.routers\.[\w-]+\.rule=Host\(`[^`]+`\)", t) for t in tags
    )
    assert any(t.endswith(".entrypoints=websecure") for t in tags)
    assert any(t.endswith(".tls.certresolver=le") for t in tags)
    assert service["CanaryTags"] == ["traefik.enable=false"]  # no traffic before promotion
    (check,) = service["Checks"]
    assert (check["Type"], check["Path"], check["PortLabel"]) == ("http", "/readyz", "http")
    prometheus = load("prometheus")["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]
    assert f"services: [{service['Name']}]" in prometheus

    # Updates and migrations: one at a time, judged by checks where there are some.
    assert job["Update"]["AutoRevert"] is True
    for name, group in groups.items():
        update = {**job["Update"], **group.get("Update", {})}
        assert update["MaxParallel"] == 1, name
        assert update["ProgressDeadline"] > update["HealthyDeadline"], name
        expected = "checks" if group.get("Services") else "task_states"
        assert update["HealthCheck"] == group["Migrate"]["HealthCheck"] == expected, name
    panel_update = groups["panel"]["Update"]
    assert (panel_update["Canary"], panel_update["AutoPromote"]) == (1, True)


def test_helios_tasks_run_real_commands_of_the_installed_image():
    job = load("helios")
    validate_image(job["Meta"]["helios_image"])
    for task in tasks_of(job):
        config = task["Config"]
        assert config["image"] == "${NOMAD_META_helios_image}", task["Name"]
        assert config["command"] == "helios"
        command, *rest = config["args"]
        assert command in cli.commands, task["Name"]
        if rest:
            assert rest[0] in cli.commands[command].commands, task["Name"]
    panel_tasks = {task["Name"]: task for task in load("helios")["TaskGroups"][0]["Tasks"]}
    migrate = panel_tasks["migrate"]
    assert migrate["Config"]["args"] == ["db", "upgrade"]
    assert migrate["Lifecycle"] == {"Hook": "prestart", "Sidecar": False}
    panel = panel_tasks["panel"]
    assert panel["Config"]["ports"] == ["http"]
    (port,) = job["TaskGroups"][0]["Networks"][0]["DynamicPorts"]
    assert panel["Env"]["HELIOS_BIND"] == f"0.0.0.0:{port['To']}"
    # Nomad waits for in-flight requests longer than the panel does.
    assert panel["KillTimeout"] > int(panel["Env"]["HELIOS_GRACEFUL_TIMEOUT"]) * SECOND


def test_helios_settings_come_from_the_variable_and_make_valid_settings(tmp_path):
    job = load("helios")
    text = (JOBS_DIR / "helios.nomad.json").read_text()
    for value in HELIOS_VARIABLE.values():
        assert value not in text
    variables = {"nomad/jobs/helios": HELIOS_VARIABLE}
    description = job["Meta"]["description"]
    assert "PostgreSQL" in description and "Redis" in description
    for name in SECRET_SETTINGS:
        assert name in description
    for task in tasks_of(job):
        env = task["Env"]
        assert not SECRET_SETTINGS & set(env), task["Name"]  # never inline
        assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES  # real settings only
        templates = templates_of(task)
        env_template = templates["secrets/helios.env"]
        assert env_template["Envvars"] is True
        from_variable = parse_env_file(render_template(env_template["EmbeddedTmpl"], variables))
        # Every HELIOS_*/NOMAD_* item, and nothing else (the TLS files are files).
        assert from_variable == {k: v for k, v in HELIOS_VARIABLE.items() if k.isupper()}
        # Nomad's mutual TLS files, for the tasks that talk to Nomad, are where the settings
        # say; the migration does not talk to Nomad.
        tls_settings = {"NOMAD_CACERT", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY"}
        if task["Name"] == "migrate":
            assert not tls_settings & set(env)
            assert set(templates) == {"secrets/helios.env"}
        else:
            assert tls_settings <= set(env), task["Name"]
        for setting in tls_settings & set(env):
            dest = env[setting].removeprefix("/")
            rendered = render_template(templates[dest]["EmbeddedTmpl"], variables)
            assert rendered in {PEM, "client-key-0123"}, (task["Name"], setting)
        # What the task gets is a valid configuration of Helios.
        settings = Settings.from_env({**env, **from_variable})
        assert settings.database_url.startswith("postgresql://")
        assert settings.redis_url == HELIOS_VARIABLE["HELIOS_REDIS_URL"]
        assert str(settings.data_dir).startswith("/alloc/")
