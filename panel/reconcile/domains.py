"""The domain check: every HELIOS_DOMAIN_CHECK_INTERVAL seconds one worker queues an RQ job
that reads, for every address of every app (its default host and each custom domain):

- DNS: what the name resolves to (``getaddrinfo``, at most LOOKUP_TIMEOUT seconds), and
  whether that includes the edge's addresses when HELIOS_EDGE_ADDR is set;
- routing: Traefik's routers (one ``GET /api/http/routers`` per pass, when HELIOS_TRAEFIK_API
  is set): which one has ``Host(`name`)`` in its rule, its status and errors;
- TLS: the certificate the edge serves for the name (a handshake with SNI = the name, with
  HELIOS_EDGE_ADDR, else the name itself on port 443), verified against the system's CAs and
  HELIOS_EDGE_CACERT; when it does not verify, read again unverified to say why.

Addresses are checked on CHECK_THREADS threads, each step with a short timeout; the judging is
``panel.domains_state`` (pure), the rows are written by ``panel.actions.domain_checks``.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import requests
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from panel.actions.domain_checks import record_domain_states
from panel.config import Settings
from panel.domains_state import (
    judge_address,
    judge_dns,
    judge_routing,
    judge_tls,
)
from panel.models import App, Domain
from panel.queue import get_queue

__all__ = [
    "DOMAIN_CHECK_JOB",
    "DOMAIN_CHECK_LOCK",
    "DomainCheckReport",
    "certificate_facts",
    "check_address",
    "check_domains",
    "check_domains_if_due",
    "read_certificate",
    "read_routers",
    "resolve",
    "run_domain_check",
]

logger = logging.getLogger(__name__)

DOMAIN_CHECK_LOCK = "helios:domain-check"
CHECK_THREADS = 16  # addresses checked at once
LOOKUP_TIMEOUT = 3.0  # seconds for one DNS lookup
CONNECT_TIMEOUT = 3.0  # seconds for one TLS handshake or one request to Traefik's API
ROUTER_PAGES = 50  # pages of 100 routers read at most from Traefik's API
JOB_TIMEOUT = 3600  # seconds one pass may take (an address takes at most ~12 s)


@dataclass
class DomainCheckReport:
    """What one pass did."""

    apps: int = 0
    addresses: int = 0
    errors: int = 0
    warnings: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Reading: DNS, Traefik's routers, the certificate served
# ---------------------------------------------------------------------------------------------


def resolve(hostname: str, timeout: float = LOOKUP_TIMEOUT) -> tuple[list[str], str]:
    """(addresses, "") or ([], why not): the lookup runs on a daemon thread, so a resolver
    that does not answer is left behind after ``timeout`` instead of holding the pass."""
    answer: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
            answer["addresses"] = sorted({str(info[4][0]) for info in infos})
        except (OSError, UnicodeError) as exc:
            answer["error"] = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__

    thread = threading.Thread(target=lookup, name=f"resolve {hostname}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return [], f"no answer within {timeout:g} s"
    return answer.get("addresses", []), answer.get("error", "")


def read_routers(api: str) -> list[dict[str, Any]]:
    """Every HTTP router Traefik's API at ``api`` lists (following its pages); raises
    requests.RequestException or ValueError when it cannot be read."""
    routers: list[dict[str, Any]] = []
    page = 1
    with requests.Session() as session:
        for _ in range(ROUTER_PAGES):
            response = session.get(
                f"{api}/api/http/routers", params={"page": page, "per_page": 100},
                timeout=CONNECT_TIMEOUT, allow_redirects=False,
            )  # fmt: skip
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, list):
                raise ValueError("/api/http/routers did not answer a list of routers")
            routers.extend(item for item in body if isinstance(item, dict))
            following = response.headers.get("X-Next-Page", "")
            if not following.isdigit() or int(following) <= page:
                break
            page = int(following)
    return routers


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def certificate_facts(der: bytes) -> dict[str, Any]:
    """Subject and issuer CN, DNS names, end of validity (ISO 8601 UTC) and whether it is
    self-signed, of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    subject = _common_name(cert.subject)
    return {
        "subject": subject,
        "names": names or ([subject] if subject else []),
        "issuer": _common_name(cert.issuer) or cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "self_signed": cert.issuer == cert.subject,
    }


def _handshake(edge: tuple[str, int], hostname: str, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(edge, timeout=CONNECT_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def read_certificate(hostname: str, edge: tuple[str, int], cacert: str = "") -> dict[str, Any]:
    """What ``edge`` serves for ``hostname`` (SNI): certificate facts with ``verified`` and
    ``verify_error``, or ``error`` when there was no handshake at all."""
    trusted = ssl.create_default_context()
    facts: dict[str, Any] = {"edge": f"{edge[0]}:{edge[1]}", "verified": True, "verify_error": ""}
    try:
        if cacert:
            trusted.load_verify_locations(cafile=cacert)
        der = _handshake(edge, hostname, trusted)
    except ssl.SSLCertVerificationError as exc:
        facts |= {"verified": False, "verify_error": exc.verify_message or str(exc)}
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        try:
            der = _handshake(edge, hostname, unverified)
        except (OSError, ssl.SSLError) as again:
            return facts | {"error": str(again) or type(again).__name__}
    except (OSError, ssl.SSLError) as exc:
        return facts | {"verified": False, "error": str(exc) or type(exc).__name__}
    if not der:
        return facts | {"verified": False, "error": "no certificate served"}
    try:
        return facts | certificate_facts(der)
    except ValueError as exc:
        return facts | {"verified": False, "error": f"unreadable certificate: {exc}"}


# ---------------------------------------------------------------------------------------------
# One pass
# ---------------------------------------------------------------------------------------------


def _edge(settings: Settings) -> tuple[tuple[str, int] | None, list[str] | None]:
    """(host, port) of HELIOS_EDGE_ADDR and the addresses its host resolves to (None: unset;
    [] when it does not resolve, so no domain is found pointing at it)."""
    if not settings.edge_addr:
        return None, None
    host, _, port = settings.edge_addr.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)), resolve(host)[0]


