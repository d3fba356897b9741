"""Traefik routing tags for an app's Consul service (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from panel.spec import AppSpec
from panel.validation import ValidationError, validate_domain, validate_slug

__all__ = ["CANARY_TAGS", "render_canary_tags", "render_router_rule", "render_traefik_tags"]

CANARY_TAGS = ("traefik.enable=false",)


def render_router_rule(domains: Iterable[str]) -> str:
    """Return ``Host(`a`) || Host(`b`)`` for validated hostnames; refuse anything invalid."""
    hosts = [validate_domain(domain) for domain in domains]
    if not hosts:
        raise ValidationError("domains", "a router needs at least one domain, e.g. app.example.com")
    return " || ".join(f"Host(`{host}`)" for host in hosts)


def render_traefik_tags(spec: AppSpec) -> list[str]:
    """Return the tags that route the app's domains to its web service over TLS."""
    router = f"traefik.http.routers.{validate_slug(spec.slug)}"
    tags = [
        "traefik.enable=true",
        f"{router}.rule={render_router_rule(spec.all_domains)}",
        f"{router}.entrypoints={validate_slug(spec.entrypoint, 'entrypoint')}",
        f"{router}.tls=true",
    ]
    if spec.certresolver:
        tags.append(f"{router}.tls.certresolver={validate_slug(spec.certresolver, 'certresolver')}")
    return tags


def render_canary_tags() -> list[str]:
    """Return the tags canaries register with: hidden from Traefik until promoted.

    Canary allocations still run their service checks, and Nomad's deployment health (HealthCheck
    "checks") waits for those checks to pass before it promotes; only public traffic is withheld,
    so users never hit a release that has not proven healthy. After promotion the allocations
    switch to the normal tags and Traefik starts routing to them.
    """
    return list(CANARY_TAGS)
