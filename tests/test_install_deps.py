"""`make test` installs the Debian packages the tests need, or says the one command to run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "install-deps"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder another user can read (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="helios-install-deps-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def run_unprivileged(tmp_path: Path, listed: str, **env: str) -> subprocess.CompletedProcess:
    packages = tmp_path / "apt-packages"
    packages.write_text(listed)
    packages.chmod(0o644)
    tmp_path.chmod(0o755)
    script = tmp_path / "ci" / SCRIPT.name  # a copy another user can read
    script.parent.mkdir(mode=0o755, exist_ok=True)
    script.write_text(SCRIPT.read_text())
    argv = ["bash", str(script)]
    if os.geteuid() == 0:  # as a user who may not install anything
        argv = ["runuser", "-u", "nobody", "--", *argv]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd="/",
        env={"PATH": os.environ["PATH"], "HELIOS_APT_PACKAGES": str(packages), **env},
    )  # fmt: skip


def test_without_root_it_stops_at_once_with_the_command_to_run(tmp_path):
    done = run_unprivileged(tmp_path, "# a comment\nbash bash\nhelios-no-such-tool helios-pkg\n")
    assert done.returncode == 1, done.stderr
    assert "not installed: helios-pkg" in done.stderr
    assert "sudo apt-get install -y --no-install-recommends helios-pkg" in done.stderr
    assert "installing" not in done.stdout


def test_nothing_missing_is_quiet_and_skip_apt_goes_on(tmp_path):
    present = run_unprivileged(tmp_path, "bash bash\nmake make\n")
    assert (present.returncode, present.stdout, present.stderr) == (0, "", "")
    skipped = run_unprivileged(tmp_path, "helios-no-such-tool helios-pkg\n", HELIOS_SKIP_APT="1")
    assert skipped.returncode == 0 and "HELIOS_SKIP_APT=1" in skipped.stderr


def test_the_makefile_runs_it_before_the_tests():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "test: test-deps install-dev" in makefile
    assert "bash .ci/install-deps" in makefile
    assert "bash .ci/install-deps" in (REPO_ROOT / ".ci" / "run").read_text()
