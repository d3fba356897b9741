"""Static checks of playbooks/ and inventory/: ansible-lint, syntax, yamllint, vagrant."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
YAML_PATHS = ["playbooks", "inventory", ".yamllint", ".ansible-lint"]


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' or bash .ci/run)")
    return path


def _run(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"}  # fmt: skip
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_ansible_lint_production_profile():
    result = _run(_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "verify.yml"])
def test_playbook_syntax(playbook):
    result = _run(_tool("ansible-playbook"), "--syntax-check", "-i", "inventory/hosts.yml",
                  f"playbooks/{playbook}")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint():
    result = _run(_tool("yamllint"), "--strict", *YAML_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_variable_is_prefixed_and_documented():
    import re

    for role_dir in sorted((REPO_ROOT / "playbooks" / "roles").iterdir()):
        role = role_dir.name
        defaults = (role_dir / "defaults" / "main.yml").read_text()
        names = re.findall(r"(?m)^([a-z_][a-z0-9_]*):", defaults)
        assert names, role
        readme = (role_dir / "README.md").read_text()
        for name in names:
            assert name.startswith(f"{role}_"), f"{role}: {name} lacks the role prefix"
            assert f"`{name}`" in readme, f"{role}/README.md does not list {name}"
        for line in (role_dir / "vars" / "main.yml").read_text().splitlines():
            match = re.match(r"^([a-z_][a-z0-9_]*):", line)
            assert match is None or match.group(1).startswith(f"_{role}_"), (role, line)


def test_vagrantfile_is_valid():
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        reason = "vagrant is not installed (Debian package vagrant; bash .ci/run installs it)"
        if os.environ.get("HELIOS_REQUIRE_CONVERGE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    result = _run(vagrant, "validate", "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
