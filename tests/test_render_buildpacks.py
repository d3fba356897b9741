"""The zero-config builder (Cloud Native Buildpacks) as rendered into the build job.

The job renders and validates strictly (tests/test_render_build.py parametrizes it too); the
task keeps Docker's default security; its script is fixed text whose values come from Env.
The script itself runs here for real under /bin/sh, with a stand-in for the lifecycle's
``creator`` (the Paketo builder image cannot be pulled on these machines): what the script
does around it is what is tested — the context copied, build args as platform env files, the
registry credential as CNB_REGISTRY_AUTH, the cache flag only on the tracked branch, the
digest read from the lifecycle's report.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from panel.render.build import RUNNER_SCRIPT, BuildSpec, render_build_job
from panel.render.buildpacks import BUILDPACKS_BUILDER, BUILDPACKS_SCRIPT

SHA = "5e" * 20
DIGEST = "sha256:" + "ab" * 32


def spec(**changes: Any) -> BuildSpec:
    values = {
        "slug": "shop", "team": "acme", "release": 3,
        "git_url": "https://github.com/acme/shop.git", "git_sha": SHA, "branch": "main",
        "tracked_branch": "main", "registry": "registry.internal:5000", "repository": "acme/shop",
        "build_args": {"BP_NODE_VERSION": "20.*", "GREETING": "hello = world"},
        "builder": "buildpacks",
    }  # fmt: skip
    return BuildSpec(**{**values, **changes})


def build_task(job: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in job["Job"]["TaskGroups"][0]["Tasks"] if t["Name"] == "build")


def test_the_buildpacks_task_keeps_dockers_default_security():
    job = render_build_job(spec(registry_auth=True))
    task = build_task(job)
    assert task["Config"]["image"] == BUILDPACKS_BUILDER
    assert "security_opt" not in task["Config"] and "User" not in task
    assert job["Job"]["Meta"]["helios.builder"] == "buildpacks"
    assert task["Env"]["CNB_PLATFORM_API"] == "0.12"
    assert "HELIOS_DOCKERFILE" not in task["Env"]  # no Dockerfile is involved


def test_the_script_is_fixed_text_and_reads_only_env():
    assert "${" not in BUILDPACKS_SCRIPT and "{{" not in BUILDPACKS_SCRIPT
    used = set(re.findall(r"\$(HELIOS_[A-Z_]+)", BUILDPACKS_SCRIPT))
    env = set(build_task(render_build_job(spec()))["Env"])
    assert used - env == {"HELIOS_REGISTRY_USERNAME", "HELIOS_REGISTRY_PASSWORD"}
    checked = subprocess.run(["/bin/sh", "-n", "-c", BUILDPACKS_SCRIPT], capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_an_unknown_builder_is_refused():
    from panel.validation import ValidationError

    with pytest.raises(ValidationError, match="builder must be one of dockerfile, buildpacks"):
        spec(builder="nixpacks")


CREATOR = """#!/bin/sh
# A stand-in for /cnb/lifecycle/creator: records how it was called, then writes a report.
printf '%s\\n' "$@" > "$RECORD/args"
printf '%s' "${CNB_REGISTRY_AUTH:-}" > "$RECORD/auth"
ls "$RECORD/../workspace" > "$RECORD/workspace"
while [ $# -gt 0 ]; do
  if [ "$1" = -report ]; then report=$2; fi
  shift
done
if [ -n "$FAIL" ]; then echo "ERROR: no buildpack groups passed detection" >&2; exit 20; fi
printf '[image]\\n  tags = ["x"]\\n  digest = "%s"\\n  manifest-size = 1\\n' "$DIGEST" > "$report"
"""


def run_script(tmp_path: Path, job: dict[str, Any], *, fail: bool = False, auth: bool = False):
    """Run the build task's command as rendered, Nomad's ${NOMAD_*} paths filled in."""
    task = build_task(job)
    alloc, local = tmp_path / "alloc", tmp_path / "task"
    source = alloc / "data" / "source"
    (source / "web").mkdir(parents=True)
    (source / "web" / "package.json").write_text("{}")
    (source / "README").write_text("hello")
    record = local / "record"
    record.mkdir(parents=True)
    creator = tmp_path / "creator"
    creator.write_text(CREATOR)
    creator.chmod(0o755)
    env = {
        name: value.replace("${NOMAD_ALLOC_DIR}", str(alloc)).replace(
            "${NOMAD_TASK_DIR}", str(local)
        )
        for name, value in task["Env"].items()
    }
    env.update(
        PATH=os.environ["PATH"], HELIOS_CREATOR=str(creator), RECORD=str(record),
        DIGEST=DIGEST, FAIL="1" if fail else "",
    )  # fmt: skip
    if auth:
        env.update(HELIOS_REGISTRY_USERNAME="builder", HELIOS_REGISTRY_PASSWORD="p@ss:word")
    entry, args = task["Config"]["entrypoint"], task["Config"]["args"]
    assert entry == ["/bin/sh", "-c"] and args[0] == RUNNER_SCRIPT
    done = subprocess.run([*entry, *args], env=env, capture_output=True, text=True, timeout=30)
    return done, record, local, alloc


def test_the_script_builds_with_the_lifecycle_and_prints_its_digest(tmp_path):
    job = render_build_job(spec(context="web", registry_auth=True))
    done, record, local, alloc = run_script(tmp_path, job, auth=True)
    assert done.returncode == 0, done.stderr
    assert f"helios-build-digest {DIGEST}" in done.stdout.splitlines()
    assert (alloc / "data" / "image-digest").read_text().strip() == DIGEST
    args = (record / "args").read_text().splitlines()
    assert args[-1] == f"registry.internal:5000/acme/shop:{SHA}"
    assert args[args.index("-cache-image") + 1] == "registry.internal:5000/acme/shop/cache"
    assert "-insecure-registry" not in args
    assert (record / "workspace").read_text().split() == ["package.json"]  # the context only
    env_dir = local / "platform" / "env"
    assert (env_dir / "GREETING").read_text() == "hello = world"
    assert (env_dir / "BP_NODE_VERSION").read_text() == "20.*"
    auth = json.loads((record / "auth").read_text())
    assert auth == {
        "registry.internal:5000": "Basic " + base64.b64encode(b"builder:p@ss:word").decode()
    }
    assert "p@ss:word" not in done.stdout + done.stderr


def test_another_branch_builds_without_the_cache_and_insecure_registries_say_so(tmp_path):
    job = render_build_job(spec(branch="feature", registry_insecure=True))
    done, record, _local, _alloc = run_script(tmp_path, job)
    assert done.returncode == 0, done.stderr
    args = (record / "args").read_text().splitlines()
    assert "-cache-image" not in args
    assert args[args.index("-insecure-registry") + 1] == "registry.internal:5000"
    assert (record / "auth").read_text() == ""  # no credential: none handed on


def test_a_failed_detection_fails_the_build_without_a_digest(tmp_path):
    done, _record, _local, alloc = run_script(tmp_path, render_build_job(spec()), fail=True)
    assert done.returncode == 20
    assert "no buildpack groups passed detection" in done.stderr
    assert "helios-build-digest" not in done.stdout
    assert not (alloc / "data" / "image-digest").exists()


def test_a_context_outside_the_repository_is_refused(tmp_path):
    (tmp_path / "alloc" / "data").mkdir(parents=True)
    job = render_build_job(spec(context="web"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    source = tmp_path / "alloc" / "data" / "source"
    source.mkdir()
    (source / "web").symlink_to(outside)
    task = build_task(job)
    env = {
        k: v.replace("${NOMAD_ALLOC_DIR}", str(tmp_path / "alloc")).replace(
            "${NOMAD_TASK_DIR}", str(tmp_path / "task")
        )
        for k, v in task["Env"].items()
    }
    env["PATH"] = os.environ["PATH"]
    done = subprocess.run(
        [*task["Config"]["entrypoint"], *task["Config"]["args"]], env=env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "leads outside the repository" in done.stderr
