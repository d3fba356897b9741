"""Provisioning runs that end badly: workspaces removed whatever happens, runs whose worker died
marked failed, lost jobs queued again, and no SSH key left on disk after a SIGKILL.

Real processes, a real worker and a real ansible-playbook (on localhost with the local
connection: the SSH side is tests/test_converge.py's, on real nodes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from provision_harness import SSH_HOST_KEY, SSH_KEY, ansible_pids, crash_worker
from rq.job import Job, JobStatus

from panel.actions.hosts import add_host, request_provision
from panel.crypto import SecretCipher
from panel.drivers.ansible import AnsibleDriver
from panel.models import Event, ProvisionRun, utcnow
from panel.queue import get_queue
from panel.reconcile import provision
from panel.reconcile.provision import WORKSPACE_TAG, sweep_runs

from conftest import REPO_ROOT, wait_until

pytestmark = pytest.mark.slow

# A site.yml that only waits, on the controller: long enough to be killed in the middle.
WAIT_PLAYBOOK = """---
- name: Wait
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Wait for the test
      ansible.builtin.command:
        argv: [sleep, "{{ helios_test_sleep }}"]
      check_mode: false
      changed_when: false
"""
# A process that opens a workspace, writes a key in it, says where, and waits on its stdin.
HOLDER = """
import sys
from pathlib import Path
from panel.drivers.ansible import AnsibleDriver

driver = AnsibleDriver(Path("."), work_dir=Path(sys.argv[1]))
with driver.workspace(tag=sys.argv[2]) as workspace:
    workspace.write_secret("host-1.key", "-----BEGIN OPENSSH PRIVATE KEY-----")
    print(workspace.root, workspace.control_dir, flush=True)
    sys.stdin.read()
"""


def _hold_workspace(work_dir: Path, tag: str) -> tuple[subprocess.Popen, Path, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work_dir), tag], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    root, control = proc.stdout.readline().split()
    return proc, Path(root), Path(control)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _key_files(folder: Path) -> list[Path]:
    """The hosts' SSH private keys written under ``folder`` (host-<id>.key)."""
    for _ in range(20):
        try:
            return sorted(folder.rglob("host-*.key")) if folder.exists() else []
        except FileNotFoundError:  # a workspace was renamed or removed while walked: again
            time.sleep(0.01)
    return sorted(folder.rglob("host-*.key"))


# ---------------------------------------------------------------------------------------------
# Workspaces
# ---------------------------------------------------------------------------------------------


def test_a_workspace_is_private_and_removed_whatever_happens(tmp_path):
    driver = AnsibleDriver(tmp_path, work_dir=tmp_path / "work")
    with pytest.raises(RuntimeError), driver.workspace(tag="t") as workspace:
        key = Path(workspace.write_secret("host-1.key", SSH_KEY))
        workspace.write_known_hosts(SSH_HOST_KEY)
        modes = {path: path.stat().st_mode & 0o777 for path in
                 (tmp_path / "work", workspace.root, key.parent, key, workspace.known_hosts,
                  workspace.control_dir)}  # fmt: skip
        control = workspace.control_dir
        raise RuntimeError("the run failed")
    assert modes[key] == modes[workspace.known_hosts] == 0o600
    assert {modes[p] for p in (tmp_path / "work", workspace.root, key.parent, control)} == {0o700}
    assert list((tmp_path / "work").iterdir()) == []
    assert not control.exists()


def test_a_sweep_removes_what_a_killed_process_left_and_spares_live_ones(tmp_path):
    work = tmp_path / "work"
    dead, dead_root, dead_control = _hold_workspace(work, "dead")
    live, live_root, _ = _hold_workspace(work, "live")
    try:
        _kill(dead)
        assert _key_files(dead_root), "a killed process leaves its key behind"
        assert AnsibleDriver(tmp_path, work_dir=work).sweep_workspaces() == ["dead"]
        assert not dead_root.exists() and not dead_control.exists()
        assert _key_files(live_root), "a live run's workspace was removed"
        assert AnsibleDriver(tmp_path, work_dir=work).sweep_workspaces() == []
    finally:
        live.communicate("", timeout=10)  # ends normally: it removes its own workspace
    assert list(work.iterdir()) == []


