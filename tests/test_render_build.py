"""The build job renderer: strictly valid Nomad JSON, user values only in Env, refusals that
say what to write, the cache written only by the tracked branch, credentials never in the job."""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gotemplate import render_template
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panel.config import Settings
from panel.render import build as build_module
from panel.render.build import (
    BUILD_SCRIPT,
    BUILDER_IMAGE,
    DIGEST_MARKER,
    FETCH_SCRIPT,
    GIT_IMAGE,
    RUNNER_SCRIPT,
    SECURITY_OPT,
    BuildSpec,
    build_fields_from_settings,
    build_variable_path,
    render_build_job,
    render_build_variables,
)
from panel.validation import ValidationError

from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

SECONDS = 1_000_000_000
SHA = "3f2a9c1e" * 5
GIT_PASSWORD = "ghp_git-secret-never-in-the-job"
REGISTRY_PASSWORD = "registry-secret-never-in-the-job"
HOSTILE_FILE = Path(__file__).with_name("hostile_inputs.txt")

CANONICAL: dict[str, Any] = {
    "slug": "shop",
    "team": "acme",
    "release": 7,
    "git_url": "https://github.com/acme/shop.git",
    "git_sha": SHA,
    "branch": "main",
    "tracked_branch": "main",
    "registry": "registry.internal:5000",
    "repository": "acme/shop",
    "dockerfile": "docker/web.Dockerfile",
    "context": ".",
    "build_args": {"NODE_ENV": "production", "GREETING": "hello world"},
    "node_pool": "build",
    "namespace": "apps",
    "datacenters": ["dc1", "dc2"],
    "cpu_mhz": 2000,
    "memory_mb": 4096,
    "disk_mb": 8192,
    "time_limit_s": 900,
}

# Env values naming Nomad's own directories: Nomad fills these in when the task starts.
NOMAD_PATHS = {
    "HELIOS_SOURCE_DIR": "${NOMAD_ALLOC_DIR}/data/source",
    "HELIOS_DIGEST_FILE": "${NOMAD_ALLOC_DIR}/data/image-digest",
    "HELIOS_STORAGE_ROOT": "${NOMAD_TASK_DIR}/containers/storage",
    "HELIOS_STORAGE_RUNROOT": "${NOMAD_TASK_DIR}/containers/run",
    "HELIOS_AUTH_FILE": "${NOMAD_SECRETS_DIR}/registry-auth.json",
    "HELIOS_CERT_DIR": "${NOMAD_TASK_DIR}/registry-certs",
}
FETCH_ENV = {
    "HELIOS_GIT_AUTH": "0",
    "HELIOS_GIT_BRANCH": "main",
    "HELIOS_GIT_SHA": SHA,
    "HELIOS_GIT_URL": "https://github.com/acme/shop.git",
    "HELIOS_SOURCE_DIR": NOMAD_PATHS["HELIOS_SOURCE_DIR"],
    "HELIOS_TIME_LIMIT": "600",
}
BUILD_ENV = {
    "HELIOS_APP": "shop",
    "HELIOS_RELEASE": "7",
    "HELIOS_TIME_LIMIT": "900",
    "HELIOS_CONTEXT": ".",
    "HELIOS_DOCKERFILE": "docker/web.Dockerfile",
    "HELIOS_BUILD_ARGS": "GREETING=hello world\nNODE_ENV=production\n",
    "HELIOS_REGISTRY": "registry.internal:5000",
    "HELIOS_IMAGE": f"registry.internal:5000/acme/shop:{SHA}",
    "HELIOS_CACHE_REPO": "registry.internal:5000/acme/shop/cache",
    "HELIOS_CACHE_WRITE": "1",
    "HELIOS_TLS_VERIFY": "true",
    "HELIOS_REGISTRY_AUTH": "0",
    **{key: value for key, value in NOMAD_PATHS.items() if key != "HELIOS_SOURCE_DIR"},
    "HELIOS_SOURCE_DIR": NOMAD_PATHS["HELIOS_SOURCE_DIR"],
}
EXPECTED_JOB: dict[str, Any] = {
    "Job": {
        "ID": "shop-build-7",
        "Name": "shop-build-7",
        "Type": "batch",
        "Namespace": "apps",
        "NodePool": "build",
        "Datacenters": ["dc1", "dc2"],
        "Constraints": [{"LTarget": "${node.pool}", "RTarget": "build", "Operand": "="}],
        "Meta": {
            "helios.app": "shop",
            "helios.team": "acme",
            "helios.release": "7",
            "helios.git_sha": SHA,
            "helios.branch": "main",
            "helios.kind": "build",
            "helios.builder": "dockerfile",
        },
        "TaskGroups": [
            {
                "Name": "build",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "EphemeralDisk": {"SizeMB": 8192},
                "Tasks": [
                    {
                        "Name": "fetch",
                        "Driver": "docker",
                        "User": "nobody",
                        "Lifecycle": {"Hook": "prestart", "Sidecar": False},
                        "Config": {
                            "image": GIT_IMAGE,
                            "entrypoint": ["/bin/sh", "-c"],
                            "args": [RUNNER_SCRIPT, "helios-fetch", FETCH_SCRIPT],
                        },
                        "Env": FETCH_ENV,
                        "Resources": {"CPU": 200, "MemoryMB": 256},
                        "KillTimeout": 5 * SECONDS,
                    },
                    {
                        "Name": "build",
                        "Driver": "docker",
                        "User": "build",
                        "Config": {
                            "image": BUILDER_IMAGE,
                            "entrypoint": ["/bin/sh", "-c"],
                            "args": [RUNNER_SCRIPT, "helios-build", BUILD_SCRIPT],
                            "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
                        },
                        "Env": dict(sorted(BUILD_ENV.items())),
                        "Resources": {"CPU": 2000, "MemoryMB": 4096},
                        "KillTimeout": 30 * SECONDS,
                    },
                ],
            }
        ],
    }
}


