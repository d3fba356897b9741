"""Real converge: playbooks/site.yml on three Debian nodes booted with systemd under nspawn.

The nodes (see tests/provision_harness.py) are reached over real SSH; every run goes through
panel.drivers.ansible, the code path the worker uses. The tests run in file order on one set of
nodes, each step on what the one before left:

1. check mode on a fresh node (one is enough to prove it works; the others stay untouched),
2. the first run, which converges all three,
2a. the firewall node's rendered /etc/nftables.conf loaded in network namespaces of the test's
   own: an outsider reaches neither Nomad's API nor its dynamic ports (directly or through a
   DNAT as Docker publishes ports), a cluster source reaches all of them, 443 stays open,
2b. the container registry on n2, reached from the nodes' network over TLS verified against
   the cluster CA: 401 without credentials, 200 with the ones a Nomad client pulls with,
3. SSH host keys through the panel: each host's keys are read (ssh-keyscan against the nodes'
   real sshd) and pinned; a node whose keys changed is refused until its new keys are pinned,
4. a worker SIGKILLed in the middle of a plan leaves no key on disk once the next one starts,
   and that run ends failed,
5. the panel's flow: add the hosts, plan (check mode with diff on the converged nodes: must
   report no change and change nothing) and apply (the second run: must change nothing),
6. the verify play, which also reboots the edge node and waits for its units,
7. a version bump of consul, nomad and traefik on a cluster whose Nomad ACL state was wiped
   (as a rebuilt cluster's is): every agent restarts on the new binary, the two servers one
   at a time, and the ACL system is bootstrapped again,
8. certificates within pki_renew_days of expiry: re-issued with a warning, agents restarted.

The nomad, consul and traefik binaries are stand-ins: what provisioning puts in place is
checked, the agents' behaviour is not. The stand-in agents answer the status endpoints the
roles wait on after a restart (over the agents' TLS, with their ACL token), report themselves
healthy a moment after they start, and log when they started and when they were first seen
healthy, so the order of the restarts can be checked; a real cluster's leader election and
raft membership are not exercised. The registry is the real one (Debian's docker-registry).

The panel cannot put a host in the groups `registry` and `build_nodes` yet (its HOST_GROUPS):
the test's own inventory lists them like any inventory file, and the panel's runs go through a
site.yml that first adds the same hosts to them (add_host), then runs the repository's.
"""

from __future__ import annotations

import base64
import ctypes
import html
import itertools
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from provision_harness import CLONE_NEWNET, PLAYBOOKS, REPO_ROOT, Cluster, require_converge

from panel.crypto import SecretCipher
from panel.drivers.ansible import AnsibleDriver, RunResult
from panel.models import ClusterCredentials, Event, Host, ProvisionEvent, ProvisionRun
from panel.render.ansible import HOST_GROUPS, InventoryHost, render_extravars, render_inventory

from conftest import wait_until

pytestmark = pytest.mark.slow

# Two servers, so that restarts one server at a time can be seen; n3 serves apps too.
LAYOUT = [
    ("n1", ("nomad_servers",)),
    ("n2", ("nomad_clients", "edge", "registry")),
    ("n3", ("nomad_servers", "nomad_clients")),
]
TEMPLATE = "{{ 42*42 }}"
FIREWALL_NODE = "n2"
FRESH_CHECK_NODE = "n2"  # the node with the most roles (client, edge, registry, firewall)
REGISTRY_NODE = "n2"  # the registry's firewall rule is then checked by nft for real
REGISTRY_PORT = 5000
# Addresses of the firewall check's own namespaces (documentation networks): the firewall
# node's, a peer in base_firewall_cluster_sources, an outsider, and a "container" behind DNAT.
FIREWALL_ADDRESS, FIREWALL_PEER, OUTSIDER = "192.0.2.1", "192.0.2.10", "192.0.2.20"
CONTAINER_GATEWAY, CONTAINER = "198.51.100.1", "198.51.100.2"
# Where provisioning writes; a plan must leave all of it as it was.
WATCHED = "/etc /opt /usr/local /srv /var/lib/helios /var/cache/helios /home"
FIGURES = REPO_ROOT / "test-artifacts" / "converge-figures.json"
RESULTS: dict[str, tuple[RunResult, float, list[dict]]] = {}


def cluster_vars(cluster: Cluster) -> dict:
    """Variables every node gets: how to reach it, where releases come from, test values."""
    return {
        "ansible_ssh_common_args": f'-o ProxyCommand="{cluster.proxy_command}"',
        "ansible_python_interpreter": "/usr/bin/python3",
        "consul_mirror_url": cluster.mirror_url,
        "nomad_mirror_url": cluster.mirror_url,
        "traefik_mirror_url": f"{cluster.mirror_url}/traefik",
        "base_admin_authorized_keys": [Path(f"{cluster.key}.pub").read_text().strip()],
        "nomad_host_volumes": [{"name": "data", "path": "/srv/nomad/data", "read_only": False}],
        # Arrives on the clients as written: user data is never a template.
        "nomad_node_meta": {"helios_note": TEMPLATE},
        "traefik_acme_email": "ops@example.com",
        # A host outside the inventory let in, as the panel's host would be (the firewall
        # check below connects from it).
        "base_firewall_cluster_sources": [FIREWALL_PEER],
    }


