"""Judging an app's addresses (pure): from what a domain check read — the addresses a name
resolves to, Traefik's routers, the certificate the edge served for the name — to a state
(ok, warning, error) and one sentence a person can act on.

Each part (DNS, routing, TLS) is judged on its own into a dict of the facts read plus
``state`` (ok, warning, error or unknown), a short ``label`` for a badge and a ``message``;
``judge_address`` puts the parts together. A part that could not be read (Traefik's API not
configured or not answering) is unknown, never an error: it says nothing about the address.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "TRAEFIK_DEFAULT_CN",
    "WARN_DAYS",
    "CheckState",
    "address_url",
    "hosts_in_rule",
    "judge_address",
    "judge_dns",
    "judge_routing",
    "judge_tls",
    "name_matches",
]

WARN_DAYS = 14  # a valid certificate with fewer days left is a warning
TRAEFIK_DEFAULT_CN = "TRAEFIK DEFAULT CERT"  # what Traefik serves when it has none for a name

Part = dict[str, Any]


class CheckState(enum.StrEnum):
    """How one part of an address, or the address as a whole, was found."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    UNKNOWN = "unknown"  # not read: says nothing good or bad


def address_url(hostname: str) -> str:
    """The https:// URL of a hostname (Traefik routes apps on its TLS entrypoint)."""
    return f"https://{hostname}/"


def _part(facts: Mapping[str, Any], state: CheckState, label: str, message: str) -> Part:
    return {**facts, "state": state.value, "label": label, "message": message}


# ---------------------------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------------------------


def judge_dns(
    hostname: str, addresses: Iterable[str], error: str = "", edge: Iterable[str] | None = None
) -> Part:
    """What ``hostname`` resolved to (or ``error``: why not), against the edge's addresses
    when the edge is known (``edge`` None: HELIOS_EDGE_ADDR is not set)."""
    found = sorted(set(addresses))
    edge_list = None if edge is None else sorted(set(edge))
    facts = {"addresses": found, "edge": edge_list, "error": error}
    if error or not found:
        why = error or "no address"
        return _part(facts, CheckState.ERROR, "does not resolve",
                     f"{hostname} does not resolve ({why}): add an A or AAAA record "
                     "pointing at the edge")  # fmt: skip
    shown = ", ".join(found)
    if edge_list is None:
        return _part(facts, CheckState.OK, f"points at {shown}",
                     f"{hostname} resolves to {shown} (not compared with the edge: "
                     "HELIOS_EDGE_ADDR is not set)")  # fmt: skip
    if set(found) & set(edge_list):
        return _part(facts, CheckState.OK, f"points at {shown}",
                     f"{hostname} resolves to {shown}, the edge")  # fmt: skip
    return _part(facts, CheckState.ERROR, "not the edge",
                 f"{hostname} resolves to {shown}, not to the edge ({', '.join(edge_list)}): "
                 "point its A or AAAA record at the edge")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Routing in Traefik
# ---------------------------------------------------------------------------------------------

_HOST_MATCHER = re.compile(r"\bHost\s*\(([^)]*)\)")
_QUOTED = re.compile(r"`([^`]*)`|\"([^\"]*)\"")


def hosts_in_rule(rule: str) -> set[str]:
    """The hostnames a Traefik rule matches with ``Host(...)`` (v2 lists several in one, v3
    one each), in lower case; ``HostRegexp`` and ``HostSNI`` are not read."""
    hosts = set()
    for match in _HOST_MATCHER.finditer(rule):
        for quoted in _QUOTED.finditer(match.group(1)):
            hosts.add((quoted.group(1) or quoted.group(2) or "").strip().lower())
    return hosts - {""}


def _errors(router: Mapping[str, Any]) -> list[str]:
    errors = router.get("error") or []
    return [str(item) for item in (errors if isinstance(errors, list) else [errors])]


def _router_facts(router: Mapping[str, Any]) -> dict[str, Any]:
    tls = router.get("tls") if isinstance(router.get("tls"), Mapping) else None
    return {
        "router": str(router.get("name", "")),
        "status": str(router.get("status", "")),
        "errors": _errors(router),
        "tls": tls is not None,
        "certresolver": str((tls or {}).get("certResolver", "")),
    }