def canonical(**changes: Any) -> BuildSpec:
    """The canonical spec with some fields changed."""
    return BuildSpec(**{**CANONICAL, **changes})


def walk(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, leaf) of a JSON-like document."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, (*path, key))]
    if isinstance(node, list):
        return [item for index, value in enumerate(node) for item in walk(value, (*path, index))]
    return [(path, node)]


def tasks(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's tasks by name."""
    return {task["Name"]: task for task in job["Job"]["TaskGroups"][0]["Tasks"]}


@pytest.fixture(scope="module")
def strict_spec() -> dict[str, Any]:
    return load_strict_spec(reference_file(NOMAD_SPEC))


# ---------------------------------------------------------------------------------------------
# The rendered job
# ---------------------------------------------------------------------------------------------


def test_canonical_spec_renders_the_expected_job() -> None:
    assert render_build_job(canonical()) == EXPECTED_JOB


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"git_auth": True, "registry_auth": True},
        {"branch": "feature/x", "registry_insecure": True, "build_args": {}},
        {"builder": "buildpacks"},
        {"builder": "buildpacks", "git_auth": True, "registry_auth": True, "branch": "x"},
    ],
)
def test_build_jobs_are_strictly_valid(strict_spec: dict[str, Any], changes) -> None:
    job = render_build_job(canonical(**changes))
    assert validate_body(job, "JobRegisterRequest", strict_spec) == []
    assert all(leaf is not None for _, leaf in walk(job))
    assert json.loads(json.dumps(job)) == job


def test_strict_check_would_catch_a_misspelt_key(strict_spec: dict[str, Any]) -> None:
    job = render_build_job(canonical())
    job["Job"]["TaskGroups"][0]["RestartPolicy"]["Attempt"] = 0
    assert validate_body(job, "JobRegisterRequest", strict_spec)


def test_a_batch_job_on_the_build_pool_that_never_retries() -> None:
    job = render_build_job(canonical(node_pool="builders"))["Job"]
    assert job["Type"] == "batch" and job["ID"] == "shop-build-7"
    assert job["NodePool"] == "builders"
    assert job["Constraints"] == [
        {"LTarget": "${node.pool}", "RTarget": "builders", "Operand": "="}
    ]
    assert job["Meta"]["helios.kind"] == "build"
    assert {"helios.app", "helios.release", "helios.git_sha", "helios.team"} <= set(job["Meta"])
    group = job["TaskGroups"][0]
    assert group["RestartPolicy"] == {"Attempts": 0, "Mode": "fail"}
    assert group["ReschedulePolicy"] == {"Attempts": 0, "Unlimited": False}
    durations = [leaf for path, leaf in walk(job) if path[-1] == "KillTimeout"]
    assert durations and all(type(value) is int and value > 0 for value in durations)


