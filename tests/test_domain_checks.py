"""The domain check for real: DNS through the system's resolver, Traefik's routers from the
Traefik double, and TLS handshakes with a real TLS endpoint (``tls_edge``) standing in for
Traefik's websecure entrypoint as HELIOS_EDGE_ADDR; then the app page, the dashboard and the
API show each address as a link with what was found.

Only single-label names resolve here without the network (``localhost`` through /etc/hosts),
so the address that must resolve is a ``localhost`` Domain row written directly (the domain
form refuses single-label names); ``.invalid`` names (RFC 6761) never resolve. The check
connects to HELIOS_EDGE_ADDR with each name as SNI, never to the name itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from rq import Queue
from tls_edge import TlsEdge
from traefik_double import TraefikDouble

from panel.actions.accounts import create_user
from panel.actions.apps import add_domain, create_app, request_deploy
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.models import App, Domain, DomainState, Team
from panel.reconcile.domains import DOMAIN_CHECK_LOCK, check_domains, check_domains_if_due

from conftest import free_port, run_queued

PASSWORD = "correct horse battery"
RESOLVES = "localhost"
NOWHERE = "shop.example.invalid"


def router(rule: str, status: str = "enabled", **extra) -> dict:
    return {
        "name": "web@consulcatalog", "rule": rule, "status": status, "using": ["websecure"],
        "tls": {"certResolver": "le"}, "service": "web@consulcatalog",
        "provider": "consulcatalog", "priority": 10, **extra,
    }  # fmt: skip


ALL_HOSTS = f"Host(`web.apps.localhost`) || Host(`{RESOLVES}`) || Host(`{NOWHERE}`)"


@pytest.fixture
def traefik() -> Iterator[TraefikDouble]:
    double = TraefikDouble()
    double.routers = [router(ALL_HOSTS)]
    yield double
    double.close()


@pytest.fixture
def edge(tmp_path) -> Iterator[TlsEdge]:
    endpoint = TlsEdge(tmp_path / "edge")
    endpoint.issue(RESOLVES)
    yield endpoint
    endpoint.close()


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def web(owner, settings, redis_conn) -> App:
    app = create_app(actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
                     image="registry.local/web:1")  # fmt: skip
    add_domain(actor=owner, app=app, hostname=NOWHERE, base_domain=settings.base_domain)
    Domain.create(app=app, hostname=RESOLVES)  # see the module's docstring
    return app


@pytest.fixture
def checked(settings, edge, traefik) -> Settings:
    """Settings with the edge and Traefik's API of the test."""
    return settings.replace(
        edge_addr=edge.address, edge_cacert=str(edge.cafile), traefik_api=traefik.url
    )


def states() -> dict[str, DomainState]:
    return {row.hostname: row for row in DomainState.select()}


def test_a_routed_domain_with_a_valid_certificate_is_ok(web, checked, edge, traefik):
    report = check_domains(checked)
    assert (report.apps, report.addresses) == (1, 3)
    row = states()[RESOLVES]
    assert (row.state, row.is_default) == ("ok", False)
    assert row.summary == "reachable over HTTPS with a valid certificate"
    assert row.dns["state"] == "ok" and row.dns["addresses"] == ["127.0.0.1"]
    assert row.dns["label"] == "points at 127.0.0.1"
    assert (row.routing["state"], row.routing["label"]) == ("ok", "routed")
    assert row.routing["router"] == "web@consulcatalog"
    assert row.tls["state"] == "ok" and row.tls["verified"] is True
    assert row.tls["issuer"] == "Helios Test CA"
    assert re.fullmatch(r"valid until \d{4}-\d\d-\d\d, (89|90) days", row.tls["label"])
    assert RESOLVES in edge.names_seen  # the name went as SNI to HELIOS_EDGE_ADDR


def test_a_name_that_does_not_resolve_and_traefiks_default_certificate_are_errors(
    web, checked, edge
):
    check_domains(checked)
    found = states()
    row = found[NOWHERE]
    assert row.state == "error"
    assert row.dns["state"] == "error" and row.dns["label"] == "does not resolve"
    assert row.summary.startswith(f"DNS: {NOWHERE} does not resolve")
    # The edge was still asked (HELIOS_EDGE_ADDR): it has no certificate for the name.
    assert row.tls["state"] == "error" and row.tls["label"] == "default certificate"
    assert row.tls["message"].startswith(
        "Traefik's default certificate: no certificate issued for this domain yet"
    )
    default = found["web.apps.localhost"]
    assert default.is_default and default.tls["subject"] == "TRAEFIK DEFAULT CERT"


