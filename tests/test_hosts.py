"""Hosts and provisioning requests: validation, permissions, pinned SSH host keys, pages and
the `helios hosts` CLI.

No playbook runs here (tests/test_converge.py runs them on real nodes, where ssh-keyscan also
reads real sshd keys): these check what happens before a run is queued, quickly. Host keys are
real ones, made by ssh-keygen.
"""

from __future__ import annotations

import html
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from provision_harness import SSH_KEY

from panel.actions.common import ActionError
from panel.actions.hosts import add_host, pin_host_keys, request_provision, scan_host_keys
from panel.crypto import SecretCipher
from panel.drivers.ansible import AnsibleDriver
from panel.host_keys import HostKeyError, parse_host_keys
from panel.models import Event, Host, ProvisionRun
from panel.reconcile.provision import plan_hosts, prepare_run
from panel.render.ansible import InventoryHost, hosts_reached, render_inventory
from panel.schema.base import field_meta
from panel.schema.hosts import (
    HostIn,
    validate_address,
    validate_groups,
    validate_host_name,
    validate_private_key,
    validate_ssh_port,
    validate_ssh_user,
)
from panel.validation import ValidationError

from conftest import REPO_ROOT, free_port, helios_command, process_env

PASSWORD = "correct horse battery"
ED25519_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
# What an operator field must never smuggle to ssh's command line or a shell.
HOSTILE_ADDRESSES = [
    "::1%$(id)", "fe80::1%eth0", "fe80::1%25eth0", "10.0.0.1;id", "10.0.0.1&&id", "$(id)",
    "`id`", "node-1`id`", "10.0.0.1\nid", "node.example.com\n", "\n10.0.0.1", "10.0.0.1 ",
    " 10.0.0.1", "--oProxyCommand=id", "-oProxyCommand=id", "-v", "a'b", 'a"b', "a\\b", "a|b",
    "10.0.0.1\x00", "node..example.com", "[::1]", "[::1]:22", "10.0.0.1:22", "*", "node.*",
    "!node", "user@10.0.0.1", "x" * 254,
]  # fmt: skip


@pytest.fixture(scope="module")
def host_key_files(tmp_path_factory) -> dict[str, Path]:
    """Real public host keys (ed25519, ecdsa, rsa) made by ssh-keygen."""
    folder = tmp_path_factory.mktemp("hostkeys")
    files = {}
    for kind in ("ed25519", "ecdsa", "rsa"):
        path = folder / f"ssh_host_{kind}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@node",
                        "-f", str(path)], check=True)  # fmt: skip
        files[kind] = path.with_suffix(".pub")
    return files


@pytest.fixture(scope="module")
def host_keys_text(host_key_files) -> str:
    """The three public keys as an operator pastes them (the .pub files, one after another)."""
    return "".join(path.read_text() for path in host_key_files.values())


def other_host_keys(tmp_path: Path) -> str:
    """A freshly made key: what a reinstalled (or impersonated) host offers."""
    path = tmp_path / "other_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


