"""Domain checks: what the scheduled check (``panel.reconcile.domains``) found for each
address of each app, and the addresses an app is reached at.

An app's addresses are its default host (``<app>.<HELIOS_BASE_DOMAIN>``) and its custom
domains. A check replaces the rows of the apps it checked, in one transaction: one row per
address, so a domain removed since goes with it. Nothing is emitted: a check changes nothing,
and the app page reads the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from panel.db import database
from panel.domains_state import address_url
from panel.models import App, Domain, DomainState, utcnow

__all__ = ["Address", "addresses_of", "domain_state_rows", "record_domain_states"]


@dataclass(frozen=True)
class Address:
    """One address of an app, with what the last check found (``state`` None: not checked)."""

    hostname: str
    url: str
    is_default: bool
    state: DomainState | None


def domain_state_rows(app_ids: Iterable[int]) -> dict[int, dict[str, DomainState]]:
    """The stored check rows of these apps: app id to hostname to row (one query)."""
    ids = list(app_ids)
    found: dict[int, dict[str, DomainState]] = {app_id: {} for app_id in ids}
    if ids:
        for row in DomainState.select().where(DomainState.app.in_(ids)):
            found[row.app_id][row.hostname] = row
    return found


def addresses_of(app: App, base_domain: str) -> list[Address]:
    """The app's addresses, default host first then custom domains by name, each with its
    last check."""
    rows = domain_state_rows([app.id])[app.id]
    default = f"{app.slug}.{base_domain}"
    custom = Domain.select(Domain.hostname).where(Domain.app == app.id).order_by(Domain.hostname)
    hosts = [(default, True)] + [(d.hostname, False) for d in custom if d.hostname != default]
    return [
        Address(host, address_url(host), is_default, rows.get(host)) for host, is_default in hosts
    ]


def record_domain_states(
    results: Mapping[int, list[Mapping[str, Any]]], checked_at: datetime | None = None
) -> int:
    """Replace the check rows of each app in ``results`` (app id to one dict per address:
    hostname, is_default, state, summary, dns, routing, tls); how many rows were written.
    Apps deleted since the check began are skipped."""
    at = checked_at or utcnow()
    with database.atomic():
        existing = {a.id for a in App.live(App.id).where(App.id.in_(list(results)))}
        ids = [app_id for app_id in results if app_id in existing]
        if not ids:
            return 0
        DomainState.delete().where(DomainState.app.in_(ids)).execute()
        rows = [
            {"app": app_id, "checked_at": at, **{k: result[k] for k in _FIELDS}}
            for app_id in ids
            for result in results[app_id]
        ]
        if rows:
            DomainState.insert_many(rows).execute()
    return len(rows)


_FIELDS = ("hostname", "is_default", "state", "summary", "dns", "routing", "tls")