def test_a_sweep_never_takes_a_workspace_being_removed_and_clears_old_lockless_ones(tmp_path):
    work = tmp_path / "work"
    # One being removed by its live owner has lost its lock file already: left alone.
    removing = work / "run-removing"
    (removing / "secrets").mkdir(parents=True)
    (removing / "secrets" / "host-1.key").write_text(SSH_KEY)
    # One left by a version that took no lock, minutes ago: removed.
    legacy = work / "run-legacy"
    (legacy / "secrets").mkdir(parents=True)
    (legacy / "secrets" / "host-2.key").write_text(SSH_KEY)
    os.utime(legacy, (time.time() - 600, time.time() - 600))
    assert AnsibleDriver(tmp_path, work_dir=work).sweep_workspaces() == [""]
    assert removing.exists() and not legacy.exists()
    assert not (removing / ".lock").exists(), "the sweep made a lock nobody holds"


# ---------------------------------------------------------------------------------------------
# Runs whose worker died; runs whose job was lost
# ---------------------------------------------------------------------------------------------


def test_dead_runs_are_failed_and_lost_jobs_queued_again(settings, db, redis_conn):
    long_ago = utcnow() - timedelta(minutes=5)
    stale = ProvisionRun.create(kind="apply", status="running", started_at=long_ago,
                                heartbeat_at=long_ago, host_ids=[1])  # fmt: skip
    alive = ProvisionRun.create(kind="apply", status="running", started_at=utcnow(),
                                heartbeat_at=utcnow())  # fmt: skip
    crashed = ProvisionRun.create(kind="plan", status="running", started_at=utcnow(),
                                  heartbeat_at=utcnow())  # fmt: skip
    lost = ProvisionRun.create(kind="plan", requested_at=long_ago)
    waiting = ProvisionRun.create(kind="plan", requested_at=long_ago)
    fresh = ProvisionRun.create(kind="plan")
    refused = ProvisionRun.create(kind="plan", requested_at=long_ago)
    provision.enqueue_provision(redis_conn, waiting, settings)
    provision.enqueue_provision(redis_conn, refused, settings)
    # Its job failed before claiming the run (e.g. the worker could not import or connect).
    Job.fetch(f"provision-{refused.id}", connection=redis_conn).set_status(JobStatus.FAILED)
    holder, root, _ = _hold_workspace(settings.data_dir / "ansible", f"{WORKSPACE_TAG}{crashed.id}")
    _kill(holder)

    assert sweep_runs(redis_conn, settings) == {"failed": [stale.id, crashed.id],
                                                "queued": [lost.id]}  # fmt: skip
    assert not root.exists()
    for run in (stale, crashed):
        row = ProvisionRun.get_by_id(run.id)
        assert row.status == "failed" and row.finished_at is not None
        assert row.message.startswith("the worker running it stopped (crashed or killed) at ")
        assert row.message.endswith("nothing more will happen: plan or apply again")
    assert ProvisionRun.get_by_id(alive.id).status == "running"
    row = ProvisionRun.get_by_id(refused.id)
    assert row.status == "failed" and row.message.startswith("its job ended (failed) before")
    finished = [e.data for e in Event.select().where(Event.subject == "v1.provision.finished")]
    assert sorted(d["run_id"] for d in finished) == [stale.id, crashed.id, refused.id]
    assert all(d["status"] == "failed" for d in finished)
    queue = get_queue(redis_conn, provision.PROVISION_QUEUE)
    assert Job.fetch(f"provision-{lost.id}", connection=redis_conn).func_name.endswith("plan_hosts")
    assert queue.job_ids.count(f"provision-{waiting.id}") == 1
    assert f"provision-{fresh.id}" not in queue.job_ids
    # Idempotent: a second pass finds nothing more to do.
    assert sweep_runs(redis_conn, settings) == {"failed": [], "queued": []}
    assert queue.job_ids.count(f"provision-{lost.id}") == 1


# ---------------------------------------------------------------------------------------------
# Real runs: heartbeat, and a worker killed in the middle of one
# ---------------------------------------------------------------------------------------------


def _write_vars(path: Path, *, sleep: int) -> None:
    variables = {"ansible_python_interpreter": sys.executable, "helios_test_sleep": str(sleep)}
    path.write_text(json.dumps({"vars": variables}))


