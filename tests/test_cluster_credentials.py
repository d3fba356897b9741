"""Provisioning hands the panel what it needs to talk to the cluster it built.

The nomad role's tasks/helios_access.yml runs for real (ansible-playbook through the panel's
provisioning job, on localhost with the local connection) against the Nomad double, which
validates every request against Nomad's OpenAPI description: it writes the `helios` ACL policy
from files/helios-policy.hcl, creates the `helios` client token once, and hands the address,
region, token, CA and client certificate to the panel, which stores them encrypted. Then a
driver built from settings without NOMAD_ADDR uses them, and the dashboard's probe says
Connected; NOMAD_ADDR in the environment still wins; no secret reaches the run's events.
"""

from __future__ import annotations

import json
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from provision_harness import SSH_HOST_KEY, SSH_KEY

from panel import cluster_access
from panel.actions.hosts import add_host, request_provision
from panel.cluster import probe_cluster
from panel.cluster_access import with_stored_registry
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.drivers import nomad as nomad_driver
from panel.drivers.nomad import NomadConnection, NomadDriver
from panel.models import ClusterCredentials, ProvisionEvent, ProvisionRun, Team
from panel.namespaces import ensure_namespace
from panel.reconcile import provision

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

MANAGEMENT = "0b6a1a4e-2b53-4d0c-9c7e-6f3d1c2a5e10"
POLICY_FILE = REPO_ROOT / "playbooks" / "roles" / "nomad" / "files" / "helios-policy.hcl"


def _certificate(name: str) -> tuple[str, str]:
    """A self-signed certificate and its key (PEM): the tasks load them as Nomad's would."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


CA_PEM, _ = _certificate("Helios cluster CA")
CLIENT_PEM, CLIENT_KEY = _certificate("cli.global.nomad")
REGISTRY_PASSWORD = "Registry-password-0123456789abcdef"
KEY_LINE = CLIENT_KEY.splitlines()[1]  # a line of the key, as it would show in a log

# The nomad role's Helios tasks alone, on the controller, pointed at the double.
SITE = """---
- name: Give Helios its access to the cluster
  hosts: nomad_servers
  connection: local
  gather_facts: false
  tasks:
    - name: Run the nomad role's Helios tasks against the Nomad double
      ansible.builtin.include_role:
        name: nomad
        tasks_from: helios_access
      vars:
        _nomad_api_url: "{{ helios_test_nomad_url }}"
        _nomad_tls_dir: "{{ helios_test_tls_dir }}"
        _nomad_secrets:
          nomad-management.token: "{{ helios_test_management_token }}"
          registry.password: "{{ helios_test_registry_password }}"
"""


@pytest.fixture
def stored_source():
    """The process's hook to stored credentials, as start_process installs it."""
    cluster_access.install()
    cluster_access.forget_cached()
    yield
    nomad_driver.use_stored_connection(None)
    cluster_access.forget_cached()