@pytest.mark.parametrize(
    ("validate", "good", "bad"),
    [
        (validate_host_name, ["n1", "node-1.dc1"], ["", "Node1", "-n", "a_b", "x" * 254, None]),
        (
            validate_address,
            ["10.0.0.5", "::1", "node.example.com"],
            ["", "a b", "x/y", 5, *HOSTILE_ADDRESSES],
        ),
        (validate_ssh_user, ["root", "debian", "_ops"], ["", "Root", "a b", "x" * 33]),
        (validate_ssh_port, [22, "2222", 65535], [0, "0", "65536", "abc", "", None, True]),
        (
            validate_private_key,
            [SSH_KEY],
            ["", "ssh-ed25519 AAAA", SSH_KEY.replace("OPENSSH", "X")],
        ),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_validators_accept_and_refuse(validate, good, bad):
    for value in good:
        validate(value)
    for value in bad:
        with pytest.raises(ValidationError):
            validate(value)


def test_groups_are_ordered_and_limited():
    assert validate_groups(["edge", "nomad_servers", "edge"]) == ["nomad_servers", "edge"]
    assert validate_groups(["registry", "build_nodes"]) == ["build_nodes", "registry"]
    with pytest.raises(ValidationError, match="choose nomad_clients or build_nodes, not both"):
        validate_groups(["nomad_clients", "build_nodes"])
    for bad in ([], ["web"], ["edge", "all"], "edge", 5, [["edge"]], None):
        with pytest.raises(ValidationError, match="choose at least one of"):
            validate_groups(bad)


def test_every_bad_field_of_a_host_is_reported_at_once(settings, db):
    cipher = SecretCipher.from_settings(settings)
    with pytest.raises(ActionError) as refused:
        add_host(actor=None, name="Node 1", address="10.0.0.1;id", groups=["web"],
                 ssh_user="Root", ssh_port="0", ssh_private_key="not a key",
                 ssh_host_keys="not a host key", cipher=cipher)  # fmt: skip
    assert refused.value.code == "invalid"
    assert {error.field: error.message for error in refused.value.errors} == {
        "name": "use a lowercase DNS name for the host, e.g. node-1 or node-1.dc1",
        "address": "give an IP address (without a %scope) or a DNS name, e.g. 10.0.0.5",
        "ssh_user": "use a Unix user name such as root or debian",
        "ssh_port": "the SSH port is a number from 1 to 65535",
        "groups": "choose at least one of nomad_servers, nomad_clients, edge, build_nodes, "
        "registry",
        "ssh_private_key": "paste an unencrypted SSH private key, from -----BEGIN … PRIVATE "
        "KEY----- to the END line",
        "ssh_host_keys": "line 1: not an SSH host key; paste the host's "
        "/etc/ssh/ssh_host_*_key.pub files or known_hosts lines (e.g. from ssh-keyscan)",
    }
    assert Host.select().count() == 0


@pytest.fixture
def operator(db):
    from panel.actions.accounts import create_user

    return create_user("ops@example.com", PASSWORD, is_operator=True)


def test_operator_adds_a_host_with_its_key_encrypted(settings, db, operator, redis_conn):
    cipher = SecretCipher.from_settings(settings)
    host = add_host(actor=operator, name="n1", address="10.0.0.5", groups=["nomad_servers"],
                    ssh_private_key=SSH_KEY, cipher=cipher, redis_conn=redis_conn)  # fmt: skip
    stored = Host.get_by_id(host.id)
    assert "PRIVATE SSH_KEY" not in stored.ssh_private_key
    assert cipher.decrypt(stored.ssh_private_key) == SSH_KEY
    event = Event.get(Event.subject == "v1.host.added")
    assert event.data == {"host": "n1", "host_id": host.id, "groups": ["nomad_servers"]}
    with pytest.raises(ActionError) as refused:
        add_host(actor=operator, name="n1", address="10.0.0.6", groups=["edge"], cipher=cipher)
    assert refused.value.code == "conflict"


def test_only_operators_add_hosts_or_provision(settings, db, redis_conn):
    from panel.actions.accounts import create_user

    member = create_user("dev@example.com", PASSWORD)
    cipher = SecretCipher.from_settings(settings)
    with pytest.raises(ActionError) as refused:
        add_host(actor=member, name="n1", address="10.0.0.5", groups=["edge"], cipher=cipher)
    assert refused.value.code == "not_found"
    with pytest.raises(ActionError):
        request_provision(actor=member, kind="plan", settings=settings, redis_conn=redis_conn)
    assert Host.select().count() == 0 and ProvisionRun.select().count() == 0


def test_provisioning_needs_a_host_and_a_known_kind(
    settings, db, operator, redis_conn, host_keys_text
):
    with pytest.raises(ActionError, match="add a host first"):
        request_provision(actor=operator, kind="plan", settings=settings, redis_conn=redis_conn)
    add_host(actor=operator, name="n1", address="10.0.0.5", groups=["edge"],
             ssh_host_keys=host_keys_text, cipher=SecretCipher.from_settings(settings))  # fmt: skip
    with pytest.raises(ActionError):
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


def test_pages_are_for_operators_and_never_show_the_key(app, client, auth, operator,
                                                        host_keys_text):  # fmt: skip
    from panel.actions.accounts import create_user

    create_user("dev@example.com", PASSWORD)
    assert client.get("/hosts/").status_code == 302  # to the sign-in page
    auth.login("dev@example.com", PASSWORD)
    assert client.get("/hosts/").status_code == 404  # as if there were no such page

    operator_client = app.test_client()
    type(auth)(operator_client).login("ops@example.com", PASSWORD)
    page = operator_client.get("/hosts/new").get_data(as_text=True)
    response = operator_client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "n1", "address": "10.0.0.5", "ssh_user": "root",
        "ssh_port": "22", "groups": ["nomad_servers", "edge"], "ssh_private_key": SSH_KEY,
        "ssh_host_keys": host_keys_text,
    })  # fmt: skip
    assert response.status_code == 302, response.get_data(as_text=True)
    for path in ("/hosts/", response.headers["Location"]):
        text = operator_client.get(path).get_data(as_text=True)
        assert "n1" in text
        assert "root@10.0.0.5:22" in text or "host keys pinned" not in text
        assert "key stored" in text or "private key is stored" in text
        assert "PRIVATE SSH_KEY-----" not in text and "b3BlbnNzaC1rZXk" not in text
    bad = operator_client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "Bad Name", "address": "10.0.0.6",
        "ssh_user": "root", "ssh_port": "22", "groups": ["edge"],
    })  # fmt: skip
    assert bad.status_code == 422 and "lowercase DNS name" in bad.get_data(as_text=True)