def node_vars(node) -> dict:
    """Per-node settings that only the test environment needs (each says why)."""
    return {
        # The nodes share one network namespace, so one nftables table: only one node may
        # own it, or their reloads would race and the last one win.
        "base_firewall_enabled": node.name == FIREWALL_NODE,
        # dockerd cannot run inside systemd-nspawn here (it needs its own cgroup, iptables
        # and overlay mounts): the engine is installed and configured, but left stopped.
        "docker_service_state": "stopped",
        "docker_service_enabled": False,
        # Consul's HTTPS API listens on 127.0.0.1 by default: in the shared namespace every
        # node's would be the same socket, so each listens on its own loopback address.
        "consul_client_address": node.address,
    }


def panel_groups(node) -> list[str]:
    """The node's groups the panel offers (a Host's groups)."""
    return [group for group in node.groups if group in HOST_GROUPS]


def other_groups(cluster: Cluster) -> dict[str, list[str]]:
    """Groups the panel does not offer yet, with their nodes."""
    members: dict[str, list[str]] = {}
    for node in cluster.nodes:
        for group in node.groups:
            if group not in HOST_GROUPS:
                members.setdefault(group, []).append(node.name)
    return members


def inventory_for(cluster: Cluster) -> str:
    """The cluster's inventory, rendered the way the panel renders Host rows, plus the groups
    the panel does not offer yet (top-level groups of the YAML inventory, listing names)."""
    hosts = [
        InventoryHost(
            name=node.name,
            address=node.address,
            groups=tuple(panel_groups(node)),
            key_file=str(cluster.key),
            variables=node_vars(node),
        )
        for node in cluster.nodes
    ]
    extra = "".join(
        f"{group}:\n  hosts:\n" + "".join(f"    {name}: {{}}\n" for name in names)
        for group, names in other_groups(cluster).items()
    )
    return render_inventory(hosts, cluster_vars(cluster)) + extra


def panel_playbooks(cluster: Cluster, folder: Path) -> Path:
    """A playbooks folder for the panel's runs: its site.yml puts the nodes in the groups the
    panel does not offer yet, as inventory_for() does, then runs the repository's site.yml."""
    folder.mkdir()
    members = [{"name": name, "groups": [group]}
               for group, names in other_groups(cluster).items() for name in names]  # fmt: skip
    plays = [
        {"name": "Put the nodes in the groups the panel does not offer yet", "hosts": "all",
         "gather_facts": False,
         "tasks": [{"name": "Add the node to the group",
                    "ansible.builtin.add_host": {"name": "{{ item.name }}",
                                                 "groups": "{{ item.groups }}"},
                    "loop": members, "changed_when": False}]},
        {"name": "Run the repository's site.yml",
         "ansible.builtin.import_playbook": str(PLAYBOOKS / "site.yml")},
    ]  # fmt: skip
    (folder / "site.yml").write_text(json.dumps(plays, indent=2))
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three booted nodes shared by every test of this module."""
    require_converge()
    with Cluster(LAYOUT, tmp_path_factory.mktemp("cluster")) as booted:
        yield booted
    if RESULTS:
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(
            {name: {"seconds": round(seconds, 1), "changed": result.changed,
                    "plays": play_seconds(events), "recap": result.recap}
             for name, (result, seconds, events) in RESULTS.items()},
            indent=2,
        ))  # fmt: skip


def play_seconds(events: list[dict]) -> dict[str, float]:
    """Seconds each play took, from its start to the next play's (the last one: to the run's
    last event), read from the events' times: where a run's time goes."""
    spent: dict[str, float] = {}
    play, started, at = None, None, None
    for event in events:
        if not event.get("time"):
            continue
        at = datetime.fromisoformat(event["time"])
        if event["kind"] == "play":
            if play is not None:
                spent[play] = spent.get(play, 0) + (at - started).total_seconds()
            play, started = event.get("play", "?"), at
    if play is not None:
        spent[play] = spent.get(play, 0) + (at - started).total_seconds()
    return {name: round(seconds, 1) for name, seconds in spent.items()}


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> AnsibleDriver:
    """The driver the worker uses, on the repository's playbooks."""
    return AnsibleDriver(PLAYBOOKS, work_dir=tmp_path_factory.mktemp("ansible") / "runs")


