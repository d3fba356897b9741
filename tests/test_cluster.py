"""The dashboard's cluster banner: through the Nomad driver, the token checked, real mutual TLS."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from panel import cluster
from panel.actions.accounts import create_user
from panel.cluster import probe_cluster
from panel.config import Settings

from conftest import Auth, wait_until
from nomad_double import NomadDouble, run_nomad_double

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def no_cached_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without remembered probe results."""
    monkeypatch.setattr(cluster, "_cache", {})


@pytest.fixture
def acl_double() -> Iterator[NomadDouble]:
    """A double with ACLs enabled by a management token."""
    with run_nomad_double(token="management-secret") as double:
        yield double
        double.assert_no_violations()


def nomad_settings(**values: object) -> Settings:
    """Settings with only NOMAD_* values given (the rest default)."""
    return Settings.from_env(environ={}).replace(**values)


# ---------------------------------------------------------------------------------------------
# The token
# ---------------------------------------------------------------------------------------------


def test_no_address_says_no_cluster() -> None:
    status = probe_cluster(nomad_settings())
    assert not status.connected
    assert status.message.startswith("No cluster connected: set NOMAD_ADDR to a Nomad server")


def test_acls_disabled_is_connected(nomad_double: NomadDouble) -> None:
    status = probe_cluster(nomad_settings(nomad_addr=nomad_double.url, nomad_token="any"))
    assert status.connected
    assert status.message == f"Connected to Nomad at {nomad_double.url} (ACLs disabled)."
    assert nomad_double.requests_to("GET", "/v1/acl/token/self")


def test_a_known_token_is_connected_and_named(acl_double: NomadDouble) -> None:
    token = acl_double.add_token(name="helios-panel")
    status = probe_cluster(nomad_settings(nomad_addr=acl_double.url, nomad_token=token["SecretID"]))
    assert status.connected
    assert status.message == (
        f"Connected to Nomad at {acl_double.url} with token 'helios-panel' (client)."
    )
    (asked,) = acl_double.requests_to("GET", "/v1/acl/token/self")
    assert asked.headers["X-Nomad-Token"] == token["SecretID"]


def test_a_wrong_token_is_refused(acl_double: NomadDouble) -> None:
    status = probe_cluster(nomad_settings(nomad_addr=acl_double.url, nomad_token="not-a-token"))
    assert not status.connected
    assert status.message == (
        f"Nomad at {acl_double.url} refused the token: check NOMAD_TOKEN (ACL token not found)"
    )


def test_no_token_on_a_cluster_with_acls(acl_double: NomadDouble) -> None:
    status = probe_cluster(nomad_settings(nomad_addr=acl_double.url))
    assert not status.connected
    assert status.message == (
        f"Nomad at {acl_double.url} has ACLs enabled and needs a token: set NOMAD_TOKEN"
    )


def test_nobody_listening_is_not_connected() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        status = probe_cluster(nomad_settings(nomad_addr=address))
    assert not status.connected
    assert address in status.message
    assert status.message.endswith("start the cluster or point NOMAD_ADDR at a server")


def test_probes_are_cached_per_connection(acl_double: NomadDouble) -> None:
    token = acl_double.add_token(name="helios-panel")["SecretID"]
    good = nomad_settings(nomad_addr=acl_double.url, nomad_token=token)
    assert probe_cluster(good).connected
    assert probe_cluster(good).connected
    assert len(acl_double.requests_to("GET", "/v1/acl/token/self")) == 1
    wrong = good.replace(nomad_token="not-a-token")
    assert not probe_cluster(wrong).connected  # another token is another probe
    assert len(acl_double.requests_to("GET", "/v1/acl/token/self")) == 2