def test_the_hosts_list_shows_how_ssh_reaches_each_host(settings, app, client, auth, operator):
    cipher = SecretCipher.from_settings(settings)
    add_host(actor=operator, name="n1", address="10.0.0.5", groups=["edge"], cipher=cipher)
    add_host(actor=operator, name="n2", address="node-2.example.com", groups=["edge"],
             ssh_user="deploy", ssh_port=2222, cipher=cipher)  # fmt: skip
    add_host(actor=operator, name="n3", address="2001:db8::7", groups=["edge"], cipher=cipher)
    auth.login("ops@example.com", PASSWORD)
    text = client.get("/hosts/").get_data(as_text=True)
    shown = re.findall(r"<code>([^<]*@[^<]*)</code>", text)
    assert shown == ["root@10.0.0.5:22", "deploy@node-2.example.com:2222", "root@[2001:db8::7]:22"]
    assert "@:" not in text
    form = client.get("/hosts/new").get_data(as_text=True)  # groups inline, keys in a big box
    assert re.search(r'<fieldset class="field"[^>]*>\s*<legend>Groups</legend>\s*'
                     r'<ul class="checks" id="groups">', form)  # fmt: skip
    boxes = re.findall(r"<textarea[^>]*>", form)
    assert len(boxes) == 2 and all('class="code"' in b and 'rows="8"' in b for b in boxes)


def _field_error(page: str, field_id: str) -> str:
    """The error shown under a field of a page, or '' when there is none."""
    match = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', page)
    return html.unescape(match.group(1)) if match else ""


def test_the_host_form_shows_every_bad_field_next_to_it(app, client, auth, operator):
    auth.login("ops@example.com", PASSWORD)
    page = client.get("/hosts/new").get_data(as_text=True)
    shown = html.unescape(page)
    for name, info in HostIn.model_fields.items():  # labels and help come from the schema
        assert field_meta(info).label in shown and info.description in shown, name
    assert 'value="root"' in page and 'value="22"' in page and 'value="nomad_servers"' in page
    response = client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "Node 1", "address": "$(id)", "ssh_user": "Root",
        "ssh_port": "0", "ssh_private_key": SSH_KEY.replace("OPENSSH", "X"),
        "ssh_host_keys": "not a host key",
    })  # fmt: skip
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    expected = {
        "name": "use a lowercase DNS name",
        "address": "give an IP address (without a %scope)",
        "ssh_user": "use a Unix user name",
        "ssh_port": "the SSH port is a number from 1 to 65535",
        "groups": "choose at least one of nomad_servers, nomad_clients, edge, build_nodes, "
        "registry",
        "ssh_private_key": "paste an unencrypted SSH private key",
        "ssh_host_keys": "line 1: not an SSH host key",
    }
    for field, says in expected.items():
        assert says in _field_error(text, field), field
    assert "b3BlbnNzaC1rZXk" not in text  # the pasted private key is never shown back
    assert "not a host key" in text and 'value="Node 1"' in text  # the rest is kept to fix
    assert Host.select().count() == 0


def test_the_cli_has_the_hosts_commands(settings):
    result = subprocess.run(helios_command("hosts", "--help"), capture_output=True, text=True,
                            env=process_env(settings), cwd=REPO_ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("add", "list", "pin", "remove", "plan", "apply"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), result.stdout


# ---------------------------------------------------------------------------------------------
# SSH host keys: pinned, never trusted on first use
# ---------------------------------------------------------------------------------------------


def _ssh_keygen_fingerprint(path: Path) -> str:
    # "256 SHA256:abc… root@node (ED25519)"
    return subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], check=True,
                          capture_output=True, text=True).stdout.split()[1]  # fmt: skip