def test_settings_decide_pool_limits_images_and_registry() -> None:
    settings = Settings.from_env(
        environ={
            "HELIOS_REGISTRY": "127.0.0.1:5000",
            "HELIOS_REGISTRY_INSECURE": "true",
            "HELIOS_BUILD_NODE_POOL": "builders",
            "HELIOS_BUILD_CPU": "1500",
            "HELIOS_BUILD_MEMORY": "3072",
            "HELIOS_BUILD_DISK": "10240",
            "HELIOS_BUILD_TIMEOUT": "120",
            "HELIOS_BUILDER_IMAGE": "registry.internal/buildah:1.40",
            "HELIOS_BUILD_GIT_IMAGE": "registry.internal/git:2.47",
            "NOMAD_NAMESPACE": "apps",
            "HELIOS_NOMAD_DATACENTERS": "eu-1",
        }
    )
    fields = {**CANONICAL, **build_fields_from_settings(settings)}
    job = render_build_job(BuildSpec(**fields))["Job"]
    assert (job["NodePool"], job["Namespace"], job["Datacenters"]) == ("builders", "apps", ["eu-1"])
    group = job["TaskGroups"][0]
    assert group["EphemeralDisk"] == {"SizeMB": 10240}
    fetch, build = tasks({"Job": job}).values()
    assert build["Resources"] == {"CPU": 1500, "MemoryMB": 3072}
    assert build["Env"]["HELIOS_TIME_LIMIT"] == "120" and fetch["Env"]["HELIOS_TIME_LIMIT"] == "120"
    assert build["Env"]["HELIOS_TLS_VERIFY"] == "false"
    assert build["Config"]["image"] == "registry.internal/buildah:1.40"
    assert fetch["Config"]["image"] == "registry.internal/git:2.47"
    defaults = build_fields_from_settings(Settings.from_env(environ={}))
    assert defaults["node_pool"] == "build" and defaults["builder_image"] == BUILDER_IMAGE


def test_render_is_deterministic_and_shares_no_state() -> None:
    spec = canonical()
    first = render_build_job(spec)
    shuffled = canonical(build_args=dict(reversed(list(CANONICAL["build_args"].items()))))
    assert json.dumps(render_build_job(shuffled)) == json.dumps(first)
    before = copy.deepcopy(first)
    tasks(first)["build"]["Config"]["security_opt"].append("x")
    tasks(first)["build"]["Config"]["args"].append("x")
    assert render_build_job(spec) == before


# ---------------------------------------------------------------------------------------------
# The rootless builder's security settings
# ---------------------------------------------------------------------------------------------


def test_builder_gets_exactly_the_security_settings_rootless_buildah_needs() -> None:
    job = render_build_job(canonical(git_auth=True, registry_auth=True))
    fetch, build = tasks(job)["fetch"], tasks(job)["build"]
    assert build["Config"]["security_opt"] == ["seccomp=unconfined", "apparmor=unconfined"]
    assert list(SECURITY_OPT) == build["Config"]["security_opt"]
    assert build["User"] == "build" and fetch["User"] == "nobody"
    # Nothing broader anywhere: no privileged mode, capabilities, devices, host mounts or
    # host namespaces; the fetcher runs with Docker's defaults.
    broader = {
        "privileged",
        "cap_add",
        "devices",
        "volumes",
        "mount",
        "mounts",
        "network_mode",
        "pid_mode",
        "ipc_mode",
        "userns_mode",
        "sysctl",
        "readonly_rootfs",
    }
    for task in (fetch, build):
        assert not broader & set(task["Config"]), task["Name"]
    assert "security_opt" not in fetch["Config"]
    text = json.dumps(job)
    assert "privileged" not in text and "/dev/fuse" not in text


# ---------------------------------------------------------------------------------------------
# The fixed scripts
# ---------------------------------------------------------------------------------------------