def judge_routing(
    hostname: str, slug: str, routers: list[Mapping[str, Any]] | None, error: str = ""
) -> Part:
    """How Traefik routes ``hostname`` (the app ``slug``'s router is named ``<slug>@...``):
    ``routers`` as Traefik's ``GET /api/http/routers`` lists them, or None when not read
    (``error``: why; empty: HELIOS_TRAEFIK_API is not set)."""
    if routers is None:
        if error:
            message = f"Traefik's API did not answer ({error}): routing unknown"
            label = "unknown: Traefik's API did not answer"
            return _part({"error": error}, CheckState.UNKNOWN, label, message)
        message = "Traefik API not configured (HELIOS_TRAEFIK_API): routing unknown"
        label = "unknown: Traefik API not configured"
        return _part({"error": ""}, CheckState.UNKNOWN, label, message)
    host = hostname.lower()
    matching = [r for r in routers if host in hosts_in_rule(str(r.get("rule", "")))]
    # The TLS router first (a plain-HTTP one may only redirect), enabled before the others.
    matching.sort(key=lambda r: (r.get("status") == "disabled", not r.get("tls")))
    if not matching:
        own = next((r for r in routers if str(r.get("name", "")).split("@")[0] == slug), None)
        if own is not None:
            return _part(_router_facts(own), CheckState.ERROR, "not routed",
                         f"not routed: Traefik's router {own.get('name')} does not list "
                         f"{hostname} yet: deploy the app to route it")  # fmt: skip
        return _part({"router": ""}, CheckState.ERROR, "not routed",
                     f"not routed: no Traefik router matches Host(`{hostname}`): is the app "
                     "deployed and running?")  # fmt: skip
    router = matching[0]
    facts = _router_facts(router)
    name, errors = facts["router"], "; ".join(facts["errors"])
    if facts["status"] == "disabled":
        message = f"Traefik disabled the router {name}: {errors or 'no reason given'}"
        return _part(facts, CheckState.ERROR, "router disabled", message)
    if facts["status"] == "warning":
        message = f"routed by {name}, with Traefik's warning: {errors or 'none given'}"
        return _part(facts, CheckState.WARNING, "routed, with warnings", message)
    if not facts["tls"]:
        message = f"routed by {name} without TLS: browsers reach it over plain HTTP only"
        return _part(facts, CheckState.WARNING, "routed without TLS", message)
    return _part(facts, CheckState.OK, "routed", f"routed by {name}")


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def name_matches(hostname: str, names: Iterable[str]) -> bool:
    """Whether a certificate for ``names`` (DNS names; ``*.`` only as the whole left-most
    label) is valid for ``hostname``."""
    host = hostname.lower()
    for name in (n.lower() for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _days_left(not_after: datetime, now: datetime) -> int:
    """Whole days from ``now`` to ``not_after``; negative once past, -1 on the first day."""
    return (not_after - now) // timedelta(days=1)


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def judge_tls(hostname: str, facts: Mapping[str, Any], now: datetime) -> Part:
    """The certificate the edge served for ``hostname`` (``facts`` as the check read them:
    ``error`` when no handshake, else ``verified``, ``verify_error``, ``subject``,
    ``names``, ``issuer``, ``not_after`` (ISO 8601), ``self_signed``), at ``now`` (UTC)."""
    facts = dict(facts)
    if facts.get("skipped"):
        return _part(facts, CheckState.UNKNOWN, "not checked", str(facts["skipped"]))
    if facts.get("error"):
        return _part(facts, CheckState.ERROR, "no TLS",
                     f"no TLS handshake with {facts.get('edge', hostname)} for {hostname}: "
                     f"{facts['error']}")  # fmt: skip
    not_after = datetime.fromisoformat(str(facts["not_after"]))
    days = _days_left(not_after, now)
    date = not_after.date().isoformat()
    facts["days_left"] = days
    issuer, names = str(facts.get("issuer", "")), [str(n) for n in facts.get("names", [])]
    if facts.get("verified"):
        if days < WARN_DAYS:
            return _part(facts, CheckState.WARNING, f"expires in {_days(days)}",
                         f"the certificate from {issuer} expires on {date}, in {_days(days)}: "
                         "is renewal working (Traefik's ACME log)?")  # fmt: skip
        return _part(facts, CheckState.OK, f"valid until {date}, {_days(days)}",
                     f"valid certificate from {issuer} until {date} ({_days(days)})")  # fmt: skip
    if TRAEFIK_DEFAULT_CN in (facts.get("subject"), issuer):
        return _part(facts, CheckState.ERROR, "default certificate",
                     "Traefik's default certificate: no certificate issued for this domain "
                     "yet (see the certificate resolver's log in Traefik: DNS must point at "
                     "the edge for ACME to succeed)")  # fmt: skip
    if days < 0:
        ago = _days_left(now, not_after)
        message = f"the certificate from {issuer} expired on {date}, {_days(ago)} ago"
        return _part(facts, CheckState.ERROR, "expired", message)
    if not name_matches(hostname, names):
        return _part(facts, CheckState.ERROR, "wrong name",
                     f"the certificate served is for {', '.join(names) or 'no name'}, "
                     f"not {hostname}")  # fmt: skip
    if facts.get("self_signed"):
        return _part(facts, CheckState.ERROR, "self-signed",
                     f"the certificate served is self-signed ({facts.get('subject') or '?'}): "
                     "browsers do not trust it")  # fmt: skip
    return _part(facts, CheckState.ERROR, "not trusted",
                 f"the certificate from {issuer} is not trusted: "
                 f"{facts.get('verify_error') or 'verification failed'}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The address as a whole
# ---------------------------------------------------------------------------------------------


def judge_address(dns: Part, routing: Part, tls: Part) -> tuple[CheckState, str]:
    """The address's state and sentence from its judged parts: the first error, else the
    first warning, else ok (a part not read is named, not counted against it)."""
    parts = (("DNS", dns), ("routing", routing), ("TLS", tls))
    for worst in (CheckState.ERROR, CheckState.WARNING):
        for name, part in parts:
            if part["state"] == worst.value:
                return worst, f"{name}: {part['message']}"
    unknown = [name for name, part in parts if part["state"] == CheckState.UNKNOWN.value]
    summary = "reachable over HTTPS with a valid certificate"
    if unknown:
        summary += f" ({' and '.join(unknown)} not checked)"
    return CheckState.OK, summary