@pytest.fixture
def site(tmp_path, settings, db, redis_conn, monkeypatch, stored_source):
    """A playbooks dir running helios_access.yml, one pinned host, the double and the env."""
    from nomad_double import run_nomad_double

    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "site.yml").write_text(SITE)
    (playbooks / "roles").symlink_to(REPO_ROOT / "playbooks" / "roles")
    tls = tmp_path / "tls"
    tls.mkdir()
    for name, text in {"ca.pem": CA_PEM, "nomad.pem": CLIENT_PEM, "nomad-key.pem": CLIENT_KEY,
                       "helios.pem": CLIENT_PEM, "helios-key.pem": CLIENT_KEY}.items():  # fmt: skip
        (tls / name).write_text(text)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    with run_nomad_double(token=MANAGEMENT) as double:
        variables = {
            "ansible_python_interpreter": sys.executable,
            "helios_test_nomad_url": double.url,
            "helios_test_tls_dir": str(tls),
            "helios_test_management_token": MANAGEMENT,
            "helios_test_registry_password": REGISTRY_PASSWORD,
            "nomad_helios_address": double.url,
            "nomad_region": "global",
            "nomad_secrets_dir": str(secrets),
            "nomad_tls_verify_https_client": True,
            "nomad_helios_client_cert_file": str(tls / "helios.pem"),
            "nomad_helios_client_key_file": str(tls / "helios-key.pem"),
        }
        (tmp_path / "provision.yml").write_text(json.dumps({"vars": variables}))
        add_host(actor=None, name="n1", address="127.0.0.1", groups=["nomad_servers", "registry"],
                 ssh_private_key=SSH_KEY, ssh_host_keys=SSH_HOST_KEY,
                 cipher=SecretCipher.from_settings(settings))  # fmt: skip
        for name, value in {"HELIOS_PLAYBOOKS_DIR": str(playbooks),
                            "HELIOS_PROVISION_VARS": str(tmp_path / "provision.yml"),
                            "HELIOS_DATABASE_URL": settings.effective_database_url,
                            "HELIOS_REDIS_URL": settings.effective_redis_url,
                            "HELIOS_DATA_DIR": str(settings.data_dir)}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        yield {"double": double, "secrets": secrets, "redis": redis_conn,
               "vars": tmp_path / "provision.yml", "variables": variables}  # fmt: skip
        double.assert_no_violations()


def _apply(settings: Settings, redis_conn) -> ProvisionRun:
    run = request_provision(actor=None, kind="apply", settings=settings, redis_conn=redis_conn)
    provision.apply_hosts(run.id)
    cluster_access.forget_cached()
    row = ProvisionRun.get_by_id(run.id)
    assert row.status == "succeeded", row.message
    return row


def _recorded(run: ProvisionRun) -> str:
    return json.dumps([event.data for event in ProvisionEvent.select().where(
        ProvisionEvent.run == run.id)])  # fmt: skip


def test_provisioning_hands_the_panel_a_token_with_the_helios_policy(settings, site):
    double = site["double"]
    first = _apply(settings, site["redis"])

    # The double (and so Nomad's API description) accepted the policy and the token request.
    [policy] = double.requests_to("POST", r"/v1/acl/policy/helios")
    assert policy.headers.get("X-Nomad-Token") == MANAGEMENT
    assert policy.body["Name"] == "helios"
    assert policy.body["Rules"] == POLICY_FILE.read_text().rstrip("\n")
    assert double.acl_policies["helios"]["Rules"] == policy.body["Rules"]
    created = double.requests_to("POST", r"/v1/acl/token")
    assert [request.body for request in created] == [
        {"Name": "helios", "Type": "client", "Policies": ["helios"]},
        {"Name": "helios-namespaces", "Type": "management", "Policies": []},
    ]
    [token] = [t for t in double.tokens.by_secret.values() if t.name == "helios"]
    [management] = [t for t in double.tokens.by_secret.values() if t.name == "helios-namespaces"]
    assert management.type == "management"

    # Kept on the bootstrap server, 0600, for the next runs.
    kept = site["secrets"] / "nomad-helios.token"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert json.loads(kept.read_text()) == {"AccessorID": token.accessor, "SecretID": token.secret}

    # Stored by the panel: the token and the key encrypted, the certificates as PEM.
    row = ClusterCredentials.get()
    cipher = SecretCipher.from_settings(settings)
    assert row.run_id == first.id and row.address == double.url and row.region == "global"
    assert row.token != token.secret and cipher.decrypt(row.token) == token.secret
    assert row.accessor == token.accessor
    assert row.ca_cert == CA_PEM and row.client_cert == CLIENT_PEM
    assert "PRIVATE KEY" not in row.client_key and cipher.decrypt(row.client_key) == CLIENT_KEY
    assert row.management_accessor == management.accessor
    assert row.management_token != management.secret
    assert cipher.decrypt(row.management_token) == management.secret
    # The registry host's address and account, for builds (the certificate is the CA's).
    assert (row.registry, row.registry_username) == ("127.0.0.1:5000", "helios")
    assert cipher.decrypt(row.registry_password) == REGISTRY_PASSWORD
    assert json.loads((site["secrets"] / "nomad-helios-namespaces.token").read_text()) == {
        "AccessorID": management.accessor, "SecretID": management.secret}  # fmt: skip

    # Nothing secret reached the run's recorded events (what the live page streams).
    recorded = _recorded(first)
    for secret in (token.secret, management.secret, MANAGEMENT, KEY_LINE, REGISTRY_PASSWORD):
        assert secret not in recorded
    assert "Hand the panel its connection to the cluster" in recorded  # the task did run

    # A second run changes nothing: same policy, same token, nothing created.
    second = _apply(settings, site["redis"])
    assert second.message.startswith("changed 0 task(s)"), second.message
    assert len(double.requests_to("POST", r"/v1/acl/policy/helios")) == 1
    assert len(double.requests_to("POST", r"/v1/acl/token")) == 2
    assert cipher.decrypt(ClusterCredentials.get().token) == token.secret
    assert ClusterCredentials.get().run_id == second.id

    # A rebuilt cluster no longer knows the token: a new one is made and handed over.
    del double.tokens.by_secret[token.secret]
    _apply(settings, site["redis"])
    [fresh] = [t for t in double.tokens.by_secret.values() if t.name == "helios"]
    assert fresh.secret != token.secret
    assert cipher.decrypt(ClusterCredentials.get().token) == fresh.secret
    assert json.loads(kept.read_text())["SecretID"] == fresh.secret
    assert len(double.requests_to("POST", r"/v1/acl/token")) == 3  # the management one kept
    assert cipher.decrypt(ClusterCredentials.get().management_token) == management.secret

    # A hand-off the panel cannot use is refused, the run's message says why (the Hosts page
    # shows it) and the credentials from before stay.
    wrong = {**site["variables"], "nomad_helios_address": "nomad.example.com"}
    site["vars"].write_text(json.dumps({"vars": wrong}))
    refused = _apply(settings, site["redis"])
    assert "the cluster credentials it handed over were not kept" in refused.message
    assert "address is not http(s)://<host>:<port>" in refused.message
    assert ClusterCredentials.get().address == double.url