def test_host_keys_are_read_and_fingerprinted_like_ssh_keygen(host_key_files, host_keys_text):
    keys = parse_host_keys(host_keys_text)
    assert {key.fingerprint for key in keys} == {
        _ssh_keygen_fingerprint(path) for path in host_key_files.values()
    }
    assert sorted(key.label.split()[0] for key in keys) == ["ECDSA", "ED25519", "RSA"]
    # known_hosts lines and ssh-keyscan output give the same keys, comments and blanks aside.
    as_known_hosts = "# scanned\n\n" + "".join(
        f"[10.0.0.5]:2222 {key.type} {key.blob}\n" for key in keys
    )
    assert parse_host_keys(as_known_hosts) == keys
    assert keys[0].known_hosts_line("10.0.0.5", 2222).startswith("[10.0.0.5]:2222 ")
    assert keys[0].known_hosts_line("10.0.0.5", 22).startswith("10.0.0.5 ")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "ssh-ed25519\n",
        "not a key at all\n",
        SSH_KEY,
        f"@cert-authority * ssh-ed25519 {ED25519_BLOB}\n",
        "ssh-ed25519 !!!notbase64!!!\n",
        # A valid RSA key labelled as ed25519: the blob names its own algorithm.
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC0\n",
    ],
    ids=["empty", "comment", "no-key", "prose", "private-key", "marker", "base64", "mislabelled"],
)
def test_what_is_not_a_host_key_is_refused(text):
    with pytest.raises(HostKeyError):
        parse_host_keys(text)


def test_pasted_host_keys_are_pinned_when_the_host_is_added(settings, db, operator,
                                                            host_keys_text):  # fmt: skip
    cipher = SecretCipher.from_settings(settings)
    host = add_host(actor=operator, name="n1", address="10.0.0.5", ssh_port=2222,
                    groups=["edge"], ssh_host_keys=host_keys_text, cipher=cipher)  # fmt: skip
    stored = Host.get_by_id(host.id)
    assert stored.ssh_host_keys_pinned_at is not None
    assert all(line.startswith("[10.0.0.5]:2222 ") for line in stored.ssh_host_keys.splitlines())
    event = Event.get(Event.subject == "v1.host.keys_pinned")
    assert event.data["source"] == "operator" and len(event.data["fingerprints"]) == 3
    with pytest.raises(ActionError) as refused:
        add_host(actor=operator, name="n2", address="10.0.0.6", groups=["edge"],
                 ssh_host_keys="ssh-ed25519 garbage", cipher=cipher)  # fmt: skip
    assert refused.value.field == "ssh_host_keys"
    assert not Host.select().where(Host.name == "n2").exists()


def test_a_host_that_cannot_be_scanned_stays_unpinned(settings, db, operator):
    # ssh-keyscan for real, against a loopback port nothing listens on.
    host = add_host(actor=operator, name="n1", address="127.0.0.1", ssh_port=free_port(),
                    groups=["edge"], cipher=SecretCipher.from_settings(settings))  # fmt: skip
    with pytest.raises(ActionError, match=r"no SSH host key from 127\.0\.0\.1") as refused:
        scan_host_keys(actor=operator, host=host)
    assert refused.value.code == "unreachable"
    assert Host.get_by_id(host.id).ssh_host_keys_pinned_at is None


def _host(name, groups, keys=None, **fields):
    return add_host(actor=None, name=name, address=fields.pop("address", "10.0.0.9"),
                    groups=groups, ssh_host_keys=keys, cipher=fields.pop("cipher"),
                    **fields)  # fmt: skip