def converge(cluster, driver, name, *, playbook="site.yml", check=False, limit=None, extra=None):
    """Run a playbook on the cluster, keep its figures and events; return the result."""
    events: list[dict] = []
    started = time.monotonic()
    with driver.workspace() as workspace:
        result = driver.run(
            workspace,
            playbook=playbook,
            inventory=inventory_for(cluster),
            extravars=render_extravars(extra) if extra else None,
            check=check,
            diff=check,
            limit=limit,
            on_event=events.append,
            known_hosts=cluster.known_hosts(),
        )
    seconds = time.monotonic() - started
    RESULTS[name] = (result, seconds, events)
    print(f"\n{name}: {seconds:.1f} s, changed={result.changed}, recap={result.recap}")
    return result, events


def failures(events: list[dict]) -> list[str]:
    """Readable lines for failed tasks, for assertion messages."""
    return [
        f"{e.get('host')}: {e.get('task')}: {e.get('msg') or e.get('text', '')[:1500]}"
        for e in events
        if e["kind"] in {"failed", "unreachable"}
    ]


def changes(events: list[dict]) -> list[str]:
    """Which task changed on which host."""
    return [f"{e.get('host')}: {e.get('task')}" for e in events if e["kind"] == "changed"]


def touched_since_marker(cluster, node) -> str:
    """Files and directories under WATCHED changed (content or metadata) since the marker."""
    command = f"find {WATCHED} -xdev -cnewer /run/helios-test-marker 2>/dev/null | sort"
    return cluster.ssh(node, command).stdout


def need(name: str) -> RunResult:
    """The result of an earlier step; skip when it did not run or failed."""
    if name not in RESULTS or not RESULTS[name][0].ok:
        pytest.skip(f"needs a successful {name} first")
    return RESULTS[name][0]


@pytest.mark.timeout(600)
def test_check_mode_on_a_fresh_host_downloads_and_changes_nothing(cluster, driver):
    result, events = converge(cluster, driver, "check_fresh", check=True, limit=FRESH_CHECK_NODE)
    assert result.ok, failures(events)
    assert set(result.recap) == {FRESH_CHECK_NODE}
    assert result.changed > 0, "check mode on a fresh host must report what it would do"
    for node in cluster.nodes:
        listed = "/etc/consul.d /opt/nomad /var/cache/helios /etc/docker/registry"
        probe = cluster.ssh(node, f"ls {listed}; id consul 2>&1")
        assert probe.stderr.count("No such file") == 4, probe.stderr
        assert "no such user" in probe.stdout, probe.stdout


@pytest.mark.timeout(600)
def test_first_run_converges(cluster, driver):
    result, events = converge(cluster, driver, "first_run")
    assert result.ok, failures(events)
    assert set(result.recap) == {"n1", "n2", "n3"}
    assert all(counts["failed"] == 0 for counts in result.recap.values())


def in_netns(name: str, function, *args):
    """Call ``function`` in a thread that lives in the network namespace ``name``."""
    outcome: dict[str, object] = {}

    def target() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name} failed")
            outcome["value"] = function(*args)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=target, name=f"in-{name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def listen(port: int) -> socket.socket:
    return socket.create_server(("0.0.0.0", port))


def connects(source: str, address: str, port: int) -> bool:
    """Whether a TCP connection from ``source`` is accepted (a dropped SYN: no answer)."""
    with socket.socket() as client:
        client.settimeout(3)
        client.bind((source, 0))
        try:
            client.connect((address, port))
        except (TimeoutError, ConnectionRefusedError):
            return False
        return True


