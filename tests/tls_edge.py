"""A real TLS endpoint standing in for Traefik's websecure entrypoint, on a free loopback
port: for each SNI name a test gave a certificate (``issue``) it serves that one, signed by a
test CA (``cafile``, what HELIOS_EDGE_CACERT takes), and for any other name a self-signed
"TRAEFIK DEFAULT CERT", as Traefik does when it has no certificate for a name yet.

Each connection is served on a thread of its own: the handshake, then it waits for the
client to close.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["TRAEFIK_DEFAULT_CN", "TlsEdge"]

TRAEFIK_DEFAULT_CN = "TRAEFIK DEFAULT CERT"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class _Issued:
    """A key and the certificate for it."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key, self.cert = key, cert

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _certificate(
    subject: str, names: list[str], issuer: _Issued | None, not_before: datetime,
    not_after: datetime, *, ca: bool = False,
) -> _Issued:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if names:
        san = x509.SubjectAlternativeName([x509.DNSName(name) for name in names])
        builder = builder.add_extension(san, critical=False)
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        builder = builder.add_extension(usage, critical=True)
    if issuer:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    return _Issued(key, builder.sign(signer, hashes.SHA256()))


class TlsEdge:
    """The TLS endpoint; ``issue`` certificates for names, ``close`` at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        self.ca = _certificate("Helios Test CA", [], None, now - timedelta(days=1),
                               now + timedelta(days=3650), ca=True)  # fmt: skip
        self.cafile = self.ca.write(folder, "ca")[0]
        default = _certificate(TRAEFIK_DEFAULT_CN, ["0123456789abcdef.traefik.default"], None,
                               now - timedelta(days=1), now + timedelta(days=365))  # fmt: skip
        self.default_context = self._context(default, "default")
        self.default_context.sni_callback = self._pick
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.names_seen: list[str | None] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        """HOST:PORT, as HELIOS_EDGE_ADDR takes it."""
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def issue(
        self, hostname: str, *, days: int = 90, names: list[str] | None = None,
        expired: bool = False,
    ) -> None:  # fmt: skip
        """Serve, for SNI ``hostname``, a certificate of the test CA for ``names`` (default:
        the hostname) valid ``days`` more days (``expired``: ended yesterday)."""
        now = datetime.now(UTC)
        start, end = now - timedelta(days=1), now + timedelta(days=days)
        if expired:
            start, end = now - timedelta(days=90), now - timedelta(days=1)
        issued = _certificate(hostname, names or [hostname], self.ca, start, end)
        self.contexts[hostname] = self._context(issued, f"leaf-{len(self.contexts)}")

    def _context(self, issued: _Issued, stem: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert_path, key_path = issued.write(self.folder, stem)
        context.load_cert_chain(cert_path, key_path)
        return context

    def _pick(self, connection: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.names_seen.append(name)
        if name in self.contexts:
            connection.context = self.contexts[name]

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        with (
            contextlib.suppress(OSError),
            raw,
            self.default_context.wrap_socket(raw, server_side=True) as tls,
        ):
            tls.recv(1)  # until the client closes

    def close(self) -> None:
        """Stop accepting and free the port."""
        self.stopping.set()
        self.thread.join(timeout=10)
        self.listener.close()