def test_provisioning_refuses_hosts_whose_keys_are_not_pinned(
    settings, db, operator, redis_conn, host_keys_text
):
    cipher = SecretCipher.from_settings(settings)
    server = _host("s1", ["nomad_servers"], cipher=cipher)
    client = _host("c1", ["nomad_clients"], host_keys_text, cipher=cipher)

    def request(host_ids=None):
        return request_provision(actor=operator, kind="plan", settings=settings,
                                 redis_conn=redis_conn, host_ids=host_ids)  # fmt: skip

    with pytest.raises(ActionError, match=r"confirm the SSH host key of s1 first: Hosts → s1"):
        request()
    # A run on the client alone still reaches the first server (its CA signs certificates).
    with pytest.raises(ActionError, match="s1") as refused:
        request([client.id])
    assert refused.value.code == "unpinned"
    assert ProvisionRun.select().count() == 0
    pin_host_keys(actor=operator, host=server, ssh_host_keys=host_keys_text, scanned=True)
    assert request([client.id]).host_ids == [client.id]
    event = Event.select().where(Event.subject == "v1.host.keys_pinned").order_by(Event.id)[-1]
    assert event.data["source"] == "scan" and event.data["host"] == "s1"


def test_a_run_refuses_a_host_unpinned_after_it_was_queued(
    settings, db, operator, redis_conn, monkeypatch, host_keys_text
):
    cipher = SecretCipher.from_settings(settings)
    host = _host("s1", ["nomad_servers"], host_keys_text, cipher=cipher)
    run = request_provision(actor=operator, kind="plan", settings=settings, redis_conn=redis_conn)
    Host.update(ssh_host_keys_pinned_at=None).where(Host.id == host.id).execute()
    for name, value in {"HELIOS_DATABASE_URL": settings.effective_database_url,
                        "HELIOS_REDIS_URL": settings.effective_redis_url,
                        "HELIOS_DATA_DIR": str(settings.data_dir)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match="confirm the SSH host key of s1 first"):
        plan_hosts(run.id)
    run = ProvisionRun.get_by_id(run.id)
    assert run.status == "failed" and "confirm the SSH host key of s1" in run.message
    assert not list((settings.data_dir / "ansible").iterdir())


def test_a_run_writes_the_keys_of_the_hosts_it_reaches_only(settings, db, tmp_path,
                                                           host_keys_text):  # fmt: skip
    cipher = SecretCipher.from_settings(settings)
    other = other_host_keys(tmp_path)
    hosts = {
        "s1": _host("s1", ["nomad_servers"], host_keys_text, address="10.0.0.1",
                    ssh_private_key=SSH_KEY, cipher=cipher),
        "s2": _host("s2", ["nomad_servers"], other, address="10.0.0.2", ssh_private_key=SSH_KEY,
                    cipher=cipher),
        "c1": _host("c1", ["nomad_clients"], other, address="10.0.0.3", ssh_private_key=SSH_KEY,
                    cipher=cipher),
        "c2": _host("c2", ["nomad_clients", "edge"], host_keys_text, address="10.0.0.4",
                    ssh_port=2222, ssh_private_key=SSH_KEY, cipher=cipher),
    }  # fmt: skip
    run = ProvisionRun.create(kind="plan", host_ids=[hosts["c2"].id])
    driver = AnsibleDriver(REPO_ROOT / "playbooks", work_dir=tmp_path / "work")
    with driver.workspace() as workspace:
        prepared = prepare_run(run, settings, workspace)
        written = sorted(path.name for path in (workspace.root / "secrets").iterdir())
    # c2 (the run) and s1 (the CA and bootstrap server every run reaches): not s2 nor c1.
    assert written == sorted(f"host-{hosts[name].id}.key" for name in ("c2", "s1"))
    assert prepared.limit == "c2"
    lines = prepared.known_hosts.splitlines()
    assert {line.split()[0] for line in lines} == {"10.0.0.1", "[10.0.0.4]:2222"}
    assert len(lines) == 6  # three keys each
    assert "s2:" in prepared.inventory and "c1:" in prepared.inventory  # listed, no key file
    assert prepared.inventory.count("ansible_ssh_private_key_file") == 2
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_traefik_answers_at_the_panels_base_domain_unless_the_vars_say_otherwise(
    settings, db, tmp_path, host_keys_text
):
    cipher = SecretCipher.from_settings(settings)
    _host("e1", ["nomad_servers", "edge"], host_keys_text, address="10.0.0.1", cipher=cipher)
    run = ProvisionRun.create(kind="plan", host_ids=[Host.get().id])
    driver = AnsibleDriver(REPO_ROOT / "playbooks", work_dir=tmp_path / "work")

    def inventory(settings) -> str:
        with driver.workspace() as workspace:
            return prepare_run(run, settings, workspace).inventory

    # Every value reaches Ansible marked unsafe: data, never a template.
    written = inventory(settings.replace(base_domain="apps.example.com"))
    assert "traefik_apps_domain: !unsafe 'apps.example.com'" in written
    chosen = tmp_path / "provision.yml"
    chosen.write_text("vars:\n  traefik_apps_domain: edge.example.net\n")
    chosen_too = settings.replace(base_domain="apps.example.com", provision_vars=str(chosen))
    written = inventory(chosen_too)
    assert "traefik_apps_domain: !unsafe 'edge.example.net'" in written
    assert "apps.example.com" not in written


