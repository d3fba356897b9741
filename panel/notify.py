"""Outgoing webhooks: which URLs a notifier may use, and sending one signed delivery safely.

A notifier's URL is checked twice: when it is registered (the person sees why it is refused)
and at every send. Sending resolves the host name once, refuses it when ANY of its addresses is
internal (loopback, private, link-local — where cloud metadata lives —, CGNAT, multicast,
reserved, unspecified, or an IPv6 form of one of those) unless HELIOS_NOTIFY_ALLOW_NETWORKS
lets it, and then connects to the very address it checked, sending the original Host header and
verifying TLS against the host name. A second lookup never happens, so an answer that changes
between check and connect (DNS rebinding) changes nothing. Redirects are never followed.

A receiver verifies a delivery by computing HMAC-SHA256 over the raw request body with the
notifier's secret and comparing, in constant time, ``"sha256=" + hexdigest`` with the
``X-Helios-Signature-256`` header (see docs/events.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import redis

from panel.config import Settings
from panel.queue import get_queue

__all__ = [
    "DELIVERY_TIMEOUT",
    "NOTIFY_JOB",
    "NOTIFY_QUEUE",
    "NOTIFY_SUBJECTS",
    "DeliveryError",
    "OutgoingURLError",
    "Response",
    "Target",
    "check_address",
    "check_url",
    "delivery_job_id",
    "enqueue_delivery",
    "parse_url",
    "post",
    "render_body",
    "resolve",
    "sign",
]

logger = logging.getLogger(__name__)

NOTIFY_QUEUE = "default"
NOTIFY_JOB = "panel.reconcile.notifications.deliver_notification"
NOTIFY_JOB_TIMEOUT = 60  # seconds; one attempt waits DELIVERY_TIMEOUT at most per step
DELIVERY_TIMEOUT = 5  # seconds, for connecting and for each read
MAX_URL_LENGTH = 2048
EXCERPT_BYTES = 200  # of a refusing receiver's answer, kept to help whoever debugs it
USER_AGENT = "Helios-Notifications/1"

# The event subjects a notifier may ask for, as the panel names them: adding a choice is one
# line here (its event must exist in panel.events.SCHEMAS, which the actions check).
NOTIFY_SUBJECTS: dict[str, str] = {
    "v1.deployment.succeeded": "Deploy succeeded",
    "v1.deployment.failed": "Deploy failed or reverted",
    "v1.build.failed": "Build failed",
    "v1.app.down": "App down",
    "v1.app.drift_detected": "Drift detected",
}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutgoingURLError(ValueError):
    """A URL a notifier may not use; the message says why and how to fix it."""


class DeliveryError(RuntimeError):
    """The receiver could not be reached or did not answer in time (worth trying again)."""


# ---------------------------------------------------------------------------------------------
# Which URLs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, what to ask for, and which name TLS must present."""

    scheme: str
    host: str  # a lowercase host name, or an IP address without brackets
    port: int
    path: str  # path and query, as sent in the request line
    host_header: str


def _check_host(host: str) -> str:
    """A host name of DNS labels, or an IP address written in its usual form."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise OutgoingURLError(
            f"{host!r} is not a host name: use letters, digits, '-' and dots "
            "(international names in their xn-- form)"
        )
    if _NUMERIC_LABEL.match(labels[-1]):
        # 2130706433, 0x7f.1 and 127.1 are IP addresses to the resolver, not names.
        raise OutgoingURLError(
            f"{host!r} is an IP address in an unusual form: write it as a dotted address "
            "(e.g. 203.0.113.7) or use the host name"
        )
    return name


def parse_url(url: str, *, allow_http: bool = False) -> Target:
    """Check the form of a notifier's URL (no lookup): https (http when allowed), no user
    name or password, no fragment, a host name or IP address, any port."""
    if not url or len(url) > MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise OutgoingURLError(
            f"the URL must be 1 to {MAX_URL_LENGTH} printable ASCII characters "
            "(percent-encode anything else)"
        )
    if any(char in url for char in " \\#"):
        raise OutgoingURLError("the URL may not hold spaces, backslashes or a #fragment")
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        extra = "" if allow_http else " (an operator may allow http with HELIOS_NOTIFY_ALLOW_HTTP)"
        raise OutgoingURLError(f"the URL must start with https://{extra}")
    if "@" in parts.netloc:
        raise OutgoingURLError("the URL may not carry a user name or password: drop the 'user@'")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise OutgoingURLError("the URL's port must be a number from 1 to 65535")
    port = port or (443 if parts.scheme == "https" else 80)
    if not parts.hostname:
        raise OutgoingURLError("the URL has no host: write e.g. https://hooks.example.com/helios")
    host = _check_host(parts.hostname)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port, path, parts.netloc)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is internal (None: a public address)."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local, where cloud metadata services answer"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _CGNAT:
        return "carrier-grade NAT (100.64.0.0/10)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not public"
    return None


def check_address(address: str, allowed: Iterable[str] = ()) -> str | None:
    """Why a notification may not go to ``address`` (None: it may). ``allowed`` are the
    operator's CIDR networks, which lift the refusal for the addresses in them."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if ip.version == 6 and (inner := _embedded_ipv4(ip)) is not None:
        candidates.insert(0, inner)  # its IPv4 address says best why it is refused
    networks = [ipaddress.ip_network(network) for network in allowed]
    if any(candidate in network for candidate in candidates for network in networks
           if candidate.version == network.version):  # fmt: skip
        return None
    for candidate in candidates:
        kind = _kind(candidate)
        if kind is not None:
            shown = str(ip) if candidate is ip else f"{ip} (that is {candidate})"
            return f"{shown} is {kind}"
    return None


