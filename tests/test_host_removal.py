"""Removing a host: at once when its Nomad node runs nothing, refused with the reason when it
runs allocations, and drained first (against the Nomad double) when asked; the panel's button
and the `helios hosts remove` exit codes."""

from __future__ import annotations

import re
import subprocess

import pytest

from panel.actions.accounts import create_user
from panel.actions.common import ActionError
from panel.actions.hosts import remove_host
from panel.config import Settings
from panel.models import Event, Host
from panel.reconcile.host_drain import await_drain, resume_drains

from conftest import REPO_ROOT, helios_command, process_env, run_service_job

PASSWORD = "correct horse battery"


@pytest.fixture
def operator(db):
    return create_user("ops@example.com", PASSWORD, is_operator=True)


def _host(name: str, state: str = "ready") -> Host:
    return Host.create(name=name, address="10.0.0.10", groups=["nomad_clients"], state=state)


def _subjects() -> list[str]:
    return [e.subject for e in Event.select().where(Event.subject.startswith("v1.host."))]


def test_an_idle_host_is_removed_at_once_by_operators_only(settings, db, operator, redis_conn):
    host = _host("client-1")
    developer = create_user("dev@example.com", PASSWORD)
    with pytest.raises(ActionError) as refused:
        remove_host(actor=developer, host=host, settings=settings, redis_conn=redis_conn)
    assert refused.value.code == "not_found"  # as if there were no such host
    assert remove_host(actor=operator, host=host, settings=settings) == "removed"
    assert Host.get_or_none(Host.name == "client-1") is None
    event = Event.get(Event.subject == "v1.host.removed")
    assert event.data == {"host": "client-1", "host_id": host.id, "address": "10.0.0.10",
                          "drained": False}  # fmt: skip
    assert event.actor == "ops@example.com"


def test_a_busy_host_is_refused_then_drained_and_removed(db, operator, redis_conn, nomad_double,
                                                         deploy_env):  # fmt: skip
    settings = Settings.from_env()
    run_service_job(nomad_double, "shop", 2)
    run_service_job(nomad_double, "web", 1)
    busy, idle = (n["ID"] for n in nomad_double.cluster.nodes)
    host = _host("client-1", state="drifted")

    with pytest.raises(ActionError) as refused:
        remove_host(actor=operator, host=host, settings=settings, redis_conn=redis_conn)
    assert refused.value.code == "conflict"
    assert str(refused.value) == (
        "client-1 runs 3 allocations of shop, web on its Nomad node: drain it first: "
        "`helios hosts remove client-1 --drain`, or the Drain and remove button"
    )

    assert remove_host(actor=operator, host=host, settings=settings, redis_conn=redis_conn,
                       drain=True) == "draining"  # fmt: skip
    assert Host.get_by_id(host.id).state == "draining"
    drained = nomad_double.requests_to("POST", rf"/v1/node/{busy}/drain")[-1].body
    assert drained["DrainSpec"] == {"Deadline": 600 * 10**9, "IgnoreSystemJobs": True}
    assert drained["Meta"]["helios.requested_by"] == "ops@example.com"
    assert f"host-drain-{host.id}" in redis_conn.lrange("rq:queue:default", 0, -1)[-1].decode()

    assert await_drain(host.id) == "removed"
    assert Host.get_or_none(Host.id == host.id) is None
    live = [a for a in nomad_double.cluster.allocs.values() if a["DesiredStatus"] == "run"]
    assert len(live) == 3 and {a["NodeID"] for a in live} == {idle}
    node = nomad_double.cluster.nodes[0]
    assert node["DrainStrategy"] is None and node["SchedulingEligibility"] == "ineligible"
    assert node["LastDrain"]["Status"] == "complete"
    assert _subjects() == ["v1.host.draining", "v1.host.removed"]
    draining = Event.get(Event.subject == "v1.host.draining").data
    assert (draining["allocations"], draining["apps"]) == (3, ["shop", "web"])
    assert Event.get(Event.subject == "v1.host.removed").data["drained"] is True
    assert await_drain(host.id) == "not draining"  # a repeated job does nothing


def test_a_drain_that_does_not_complete_puts_the_host_back(db, redis_conn, nomad_double,
                                                           deploy_env):  # fmt: skip
    host = _host("client-1", state="ready")
    Host.update(state="draining", state_before_drain="ready").where(Host.id == host.id).execute()
    node = nomad_double.cluster.nodes[0]
    stamp = "2026-01-01T00:00:00Z"
    node["LastDrain"] = {"Status": "canceled", "StartedAt": stamp, "UpdatedAt": stamp,
                         "Meta": {}, "AccessorID": ""}  # fmt: skip
    assert await_drain(host.id) == "failed"
    row = Host.get_by_id(host.id)
    assert row.state == "ready" and "ended with status 'canceled'" in row.note
    assert Event.get(Event.subject == "v1.host.drain_failed").data["state"] == "ready"


def test_a_lost_drain_job_is_queued_again_once(db, redis_conn):
    draining = _host("client-1", state="draining")
    _host("client-2")
    assert resume_drains(redis_conn) == [draining.id]
    assert resume_drains(redis_conn) == []  # its job is queued now
    assert redis_conn.lrange("rq:queue:default", 0, -1) == [f"host-drain-{draining.id}".encode()]


def test_the_host_page_removes_an_idle_host(app, client, auth, operator):
    host = _host("n1")
    auth.login("ops@example.com", PASSWORD)
    page = client.get(f"/hosts/{host.id}").get_data(as_text=True)
    assert "Remove host" in page and "Nothing runs on it" in page
    token = re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)
    response = client.post(f"/hosts/{host.id}/remove", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/hosts/")
    assert Host.get_or_none(Host.id == host.id) is None


def test_the_cli_exit_codes(settings, db, nomad_double):
    run_service_job(nomad_double, "shop", 1)
    _host("client-1")
    _host("idle")

    def helios(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(helios_command("hosts", "remove", *args), capture_output=True,
                              text=True, env=process_env(settings, **env), cwd=REPO_ROOT,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    missing = helios("nope", "--yes")
    assert missing.returncode == 4 and "no host named 'nope'" in missing.stderr
    refused = helios("client-1", "--yes", NOMAD_ADDR=nomad_double.url)
    assert refused.returncode == 2, refused.stderr
    assert "1 allocation of shop" in refused.stderr
    assert "helios hosts remove client-1 --drain" in refused.stderr
    unanswered = helios("idle")  # no terminal to confirm on
    assert unanswered.returncode == 1 and "not removed" in unanswered.stderr
    removed = helios("idle", "--yes")
    assert removed.returncode == 0 and removed.stdout == "removed idle\n", removed.stderr
    assert [h.name for h in Host.select()] == ["client-1"]