def test_scripts_are_fixed_text_that_nomad_does_not_interpolate() -> None:
    for script in (RUNNER_SCRIPT, FETCH_SCRIPT, BUILD_SCRIPT):
        assert "${" not in script  # Nomad interpolates ${...} in docker args
        assert "{{" not in script and "eval" not in script.split()
    # Every value the steps use comes from the task's Env (or Nomad's template env).
    for script, task, template_env in (
        (FETCH_SCRIPT, "fetch", {"HELIOS_GIT_USERNAME", "HELIOS_GIT_PASSWORD"}),
        (BUILD_SCRIPT, "build", {"HELIOS_REGISTRY_USERNAME", "HELIOS_REGISTRY_PASSWORD"}),
    ):
        used = set(re.findall(r"\$(HELIOS_[A-Z_]+)", script))
        env = set(tasks(render_build_job(canonical()))[task]["Env"])
        assert used - env == template_env, task
    assert set(re.findall(r"\$(HELIOS_[A-Z_]+)", RUNNER_SCRIPT)) == {"HELIOS_TIME_LIMIT"}


@pytest.mark.parametrize("script", ["RUNNER_SCRIPT", "FETCH_SCRIPT", "BUILD_SCRIPT"])
def test_scripts_parse_as_posix_shell(script: str) -> None:
    """Checked by dash (/bin/sh here); the images run bash (builder) and BusyBox ash (git)."""
    text = getattr(build_module, script)
    done = subprocess.run(["/bin/sh", "-n", "-c", text], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    broken = subprocess.run(["/bin/sh", "-n", "-c", text + "\nif"], capture_output=True)
    assert broken.returncode != 0  # the check can fail


def test_build_script_builds_caches_and_pushes_as_documented() -> None:
    assert "--isolation chroot --layers" in BUILD_SCRIPT
    assert '--cache-from "$HELIOS_CACHE_REPO"' in BUILD_SCRIPT
    # --cache-to appears once, only when the Env says this build may write the cache.
    assert BUILD_SCRIPT.count("--cache-to") == 1
    assert re.search(
        r'if \[ "\$HELIOS_CACHE_WRITE" = 1 \]; then\n\s+set -- "\$@" --cache-to', BUILD_SCRIPT
    )
    assert '--tls-verify="$HELIOS_TLS_VERIFY"' in BUILD_SCRIPT
    assert '--digestfile "$HELIOS_DIGEST_FILE"' in BUILD_SCRIPT
    assert f"printf '%s %s\\n' {DIGEST_MARKER} " in BUILD_SCRIPT
    assert "--password-stdin" in BUILD_SCRIPT and "--password " not in BUILD_SCRIPT
    assert '--depth 1 origin "$HELIOS_GIT_SHA"' in FETCH_SCRIPT
    assert 'timeout "$HELIOS_TIME_LIMIT"' in RUNNER_SCRIPT


# ---------------------------------------------------------------------------------------------
# The cache: read by every build, written only by the tracked branch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "tracked", "writes"),
    [("main", "main", "1"), ("feature/x", "main", "0"), ("main", "release/1.2", "0")],
)
def test_only_the_tracked_branch_writes_the_cache(branch: str, tracked: str, writes: str) -> None:
    spec = canonical(branch=branch, tracked_branch=tracked)
    env = tasks(render_build_job(spec))["build"]["Env"]
    assert env["HELIOS_CACHE_WRITE"] == writes
    assert spec.writes_cache is (writes == "1")
    assert env["HELIOS_CACHE_REPO"] == "registry.internal:5000/acme/shop/cache"


@settings(max_examples=60, deadline=None)
@given(branch=st.from_regex(r"[a-z]{1,8}(/[a-z0-9]{1,8})?", fullmatch=True))
def test_cache_writing_follows_the_branch_whatever_it_is(branch: str) -> None:
    for tracked in (branch, "main"):
        env = tasks(render_build_job(canonical(branch=branch, tracked_branch=tracked)))["build"]
        assert env["Env"]["HELIOS_CACHE_WRITE"] == ("1" if branch == tracked else "0")


# ---------------------------------------------------------------------------------------------
# Hostile values: refused, or only in Env
# ---------------------------------------------------------------------------------------------


def hostile_lines() -> list[str]:
    """The lines of tests/hostile_inputs.txt, escapes decoded, @repeat expanded."""
    lines = []
    for raw in HOSTILE_FILE.read_text("ascii").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw.startswith("@repeat "):
            _, count, text = raw.split(" ", 2)
            lines.append(text.encode("ascii").decode("unicode_escape") * int(count))
        else:
            lines.append(raw.encode("ascii").decode("unicode_escape"))
    return lines


