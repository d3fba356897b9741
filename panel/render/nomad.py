"""AppSpec → Nomad job register body (pure, deterministic JSON-ready dicts).

The body uses only fields of the Nomad 1.4 OpenAPI spec, never ``null`` (unset keys are left
out) and durations in integer nanoseconds. User strings are placed as JSON values, each in its
own field; nothing user-supplied is ever put into HCL or template text. Nomad still interpolates
``${...}`` inside Env values and docker args at run time (that is how ``${NOMAD_PORT_http}``
works), which only affects the app's own task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from panel.render.traefik import render_canary_tags, render_traefik_tags
from panel.spec import WEB, AppSpec, ProcessSpec
from panel.validation import validate_env_key, validate_env_value, validate_slug

__all__ = [
    "CHECK_NAME",
    "PORT_LABEL",
    "SECRETS_DEST_PATH",
    "drop_release_items",
    "job_id_for",
    "keep_release_items",
    "merge_release_items",
    "release_of_item",
    "render_job",
    "render_secret_items",
    "render_secrets_template",
    "scaled_job",
    "secret_item_key",
    "variable_path_for",
]

NS_PER_SECOND = 1_000_000_000
CHECK_INTERVAL_NS = 10 * NS_PER_SECOND
CHECK_TIMEOUT_NS = 2 * NS_PER_SECOND
PORT_LABEL = "http"
CHECK_NAME = "alive"
SECRETS_DEST_PATH = "secrets/helios.env"  # inside the task's private secrets/ directory
# One Nomad Variable per app, at the path its tasks may read without any ACL policy
# ("Task Access to Variables": nomad/jobs/<job>, https://developer.hashicorp.com/nomad/docs/
# concepts/variables). Its items are keyed per release, "r42.DATABASE_URL": env keys match
# [A-Z_][A-Z0-9_]*, so the first "." separates release and key. Release 42's template renders
# only r42.* items, with functions of every Nomad since 1.4 (consul-template's nomadVar, whose
# .Tuples are sorted by key, and split and toJSON; Go's len, index and eq). Writing another
# release's items makes consul-template render this one again to the same text, and
# change_mode acts only "if the rendered template changes"
# (https://developer.hashicorp.com/nomad/docs/job-specification/template): running allocations
# keep their values until the allocations of a new release replace them.
SECRETS_TEMPLATE = (
    '{{{{ with nomadVar "{path}" }}}}{{{{ range .Tuples }}}}{{{{ $k := split "." .K }}}}'
    '{{{{ if eq (len $k) 2 }}}}{{{{ if eq (index $k 0) "{prefix}" }}}}'
    "{{{{ index $k 1 }}}}={{{{ .V | toJSON }}}}\n"
    "{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}"
)


def job_id_for(spec: AppSpec) -> str:
    """Return the Nomad job ID of an app (its slug)."""
    return spec.slug


def variable_path_for(slug: str) -> str:
    """Return the Nomad Variable path holding an app's secrets (readable by its tasks)."""
    return f"nomad/jobs/{validate_slug(slug)}"


def render_job(spec: AppSpec) -> dict[str, Any]:
    """Render the register body {"Job": {...}} for one release of an app."""
    job = {
        "ID": job_id_for(spec),
        "Name": spec.slug,
        "Type": "service",
        "Datacenters": list(spec.datacenters),
        "Meta": _render_meta(spec),
        "Update": _render_update(spec),
        "TaskGroups": [_render_group(spec, process) for process in spec.processes],
    }
    return {"Job": job}


def scaled_job(body: dict[str, Any], group: str, count: int) -> dict[str, Any]:
    """A register body with one group's Count set, as Nomad's scale endpoint leaves the job it
    scales (nothing else changes: the update block keeps the release's canary count)."""
    job = dict(body["Job"])
    job["TaskGroups"] = [
        {**g, "Count": count} if g["Name"] == group else g for g in job["TaskGroups"]
    ]
    return {**body, "Job": job}


def secret_item_key(release: int, key: str) -> str:
    """The item name of one secret of one release in the app's variable: r<release>.<KEY>."""
    return f"r{release}.{key}"


def release_of_item(name: str) -> int | None:
    """The release an item of the app's variable belongs to (None: not an item Helios wrote)."""
    prefix, dot, key = name.partition(".")
    if not dot or not prefix.startswith("r") or not prefix[1:].isdigit() or not key:
        return None
    return int(prefix[1:])


def render_secret_items(release: int, secrets: Mapping[str, str]) -> dict[str, str]:
    """The variable items carrying one release's secret values, sorted (validated)."""
    items = {
        secret_item_key(release, validate_env_key(key)): validate_env_value(value)
        for key, value in secrets.items()
    }
    return dict(sorted(items.items()))


def merge_release_items(
    items: Mapping[str, str], release: int, secrets: Mapping[str, str]
) -> dict[str, str]:
    """The variable's items with one release's secrets set (replacing that release's old ones)."""
    merged = drop_release_items(items, release)
    merged.update(render_secret_items(release, secrets))
    return dict(sorted(merged.items()))


def drop_release_items(items: Mapping[str, str], release: int) -> dict[str, str]:
    """The variable's items without those of one release."""
    return {name: value for name, value in items.items() if release_of_item(name) != release}


def keep_release_items(items: Mapping[str, str], releases: set[int]) -> dict[str, str]:
    """The variable's items of the given releases only (items Helios did not write stay)."""
    return {
        name: value
        for name, value in items.items()
        if release_of_item(name) is None or release_of_item(name) in releases
    }