def test_a_certificate_for_another_name_is_an_error(web, checked, edge):
    edge.issue(RESOLVES, names=["other.example.com"])
    check_domains(checked)
    row = states()[RESOLVES]
    assert (row.state, row.tls["label"]) == ("error", "wrong name")
    assert row.summary == (f"TLS: the certificate served is for other.example.com, not {RESOLVES}")
    assert "Hostname mismatch" in row.tls["verify_error"]


def test_a_certificate_near_its_end_is_a_warning_and_an_expired_one_an_error(web, checked, edge):
    edge.issue(RESOLVES, days=5)
    check_domains(checked)
    row = states()[RESOLVES]
    assert row.state == "warning" and row.tls["verified"] is True
    assert re.fullmatch(r"expires in [45] days", row.tls["label"])
    assert "is renewal working" in row.summary

    edge.issue(RESOLVES, expired=True)
    check_domains(checked)
    row = states()[RESOLVES]
    assert (row.state, row.tls["label"]) == ("error", "expired")
    assert re.fullmatch(r"TLS: the certificate from Helios Test CA expired on \S+, 1 day ago",
                        row.summary)  # fmt: skip


def test_a_router_traefik_disabled_is_an_error_with_traefiks_message(web, checked, traefik):
    refused = 'the service "web@consulcatalog" does not exist'
    traefik.routers = [router(ALL_HOSTS, status="disabled", error=[refused])]
    check_domains(checked)
    row = states()[RESOLVES]
    assert (row.state, row.routing["label"]) == ("error", "router disabled")
    assert row.summary == f"routing: Traefik disabled the router web@consulcatalog: {refused}"
    assert row.routing["errors"] == [refused]


def test_a_domain_the_router_does_not_list_yet_is_not_routed(web, checked, traefik):
    traefik.routers = [router("Host(`web.apps.localhost`)")]
    check_domains(checked)
    row = states()[RESOLVES]
    assert (row.state, row.routing["label"]) == ("error", "not routed")
    assert "does not list localhost yet: deploy the app to route it" in row.summary


def test_traefiks_api_unreachable_or_not_configured_is_unknown_not_an_error(web, checked):
    check_domains(checked.replace(traefik_api=f"http://127.0.0.1:{free_port()}"))
    row = states()[RESOLVES]
    assert row.state == "ok"
    assert (row.routing["state"], row.routing["label"]) == (
        "unknown", "unknown: Traefik's API did not answer",
    )  # fmt: skip
    assert row.summary == "reachable over HTTPS with a valid certificate (routing not checked)"

    check_domains(checked.replace(traefik_api=""))
    row = states()[RESOLVES]
    assert row.state == "ok"
    assert row.routing["label"] == "unknown: Traefik API not configured"


def test_routers_are_read_across_traefiks_pages(web, checked, traefik):
    others = [dict(router(f"Host(`app{i}.example.com`)"), name=f"app{i}@consulcatalog")
              for i in range(150)]  # fmt: skip
    traefik.routers = [*others, router(ALL_HOSTS)]
    check_domains(checked)
    assert states()[RESOLVES].routing["state"] == "ok"
    assert [path for path in traefik.requests if path.startswith("/api/http/routers")] == [
        "/api/http/routers?page=1&per_page=100", "/api/http/routers?page=2&per_page=100",
    ]  # fmt: skip


def test_a_removed_domain_loses_its_row_at_the_next_check(web, checked):
    check_domains(checked)
    assert set(states()) == {"web.apps.localhost", RESOLVES, NOWHERE}
    Domain.delete().where(Domain.hostname == NOWHERE).execute()
    check_domains(checked)
    assert set(states()) == {"web.apps.localhost", RESOLVES}


