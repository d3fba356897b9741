"""The systemd units Helios ships (systemd/): valid for systemd, each stopping the way its
process needs, and that stop tried on the real processes.

systemd stops a unit by sending KillSignal to *every* process of its control group at once
(KillMode=control-group, the default): a worker's job process would die mid-job, gunicorn's
workers would drop their requests. Helios's units say KillMode=mixed: SIGTERM to the main
process only, which stops its children in order; SIGKILL to whatever is left once it exits
or after TimeoutStopSec. The tests below send exactly that."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from rq import Queue
from rq.job import Job, JobStatus

from conftest import REPO_ROOT, wait_until

UNITS = REPO_ROOT / "systemd"
SERVICES = {
    "helios-panel.service": "panel",
    "helios-worker@.service": "worker",
    "helios-follower.service": "follower",
}


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (bash .ci/run does)")
    helios = Path(sys.executable).with_name("helios")
    assert helios.exists(), f"{helios}: install Helios into this venv (make install-dev)"
    names = []
    for unit in sorted(UNITS.glob("helios*.service")) + sorted(UNITS.glob("*.target")):
        text = unit.read_text().replace("/opt/helios/venv/bin/helios", str(helios))
        # The environment file exists on an installed host only.
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "info"},
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize(("unit", "role"), SERVICES.items())
def test_each_service_stops_its_main_process_only_and_runs_its_role(unit, role):
    service = read_unit(unit)["Service"]
    assert service["ExecStart"] == f"/opt/helios/venv/bin/helios {role}"
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert service["User"] == "helios" and service["EnvironmentFile"] == "/etc/helios/helios.env"
    assert int(service["TimeoutStopSec"]) >= 30
    assert read_unit(unit)["Install"]["WantedBy"] == "helios.target"
    wanted = read_unit("helios.target")["Unit"]["Wants"].split()
    assert unit.replace("@.", "@1.") in wanted


def systemd_stop(main: psutil.Process, timeout: float) -> int:
    """What `systemctl stop` does with KillMode=mixed: SIGTERM to the main process; once it
    exits (or after ``timeout``), SIGKILL to every process left. Returns the main's exit code;
    fails if anything was left to kill."""
    tree = main.children(recursive=True)
    main.send_signal(signal.SIGTERM)
    code = main.wait(timeout=timeout)
    _gone, left = psutil.wait_procs([p for p in tree if p.is_running()], timeout=5)
    for process in left:
        process.kill()
    assert left == [], f"left for SIGKILL: {[p.cmdline() for p in left]}"
    return code


def test_stopping_the_worker_unit_lets_the_current_job_finish(start_worker, redis_conn, tmp_path):
    marker = tmp_path / "job.txt"
    worker = start_worker()
    Queue("default", connection=redis_conn).enqueue(
        "tests.jobs.slow_job", str(marker), 3.0, job_id="unit-stop"
    )
    wait_until(marker.exists, timeout=30, what="the worker to start the job")
    code = systemd_stop(psutil.Process(worker.pid), timeout=60)
    log = Path(worker.log_path).read_text()
    assert code == 0, log
    assert marker.read_text() == "started\nfinished\n", log
    assert Job.fetch("unit-stop", connection=redis_conn).get_status() == JobStatus.FINISHED


def test_stopping_the_panel_and_follower_units_leaves_nothing(live_panel, start_follower):
    follower = start_follower()
    wait_until(lambda: "follower started" in Path(follower.log_path).read_text(), timeout=30,
               what="the follower to start")  # fmt: skip
    assert systemd_stop(psutil.Process(follower.pid), timeout=30) == 0
    bind = live_panel.removeprefix("http://")
    panel = next(p for p in psutil.process_iter(["cmdline"]) if _serves(p, bind))
    assert systemd_stop(panel, timeout=30) == 0


def _serves(process: psutil.Process, bind: str) -> bool:
    """Whether ``process`` is the `helios panel` (gunicorn's master) bound to ``bind``."""
    try:
        return process.info["cmdline"][-2:] == ["panel", "panel"] and (
            process.environ().get("HELIOS_BIND") == bind
        )
    except (psutil.Error, TypeError):
        return False