def test_the_firewall_admits_only_the_cluster_to_its_ports(cluster):
    """The firewall node's rendered /etc/nftables.conf, loaded in namespaces of the test's
    own: a host namespace with it, a peer namespace holding a cluster source and an outsider,
    and a container namespace behind a DNAT rule as Docker publishes a port."""
    need("first_run")
    node = next(node for node in cluster.nodes if node.name == FIREWALL_NODE)
    rules = node.root / "etc/nftables.conf"
    assert all(other.address in rules.read_text() for other in cluster.nodes)
    host, peer, app = (f"helios-fw{os.getpid()}-{part}" for part in ("host", "peer", "app"))
    listeners: list[socket.socket] = []
    created: list[str] = []

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, text=True)

    try:
        for name in (host, peer, app):
            run("ip", "netns", "add", name)
            created.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", host, "link", "add", "to-peer", "type", "veth", "peer", "name", "eth0",
            "netns", peer)  # fmt: skip
        run("ip", "-n", host, "link", "add", "to-app", "type", "veth", "peer", "name", "eth0",
            "netns", app)  # fmt: skip
        for name, device, addresses in (
            (host, "to-peer", [FIREWALL_ADDRESS]), (host, "to-app", [CONTAINER_GATEWAY]),
            (peer, "eth0", [FIREWALL_PEER, OUTSIDER]), (app, "eth0", [CONTAINER]),
        ):  # fmt: skip
            for address in addresses:
                run("ip", "-n", name, "address", "add", f"{address}/24", "dev", device)
            run("ip", "-n", name, "link", "set", device, "up")
        run("ip", "-n", app, "route", "add", "default", "via", CONTAINER_GATEWAY)
        run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "netns", "exec", host, "nft", "-f", str(rules))
        # Docker's way of publishing a port: DNAT in its own table, then forwarding.
        published = 20500
        run("ip", "netns", "exec", host, "nft",
            f"add table ip publish; add chain ip publish pre {{ type nat hook prerouting "
            f"priority dstnat; }}; add rule ip publish pre tcp dport {published} "
            f"dnat to {CONTAINER}:8080")  # fmt: skip
        for port in (20001, 4646, 443):
            listeners.append(in_netns(host, listen, port))
        listeners.append(in_netns(app, listen, 8080))

        def reach(source: str, port: int) -> bool:
            return in_netns(peer, connects, source, FIREWALL_ADDRESS, port)

        reached = {(who, port): reach(source, port)
                   for who, source in (("cluster", FIREWALL_PEER), ("outsider", OUTSIDER))
                   for port in (20001, 4646, published, 443)}  # fmt: skip
        assert reached == {
            ("cluster", 20001): True, ("cluster", 4646): True, ("cluster", published): True,
            ("cluster", 443): True,
            ("outsider", 20001): False, ("outsider", 4646): False,
            ("outsider", published): False, ("outsider", 443): True,
        }, reached  # fmt: skip
    finally:
        for listener in listeners:
            listener.close()
        for name in created:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def https_request(url: str, *, cafile: str | None, method: str = "GET", authorization=None):
    """(status, body, headers) of one HTTPS request whose server certificate is verified
    against ``cafile`` only (None: the system's CAs); no proxy from the environment."""
    context = ssl.create_default_context(cafile=cafile)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, method=method)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


@pytest.mark.timeout(120)
def test_the_registry_answers_over_tls_to_the_clients_credentials(cluster):
    need("first_run")
    registry = next(node for node in cluster.nodes if node.name == REGISTRY_NODE)
    client = next(node for node in cluster.nodes if "nomad_clients" in node.groups
                  and node is not registry)  # fmt: skip
    address = f"{registry.address}:{REGISTRY_PORT}"
    # What a Nomad client pulls with: Docker's CA for the registry, the docker driver's file.
    ca = client.root / "etc/docker/certs.d" / address / "ca.crt"
    assert ca.read_bytes() == (client.root / "etc/helios/pki/ca.pem").read_bytes()
    auth_file = client.root / "etc/docker/helios-registry-auth.json"
    assert (auth_file.stat().st_mode & 0o777, auth_file.stat().st_uid) == (0o600, 0)
    nomad = json.loads((client.root / "etc/nomad.d/nomad.json").read_text())
    assert nomad["plugin"]["docker"]["config"]["auth"] == {
        "config": "/" + str(auth_file.relative_to(client.root))
    }
    auths = json.loads(auth_file.read_text())["auths"]
    assert list(auths) == [address]
    kept = cluster.nodes[0].root / "etc/helios/secrets/registry.password"  # the first server
    assert kept.stat().st_mode & 0o777 == 0o600
    credentials = base64.b64decode(auths[address]["auth"]).decode()
    assert credentials == f"helios:{kept.read_text().strip()}"

    url = f"https://{address}/v2/"
    basic = f"Basic {auths[address]['auth']}"
    wait_until(lambda: cluster.in_namespace(https_request, url, cafile=str(ca))[0] == 401,
               timeout=30, what="the registry to answer")  # fmt: skip
    status, _, headers = cluster.in_namespace(https_request, url, cafile=str(ca))
    assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="Helios registry"')
    wrong = "Basic " + base64.b64encode(b"helios:not-the-password").decode()
    assert cluster.in_namespace(https_request, url, cafile=str(ca), authorization=wrong)[0] == 401
    status, body, _ = cluster.in_namespace(https_request, url, cafile=str(ca), authorization=basic)
    assert (status, json.loads(body)) == (200, {})
    # Deleting is on: an unknown manifest is "unknown" (404), not "unsupported" (405).
    manifest = f"https://{address}/v2/helios-test/manifests/sha256:{'0' * 64}"
    status, body, _ = cluster.in_namespace(https_request, manifest, cafile=str(ca),
                                           method="DELETE", authorization=basic)  # fmt: skip
    assert (status, json.loads(body)["errors"][0]["code"]) == (404, "MANIFEST_UNKNOWN")
    # The certificate is the cluster CA's: a client without that CA refuses the registry.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        cluster.in_namespace(https_request, url, cafile=None)


# ---------------------------------------------------------------------------------------------
# Through the panel, on the converged nodes: host keys read from the nodes' sshd and pinned, a
# changed key refused, a worker killed mid-run, then the plan and the apply (the second run),
# all through real worker processes.
# ---------------------------------------------------------------------------------------------