def resolve(target: Target, allowed: Sequence[str] = ()) -> list[str]:
    """The addresses of ``target``'s host, every one of them checked; refused when any is
    internal (a name with one bad address among good ones is refused too)."""
    try:
        found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError(f"could not resolve {target.host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    for address in addresses:
        reason = check_address(address, allowed)
        if reason is not None:
            raise OutgoingURLError(
                f"{target.host} resolves to {reason}: notifications only go to public "
                "addresses (an operator may allow a network with HELIOS_NOTIFY_ALLOW_NETWORKS)"
            )
    if not addresses:
        raise DeliveryError(f"{target.host} has no address")
    return addresses


def check_url(url: str, settings: Settings) -> tuple[Target, list[str]]:
    """The URL's target and its checked addresses; OutgoingURLError says why one is refused,
    DeliveryError when its name does not resolve now."""
    target = parse_url(url, allow_http=settings.notify_allow_http)
    return target, resolve(target, settings.notify_allow_networks)


# ---------------------------------------------------------------------------------------------
# What is sent
# ---------------------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The X-Helios-Signature-256 header of a body: sha256=<hex HMAC-SHA256 with the secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _summary(subject: str, team: str, data: dict[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    app = data.get("app")
    where = f"{team}/{app}" if app else team
    noun, verb = subject.split(".")[1:3]
    line = f"[{where}] {noun.replace('_', ' ')} {verb.replace('_', ' ')}"
    if "release" in data:
        line += f": release v{data['release']}"
    elif "build" in data:
        line += f": build #{data['build']}"
    if "reverted_to_version" in data:
        line += f", reverted to job version {data['reverted_to_version']}"
    if "state" in data:
        line += f" ({data['state']})"
    if data.get("reason") and subject.endswith(("failed", "down")):
        line += f" ({str(data['reason'])[:200]})"
    return line.replace("\n", " ")


def render_body(fmt: str, document: dict[str, Any]) -> bytes:
    """The request body of a delivery: the event as JSON, or Slack's {"text": ...}."""
    if fmt == "slack":
        text = _summary(document["subject"], document["team"], document["data"])
        return json.dumps({"text": text}).encode()
    return json.dumps(document, sort_keys=True).encode()


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A receiver's answer: its status and the start of its body (for a person debugging)."""

    status: int
    excerpt: str


@functools.cache
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The system's roots, verifying host names; built once per process (loading the roots
    costs tens of milliseconds), again only if SSL_CERT_FILE or SSL_CERT_DIR change."""
    return ssl.create_default_context()


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to addresses already checked, in order, never looked up again; TLS verifies
    the certificate against the URL's host name (sent as SNI)."""

    def __init__(self, target: Target, addresses: list[str], timeout: float) -> None:
        super().__init__(addresses[0], target.port, timeout=timeout)
        self._target = target
        self._addresses = addresses

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:
            try:
                sock = socket.create_connection((address, self._target.port), self.timeout)
                break
            except OSError as exc:
                error = exc
        else:
            raise error or OSError("no address to connect to")
        if self._target.scheme == "https":
            context = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            try:
                sock = context.wrap_socket(sock, server_hostname=self._target.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def post(
    target: Target,
    addresses: list[str],
    body: bytes,
    headers: dict[str, str],
    timeout: float = DELIVERY_TIMEOUT,
) -> Response:
    """POST ``body`` to a checked target; never follows a redirect (the 3xx is the answer).
    DeliveryError when the receiver cannot be reached or does not answer in time."""
    connection = _PinnedConnection(target, addresses, timeout)
    sent = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    try:
        connection.request("POST", target.path, body=body, headers=sent)
        answer = connection.getresponse()
        excerpt = answer.read(EXCERPT_BYTES).decode("utf-8", "replace")
        return Response(answer.status, " ".join(excerpt.split())[:EXCERPT_BYTES])
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(
            f"could not deliver to {target.host}: {exc or type(exc).__name__}"
        ) from exc
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# Queueing
# ---------------------------------------------------------------------------------------------


def delivery_job_id(delivery_id: int, attempt: int = 1) -> str:
    """The RQ job id of one attempt of a delivery: one per (notifier, event) and attempt, so
    queueing the same delivery twice still sends it once."""
    return f"notify-{delivery_id}" if attempt <= 1 else f"notify-{delivery_id}-{attempt}"


def enqueue_delivery(
    redis_conn: redis.Redis, delivery_id: int, *, attempt: int = 1, delay: int = 0
) -> bool:
    """Queue (after ``delay`` seconds) one attempt of a delivery; False (logged) when Redis
    cannot take it now."""
    queue = get_queue(redis_conn, NOTIFY_QUEUE)
    options = {
        "job_id": delivery_job_id(delivery_id, attempt),
        "job_timeout": NOTIFY_JOB_TIMEOUT,
        "description": f"notification delivery #{delivery_id} (attempt {attempt})",
    }
    try:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), NOTIFY_JOB, delivery_id, attempt, **options)
        else:
            queue.enqueue(NOTIFY_JOB, delivery_id, attempt, **options)
    except redis.RedisError as exc:
        logger.warning("notification delivery #%d recorded but not queued: %s", delivery_id, exc)
        return False
    return True