def test_the_schedule_queues_one_pass_per_interval_and_a_worker_runs_it(web, checked, redis_conn):
    assert check_domains_if_due(redis_conn, checked)
    assert not check_domains_if_due(redis_conn, checked)  # the interval has not passed
    queue = Queue("default", connection=redis_conn)
    assert [job.func_name for job in queue.jobs] == ["panel.reconcile.domains.run_domain_check"]
    redis_conn.delete(DOMAIN_CHECK_LOCK)
    assert not check_domains_if_due(redis_conn, checked.replace(domain_check_interval=0))


def test_the_job_reads_its_settings_from_the_environment(web, checked, redis_conn, monkeypatch):
    for name, value in {
        "HELIOS_DATA_DIR": str(checked.data_dir),
        "HELIOS_DATABASE_URL": checked.effective_database_url,
        "HELIOS_EDGE_ADDR": checked.edge_addr, "HELIOS_EDGE_CACERT": checked.edge_cacert,
        "HELIOS_TRAEFIK_API": checked.traefik_api,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert check_domains_if_due(redis_conn, Settings.from_env())
    run_queued(redis_conn, "default")
    assert states()[RESOLVES].state == "ok"


# ---------------------------------------------------------------------------------------------
# What people see
# ---------------------------------------------------------------------------------------------


def test_the_app_page_links_every_address_with_its_badges(
    client, auth, owner, web, checked, settings, redis_conn
):
    assert auth.login(owner.email, PASSWORD).status_code == 302
    page = client.get("/apps/web").get_data(as_text=True)
    assert (
        '<a href="https://web.apps.localhost/" rel="noopener noreferrer" target="_blank">' in page
    )
    assert "not checked yet" in page

    check_domains(checked)
    page = client.get("/apps/web").get_data(as_text=True)
    for host in ("web.apps.localhost", RESOLVES, NOWHERE):
        assert f'<a href="https://{host}/" rel="noopener noreferrer" target="_blank">' in page
    item = page.split(f'data-domain="{RESOLVES}"', 1)[1].split("</li>", 1)[0]
    assert '<span class="badge domain-ok" data-domain-state>ok</span>' in item
    assert "routing: routed" in item and "DNS: points at 127.0.0.1" in item
    assert re.search(r"TLS: valid until \d{4}-\d\d-\d\d, \d+ days", item)
    assert "checked <time" in item
    bad = page.split(f'data-domain="{NOWHERE}"', 1)[1].split("</li>", 1)[0]
    assert "DNS: does not resolve" in bad and "TLS: default certificate" in bad
    assert "Traefik&#39;s default certificate: no certificate issued" in bad

    # The dashboard's "open" link: once deployed.
    assert ">open</a>" not in client.get("/").get_data(as_text=True)
    Domain.delete().where(Domain.hostname == RESOLVES).execute()  # a release refuses it
    request_deploy(actor=owner, app=web, settings=settings, redis_conn=redis_conn)
    dashboard = client.get("/").get_data(as_text=True)
    assert ('<a class="open" href="https://web.apps.localhost/" rel="noopener noreferrer" '
            'target="_blank"') in dashboard  # fmt: skip


def test_the_api_lists_the_urls_with_what_was_found(client, owner, web, checked):
    token = create_token(owner, "urls", ["read"], days=1).secret
    headers = {"Authorization": f"Bearer {token}"}
    before = client.get("/api/v1/apps/web/urls", headers=headers).json["items"]
    assert [(a["url"], a["default"], a["state"]) for a in before] == [
        ("https://web.apps.localhost/", True, None),
        (f"https://{RESOLVES}/", False, None),
        (f"https://{NOWHERE}/", False, None),
    ]
    check_domains(checked)
    found = {a["hostname"]: a for a in client.get("/api/v1/apps/web/urls", headers=headers).json[
        "items"]}  # fmt: skip
    ok = found[RESOLVES]
    assert ok["state"] == "ok" and ok["checked_at"].endswith("Z")
    assert ok["routing"] == {
        "state": "ok", "label": "routed", "message": "routed by web@consulcatalog",
        "facts": {"router": "web@consulcatalog", "status": "enabled", "errors": [],
                  "tls": True, "certresolver": "le"},
    }  # fmt: skip
    assert ok["dns"]["facts"]["addresses"] == ["127.0.0.1"]
    assert found[NOWHERE]["tls"]["label"] == "default certificate"
    assert client.get("/api/v1/apps/nope/urls", headers=headers).status_code == 404
