"""Fleet maintenance (`helios hosts maintain`, the Maintain button): hosts drained one at a time
against the Nomad double by a real worker, updated by a real ansible-playbook (a stand-in
site.yml on the controller: the SSH side is tests/test_converge.py's), made eligible again; the
first failure stops the sequence; only operators, after a confirmation; the base role's
upgrade path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from provision_harness import SSH_HOST_KEY, ansible_pids, crash_worker

from panel.actions.accounts import create_user
from panel.actions.common import ActionError
from panel.actions.hosts import add_host
from panel.actions.maintenance import request_maintenance
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Event, Host, ProvisionEvent, ProvisionRun

from conftest import REPO_ROOT, helios_command, process_env, run_service_job, wait_until

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
# Stands in for playbooks/site.yml on the controller: shows the upgrade variable Helios passes,
# and fails on the hosts a test names.
STANDIN_SITE = """---
- name: Maintenance stand-in
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Upgrade the packages
      ansible.builtin.debug:
        msg: "base_upgrade={{ base_upgrade | default(false) }}"
    - name: Take a while where the test asks
      ansible.builtin.command:
        argv: [sleep, "{{ helios_test_sleep }}"]
      changed_when: false
      when: helios_test_sleep | int > 0
    - name: Fail where the test asks
      ansible.builtin.fail:
        msg: "apt could not upgrade {{ inventory_hostname }}"
      when: inventory_hostname in helios_test_fail