def render_secrets_template(spec: AppSpec) -> str:
    """The template text that renders this release's secrets, and no other release's."""
    return SECRETS_TEMPLATE.format(path=variable_path_for(spec.slug), prefix=f"r{spec.release}")


def _render_meta(spec: AppSpec) -> dict[str, str]:
    """Job Meta so `nomad job status` tells which app, team, release and commit run."""
    meta = {
        "helios.app": spec.slug,
        "helios.team": spec.team,
        "helios.release": str(spec.release),
        "helios.git_sha": spec.git_sha,
    }
    if spec.deployment:
        # Which deployment registered a version: how a re-run job finds its own registration.
        meta["helios.deployment"] = str(spec.deployment)
    return meta


def _render_update(spec: AppSpec) -> dict[str, Any]:
    """Job-level update block: a full set of canaries, gated on checks, one at a time."""
    canary = spec.web.count if spec.canary else 0
    return {
        "MaxParallel": 1,
        "Canary": canary,
        # Nomad refuses AutoPromote without canaries.
        "AutoPromote": spec.auto_promote and canary > 0,
        "AutoRevert": spec.auto_revert,
        "HealthCheck": "checks",
        "MinHealthyTime": spec.min_healthy_time_s * NS_PER_SECOND,
        "HealthyDeadline": spec.healthy_deadline_s * NS_PER_SECOND,
        "ProgressDeadline": spec.progress_deadline_s * NS_PER_SECOND,
    }


def _render_group(spec: AppSpec, process: ProcessSpec) -> dict[str, Any]:
    """One task group per process; only web gets the port, the service and the check."""
    group: dict[str, Any] = {
        "Name": process.name,
        "Count": process.count,
        "Migrate": _render_migrate(spec, process),
    }
    if process.name == WEB:
        group["Networks"] = [{"DynamicPorts": [{"Label": PORT_LABEL, "To": spec.port}]}]
        group["Services"] = [_render_service(spec)]
    elif spec.canary:
        # The job-level Canary is the web count; each other group canaries its own full set.
        group["Update"] = {"Canary": process.count}
    group["Tasks"] = [_render_task(spec, process)]
    return group


def _render_migrate(spec: AppSpec, process: ProcessSpec) -> dict[str, Any]:
    """How a node drain moves the group: one allocation at a time, the next only once the
    replacement is healthy (web: its checks pass; other processes: their tasks run), so a
    drained host never takes more than one allocation of a process down at once."""
    return {
        "MaxParallel": 1,
        "HealthCheck": "checks" if process.name == WEB else "task_states",
        "MinHealthyTime": spec.min_healthy_time_s * NS_PER_SECOND,
        "HealthyDeadline": spec.healthy_deadline_s * NS_PER_SECOND,
    }


def _render_service(spec: AppSpec) -> dict[str, Any]:
    """The web service in Consul, routed by Traefik, health-checked over HTTP."""
    return {
        "Name": spec.slug,
        "Provider": "consul",
        "PortLabel": PORT_LABEL,
        "Tags": render_traefik_tags(spec),
        "CanaryTags": render_canary_tags(),
        "Checks": [
            {
                "Name": CHECK_NAME,
                "Type": "http",
                "Path": spec.health_path,
                "PortLabel": PORT_LABEL,
                "Interval": CHECK_INTERVAL_NS,
                "Timeout": CHECK_TIMEOUT_NS,
            }
        ],
    }


def _render_task(spec: AppSpec, process: ProcessSpec) -> dict[str, Any]:
    """The docker task running one process."""
    task: dict[str, Any] = {
        "Name": process.name,
        "Driver": "docker",
        "Config": _render_docker_config(spec, process),
        "Env": _render_env(spec),
        "Resources": _render_resources(spec),
    }
    if spec.secret_keys:
        task["Templates"] = [_render_secrets_template(spec)]
    return task


def _render_docker_config(spec: AppSpec, process: ProcessSpec) -> dict[str, Any]:
    """Docker driver config: image, port label for web, argv as command + args."""
    config: dict[str, Any] = {"image": spec.image}
    if process.name == WEB:
        config["ports"] = [PORT_LABEL]
    if process.command:
        config["command"] = process.command[0]
        if len(process.command) > 1:
            config["args"] = list(process.command[1:])
    return config


def _render_env(spec: AppSpec) -> dict[str, str]:
    """Non-secret env plus the platform's HELIOS_* names (users cannot set HELIOS_*)."""
    env = dict(spec.env)
    env["HELIOS_APP"] = spec.slug
    env["HELIOS_RELEASE"] = str(spec.release)
    return dict(sorted(env.items()))


def _render_resources(spec: AppSpec) -> dict[str, int]:
    """CPU and memory reservation; the hard cap only when set."""
    resources = {"CPU": spec.cpu_mhz, "MemoryMB": spec.memory_mb}
    if spec.memory_max_mb > 0:
        resources["MemoryMaxMB"] = spec.memory_max_mb
    return resources


def _render_secrets_template(spec: AppSpec) -> dict[str, Any]:
    """A template that turns this release's items of the app's Nomad Variable into env vars
    (values never in the job)."""
    return {
        "EmbeddedTmpl": render_secrets_template(spec),
        "DestPath": SECRETS_DEST_PATH,
        "Envvars": True,
        "ChangeMode": "restart",
    }