# ---------------------------------------------------------------------------------------------
# Mutual TLS with a private CA, as playbooks/site.yml sets Nomad up
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a private CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A certificate for key, signed by issuer (self-signed CA when None)."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [
            x509.DNSName("server.global.nomad"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Generate the CA, server and client certificates into folder."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Helios test CA", ca_key)
    pki = Pki(*(folder / name for name in ("ca.pem", "server.pem", "server-key.pem",
                                             "client.pem", "client-key.pem")))  # fmt: skip
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, subject, usage in (
        (pki.server_cert, pki.server_key, "server.global.nomad", ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.client_cert, pki.client_key, "helios", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(subject, key, ("Helios test CA", ca_key), usage)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return pki


class TlsFront:
    """HTTPS on 127.0.0.1 that demands a client certificate of the CA, in front of a plain
    HTTP server (Nomad's `tls { http = true, verify_https_client = true }`)."""

    def __init__(self, backend_port: int, pki: Pki) -> None:
        """Listen on a free port; start() serves."""
        self.backend_port = backend_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.load_verify_locations(pki.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.handshake_errors: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> TlsFront:
        """Accept connections in a daemon thread."""
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self._spawn(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(str(exc))
            self._close_gracefully(raw)
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        self._spawn(self._pipe, backend, client)
        self._pipe(client, backend)

    @staticmethod
    def _close_gracefully(raw: socket.socket) -> None:
        """Close after the TLS alert, reading what the client sent meanwhile: closing with
        unread data would reset the connection, and the client might never read the alert."""
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(2)
            while raw.recv(65536):
                pass
        raw.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def tls_nomad(acl_double: NomadDouble, pki: Pki) -> Iterator[TlsFront]:
    """The ACL double behind mutual TLS."""
    port = int(acl_double.url.rsplit(":", 1)[1])
    front = TlsFront(port, pki).start()
    yield front
    front.stop()


def test_mutual_tls_with_the_ca_and_a_client_certificate_is_connected(
    tls_nomad: TlsFront, acl_double: NomadDouble, pki: Pki
) -> None:
    token = acl_double.add_token(name="helios")["SecretID"]
    settings = nomad_settings(
        nomad_addr=tls_nomad.url,
        nomad_token=token,
        nomad_cacert=str(pki.ca),
        nomad_client_cert=str(pki.client_cert),
        nomad_client_key=str(pki.client_key),
    )
    status = probe_cluster(settings)
    assert status.message == f"Connected to Nomad at {tls_nomad.url} with token 'helios' (client)."
    assert status.connected


def test_an_untrusted_server_certificate_names_nomad_cacert(
    tls_nomad: TlsFront, acl_double: NomadDouble, pki: Pki
) -> None:
    token = acl_double.add_token(name="helios")["SecretID"]
    settings = nomad_settings(
        nomad_addr=tls_nomad.url,
        nomad_token=token,
        nomad_client_cert=str(pki.client_cert),
        nomad_client_key=str(pki.client_key),
    )
    status = probe_cluster(settings)
    assert not status.connected
    assert status.message == (
        f"TLS with Nomad at {tls_nomad.url} failed (self-signed certificate in certificate "
        "chain): set NOMAD_CACERT to the CA certificate that signed Nomad's certificate"
    )


def test_a_missing_client_certificate_names_nomad_client_cert(
    tls_nomad: TlsFront, acl_double: NomadDouble, pki: Pki
) -> None:
    token = acl_double.add_token(name="helios")["SecretID"]
    settings = nomad_settings(nomad_addr=tls_nomad.url, nomad_token=token, nomad_cacert=str(pki.ca))
    status = probe_cluster(settings)
    assert not status.connected
    assert status.message.startswith(f"TLS with Nomad at {tls_nomad.url} failed (")
    # The server's alert, or only the end of the connection when its close lost the alert.
    assert status.message.endswith(
        (
            "Nomad asks for a client certificate: set NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY to "
            "one its CA signed",
            "Nomad ended the connection: if it requires client certificates, set "
            "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY to one its CA signed; else check NOMAD_CACERT",
        )
    )
    wait_until(lambda: tls_nomad.handshake_errors, what="the server to refuse the handshake")


def test_an_unreadable_certificate_file_names_the_settings(
    tls_nomad: TlsFront, pki: Pki, tmp_path: Path
) -> None:
    settings = nomad_settings(
        nomad_addr=tls_nomad.url,
        nomad_cacert=str(pki.ca),
        nomad_client_cert=str(tmp_path / "missing.pem"),
        nomad_client_key=str(pki.client_key),
    )
    status = probe_cluster(settings)
    assert not status.connected
    assert status.message.startswith(f"TLS with Nomad at {tls_nomad.url} cannot start (")
    assert "missing.pem" in status.message
    assert status.message.endswith(
        "point NOMAD_CACERT, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY at readable PEM files"
    )


# ---------------------------------------------------------------------------------------------
# The panel: the banner on the dashboard; /readyz never asks the cluster
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def panel_with(settings: Settings, db):  # type: ignore[no-untyped-def]
    """Build a signed-in test client of the panel with some NOMAD_* settings changed."""
    from panel.db import database
    from panel.web import create_app

    create_user("owner@example.com", PASSWORD, team_slug="acme")

    def build(**nomad: object):  # type: ignore[no-untyped-def]
        flask_app = create_app(settings.replace(**nomad))
        flask_app.config["TESTING"] = True
        client = flask_app.test_client()
        assert Auth(client).login("owner@example.com", PASSWORD).status_code == 302
        return client

    yield build
    database.initialize(db)


def test_dashboard_banner_behind_mutual_tls(
    panel_with, tls_nomad: TlsFront, acl_double: NomadDouble, pki: Pki
) -> None:
    token = acl_double.add_token(name="helios")["SecretID"]
    tls = {"nomad_addr": tls_nomad.url, "nomad_token": token, "nomad_cacert": str(pki.ca)}
    page = panel_with(**tls).get("/").get_data(as_text=True)
    assert '<div class="cluster off" role="status">' in page
    assert "set NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY to one its CA signed" in page

    cluster._cache.clear()
    with_cert = {"nomad_client_cert": str(pki.client_cert), "nomad_client_key": str(pki.client_key)}
    page = panel_with(**tls, **with_cert).get("/").get_data(as_text=True)
    assert '<div class="cluster ok" role="status">' in page
    assert f"Connected to Nomad at {tls_nomad.url} with token &#39;helios&#39; (client)." in page


def test_readyz_does_not_ask_the_cluster(panel_with, acl_double: NomadDouble) -> None:
    client = panel_with(nomad_addr=acl_double.url, nomad_token="not-a-token")
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}
    assert acl_double.requests == []