HOSTILE = [
    *hostile_lines(),
    "$(touch /tmp/pwned)",
    "`id`",
    "'; id; '",
    '"; id; "',
    "a\nb",
    "-oProxyCommand=id",
    "--upload-pack=id",
    "ext::sh -c id",
    "../../etc/passwd",
    "/etc/passwd",
    "https://user:pass@github.com/acme/shop.git",
    "https://github.com/acme/shop.git?x=1",
    "file:///tmp/../etc",
]

# Where each field's value may appear in the job (Env keys of a task, or other leaves).
FIELD_PATHS: dict[str, set[str]] = {
    "git_url": {"fetch.Env.HELIOS_GIT_URL"},
    "branch": {"fetch.Env.HELIOS_GIT_BRANCH", "Meta.helios.branch"},
    "dockerfile": {"build.Env.HELIOS_DOCKERFILE"},
    "context": {"build.Env.HELIOS_CONTEXT"},
    "build_arg_key": {"build.Env.HELIOS_BUILD_ARGS"},
    "build_arg_value": {"build.Env.HELIOS_BUILD_ARGS"},
    "repository": {"build.Env.HELIOS_IMAGE", "build.Env.HELIOS_CACHE_REPO"},
    "registry": {
        "build.Env.HELIOS_IMAGE",
        "build.Env.HELIOS_CACHE_REPO",
        "build.Env.HELIOS_REGISTRY",
    },
}


def spec_with(field: str, value: str) -> BuildSpec:
    """The canonical spec with one user field set to value (the branch is also tracked)."""
    if field == "build_arg_key":
        return canonical(build_args={value: "x"})
    if field == "build_arg_value":
        return canonical(build_args={"GREETING": value})
    if field == "branch":
        return canonical(branch=value, tracked_branch=value)
    return canonical(**{field: value})


def leaves_by_place(job: dict[str, Any]) -> dict[str, Any]:
    """Leaves of the job keyed 'fetch.Env.X' for task fields, else the path after Job."""
    places = {}
    for path, leaf in walk(job):
        if path[:2] == ("Job", "TaskGroups") and len(path) > 5 and path[3] == "Tasks":
            task = job["Job"]["TaskGroups"][0]["Tasks"][path[4]]["Name"]
            place = ".".join([task, *map(str, path[5:])])
        else:
            place = ".".join(map(str, path[1:]))
        places[place] = leaf
    return places


def check_value_only_in_its_fields(field: str, value: str) -> bool:
    """Render with value in field: refused (False), or it changed only the field's places, the
    scripts stayed constant and nothing user-given carries '${' (True)."""
    try:
        spec = spec_with(field, value)
    except ValidationError as error:
        assert error.message and error.field
        return False
    job = render_build_job(spec)
    base = leaves_by_place(render_build_job(canonical()))
    changed = {
        place for place, leaf in leaves_by_place(job).items() if base.get(place, object()) != leaf
    }
    assert changed <= FIELD_PATHS[field], (field, value, changed - FIELD_PATHS[field])
    for name, task in tasks(job).items():
        scripts = {"fetch": FETCH_SCRIPT, "build": BUILD_SCRIPT}
        assert task["Config"]["entrypoint"] == ["/bin/sh", "-c"]
        assert task["Config"]["args"] == [RUNNER_SCRIPT, f"helios-{name}", scripts[name]]
        for key, env_value in task["Env"].items():
            assert "${" not in env_value or env_value == NOMAD_PATHS[key]
    return True


@pytest.mark.parametrize("field", sorted(FIELD_PATHS))
def test_hostile_values_are_refused_or_stay_in_env(field: str) -> None:
    accepted = [line for line in HOSTILE if check_value_only_in_its_fields(field, line)]
    # The free-text field takes most of them, as data; the others refuse nearly all.
    if field == "build_arg_value":
        assert len(accepted) > len(HOSTILE) // 2
        assert "$(touch /tmp/pwned)" in accepted and "'; id; '" in accepted
    else:
        assert "$(touch /tmp/pwned)" not in accepted and "a\nb" not in accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELD_PATHS)), value=st.text(max_size=60))