"""
APPS = {"shop": 2, "web": 3}  # job → count


def _running(double) -> dict[str, int]:
    """Allocations running per job, now."""
    counts = dict.fromkeys(APPS, 0)
    for alloc in double.cluster.allocs.values():
        if alloc["DesiredStatus"] == "run" and alloc["ClientStatus"] == "running":
            counts[alloc["JobID"]] = counts.get(alloc["JobID"], 0) + 1
    return counts


def _watch_counts(double) -> list[dict[str, int]]:
    """The running allocations per job after every write the double makes (each commit: a
    drain's stops and placements, each client update of a step)."""
    samples: list[dict[str, int]] = []
    cluster = double.cluster
    commit = cluster.commit

    def counting(msg_type: str | None, only: Any = None) -> int:
        index = commit(msg_type, only)
        samples.append(_running(double))
        return index

    cluster.commit = counting
    return samples


@pytest.fixture
def operator(db):
    return create_user("ops@example.com", PASSWORD, is_operator=True)


@pytest.fixture
def fleet(tmp_path, settings, db, deploy_env, monkeypatch) -> dict[str, Any]:
    """Two pinned Nomad clients named like the double's nodes, the stand-in playbooks, and the
    environment of the worker (and of this process)."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "site.yml").write_text(STANDIN_SITE)
    variables = tmp_path / "provision.yml"
    cipher = SecretCipher.from_settings(settings)
    hosts = [
        add_host(actor=None, name=name, address="127.0.0.1", groups=["nomad_clients"],
                 ssh_host_keys=SSH_HOST_KEY, cipher=cipher)
        for name in ("client-1", "client-2")
    ]  # fmt: skip

    def fail_on(*names: str, sleep: int = 0) -> None:
        variables.write_text(json.dumps({"vars": {
            "ansible_python_interpreter": sys.executable, "helios_test_fail": list(names),
            "helios_test_sleep": str(sleep),
        }}))  # fmt: skip

    fail_on()
    env = {**deploy_env, "HELIOS_PLAYBOOKS_DIR": str(playbooks),
           "HELIOS_PROVISION_VARS": str(variables)}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"hosts": hosts, "env": env, "fail_on": fail_on}


@pytest.fixture
def clock(nomad_double):
    """Time passes in the double by itself, as in Nomad (a step every 0.2 s): a drain moves on
    while Helios waits in a blocking query."""
    from nomad_double.controls import Ticker

    ticker = Ticker(0.2, nomad_double.cluster.step)
    ticker.start()
    yield ticker
    ticker.stop()


def _finished(run_id: int) -> ProvisionRun:
    return wait_until(
        lambda: (r := ProvisionRun.get_by_id(run_id)).status in ("succeeded", "failed") and r,
        timeout=120, what="the maintenance run to end",
    )  # fmt: skip


def _steps(run_id: int) -> list[tuple[str, str]]:
    rows = ProvisionEvent.select().where(ProvisionEvent.run == run_id).order_by(ProvisionEvent.seq)
    return [(r.data["host"], r.data["task"].split(":")[0]) for r in rows
            if r.data.get("kind") in ("step", "failed")]  # fmt: skip


@pytest.mark.timeout(240)
def test_two_hosts_of_a_group_are_drained_one_at_a_time_and_apps_keep_their_count(
    operator, redis_conn, nomad_double, fleet, start_worker, clock
):
    for slug, count in APPS.items():
        run_service_job(nomad_double, slug, count)
    first, second = (node["ID"] for node in nomad_double.cluster.nodes)
    assert _running(nomad_double) == APPS
    samples = _watch_counts(nomad_double)
    eligible_when_drained: list[dict[str, str]] = []
    drain = nomad_double.cluster.drain_node

    def drain_node(node, spec, meta, mark_eligible):
        eligible_when_drained.append(
            {n["Name"]: n["SchedulingEligibility"] for n in nomad_double.cluster.nodes}
        )
        return drain(node, spec, meta, mark_eligible)

    nomad_double.cluster.drain_node = drain_node

    run = request_maintenance(actor=operator, settings=Settings.from_env(), redis_conn=redis_conn,
                              group="nomad_clients", deadline=120)  # fmt: skip
    start_worker(**fleet["env"])
    row = _finished(run.id)

    assert row.status == "succeeded", row.message
    assert row.message == "maintained 2 host(s), one at a time: client-1, client-2"
    # The second host's drain started only once the first was eligible again.
    assert eligible_when_drained == [
        {"client-1": "eligible", "client-2": "eligible"},
        {"client-1": "eligible", "client-2": "eligible"},
    ]
    calls = [(r.method, r.path) for r in nomad_double.requests
             if r.method == "POST" and r.path.startswith("/v1/node/")]  # fmt: skip
    assert calls == [
        ("POST", f"/v1/node/{first}/drain"), ("POST", f"/v1/node/{first}/eligibility"),
        ("POST", f"/v1/node/{second}/drain"), ("POST", f"/v1/node/{second}/eligibility"),
    ]  # fmt: skip
    body = nomad_double.requests_to("POST", rf"/v1/node/{first}/drain")[0].body
    assert body["DrainSpec"] == {"Deadline": 120 * 10**9, "IgnoreSystemJobs": True}
    assert body["Meta"] == {"helios.reason": f"maintenance run #{run.id} of client-1",
                            "helios.requested_by": "ops@example.com"}  # fmt: skip
    # Each step in order, per host: the update ran between the drain and the node's return.
    per_host = ["drain", "drain", "update", "update", "ready", "eligible"]
    assert _steps(run.id) == [("client-1", s) for s in per_host] + [
        ("client-2", s) for s in per_host
    ]
    upgrades = [
        e.data for e in ProvisionEvent.select().where(ProvisionEvent.run == run.id)
        if e.data.get("kind") == "ok" and e.data.get("task") == "Upgrade the packages"
    ]  # fmt: skip
    assert [e["host"] for e in upgrades] == ["client-1", "client-2"]
    # Nomad's migrate guarantee: count - MaxParallel (1) allocations stay running throughout.
    assert len(samples) > 10
    for sample in samples:
        for slug, count in APPS.items():
            assert sample[slug] >= count - 1, samples
    assert wait_until(lambda: _running(nomad_double) == APPS, what="every app fully running")
    assert {n["SchedulingEligibility"] for n in nomad_double.cluster.nodes} == {"eligible"}
    subjects = [e.subject for e in Event.select().where(Event.subject.contains("maintenance"))]
    assert subjects == [
        "v1.host.maintenance_requested",
        "v1.host.maintenance_started", "v1.host.maintenance_finished",
        "v1.host.maintenance_started", "v1.host.maintenance_finished",
    ]  # fmt: skip


@pytest.mark.timeout(240)
def test_a_failed_step_stops_the_sequence_and_leaves_the_host_ineligible(
    operator, redis_conn, nomad_double, fleet, start_worker, clock, app, client, auth
):
    run_service_job(nomad_double, "shop", 2)
    fleet["fail_on"]("client-1")
    first, second = (node["ID"] for node in nomad_double.cluster.nodes)
    one, two = fleet["hosts"]
    run = request_maintenance(actor=operator, settings=Settings.from_env(), redis_conn=redis_conn,
                              host_ids=[one.id, two.id])  # fmt: skip
    start_worker(**fleet["env"])
    row = _finished(run.id)

    assert row.status == "failed"
    assert row.message.startswith("client-1: update failed: ")
    assert "apt could not upgrade client-1" in row.message
    assert row.message.endswith("Not touched: client-2")
    node_one, node_two = nomad_double.cluster.nodes
    assert node_one["SchedulingEligibility"] == "ineligible"
    assert node_two["SchedulingEligibility"] == "eligible"
    assert nomad_double.requests_to("POST", rf"/v1/node/{second}/drain") == []
    assert nomad_double.requests_to("POST", rf"/v1/node/{first}/eligibility") == []
    assert _steps(run.id)[-1] == ("client-1", "update")
    failed = Event.get(Event.subject == "v1.host.maintenance_failed").data
    assert (failed["host"], failed["step"]) == ("client-1", "update")
    assert not Event.select().where(Event.subject == "v1.host.maintenance_finished").exists()
    # The reason is on the host's page; the next maintenance may start.
    auth.login("ops@example.com", PASSWORD)
    page = client.get(f"/hosts/{one.id}").get_data(as_text=True)
    assert 'id="maintenance-failed"' in page and "apt could not upgrade client-1" in page
    run_page = client.get(f"/hosts/runs/{run.id}").get_data(as_text=True)
    assert "Maintenance #" in run_page and "apt could not upgrade client-1" in run_page


@pytest.mark.timeout(240)
def test_a_killed_worker_neither_loses_nor_repeats_the_run(
    operator, redis_conn, settings, nomad_double, fleet, start_worker, clock
):
    run_service_job(nomad_double, "shop", 2)
    fleet["fail_on"](sleep=600)  # the update of client-1 is where the worker dies
    first, second = (node["ID"] for node in nomad_double.cluster.nodes)
    run = request_maintenance(actor=operator, settings=Settings.from_env(), redis_conn=redis_conn,
                              group="nomad_clients")  # fmt: skip
    work = settings.data_dir / "ansible"
    worker = start_worker(**fleet["env"])
    wait_until(lambda: ansible_pids(work), timeout=60, what="the update's ansible-playbook")
    crash_worker(worker, work)
    assert ProvisionRun.get_by_id(run.id).status == "running"

    start_worker(**fleet["env"])  # its sweep ends the dead run, once
    row = wait_until(
        lambda: (r := ProvisionRun.get_by_id(run.id)).status == "failed" and r,
        timeout=60, what="the next worker to fail the run",
    )  # fmt: skip
    assert row.message.startswith("the worker running it stopped (crashed or killed) at ")
    assert ProvisionRun.select().count() == 1
    # Nothing ran twice, and the host after it was never touched: client-1 stays ineligible.
    assert len(nomad_double.requests_to("POST", rf"/v1/node/{first}/drain")) == 1
    assert nomad_double.requests_to("POST", rf"/v1/node/{second}/drain") == []
    assert [n["SchedulingEligibility"] for n in nomad_double.cluster.nodes] == [
        "ineligible", "eligible"
    ]  # fmt: skip
    finished = Event.select().where(Event.subject == "v1.provision.finished")
    assert [e.data["status"] for e in finished] == ["failed"]


def test_a_drain_past_its_deadline_stops_the_run(operator, redis_conn, nomad_double, fleet,
                                                 monkeypatch):  # fmt: skip
    from panel.reconcile import host_drain
    from panel.reconcile.maintenance import maintain_hosts

    run_service_job(nomad_double, "shop", 2)
    monkeypatch.setattr(host_drain, "DRAIN_GRACE", 0)
    nomad_double.cluster.finish_drains = lambda: None  # this drain never ends
    one, two = fleet["hosts"]
    run = request_maintenance(actor=operator, settings=Settings.from_env(), redis_conn=None,
                              host_ids=[one.id, two.id], deadline=1)  # fmt: skip
    assert maintain_hosts(run.id) == "failed"
    row = ProvisionRun.get_by_id(run.id)
    assert row.message.startswith(
        "client-1: drain failed: the drain of Nomad node client-1 did not complete within 1 s"
    )
    assert row.message.endswith("Not touched: client-2")
    assert [n["SchedulingEligibility"] for n in nomad_double.cluster.nodes] == [
        "ineligible", "eligible"
    ]  # fmt: skip
    assert _steps(run.id)[-1] == ("client-1", "drain")
    assert maintain_hosts(run.id) == "failed"  # a repeated job does nothing
    assert len(nomad_double.requests_to("POST", r"/v1/node/.+/drain")) == 1


def test_a_node_not_ready_after_its_updates_stops_the_run(operator, redis_conn, nomad_double,
                                                          fleet, monkeypatch):  # fmt: skip
    from panel.reconcile import maintenance
    from panel.reconcile.maintenance import maintain_hosts

    monkeypatch.setattr(maintenance, "READY_TIMEOUT", 1)
    nomad_double.cluster.nodes[0]["Status"] = "down"  # it did not come back after its reboot
    one, _ = fleet["hosts"]
    run = request_maintenance(actor=operator, settings=Settings.from_env(), redis_conn=None,
                              host_ids=[one.id])  # fmt: skip
    assert maintain_hosts(run.id) == "failed"
    row = ProvisionRun.get_by_id(run.id)
    assert row.message.startswith(
        "client-1: ready failed: Nomad node client-1 was not ready within 1 s after the updates "
        "(status 'down')"
    ), row.message
    assert nomad_double.cluster.nodes[0]["SchedulingEligibility"] == "ineligible"
    assert [step for _, step in _steps(run.id)] == ["drain", "drain", "update", "update", "ready"]


def test_only_operators_and_one_maintenance_at_a_time(operator, redis_conn, fleet):
    one, _ = fleet["hosts"]
    settings = Settings.from_env()
    developer = create_user("dev@example.com", PASSWORD)
    with pytest.raises(ActionError) as refused:
        request_maintenance(actor=developer, settings=settings, redis_conn=redis_conn,
                            host_ids=[one.id])  # fmt: skip
    assert refused.value.code == "not_found"  # as if there were no such host
    run = request_maintenance(actor=operator, settings=settings, redis_conn=redis_conn,
                              host_ids=[one.id])  # fmt: skip
    assert run.kind == "maintain" and run.host_ids == [one.id]
    assert redis_conn.lrange("rq:queue:default", 0, -1) == [f"provision-{run.id}".encode()]
    with pytest.raises(ActionError) as busy:
        request_maintenance(actor=operator, settings=settings, redis_conn=redis_conn,
                            group="nomad_clients")  # fmt: skip
    assert busy.value.code == "conflict" and f"#{run.id} is not over yet" in str(busy.value)
    with pytest.raises(ActionError) as empty:
        request_maintenance(actor=operator, settings=settings, redis_conn=redis_conn,
                            group="edge")  # fmt: skip
    assert empty.value.code == "invalid"


def _helios(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(helios_command("hosts", "maintain", *args), capture_output=True,
                          text=True, env=process_env(settings, **env), cwd=REPO_ROOT,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_the_cli_asks_first_and_checks_its_arguments(settings, db, fleet):
    env = {k: v for k, v in fleet["env"].items() if k.startswith(("NOMAD_", "HELIOS_PLAY"))}
    unanswered = _helios(settings, "client-1", "client-2", **env)  # no terminal to confirm on
    assert unanswered.returncode == 1, unanswered.stderr
    assert "Maintain client-1, client-2 one at a time" in unanswered.stdout
    assert "not maintained (give --yes to skip asking)" in unanswered.stderr
    missing = _helios(settings, "nope", "--yes", **env)
    assert missing.returncode == 4 and "no host named 'nope'" in missing.stderr
    both = _helios(settings, "client-1", "--group", "nomad_clients", "--yes", **env)
    assert both.returncode == 2 and "not both" in both.stderr
    assert ProvisionRun.select().count() == 0
    queued = _helios(settings, "--group", "nomad_clients", "--yes", "--no-wait", "--json", **env)
    assert queued.returncode == 0, queued.stderr
    run = ProvisionRun.get()
    assert json.loads(queued.stdout) == {"run_id": run.id, "status": "queued",
                                         "hosts": ["client-1", "client-2"], "deadline": 600,
                                         "message": ""}  # fmt: skip
    assert (run.kind, run.host_ids) == ("maintain", [h.id for h in fleet["hosts"]])
    requested = Event.get(Event.subject == "v1.host.maintenance_requested")
    assert requested.actor.startswith("operator ") and requested.actor.endswith("(local shell)")


def test_the_host_page_has_a_maintain_button_that_confirms_first(app, client, auth, operator):
    host = Host.create(name="n1", address="10.0.0.10", groups=["nomad_clients"], state="ready")
    auth.login("ops@example.com", PASSWORD)
    page = client.get(f"/hosts/{host.id}").get_data(as_text=True)
    form = re.search(r'<form method="post" action="/hosts/\d+/maintain"[^>]*>', page).group(0)
    assert 'data-confirm="Maintain n1 now?' in form
    token = re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)
    response = client.post(f"/hosts/{host.id}/maintain", data={"csrf_token": token})
    assert response.status_code == 302  # refused here (no Nomad set): back to the host's page
    assert response.headers["Location"].endswith(f"/hosts/{host.id}")
    assert "set NOMAD_ADDR" in client.get(f"/hosts/{host.id}").get_data(as_text=True)
    assert ProvisionRun.select().count() == 0


# ---------------------------------------------------------------------------------------------
# The base role's upgrade path
# ---------------------------------------------------------------------------------------------

BASE = REPO_ROOT / "playbooks" / "roles" / "base"


def _tasks(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())


def test_the_base_role_upgrades_only_when_asked_and_reboots_only_when_required():
    defaults = yaml.safe_load((BASE / "defaults" / "main.yml").read_text())
    assert defaults["base_upgrade"] is False
    included = [t for t in _tasks(BASE / "tasks" / "main.yml")
                if t.get("ansible.builtin.include_tasks") == "upgrade.yml"]  # fmt: skip
    assert len(included) == 1 and "base_upgrade | bool" in included[0]["when"]
    tasks = _tasks(BASE / "tasks" / "upgrade.yml")
    apt = next(t["ansible.builtin.apt"] for t in tasks if "ansible.builtin.apt" in t)
    assert apt["upgrade"] == "dist"
    stat = next(t for t in tasks if "ansible.builtin.stat" in t)
    assert stat["ansible.builtin.stat"]["path"] == "/var/run/reboot-required"
    reported = next(t for t in tasks if "ansible.builtin.debug" in t)
    assert "reboot required" in reported["ansible.builtin.debug"]["msg"]
    reboot = next(t for t in tasks if "ansible.builtin.reboot" in t)
    assert f"{stat['register']}.stat.exists" in reboot["when"]
    # The stat comes before the reboot it decides.
    assert tasks.index(stat) < tasks.index(reboot)
