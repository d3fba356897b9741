"""Hosts and provisioning requests: validation, permissions, pages and the `helios hosts` CLI.

No Ansible runs here (tests/test_converge.py runs it on real nodes): these check what happens
before a run is queued, quickly.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from panel.crypto import SecretCipher
from panel.hosts import (
    HostError,
    add_host,
    request_provision,
    validate_address,
    validate_groups,
    validate_host_name,
    validate_private_key,
    validate_ssh_user,
)
from panel.models import Event, Host, ProvisionRun
from panel.reconcile.provision import plan_hosts

from conftest import REPO_ROOT, helios_command, process_env

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBtZXN0LWtleS1ieXRlcy1mb3ItaGVsaW9zLXRlc3RzLW9ubHktMDAwMAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PASSWORD = "correct horse battery"


@pytest.mark.parametrize(
    ("validate", "good", "bad"),
    [
        (validate_host_name, ["n1", "node-1.dc1"], ["", "Node1", "-n", "a_b", "x" * 254, None]),
        (validate_address, ["10.0.0.5", "::1", "node.example.com"], ["", "a b", "x/y", 5]),
        (validate_ssh_user, ["root", "debian", "_ops"], ["", "Root", "a b", "x" * 33]),
        (validate_private_key, [KEY], ["", "ssh-ed25519 AAAA", KEY.replace("OPENSSH", "X")]),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_validators_accept_and_refuse(validate, good, bad):
    for value in good:
        validate(value)
    for value in bad:
        with pytest.raises(HostError):
            validate(value)


def test_groups_are_ordered_and_limited():
    assert validate_groups(["edge", "nomad_servers", "edge"]) == ["nomad_servers", "edge"]
    for bad in ([], ["web"], ["edge", "all"]):
        with pytest.raises(HostError):
            validate_groups(bad)


@pytest.fixture
def operator(db):
    from panel.accounts import create_user

    return create_user("ops@example.com", PASSWORD, is_operator=True)


def test_operator_adds_a_host_with_its_key_encrypted(settings, db, operator, redis_conn):
    cipher = SecretCipher.from_settings(settings)
    host = add_host(actor=operator, name="n1", address="10.0.0.5", groups=["nomad_servers"],
                    ssh_private_key=KEY, cipher=cipher, redis_conn=redis_conn)  # fmt: skip
    stored = Host.get_by_id(host.id)
    assert "PRIVATE KEY" not in stored.ssh_private_key
    assert cipher.decrypt(stored.ssh_private_key) == KEY
    event = Event.get(Event.subject == "v1.host.added")
    assert event.data == {"host": "n1", "host_id": host.id, "groups": ["nomad_servers"]}
    with pytest.raises(HostError) as refused:
        add_host(actor=operator, name="n1", address="10.0.0.6", groups=["edge"], cipher=cipher)
    assert refused.value.code == "conflict"


def test_only_operators_add_hosts_or_provision(settings, db, redis_conn):
    from panel.accounts import create_user

    member = create_user("dev@example.com", PASSWORD)
    cipher = SecretCipher.from_settings(settings)
    with pytest.raises(HostError) as refused:
        add_host(actor=member, name="n1", address="10.0.0.5", groups=["edge"], cipher=cipher)
    assert refused.value.code == "not_found"
    with pytest.raises(HostError):
        request_provision(actor=member, kind="plan", settings=settings, redis_conn=redis_conn)
    assert Host.select().count() == 0 and ProvisionRun.select().count() == 0


def test_provisioning_needs_a_host_and_a_known_kind(settings, db, operator, redis_conn):
    with pytest.raises(HostError, match="add a host first"):
        request_provision(actor=operator, kind="plan", settings=settings, redis_conn=redis_conn)
    add_host(actor=operator, name="n1", address="10.0.0.5", groups=["edge"],
             cipher=SecretCipher.from_settings(settings))  # fmt: skip
    with pytest.raises(HostError):
        request_provision(actor=operator, kind="destroy", settings=settings,
                          redis_conn=redis_conn)  # fmt: skip
    run = request_provision(actor=operator, kind="plan", settings=settings, redis_conn=redis_conn)
    assert (run.kind, run.status, run.host_ids) == ("plan", "queued", [Host.get().id])
    assert Event.get(Event.subject == "v1.provision.requested").data["run_id"] == run.id


def test_a_job_leaves_a_run_that_is_not_queued_alone(settings, db, operator, monkeypatch):
    run = ProvisionRun.create(kind="plan", host_ids=[], status="succeeded")
    for name, value in {"HELIOS_DATABASE_URL": settings.effective_database_url,
                        "HELIOS_REDIS_URL": settings.effective_redis_url,
                        "HELIOS_DATA_DIR": str(settings.data_dir)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert plan_hosts(run.id) == "succeeded"
    assert plan_hosts(run.id + 1) == "missing"
    assert ProvisionRun.get_by_id(run.id).started_at is None


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)


def test_pages_are_for_operators_and_never_show_the_key(app, client, auth, operator):
    from panel.accounts import create_user

    create_user("dev@example.com", PASSWORD)
    assert client.get("/hosts/").status_code == 302  # to the sign-in page
    auth.login("dev@example.com", PASSWORD)
    assert client.get("/hosts/").status_code == 404  # as if there were no such page

    operator_client = app.test_client()
    type(auth)(operator_client).login("ops@example.com", PASSWORD)
    page = operator_client.get("/hosts/new").get_data(as_text=True)
    response = operator_client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "n1", "address": "10.0.0.5", "ssh_user": "root",
        "ssh_port": "22", "groups": ["nomad_servers", "edge"], "ssh_private_key": KEY,
    })  # fmt: skip
    assert response.status_code == 302, response.get_data(as_text=True)
    for path in ("/hosts/", response.headers["Location"]):
        text = operator_client.get(path).get_data(as_text=True)
        assert "n1" in text
        assert "key stored" in text or "private key is stored" in text
        assert "PRIVATE KEY-----" not in text and "b3BlbnNzaC1rZXk" not in text
    bad = operator_client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "Bad Name", "address": "10.0.0.6",
        "ssh_user": "root", "ssh_port": "22", "groups": ["edge"],
    })  # fmt: skip
    assert bad.status_code == 400 and "lowercase DNS name" in bad.get_data(as_text=True)


def test_the_cli_has_the_hosts_commands(settings):
    result = subprocess.run(helios_command("hosts", "--help"), capture_output=True, text=True,
                            env=process_env(settings), cwd=REPO_ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("add", "list", "plan", "apply"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), result.stdout
