"""Judging an app's addresses (pure): DNS, routing and TLS facts in, states and sentences out,
one case per situation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from panel.domains_state import (
    address_url,
    hosts_in_rule,
    judge_address,
    judge_dns,
    judge_routing,
    judge_tls,
    name_matches,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOST = "shop.example.com"


def cert(days: float, **facts) -> dict:
    return {
        "edge": "10.0.0.1:443", "verified": True, "verify_error": "", "subject": HOST,
        "names": [HOST], "issuer": "R11", "self_signed": False,
        "not_after": (NOW + timedelta(days=days)).isoformat(), **facts,
    }  # fmt: skip


def test_urls_are_https_links_of_the_hostname():
    assert address_url("web.apps.example.com") == "https://web.apps.example.com/"


@pytest.mark.parametrize(
    ("rule", "hosts"),
    [
        ("Host(`a.example.com`) || Host(`B.example.com`)", {"a.example.com", "b.example.com"}),
        ("Host(`a.example.com`, `b.example.com`)", {"a.example.com", "b.example.com"}),
        ('Host("a.example.com") && PathPrefix(`/api`)', {"a.example.com"}),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", set()),
        ("HostSNI(`*`)", set()),
        ("", set()),
    ],
)
def test_hosts_are_read_from_traefik_rules(rule, hosts):
    assert hosts_in_rule(rule) == hosts


@pytest.mark.parametrize(
    ("names", "matches"),
    [
        ([HOST], True),
        (["*.example.com"], True),
        (["*.shop.example.com"], False),
        (["example.com", "www.example.com"], False),
        (["SHOP.EXAMPLE.COM"], True),
    ],
)
def test_certificate_names(names, matches):
    assert name_matches(HOST, names) is matches


@pytest.mark.parametrize(
    ("addresses", "error", "edge", "state", "label"),
    [
        (["10.0.0.1"], "", ["10.0.0.1", "10.0.0.2"], "ok", "points at 10.0.0.1"),
        (["10.0.0.9"], "", ["10.0.0.1"], "error", "not the edge"),
        (["10.0.0.9"], "", None, "ok", "points at 10.0.0.9"),
        ([], "Name or service not known", None, "error", "does not resolve"),
        ([], "no answer within 3 s", ["10.0.0.1"], "error", "does not resolve"),
    ],
)
def test_dns(addresses, error, edge, state, label):
    part = judge_dns(HOST, addresses, error, edge)
    assert (part["state"], part["label"]) == (state, label)
    if error:
        assert part["message"].startswith(f"{HOST} does not resolve ({error})")


def router(status: str = "enabled", rule: str = f"Host(`{HOST}`)", **extra) -> dict:
    return {"name": "shop@consulcatalog", "rule": rule, "status": status,
            "tls": {"certResolver": "le"}, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("routers", "error", "state", "label", "message"),
    [
        (None, "", "unknown", "unknown: Traefik API not configured",
         "Traefik API not configured (HELIOS_TRAEFIK_API): routing unknown"),
        (None, "Connection refused", "unknown", "unknown: Traefik's API did not answer",
         "Traefik's API did not answer (Connection refused): routing unknown"),
        ([router()], "", "ok", "routed", "routed by shop@consulcatalog"),
        ([router("disabled", error=["middleware \"x@file\" does not exist"])], "", "error",
         "router disabled",
         'Traefik disabled the router shop@consulcatalog: middleware "x@file" does not exist'),
        ([router("warning", error=["unable to obtain ACME certificate"])], "", "warning",
         "routed, with warnings",
         "routed by shop@consulcatalog, with Traefik's warning: unable to obtain ACME "
         "certificate"),
        ([router(tls=None)], "", "warning", "routed without TLS",
         "routed by shop@consulcatalog without TLS: browsers reach it over plain HTTP only"),
        ([router(rule="Host(`shop.apps.example.com`)")], "", "error", "not routed",
         "not routed: Traefik's router shop@consulcatalog does not list shop.example.com yet: "
         "deploy the app to route it"),
        ([], "", "error", "not routed",
         "not routed: no Traefik router matches Host(`shop.example.com`): is the app deployed "
         "and running?"),
    ],
)  # fmt: skip
def test_routing(routers, error, state, label, message):
    part = judge_routing(HOST, "shop", routers, error)
    assert (part["state"], part["label"], part["message"]) == (state, label, message)


def test_the_enabled_tls_router_wins_over_a_redirect_or_a_disabled_one():
    redirect = router(name="shop-http@consulcatalog", tls=None)
    broken = router("disabled", name="old@file", error=["no service"])
    part = judge_routing(HOST, "shop", [broken, redirect, router()], "")
    assert (part["state"], part["router"]) == ("ok", "shop@consulcatalog")


@pytest.mark.parametrize(
    ("facts", "state", "label", "message"),
    [
        (cert(60), "ok", "valid until 2026-07-31, 60 days",
         "valid certificate from R11 until 2026-07-31 (60 days)"),
        (cert(13.5), "warning", "expires in 13 days",
         "the certificate from R11 expires on 2026-06-15, in 13 days: is renewal working "
         "(Traefik's ACME log)?"),
        (cert(1.5), "warning", "expires in 1 day", None),
        (cert(60, verified=False, subject="TRAEFIK DEFAULT CERT", issuer="TRAEFIK DEFAULT CERT",
              names=["abc.def.traefik.default"], self_signed=True), "error",
         "default certificate", None),
        (cert(-3, verified=False, verify_error="certificate has expired"), "error", "expired",
         "the certificate from R11 expired on 2026-05-29, 3 days ago"),
        (cert(60, verified=False, names=["www.example.com"]), "error", "wrong name",
         "the certificate served is for www.example.com, not shop.example.com"),
        (cert(60, verified=False, self_signed=True, issuer=HOST), "error", "self-signed",
         "the certificate served is self-signed (shop.example.com): browsers do not trust it"),
        (cert(60, verified=False, verify_error="unable to get local issuer certificate"),
         "error", "not trusted",
         "the certificate from R11 is not trusted: unable to get local issuer certificate"),
        ({"edge": "10.0.0.1:443", "verified": False, "error": "Connection refused"}, "error",
         "no TLS", "no TLS handshake with 10.0.0.1:443 for shop.example.com: Connection refused"),
        ({"skipped": "not checked: the name does not resolve"}, "unknown", "not checked",
         "not checked: the name does not resolve"),
    ],
)  # fmt: skip
def test_tls(facts, state, label, message):
    part = judge_tls(HOST, facts, NOW)
    assert (part["state"], part["label"]) == (state, label)
    if message:
        assert part["message"] == message
    if label == "default certificate":
        assert part["message"].startswith(
            "Traefik's default certificate: no certificate issued for this domain yet"
        )


def test_the_address_takes_the_first_error_else_the_first_warning_else_ok():
    dns = judge_dns(HOST, ["10.0.0.1"], "", ["10.0.0.1"])
    routed = judge_routing(HOST, "shop", [router()], "")
    valid, soon = judge_tls(HOST, cert(60), NOW), judge_tls(HOST, cert(3), NOW)
    unknown = judge_routing(HOST, "shop", None, "")
    assert judge_address(dns, routed, valid) == (
        "ok",
        "reachable over HTTPS with a valid certificate",
    )
    assert judge_address(dns, unknown, valid) == (
        "ok",
        "reachable over HTTPS with a valid certificate (routing not checked)",
    )
    state, summary = judge_address(dns, routed, soon)
    assert state == "warning" and summary.startswith("TLS: the certificate from R11 expires")
    nowhere = judge_dns(HOST, [], "Name or service not known")
    state, summary = judge_address(nowhere, unknown, soon)
    assert state == "error" and summary.startswith(f"DNS: {HOST} does not resolve")