def _csrf(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)


def _stream(client, url: str, into: list) -> None:
    """Read the run's events until ``end``, reconnecting after the last one as EventSource
    does when a stream reaches its lifetime (HELIOS_STREAM_LIFETIME)."""
    last = 0
    while True:
        response = client.get(url, query_string={"after": last}, buffered=False)
        for chunk in response.response:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            for line in text.splitlines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                into.append((time.monotonic(), event))
                if event.get("kind") == "end":
                    response.close()
                    return
                last = max(last, event.get("seq", 0))
        response.close()


def _request(client, kind: str, host_id: int | None = None) -> int:
    data = {"csrf_token": _csrf(client, "/hosts/")}
    if host_id is not None:
        data["host_id"] = str(host_id)
    response = client.post(f"/hosts/{kind}", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert "/hosts/runs/" in location, client.get("/hosts/").get_data(as_text=True)
    return int(location.rstrip("/").split("/")[-1])


def _provision_through_panel(client, kind: str, run_event_lists: list, host_id=None):
    run_id = _request(client, kind, host_id)
    received: list = []
    reader = threading.Thread(target=_stream, args=(client, f"/hosts/runs/{run_id}/events",
                                                    received), daemon=True)  # fmt: skip
    reader.start()
    reader.join(timeout=400)
    assert not reader.is_alive(), "the event stream did not end"
    run = ProvisionRun.get_by_id(run_id)
    run_event_lists.append(received)
    return run, received


def node_fingerprints(cluster: Cluster, node) -> set[str]:
    """SHA256 fingerprints of the node's host keys, by ssh-keygen -lf on its own files."""
    prints = set()
    for path in sorted((node.root / "etc/ssh").glob("ssh_host_*_key.pub")):
        line = subprocess.run(["ssh-keygen", "-lf", str(path)], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
        prints.add(line.split()[1])
    return prints


def _shown_fingerprints(page: str) -> list[str]:
    return re.findall(r'<code class="fingerprint">(SHA256:[^<]+)</code>', page)


def _offered_keys(page: str) -> str:
    return html.unescape(re.search(r'name="ssh_host_keys" value="([^"]*)"', page).group(1))


def _add_and_pin(client, cluster) -> dict[str, int]:
    """Add every node through the panel; it reads each node's keys, the operator pins them."""
    key = cluster.key.read_text()
    ids = {}
    for node in cluster.nodes:
        form = {"csrf_token": _csrf(client, "/hosts/new"), "name": node.name,
                "address": node.address, "ssh_user": "root", "ssh_port": "22",
                "groups": panel_groups(node), "ssh_private_key": key}  # fmt: skip
        # ssh-keyscan runs from the nodes' network, as from a panel on that network.
        response = cluster.in_namespace(client.post, "/hosts/new", data=form)
        assert response.status_code == 302, response.get_data(as_text=True)
        ids[node.name] = host_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
        page = client.get(f"/hosts/{host_id}").get_data(as_text=True)
        assert "Not confirmed yet" in page, page
        assert set(_shown_fingerprints(page)) == node_fingerprints(cluster, node)
        pinned = client.post(f"/hosts/{host_id}/pin", data={
            "csrf_token": _csrf(client, f"/hosts/{host_id}"), "ssh_host_keys": _offered_keys(page),
            "source": "scan",
        })  # fmt: skip
        assert pinned.status_code == 302
        assert Host.get_by_id(host_id).ssh_host_keys_pinned_at is not None, node.name
    return ids


def _key_files(settings) -> list[Path]:
    work = settings.data_dir / "ansible"
    while True:
        try:
            return sorted(work.rglob("host-*.key")) if work.exists() else []
        except FileNotFoundError:  # a folder went while it was walked: a clean-up under way
            continue


@pytest.fixture
def provision_env(cluster, tmp_path) -> dict[str, str]:
    """The worker's environment: the test's provisioning variables."""
    provision_vars = tmp_path / "provision.yml"
    provision_vars.write_text(json.dumps({
        "vars": cluster_vars(cluster),
        "hosts": {node.name: node_vars(node) for node in cluster.nodes},
    }))  # fmt: skip
    playbooks = panel_playbooks(cluster, tmp_path / "playbooks")
    return {"HELIOS_PROVISION_VARS": str(provision_vars), "HELIOS_PLAYBOOKS_DIR": str(playbooks)}


@pytest.fixture
def panel_client(app, client, auth, settings, cluster):
    """A signed-in operator on the panel."""
    from panel.actions.accounts import create_user

    create_user("ops@example.com", "correct horse battery", is_operator=True)
    auth.login("ops@example.com", "correct horse battery")
    app.extensions["helios.redis"].ping()  # a connection made here, for the namespaced thread
    return client


@pytest.mark.timeout(600)
def test_a_host_whose_keys_changed_is_refused_until_the_new_ones_are_pinned(
    panel_client, cluster, settings, provision_env, start_worker
):
    need("first_run")
    client = panel_client
    ids = _add_and_pin(client, cluster)
    start_worker(**provision_env)
    node = cluster.nodes[2]
    host_id = ids[node.name]
    before = node_fingerprints(cluster, node)
    cluster.new_host_keys(node)  # as a reinstall would, or someone else answering on its address
    cluster.ssh(node, "systemctl restart ssh")
    cluster.wait_for_ssh(node)
    after = node_fingerprints(cluster, node)
    assert before.isdisjoint(after)

    refused, events = _provision_through_panel(client, "plan", [], host_id)
    assert refused.status == "failed", refused.message
    assert refused.recap[node.name]["unreachable"] == 1, refused.recap
    assert "Host key verification failed" in json.dumps([e for _, e in events])
    assert _key_files(settings) == []

    # A re-scan shows both sets; the operator pins the new ones (test_panel_add_plan_apply
    # then provisions this node with them).
    token = _csrf(client, f"/hosts/{host_id}")
    page = cluster.in_namespace(client.post, f"/hosts/{host_id}/scan",
                                data={"csrf_token": token}).get_data(as_text=True)  # fmt: skip
    assert "changed" in page
    shown = _shown_fingerprints(page)
    assert set(shown) == before | after
    client.post(f"/hosts/{host_id}/pin", data={"csrf_token": token, "source": "scan",
                                                "ssh_host_keys": _offered_keys(page)})  # fmt: skip
    pinned = Event.select().where(Event.subject == "v1.host.keys_pinned").order_by(Event.id)[-1]
    assert pinned.data["host"] == node.name
    assert {label.split()[1] for label in pinned.data["fingerprints"]} == after
    assert {label.split()[1] for label in pinned.data["replaced"]} == before


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_run_leaves_no_key_on_disk(
    panel_client, cluster, settings, provision_env, start_worker
):
    from provision_harness import crash_worker

    need("first_run")
    client = panel_client
    _add_and_pin(client, cluster)
    worker = start_worker(**provision_env)
    run_id = _request(client, "plan")
    wait_until(lambda: ProvisionEvent.select().where(ProvisionEvent.run == run_id).count() > 5,
               timeout=120, what="the plan to be under way")  # fmt: skip
    keys = _key_files(settings)
    assert len(keys) == len(cluster.nodes)
    control = Path((keys[0].parents[1] / "control-dir").read_text())

    crash_worker(worker, settings.data_dir / "ansible")
    assert ProvisionRun.get_by_id(run_id).status == "running"
    assert all(path.exists() for path in keys), "the crash left the keys behind"

    start_worker(**provision_env)  # its start removes what the dead run left and fails it
    # The sweep records the failure first, then removes the workspace: wait for both.
    workspaces = settings.data_dir / "ansible"
    run = wait_until(lambda: (r := ProvisionRun.get_by_id(run_id)).status == "failed"
                     and not _key_files(settings) and not any(workspaces.iterdir()) and r,
                     timeout=60, what="the run failed and its workspace removed")  # fmt: skip
    assert "the worker running it stopped (crashed or killed)" in run.message
    assert _key_files(settings) == []
    assert list((settings.data_dir / "ansible").iterdir()) == []
    assert not control.exists()


@pytest.mark.timeout(900)
def test_panel_add_plan_apply(panel_client, cluster, settings, provision_env, start_worker):
    need("first_run")
    client = panel_client
    key = cluster.key.read_text()
    _add_and_pin(client, cluster)
    start_worker(**provision_env)
    page = client.get("/hosts/").get_data(as_text=True)
    assert all(node.name in page for node in cluster.nodes)
    assert "BEGIN OPENSSH PRIVATE KEY" not in page

    for node in cluster.nodes:
        cluster.ssh(node, "touch /run/helios-test-marker && sleep 1")
    streams: list = []
    started = time.monotonic()
    plan, events = _provision_through_panel(client, "plan", streams)
    plan_seconds = time.monotonic() - started
    assert plan.status == "succeeded", plan.message
    assert plan.recap and all(c["changed"] == 0 and c["failed"] == 0
                              for c in plan.recap.values()), plan.recap  # fmt: skip
    kinds = {event["kind"] for _, event in events}
    assert {"play", "task", "ok", "recap"} <= kinds
    finished_at = events[-1][0]
    early = [t for t, event in events if event["kind"] == "task"]
    assert early and early[0] < finished_at - 5, "events did not arrive while the plan ran"
    touched = {node.name: touched_since_marker(cluster, node) for node in cluster.nodes}
    assert touched == dict.fromkeys(touched, ""), f"the plan changed files on the nodes: {touched}"

    started = time.monotonic()
    apply, events = _provision_through_panel(client, "apply", streams)
    apply_seconds = time.monotonic() - started
    assert apply.status == "succeeded", apply.message
    changed = {host: counts["changed"] for host, counts in apply.recap.items()}
    assert changed == {"n1": 0, "n2": 0, "n3": 0}, [
        f"{e.get('host')}: {e.get('task')}" for _, e in events if e["kind"] == "changed"
    ]
    stored = ProvisionRun.get_by_id(apply.id)
    assert set(stored.recap) == {"n1", "n2", "n3"}
    assert all(h.state == "ready" for h in Host.select())
    everything = json.dumps([e for stream in streams for _, e in stream])
    everything += json.dumps([e.data for e in ProvisionEvent.select()])
    for line in key.strip().splitlines()[1:-1]:
        assert line not in everything
    # The apply handed the panel its connection to the cluster (the nomad role's Helios
    # access: token, CA, client certificate), stored encrypted and never in the run's events.
    credentials = ClusterCredentials.get()
    assert credentials.run_id == apply.id, credentials.run_id
    assert credentials.address.startswith("https://") and credentials.address.endswith(":4646")
    assert (
        "BEGIN CERTIFICATE" in credentials.ca_cert
        and "BEGIN CERTIFICATE" in credentials.client_cert
    )
    cipher = SecretCipher.from_settings(settings)
    token = cipher.decrypt(credentials.token)
    key_lines = cipher.decrypt(credentials.client_key).strip().splitlines()[1:-1]
    for secret in (token, *key_lines):
        assert secret not in everything
    assert _key_files(settings) == [], "a run left an SSH key on disk"
    plan_events, apply_events = ([event for _, event in stream] for stream in streams)
    RESULTS["panel_plan"] = (RunResult("successful", 0, plan.recap), plan_seconds, plan_events)
    RESULTS["panel_apply"] = (RunResult("successful", 0, apply.recap), apply_seconds, apply_events)
    print(f"\npanel plan: {plan_seconds:.1f} s, panel apply (second run): {apply_seconds:.1f} s")


@pytest.mark.timeout(600)
def test_verify_play_and_reboot(cluster, driver):
    need("first_run")
    edge = cluster.nodes[1]
    boots = edge.boots
    # One run: every check on every node, then the edge node reboots and its units come back.
    reboot = {"verify_reboot": True, "verify_reboot_hosts": edge.name}
    result, events = converge(cluster, driver, "verify", playbook="verify.yml", extra=reboot)
    assert result.ok, failures(events)
    assert set(result.recap) == {"n1", "n2", "n3"}
    assert changes(events) == [f"{edge.name}: Reboot the host"], changes(events)
    assert edge.boots == boots + 1, "the node did not boot again"


def test_the_only_edge_keeps_the_http_challenge_and_no_dns_credentials(cluster):
    need("first_run")
    (edge,) = (node for node in cluster.nodes if "edge" in node.groups)
    config = yaml.safe_load((edge.root / "etc/traefik/traefik.yml").read_text())
    acme = config["certificatesResolvers"]["le"]["acme"]
    assert acme["httpChallenge"] == {"entryPoint": "web"} and "dnsChallenge" not in acme
    assert not (edge.root / "etc/traefik/acme-dns.env").exists()
    assert "EnvironmentFile" not in (edge.root / "etc/systemd/system/traefik.service").read_text()


def test_user_values_arrive_as_written(cluster):
    need("first_run")
    for node in cluster.nodes[1:]:
        text = cluster.ssh(node, "cat /etc/nomad.d/nomad.json").stdout
        assert json.loads(text)["client"]["meta"] == {"helios_note": TEMPLATE}
        assert "1764" not in text
        # The data plane is the interface that holds the node's address, as ip(8) sees it.
        held = cluster.ssh(node, f"ip -o address show to {node.address}/32").stdout.split()
        assert held, f"no interface holds {node.address}"
        assert json.loads(text)["client"]["network_interface"] == held[1], (node.name, held)


# ---------------------------------------------------------------------------------------------
# Restarts: a version bump and certificates about to expire, on the converged cluster
# ---------------------------------------------------------------------------------------------


def agent_events(cluster: Cluster, node, agent: str) -> list[tuple[str, float, str]]:
    """(kind, epoch, detail) lines the stand-in agent logged on the node (start, healthy)."""
    folder = {"consul": "opt/consul/data", "nomad": "opt/nomad/data",
              "traefik": "var/lib/traefik"}[agent]  # fmt: skip
    path = node.root / folder / "standin-events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(kind, float(at), " ".join(rest)) for kind, at, *rest in map(str.split, lines)]


def since(events: list[tuple[str, float, str]], moment: float, kind: str) -> list[tuple]:
    """The events of one kind at or after ``moment``."""
    return [event for event in events if event[0] == kind and event[1] >= moment]


def assert_servers_restarted_one_at_a_time(cluster, agent: str, moment: float) -> None:
    """Each server started once after ``moment`` and was seen healthy (by the role's wait)
    before the next server started: no two servers' restarts overlap."""
    servers = [node for node in cluster.nodes if "nomad_servers" in node.groups]
    assert len(servers) >= 2, "one server cannot show the order of restarts"
    spans = []
    for node in servers:
        events = agent_events(cluster, node, agent)
        starts, healthy = since(events, moment, "start"), since(events, moment, "healthy")
        assert len(starts) == 1, (agent, node.name, events)
        assert healthy and healthy[0][1] >= starts[0][1], (agent, node.name, events)
        spans.append((starts[0][1], healthy[0][1], node.name))
    spans.sort()
    for (_, back, first), (started, _, then) in itertools.pairwise(spans):
        assert started >= back, f"{agent}: {then} restarted before {first} was back: {spans}"


BUMP: dict[str, str] = {}
CERTIFICATES = ("consul", "nomad")


@pytest.mark.timeout(600)
def test_a_version_bump_and_expiring_certificates_restart_the_agents_one_server_at_a_time(
    cluster, driver
):
    """One re-run (each costs a minute and a half here) with three changes that must each
    restart agents: new binaries, certificates inside the renewal window, and a rebuilt
    cluster's ACL system that forgot its bootstrap."""
    from provision_harness import bumped_version

    need("first_run")
    bootstrap = cluster.nodes[0]  # the first server: the Nomad ACL bootstrap runs there
    # As a rebuilt cluster would: the ACL system knows nothing of the earlier bootstrap.
    wiped = cluster.ssh(bootstrap, "rm /var/lib/helios-standin/nomad-acl-bootstrapped")
    assert wiped.returncode == 0, wiped.stderr
    BUMP.update({f"{agent}_version": bumped_version(cluster.versions[agent])
                 for agent in ("consul", "nomad", "traefik")})  # fmt: skip
    before = {(node.name, name): (node.root / f"etc/helios/pki/{name}.pem").read_bytes()
              for node in cluster.nodes for name in CERTIFICATES}  # fmt: skip
    moment = time.time()
    # Longer than the certificates are valid for: every one is within the renewal window.
    # The CA (valid ten years) is within pki_ca_warn_days too: a warning, no new CA.
    ca = (cluster.nodes[0].root / "etc/helios/pki/ca/ca.pem").read_bytes()
    result, events = converge(cluster, driver, "version_bump",
                              extra={**BUMP, "pki_renew_days": 900,
                                     "pki_ca_warn_days": 4000})  # fmt: skip
    assert result.ok, failures(events)
    done = changes(events)
    bootstrapped = f"{bootstrap.name}: Bootstrap the ACL system unless the cluster is bootstrapped"
    assert [line for line in done if line.startswith(bootstrapped)], done

    agents = {"consul": lambda node: True, "nomad": lambda node: True,
              "traefik": lambda node: "edge" in node.groups}  # fmt: skip
    for agent, runs_on in agents.items():
        for node in filter(runs_on, cluster.nodes):
            starts = since(agent_events(cluster, node, agent), moment, "start")
            # The agent runs the new binary, started once by this run (new binary and new
            # certificate alike: one restart).
            wanted = BUMP[f"{agent}_version"]
            assert [detail for _, _, detail in starts] == [wanted], (agent, node.name, starts)
            link = cluster.ssh(node, f"readlink /usr/local/bin/{agent}").stdout.strip()
            assert link.endswith(f"/{BUMP[f'{agent}_version']}/{agent}"), link
    for agent in ("consul", "nomad"):
        assert_servers_restarted_one_at_a_time(cluster, agent, moment)

    warned = {(e["host"], name) for e in events
              if e["kind"] == "ok" and "WARNING: pki:" in e.get("msg", "")
              for name in re.findall(r"(\w+)\.pem expires", e["msg"])}  # fmt: skip
    assert {(node.name, name) for node in cluster.nodes for name in CERTIFICATES} <= warned
    ca_warnings = [e for e in events if e["kind"] == "ok"
                   and "WARNING: pki: the cluster CA" in e.get("msg", "")]  # fmt: skip
    assert len(ca_warnings) == 1 and "Rotating the CA" in ca_warnings[0]["msg"], ca_warnings
    assert (cluster.nodes[0].root / "etc/helios/pki/ca/ca.pem").read_bytes() == ca
    for node in cluster.nodes:
        for name in CERTIFICATES:
            fresh = (node.root / f"etc/helios/pki/{name}.pem").read_bytes()
            assert fresh != before[(node.name, name)], (node.name, name)
        copy = node.root / "etc/consul.d/tls/consul.pem"
        assert copy.read_bytes() == (node.root / "etc/helios/pki/consul.pem").read_bytes()