@pytest.fixture
def waiting_site(tmp_path, settings, db) -> dict[str, str]:
    """A playbooks dir whose site.yml waits, one pinned host with a key, and the worker env."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "site.yml").write_text(WAIT_PLAYBOOK)
    variables = tmp_path / "provision.yml"
    _write_vars(variables, sleep=600)
    add_host(actor=None, name="n1", address="127.0.0.1", groups=["nomad_servers"],
             ssh_private_key=SSH_KEY, ssh_host_keys=SSH_HOST_KEY,
             cipher=SecretCipher.from_settings(settings))  # fmt: skip
    return {"HELIOS_PLAYBOOKS_DIR": str(playbooks), "HELIOS_PROVISION_VARS": str(variables)}


def test_the_heartbeat_moves_while_a_run_runs(settings, redis_conn, waiting_site, monkeypatch,
                                              tmp_path):  # fmt: skip
    from panel.db import database

    _write_vars(Path(waiting_site["HELIOS_PROVISION_VARS"]), sleep=4)
    for name, value in {**waiting_site, "HELIOS_DATABASE_URL": settings.effective_database_url,
                        "HELIOS_REDIS_URL": settings.effective_redis_url,
                        "HELIOS_DATA_DIR": str(settings.data_dir)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(provision, "HEARTBEAT_INTERVAL", 0.5)
    run = request_provision(actor=None, kind="apply", settings=settings, redis_conn=redis_conn)

    def work() -> None:
        with database.connection_context():
            provision.apply_hosts(run.id)

    worker = threading.Thread(target=work)
    worker.start()
    beats = set()
    while worker.is_alive():
        beats.add(ProvisionRun.get_by_id(run.id).heartbeat_at)
        time.sleep(0.2)
    worker.join()
    row = ProvisionRun.get_by_id(run.id)
    assert row.status == "succeeded", row.message
    assert len(beats - {None}) >= 4, sorted(b for b in beats if b)
    assert _key_files(settings.data_dir) == []


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_run_leaves_no_key_and_the_next_one_fails_the_run(
    settings, redis_conn, waiting_site, start_worker
):
    work = settings.data_dir / "ansible"
    run = request_provision(actor=None, kind="apply", settings=settings, redis_conn=redis_conn)
    worker = start_worker(**waiting_site)
    keys = wait_until(lambda: _key_files(work), timeout=60, what="the run's key file")
    wait_until(lambda: ansible_pids(work), timeout=60, what="ansible-playbook")
    control = Path((keys[0].parents[1] / "control-dir").read_text())

    crash_worker(worker, work)
    assert ProvisionRun.get_by_id(run.id).status == "running"
    assert _key_files(work), "the kill left the key on disk (what the next worker removes)"

    start_worker(**waiting_site)
    # The sweep records the failure first, then removes the workspace: wait for both.
    row = wait_until(
        lambda: (r := ProvisionRun.get_by_id(run.id)).status == "failed"
        and not _key_files(settings.data_dir) and not any(work.iterdir()) and r,
        timeout=60, what="the next worker to fail the run and remove its workspace",
    )  # fmt: skip
    assert row.message.startswith("the worker running it stopped (crashed or killed) at ")
    assert _key_files(settings.data_dir) == []
    assert list(work.iterdir()) == []
    assert not control.exists()
    finished = Event.get(Event.subject == "v1.provision.finished")
    assert finished.data["run_id"] == run.id and finished.data["status"] == "failed"


PING_PLAYBOOK = """---
- name: Reach every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Answer over SSH
      ansible.builtin.ping:
"""


def test_an_unreachable_host_is_named_with_the_ssh_error(
    settings, db, redis_conn, tmp_path, monkeypatch
):
    """Nothing listens on the host's SSH port: the run fails naming the host and SSH's reason
    (not "see the failed tasks" with failed=0)."""
    from conftest import free_port

    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "site.yml").write_text(PING_PLAYBOOK)
    variables = tmp_path / "provision.yml"
    _write_vars(variables, sleep=0)
    port = free_port()  # closed: connection refused
    add_host(actor=None, name="n1", address="127.0.0.1", ssh_port=port, groups=["nomad_servers"],
             ssh_private_key=SSH_KEY, ssh_host_keys=SSH_HOST_KEY,
             cipher=SecretCipher.from_settings(settings))  # fmt: skip
    for name, value in {"HELIOS_PLAYBOOKS_DIR": str(playbooks),
                        "HELIOS_PROVISION_VARS": str(variables),
                        "HELIOS_DATABASE_URL": settings.effective_database_url,
                        "HELIOS_REDIS_URL": settings.effective_redis_url,
                        "HELIOS_DATA_DIR": str(settings.data_dir)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    run = request_provision(actor=None, kind="apply", settings=settings, redis_conn=redis_conn)
    provision.apply_hosts(run.id)

    row = ProvisionRun.get_by_id(run.id)
    assert row.status == "failed"
    assert "n1 is unreachable: " in row.message, row.message
    assert "Connection refused" in row.message, row.message
    assert "see the failed tasks" not in row.message