def test_the_panel_uses_what_provisioning_handed_over_unless_the_environment_says(settings, site):
    double = site["double"]
    _apply(settings, site["redis"])
    [token] = [t for t in double.tokens.by_secret.values() if t.name == "helios"]

    # No NOMAD_ADDR: deploys go to the stored cluster with the helios token.
    assert not settings.nomad_addr
    connection = NomadConnection.from_settings(settings)
    assert connection.address == double.url and connection.token == token.secret
    for path in (connection.ca_cert, connection.client_cert, connection.client_key):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(connection.client_key).parent.stat().st_mode) == 0o700
    assert Path(connection.client_key).read_text() == CLIENT_KEY
    before = len(double.requests)
    assert NomadDriver.from_settings(settings).read_job("web") is None
    assert [r.headers.get("X-Nomad-Token") for r in double.requests[before:]] == [token.secret]
    status = probe_cluster(settings)
    assert status.connected, status.message
    assert status.message == f"Connected to Nomad at {double.url} with token 'helios' (client)."

    # A team's namespace is created with the management token handed over, and only that.
    [management] = [t for t in double.tokens.by_secret.values() if t.name == "helios-namespaces"]
    team = Team.create(slug="acme", name="Acme", nomad_namespace="acme")
    before = len(double.requests)
    assert ensure_namespace(settings, team) == "acme"
    assert double.cluster.namespaces["acme"]["Meta"] == {"helios-team": "acme"}
    sent = {r.headers.get("X-Nomad-Token") for r in double.requests[before:]}
    assert sent == {management.secret}
    assert management.secret not in repr(NomadConnection.from_settings(settings))

    source = cluster_access.connection_source(settings)
    assert source.origin == "provisioning" and source.address == double.url
    described = source.describe()
    assert token.secret not in described and f"****{token.secret[-4:]}" in described

    # Builds push to the registry handed over, trusting the cluster's CA for it...
    built = with_stored_registry(settings)
    assert (built.registry, built.registry_username, built.registry_password) == (
        "127.0.0.1:5000", "helios", REGISTRY_PASSWORD)  # fmt: skip
    assert Path(built.registry_ca_file).read_text() == CA_PEM and not built.registry_insecure
    # ... unless HELIOS_REGISTRY says otherwise.
    other = settings.replace(registry="registry.example.com:5000")
    assert with_stored_registry(other) == other

    # HELIOS_NOMAD_MANAGEMENT_TOKEN wins over the management token handed over.
    own = Settings.from_env(
        environ={"HELIOS_NOMAD_MANAGEMENT_TOKEN": MANAGEMENT},
        data_dir=settings.data_dir,
        database_url=settings.effective_database_url,
        redis_url=settings.effective_redis_url,
    )
    connection = NomadConnection.from_settings(own)
    assert (connection.token, connection.management_token) == (token.secret, MANAGEMENT)

    # NOMAD_ADDR and NOMAD_TOKEN in the environment win over the stored ones.
    overridden = Settings.from_env(
        environ={"NOMAD_ADDR": double.url, "NOMAD_TOKEN": MANAGEMENT},
        data_dir=settings.data_dir,
        database_url=settings.effective_database_url,
        redis_url=settings.effective_redis_url,
    )
    connection = NomadConnection.from_settings(overridden)
    assert connection.token == MANAGEMENT and connection.ca_cert == ""
    before = len(double.requests)
    NomadDriver.from_settings(overridden).read_job("web")
    assert [r.headers.get("X-Nomad-Token") for r in double.requests[before:]] == [MANAGEMENT]
    assert cluster_access.connection_source(overridden).origin == "environment"