def test_any_text_is_refused_or_stays_in_env(field: str, value: str) -> None:
    check_value_only_in_its_fields(field, value)


@settings(max_examples=60, deadline=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00\r\n")))
def test_build_arg_values_reach_the_env_exactly(value: str) -> None:
    if "${" in value:
        with pytest.raises(ValidationError, match="Nomad would replace"):
            spec_with("build_arg_value", value)
        return
    env = tasks(render_build_job(spec_with("build_arg_value", value)))["build"]["Env"]
    assert env["HELIOS_BUILD_ARGS"] == f"GREETING={value}\n"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("git_url", "git@github.com:acme/shop.git", "https://HOST[:PORT]/PATH"),
        ("git_url", "https://user:pw@github.com/acme/shop.git", "give a git credential"),
        ("git_url", "https://github.com/acme/../shop.git", "not a clone URL"),
        ("git_url", "ext::sh -c id", "not a clone URL"),
        ("git_sha", "3f2a9c1", "40 lowercase hex digits"),
        ("git_sha", "G" * 40, "full commit id"),
        ("branch", "-evil", "no leading '-'"),
        ("branch", "a..b", "no '..'"),
        ("tracked_branch", "a b", "tracked_branch"),
        ("dockerfile", "../Dockerfile", "no '..'"),
        ("dockerfile", "/etc/passwd", "not starting with '/'"),
        ("dockerfile", ".", "must name a file"),
        ("context", "app/../..", "no '..'"),
        ("context", "a b", "inside the repository"),
        ("build_args", {"1BAD": "x"}, "starting with a letter or '_'"),
        ("build_args", {"A": "x\ny"}, "one line"),
        ("build_args", {"A": "${NOMAD_TOKEN}"}, "Nomad would replace"),
        ("build_args", "A=1", "must be a list"),
        ("registry", "https://registry.internal", "HOST[:PORT]"),
        ("registry", "registry.internal:99999", "registry address"),
        ("repository", "Acme/Shop", "lowercase"),
        ("node_pool", "a b", "node_pool"),
        ("namespace", "a/b", "namespace"),
        ("cpu_mhz", 10, "from 100 to 64000"),
        ("memory_mb", 128, "at least 256 MB"),
        ("disk_mb", 10, "from 300"),
        ("time_limit_s", 0, "from 1 to 86400"),
        ("builder_image", "Not An Image", "valid image reference"),
        ("registry_auth", "yes", "true or false"),
        ("datacenters", [], "at least one"),
    ],
)
def test_bad_values_are_refused_with_what_to_write(field: str, value: Any, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        canonical(**{field: value})
    assert says in caught.value.message, caught.value.message


def test_too_many_build_args_are_refused() -> None:
    with pytest.raises(ValidationError, match="at most 64"):
        canonical(build_args={f"A{i}": "x" for i in range(65)})


# ---------------------------------------------------------------------------------------------
# Credentials: through each task's own Nomad Variable, never the job
# ---------------------------------------------------------------------------------------------


def test_credentials_reach_only_their_task_through_a_variable() -> None:
    spec = canonical(git_auth=True, registry_auth=True)
    job = render_build_job(spec)
    text = json.dumps(job)
    variables = render_build_variables(
        spec,
        git_credential=("x-access-token", GIT_PASSWORD),
        registry_credential=("pusher", REGISTRY_PASSWORD),
    )
    assert set(variables) == {
        "nomad/jobs/shop-build-7/build/fetch",
        "nomad/jobs/shop-build-7/build/build",
    }
    for secret in (GIT_PASSWORD, REGISTRY_PASSWORD, "pusher", "x-access-token"):
        assert secret not in text
    fetch, build = tasks(job)["fetch"], tasks(job)["build"]
    assert fetch["Env"]["HELIOS_GIT_AUTH"] == "1" and build["Env"]["HELIOS_REGISTRY_AUTH"] == "1"
    for task in (fetch, build):
        (template,) = task["Templates"]
        assert template["DestPath"] == "secrets/helios-credentials.env"
        assert template["Envvars"] is True and template["ChangeMode"] == "noop"
    fetch_env = render_template(fetch["Templates"][0]["EmbeddedTmpl"], variables)
    build_env = render_template(build["Templates"][0]["EmbeddedTmpl"], variables)
    # Items come sorted by key (.Tuples): password, then username.
    assert fetch_env == (
        f'HELIOS_GIT_PASSWORD="{GIT_PASSWORD}"\nHELIOS_GIT_USERNAME="x-access-token"\n'
    )
    assert build_env == (
        f'HELIOS_REGISTRY_PASSWORD="{REGISTRY_PASSWORD}"\nHELIOS_REGISTRY_USERNAME="pusher"\n'
    )
    # Each template reads only its own task's path: the build (where the Dockerfile's RUN
    # steps execute) never reads the git credential.
    assert build_variable_path("shop-build-7", "fetch") not in build["Templates"][0]["EmbeddedTmpl"]
    assert build_variable_path("shop-build-7", "build") not in fetch["Templates"][0]["EmbeddedTmpl"]


def test_items_the_template_does_not_know_never_reach_the_env() -> None:
    spec = canonical(registry_auth=True)
    template = tasks(render_build_job(spec))["build"]["Templates"][0]["EmbeddedTmpl"]
    path = build_variable_path(spec.job_id, "build")
    items = {"username": "u", "password": 'p"w\\', "PATH": "/evil", "LD_PRELOAD": "/x.so"}
    assert render_template(template, {path: items}) == (
        'HELIOS_REGISTRY_PASSWORD="p\\"w\\\\"\nHELIOS_REGISTRY_USERNAME="u"\n'
    )


def test_without_credentials_no_template_and_no_variable() -> None:
    job = render_build_job(canonical())
    assert all("Templates" not in task for task in tasks(job).values())
    assert render_build_variables(canonical()) == {}


def test_credentials_must_match_what_the_spec_says() -> None:
    with pytest.raises(ValueError, match="needs a credential"):
        render_build_variables(canonical(registry_auth=True))
    with pytest.raises(ValueError, match="has no use for a credential"):
        render_build_variables(canonical(), git_credential=("u", "p"))
    with pytest.raises(ValidationError, match="without NUL"):
        render_build_variables(canonical(git_auth=True), git_credential=("u", ""))


# ---------------------------------------------------------------------------------------------
# Purity
# ---------------------------------------------------------------------------------------------


def test_the_renderer_imports_only_the_stdlib_and_the_pure_core() -> None:
    source = Path(build_module.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    allowed_panel = {"panel.spec", "panel.validation", "panel.states", "panel.render.buildpacks"}
    stdlib = {"__future__", "re", "collections.abc", "dataclasses", "typing"}
    assert imported <= allowed_panel | stdlib, imported - allowed_panel - stdlib


# ---------------------------------------------------------------------------------------------
# The registry's CA
# ---------------------------------------------------------------------------------------------

CA_PEM = "-----BEGIN CERTIFICATE-----\n" + "QUJD" * 19 + "\nQUJDRA==\n-----END CERTIFICATE-----\n"


def test_the_registrys_ca_is_a_file_of_the_build_task_and_the_job_stays_valid(
    strict_spec: dict[str, Any],
) -> None:
    job = render_build_job(canonical(registry_ca=CA_PEM.replace("\n", "\r\n")))
    assert validate_body(job, "JobRegisterRequest", strict_spec) == []
    build = tasks(job)["build"]
    assert build["Templates"] == [
        {"EmbeddedTmpl": CA_PEM, "DestPath": "local/registry-certs/ca.crt", "ChangeMode": "noop"}
    ]
    assert build["Env"]["HELIOS_CERT_DIR"] == "${NOMAD_TASK_DIR}/registry-certs"
    assert "Templates" not in tasks(render_build_job(canonical()))["build"]


@pytest.mark.parametrize(
    "value",
    [
        "not a certificate",
        CA_PEM.replace("QUJD", '{{ env "NOMAD_TOKEN" }}', 1),
        "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
        CA_PEM + "trailing text\n",
        CA_PEM * 1000,
    ],
    ids=["text", "template", "private-key", "trailing", "too-long"],
)
def test_anything_but_certificates_is_refused_as_the_registrys_ca(value: str) -> None:
    with pytest.raises(ValidationError, match="registry_ca must"):
        canonical(registry_ca=value)