def test_the_panel_names_the_address_it_reaches_each_host_from():
    # In a network namespace of its own with one veth pair, so the answer does not depend on
    # this machine's network: a routed host gives the interface's address; loopback, an
    # unroutable host and a name that does not resolve give nothing.
    assert os.geteuid() == 0, "this test needs root (ip netns): run the tests as root"
    namespace = f"helios-own-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for args in (["link", "add", "own0", "type", "veth", "peer", "name", "own1"],
                     ["addr", "add", "198.51.100.7/24", "dev", "own0"],
                     ["link", "set", "own0", "up"], ["link", "set", "own1", "up"],
                     ["link", "set", "lo", "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", namespace, *args], check=True)
        code = (
            "from types import SimpleNamespace as Host\n"
            "from panel.reconcile.provision import own_addresses\n"
            "print(own_addresses([Host(address=a, ssh_port=22) for a in ("
            "'198.51.100.50', '127.0.0.9', '203.0.113.1', 'no-such-host.invalid', "
            "'198.51.100.51')]))"
        )
        found = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == "['198.51.100.7']"
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


def test_the_firewall_sources_of_a_run_keep_the_vars_files_and_add_the_panels(
    settings, db, tmp_path, host_keys_text
):
    cipher = SecretCipher.from_settings(settings)
    _host("e1", ["nomad_servers"], host_keys_text, address="127.0.0.5", cipher=cipher)
    run = ProvisionRun.create(kind="plan", host_ids=[Host.get().id])
    driver = AnsibleDriver(REPO_ROOT / "playbooks", work_dir=tmp_path / "work")

    def sources(settings) -> list:
        with driver.workspace() as workspace:
            written = yaml.safe_load(
                prepare_run(run, settings, workspace).inventory.replace("!unsafe ", "")
            )
        return written["all"]["vars"]["base_firewall_cluster_sources"]

    # The panel reaches 127.0.0.5 over loopback, which the host lets in anyway: nothing added.
    assert sources(settings) == []
    chosen = tmp_path / "provision.yml"
    chosen.write_text("vars:\n  base_firewall_cluster_sources: [192.0.2.7]\n")
    assert sources(settings.replace(provision_vars=str(chosen))) == ["192.0.2.7"]


def test_the_hosts_a_run_reaches_are_the_ones_ansible_delegates_to(tmp_path):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    groups = {"zeta": ["nomad_servers"], "alpha": ["nomad_servers"], "c1": ["nomad_clients"],
              "e1": ["edge"]}  # fmt: skip
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(render_inventory([
        InventoryHost(name=name, address=f"10.0.0.{i}", groups=tuple(member_of))
        for i, (name, member_of) in enumerate(groups.items(), start=1)
    ]))  # fmt: skip
    loaded = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    first_server = loaded.groups["nomad_servers"].get_hosts()[0].name
    assert first_server == "zeta"  # the first given, as Host rows are given: by id
    assert hosts_reached(groups, ["e1"]) == ["e1", "zeta"]
    assert hosts_reached(groups, ["e1"], {"pki_ca_host": "alpha"}) == ["alpha", "e1", "zeta"]
    assert hosts_reached(groups, ["e1"], {"pki_servers_group": "edge"}) == ["e1", "zeta"]
    assert hosts_reached(groups, list(groups)) == sorted(groups)