def test_credentials_of_the_wrong_shape_are_refused_and_the_earlier_ones_kept(settings, db):
    from panel.actions.cluster import store_cluster_credentials
    from panel.actions.common import ActionError

    cipher = SecretCipher.from_settings(settings)
    run = ProvisionRun.create(kind="apply", status="running")
    good = {"address": "https://10.0.0.10:4646", "region": "global", "accessor": MANAGEMENT,
            "token": MANAGEMENT, "ca_cert": CA_PEM, "client_cert": CLIENT_PEM,
            "client_key": CLIENT_KEY}  # fmt: skip
    store_cluster_credentials(run, good, cipher)
    for change, says in [
        ({"address": "https://10.0.0.10:4646/$(id)"}, "address is not http(s)://<host>:<port>"),
        ({"token": "not a token"}, "token or accessor is not a Nomad ACL UUID"),
        ({"ca_cert": "{{ lookup('pipe', 'id') }}"}, "ca_cert is not a PEM block"),
        ({"client_key": ""}, "client_key is not a PEM block"),
        ({"management_token": "x", "management_accessor": MANAGEMENT}, "management token or"),
    ]:
        with pytest.raises(ActionError) as refused:
            store_cluster_credentials(run, {**good, **change}, cipher)
        assert says in str(refused.value) and MANAGEMENT not in str(refused.value)
    assert ClusterCredentials.select().count() == 1
    assert ClusterCredentials.get().address == "https://10.0.0.10:4646"

    # A registry Helios cannot use costs builds only: the cluster's credentials are kept.
    bad_registry = {"address": "registry.example.com:5000/$(id)", "username": "helios",
                    "password": REGISTRY_PASSWORD}  # fmt: skip
    kept = store_cluster_credentials(run, {**good, "registry": bad_registry}, cipher)
    assert (kept.address, kept.registry, kept.registry_password) == (good["address"], "", "")
    short = {**bad_registry, "address": "registry.example.com:5000", "password": "short"}
    assert store_cluster_credentials(run, {**good, "registry": short}, cipher).registry == ""
    fine = {**short, "password": REGISTRY_PASSWORD}
    assert store_cluster_credentials(run, {**good, "registry": fine}, cipher).registry == (
        "registry.example.com:5000")  # fmt: skip
