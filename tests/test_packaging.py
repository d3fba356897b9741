"""The wheel: it ships the playbooks, and an installed Helios (no checkout) finds and runs them.

The wheel is built from a copy of the sources (so nothing is written into the checkout), without
build isolation (offline: setuptools and wheel come with the dev extras), and installed into a
throw-away virtualenv whose only link to this one is a .pth line making the already installed
dependencies importable (the editable install of this checkout is not, since .pth files in an
added directory are not read).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from panel.config import Settings
from panel.reconcile.provision import installed_playbooks, playbooks_dir

from conftest import REPO_ROOT, SETTING_NAMES

VENV_BIN = Path(sys.executable).parent
SOURCES = ["pyproject.toml", "setup.py", "README.md", "panel", "playbooks"]

# Run by the installed interpreter: where panel and its playbooks are, with and without
# HELIOS_PLAYBOOKS_DIR, or the error saying what to set.
PROBE = """
import json, sys
import panel
from panel.config import Settings
from panel.drivers.ansible import AnsibleError
from panel.reconcile.provision import driver_for, installed_playbooks, playbooks_dir

settings = Settings.from_env()
try:
    found = str(driver_for(settings).playbooks_dir)
except AnsibleError as exc:
    found = "error: " + str(exc)
print(json.dumps({
    "panel": panel.__file__,
    "installed": str(installed_playbooks()),
    "found": found,
    "override": str(playbooks_dir(settings.replace(playbooks_dir=sys.argv[1]))),
}))
"""


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the current sources."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    out = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--wheel-dir", str(out), str(source)], cwd=work)  # fmt: skip
    (built,) = out.glob("helios-*.whl")
    return built


def test_the_wheel_ships_every_playbook_and_role_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name.removeprefix("panel/playbooks/") for name in names
               if name.startswith("panel/playbooks/")}  # fmt: skip
    assert {"site.yml", "verify.yml"} <= shipped
    roles = sorted(path.name for path in (REPO_ROOT / "playbooks" / "roles").iterdir())
    assert roles, "no roles in playbooks/roles"
    for role in roles:
        assert f"roles/{role}/tasks/main.yml" in shipped, role
    in_checkout = {str(path.relative_to(REPO_ROOT / "playbooks"))
                   for path in (REPO_ROOT / "playbooks").rglob("*") if path.is_file()
                   and "__pycache__" not in path.parts}  # fmt: skip
    assert shipped == in_checkout
    # The rest of the package is still there.
    assert "panel/__init__.py" in names
    assert any(name.startswith("panel/templates/") for name in names)
    assert any(name.startswith("panel/migrations/") for name in names)


def test_an_installed_helios_finds_its_playbooks_and_they_pass_the_syntax_check(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    # Installed before the dependencies are made visible: pip then sees no other helios.
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)  # fmt: skip
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=tmp_path).stdout.strip())  # fmt: skip
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "helios-test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")

    outside = tmp_path / "elsewhere"  # not the checkout, and no playbooks/ beside it
    outside.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTING_NAMES and k != "PYTHONPATH" and not k.startswith("ANSIBLE_")
    }
    env["HELIOS_DATA_DIR"] = str(tmp_path / "data")  # fmt: skip
    probe = [str(python), "-c", PROBE, str(tmp_path / "chosen")]
    seen = json.loads(run(probe, cwd=outside, env=env).stdout)

    package = site / "panel"
    assert Path(seen["panel"]) == package / "__init__.py"
    assert Path(seen["installed"]) == package / "playbooks"
    assert Path(seen["found"]) == package / "playbooks"
    assert seen["override"] == str(tmp_path / "chosen")
    assert REPO_ROOT not in Path(seen["found"]).parents

    # The installed site.yml and verify.yml, with the installed roles, as the driver runs them.
    found = Path(seen["found"])
    playbook = shutil.which("ansible-playbook", path=str(VENV_BIN))
    assert playbook is not None, "ansible-playbook is not installed (pip install -e '.[dev]')"
    checked = run([playbook, "--syntax-check", "-i", "localhost,", str(found / "site.yml"),
                   str(found / "verify.yml")], cwd=outside,
                  env={**env, "ANSIBLE_ROLES_PATH": str(found / "roles"),
                       "ANSIBLE_NOCOLOR": "1"})  # fmt: skip
    assert f"playbook: {found / 'site.yml'}" in checked.stdout

    # A wheel without them: the error says what to set.
    shutil.rmtree(package / "playbooks")
    seen = json.loads(run(probe, cwd=outside, env=env).stdout)
    assert seen["installed"] == "None"
    assert seen["found"].startswith("error: Helios's playbooks were not found")
    assert "set HELIOS_PLAYBOOKS_DIR to the folder holding site.yml and roles/" in seen["found"]
    assert seen["override"] == str(tmp_path / "chosen")


def test_a_checkout_uses_its_own_playbooks(settings: Settings):
    assert installed_playbooks() == REPO_ROOT / "playbooks"
    assert playbooks_dir(settings.replace(playbooks_dir="")) == REPO_ROOT / "playbooks"