def _routers(settings: Settings) -> tuple[list[dict[str, Any]] | None, str]:
    if not settings.traefik_api:
        return None, ""
    try:
        return read_routers(settings.traefik_api), ""
    except (requests.RequestException, ValueError) as exc:
        logger.warning("Traefik's API at %s not read: %s", settings.traefik_api, exc)
        return None, str(exc)[:500]


def check_address(
    settings: Settings, hostname: str, slug: str, now: datetime,
    edge: tuple[str, int] | None, edge_addresses: list[str] | None,
    routers: list[dict[str, Any]] | None, routers_error: str,
) -> dict[str, Any]:  # fmt: skip
    """Read and judge one address: hostname, state, summary and each part's facts."""
    addresses, dns_error = resolve(hostname)
    dns = judge_dns(hostname, addresses, dns_error, edge_addresses)
    routing = judge_routing(hostname, slug, routers, routers_error)
    if edge is None and not addresses:
        facts: dict[str, Any] = {"skipped": "not checked: the name does not resolve"}
    else:
        facts = read_certificate(hostname, edge or (hostname, 443), settings.edge_cacert)
    tls = judge_tls(hostname, facts, now)
    state, summary = judge_address(dns, routing, tls)
    return {
        "hostname": hostname, "state": state.value, "summary": summary,
        "dns": dns, "routing": routing, "tls": tls,
    }  # fmt: skip


def check_domains(settings: Settings, *, now: datetime | None = None) -> DomainCheckReport:
    """One pass over every address of every app (see the module's docstring)."""
    started = time.monotonic()
    at = now or datetime.now(UTC)
    apps = {app.id: app.slug for app in App.live(App.id, App.slug)}
    targets = [(app_id, f"{slug}.{settings.base_domain}", True) for app_id, slug in apps.items()]
    custom = Domain.select(Domain.app, Domain.hostname).order_by(Domain.hostname)
    targets += [(d.app_id, d.hostname, False) for d in custom if d.app_id in apps]
    unique: dict[tuple[int, str], tuple[int, str, bool]] = {}
    for target in targets:  # a custom domain equal to a default host is that host
        unique.setdefault((target[0], target[1]), target)
    targets = list(unique.values())
    edge, edge_addresses = _edge(settings)
    routers, routers_error = _routers(settings)

    def check(target: tuple[int, str, bool]) -> tuple[int, dict[str, Any]]:
        app_id, hostname, is_default = target
        result = check_address(
            settings, hostname, apps[app_id], at, edge, edge_addresses, routers, routers_error
        )
        return app_id, result | {"is_default": is_default}

    results: dict[int, list[dict[str, Any]]] = {app_id: [] for app_id in apps}
    if targets:
        with ThreadPoolExecutor(max_workers=min(CHECK_THREADS, len(targets))) as pool:
            for app_id, result in pool.map(check, targets):
                results[app_id].append(result)
    record_domain_states(results, checked_at=at.replace(tzinfo=None))
    found = [r["state"] for rows in results.values() for r in rows]
    return DomainCheckReport(
        apps=len(apps), addresses=len(found), errors=found.count("error"),
        warnings=found.count("warning"), seconds=time.monotonic() - started,
    )  # fmt: skip


DOMAIN_CHECK_JOB = "panel.reconcile.domains.run_domain_check"


def run_domain_check() -> str:
    """The RQ job of one pass (in a work horse, with its database connection)."""
    report = check_domains(Settings.from_env())
    return (
        f"{report.addresses} addresses of {report.apps} apps: {report.errors} with errors, "
        f"{report.warnings} with warnings, in {report.seconds:.2f} s"
    )


def check_domains_if_due(connection: redis.Redis, settings: Settings) -> bool:
    """Queue a pass when one is due (one worker per interval: a lock in Redis, and a job id
    per interval so a pass is never queued twice); never raises. True when queued."""
    interval = settings.domain_check_interval
    if not interval:
        return False
    try:
        if not connection.set(DOMAIN_CHECK_LOCK, os.getpid(), nx=True, ex=interval):
            return False
        # Not on the deploys queue: a pass over many slow names must not hold deployments.
        queue = "default" if "default" in settings.queues else settings.queues[-1]
        get_queue(connection, queue).enqueue(
            DOMAIN_CHECK_JOB, job_id=f"domain-check-{int(time.time()) // interval}",
            job_timeout=JOB_TIMEOUT, result_ttl=interval * 6, failure_ttl=3600,
            description="check every app's domains",
        )  # fmt: skip
    except redis.RedisError as exc:
        logger.warning("domains not checked now: %s", exc)
        return False
    return True
