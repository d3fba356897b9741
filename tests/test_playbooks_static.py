"""Static checks of playbooks/ and inventory/: ansible-lint, syntax, yamllint, vagrant, and
no templated value that a shell could read as code."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


# ---------------------------------------------------------------------------------------------
# Shells never read a templated value as code
# ---------------------------------------------------------------------------------------------

SHELL_TEMPLATES = sorted((REPO_ROOT / "playbooks").rglob("*.sh.j2"))
_EXPRESSION_RE = re.compile(r"{{(.*?)}}", re.S)
# A value quoted whole, or a list whose items are each quoted.
_QUOTED_RE = re.compile(r"\|\s*quote\s*$|\|\s*map\(\s*'quote'\s*\)\s*\|\s*join\(\s*' '\s*\)\s*$")
HOSTILE = "$(touch MARK)`touch MARK`;touch MARK;'\"\n touch MARK #"
SHELL_MODULES = {"shell", "ansible.builtin.shell", "raw", "ansible.builtin.raw",
                 "script", "ansible.builtin.script"}  # fmt: skip
COMMAND_MODULES = {"command", "ansible.builtin.command"}


def test_there_are_shell_templates_to_check():
    names = {path.name for path in SHELL_TEMPLATES}
    assert {"nomad-acl-bootstrap.sh.j2", "consul-acl-setup.sh.j2"} <= names


@pytest.mark.parametrize("template", SHELL_TEMPLATES, ids=lambda path: path.name)
def test_every_value_in_a_shell_template_is_quoted(template):
    unquoted = [
        f"{template.relative_to(REPO_ROOT)}:{template.read_text()[: m.start()].count(chr(10)) + 1}:"
        f" {{{{{m.group(1)}}}}}"
        for m in _EXPRESSION_RE.finditer(template.read_text())
        if not _QUOTED_RE.search(m.group(1).strip())
    ]
    assert not unquoted, "end each expression with `| quote`:\n" + "\n".join(unquoted)


def _tasks(document):
    """Every task mapping in a playbook or task file, blocks and plays included."""
    if isinstance(document, list):
        for item in document:
            yield from _tasks(item)
    elif isinstance(document, dict):
        yield document
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from _tasks(document.get(key))


def _task_files():
    playbooks = REPO_ROOT / "playbooks"
    return [*playbooks.glob("*.yml"), *playbooks.glob("roles/*/tasks/*.yml"),
            *playbooks.glob("roles/*/handlers/*.yml")]  # fmt: skip


def test_no_task_hands_a_templated_value_to_a_shell():
    problems = []
    for path in _task_files():
        for task in _tasks(yaml.safe_load(path.read_text())):
            where = f"{path.relative_to(REPO_ROOT)}: {task.get('name', '?')}"
            for module in SHELL_MODULES & set(task):
                problems.append(f"{where}: {module} runs a shell; use command with argv")
            for module in COMMAND_MODULES & set(task):
                args = task[module]
                line = args if isinstance(args, str) else (args or {}).get("cmd", "")
                if "{{" in str(line):
                    problems.append(f"{where}: a templated command line; use argv")
            # validate: commands are split like a shell would; only %s may vary.
            for args in task.values():
                if isinstance(args, dict) and "{{" in str(args.get("validate", "")):
                    problems.append(f"{where}: a templated validate command")
    assert not problems, "\n".join(problems)


def _render(template: Path, value: str) -> str:
    """The template rendered with ``value`` for every variable, through Ansible's filters."""
    import jinja2
    import jinja2.meta
    from ansible.plugins.filter.core import FilterModule

    # Shell text, not HTML: no autoescape, as Ansible renders templates.
    environment = jinja2.Environment(  # noqa: S701
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    environment.filters.update(FilterModule().filters())
    parsed = environment.parse(template.read_text())
    names = jinja2.meta.find_undeclared_variables(parsed)
    variables = {name: _Anything(value) for name in names}
    return environment.from_string(template.read_text()).render(**variables)


class _Anything(str):
    """A hostile string that also answers attribute lookups (``consul_ports.https``)."""

    def __getattr__(self, name: str) -> str:
        return str(self)


@pytest.mark.parametrize("template", SHELL_TEMPLATES, ids=lambda path: path.name)
def test_a_shell_template_runs_hostile_values_as_data(template, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text(_render(template, HOSTILE))
    # It waits for a service that is not there: by the timeout it has run what it would run.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["sh", str(script)], cwd=tmp_path, capture_output=True, timeout=3,
                       env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert not (tmp_path / "MARK").exists(), "a templated value ran as shell code"