def test_operator_pins_scans_and_pastes_keys_on_the_host_page(
    app, client, auth, operator, host_keys_text, tmp_path
):
    auth.login("ops@example.com", PASSWORD)
    page = client.get("/hosts/new").get_data(as_text=True)
    closed = free_port()
    response = client.post("/hosts/new", data={
        "csrf_token": _csrf(page), "name": "n1", "address": "127.0.0.1", "ssh_user": "root",
        "ssh_port": str(closed), "groups": ["nomad_servers"],
    })  # fmt: skip
    assert response.status_code == 302
    host_page = response.headers["Location"]
    text = client.get(host_page).get_data(as_text=True)
    assert "Could not read the SSH host keys of n1" in text
    assert "No SSH host key known yet" in text
    listing = client.get("/hosts/").get_data(as_text=True)
    assert f"root@127.0.0.1:{closed}" in listing and "host keys not confirmed" in listing
    refused = client.post("/hosts/plan", data={"csrf_token": _csrf(text)})
    assert refused.status_code == 302
    assert "confirm the SSH host key of n1 first" in client.get("/hosts/").get_data(as_text=True)

    host = Host.get(Host.name == "n1")
    pinned = client.post(f"/hosts/{host.id}/pin", data={
        "csrf_token": _csrf(text), "ssh_host_keys": host_keys_text, "source": "operator",
    })  # fmt: skip
    assert pinned.status_code == 302
    text = client.get(host_page).get_data(as_text=True)
    assert "pinned: provisioning trusts only these" in text
    for key in parse_host_keys(host_keys_text):
        assert key.fingerprint in text
    assert Host.get_by_id(host.id).ssh_host_keys_pinned_at is not None
    # A re-scan that cannot reach the host changes nothing.
    client.post(f"/hosts/{host.id}/scan", data={"csrf_token": _csrf(text)})
    text = client.get(host_page).get_data(as_text=True)
    assert "Could not read the SSH host keys" in text
    assert Host.get_by_id(host.id).ssh_host_keys_pinned_at is not None
    # Without the CSRF token nothing is pinned.
    before = Host.get_by_id(host.id).ssh_host_keys
    forged = client.post(f"/hosts/{host.id}/pin", data={
        "ssh_host_keys": other_host_keys(tmp_path), "source": "operator"})  # fmt: skip
    assert forged.status_code == 400
    assert Host.get_by_id(host.id).ssh_host_keys == before


def test_the_cli_pins_keys_from_a_file_and_refuses_unpinned_hosts(settings, db, host_key_files,
                                                                  tmp_path):  # fmt: skip
    env = process_env(settings)

    def helios(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(helios_command("hosts", *args), capture_output=True, text=True,
                              env=env, cwd=REPO_ROOT, timeout=60,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    missing = helios("add", "s1", "10.0.0.1", "--group", "nomad_servers",
                     "--host-key-file", str(tmp_path / "missing.pub"))  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr
    added = helios("add", "s1", "10.0.0.1", "--group", "nomad_servers",
                   "--host-key-file", str(host_key_files["ed25519"]))  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert _ssh_keygen_fingerprint(host_key_files["ed25519"]) in added.stdout
    closed = helios("add", "c1", "127.0.0.1", "--port", str(free_port()), "--group",
                    "nomad_clients")  # fmt: skip
    assert closed.returncode == 1
    assert "its SSH host keys are not pinned" in closed.stderr
    assert "helios hosts pin c1" in closed.stderr
    listing = helios("list")
    assert re.search(r"^s1\t.*\tkeys pinned\t", listing.stdout, re.M), listing.stdout
    assert re.search(r"^c1\t.*\tkeys NOT pinned\t", listing.stdout, re.M), listing.stdout
    refused = helios("plan", "--no-wait")
    assert refused.returncode == 2  # as the API's 409 exits
    assert "confirm the SSH host key of c1 first: Hosts → c1" in refused.stderr
    other = tmp_path / "other.pub"
    other.write_text(other_host_keys(tmp_path))
    pinned = helios("pin", "c1", "--host-key-file", str(other))
    assert pinned.returncode == 0, pinned.stderr
    assert "pinned" in pinned.stdout
    assert helios("plan", "--no-wait").returncode == 0
    # Each change is recorded as done by the OS account that ran the command.
    operator = f"operator {pwd.getpwuid(os.geteuid()).pw_name} (local shell)"
    actors = {e.subject: e.actor for e in Event.select().where(Event.subject.startswith("v1."))}
    assert actors["v1.host.added"] == actors["v1.provision.requested"] == operator
    assert actors["v1.host.keys_pinned"] == operator


def test_the_host_event_names_every_group_the_panel_offers():
    from panel.events import SCHEMAS
    from panel.render.ansible import HOST_GROUPS

    groups = SCHEMAS["v1.host.added"]["properties"]["groups"]["items"]["enum"]
    assert groups == list(HOST_GROUPS)
