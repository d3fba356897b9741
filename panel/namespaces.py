"""Which Nomad namespace a team's apps run in, and creating it.

A team created since namespaces per team exist runs in a namespace named after its slug
(``team.nomad_namespace``), so ``nomad job status -namespace=<team>`` lists exactly its apps.
A team from before keeps NULL there, which means the installation's NOMAD_NAMESPACE, until it is
moved (``helios teams move-namespace``). Every Nomad call about an app asks :func:`namespace_for`.

Creating a namespace needs a management token: HELIOS_NOMAD_MANAGEMENT_TOKEN when set, else the
one provisioning handed over (both used for nothing else but team tokens), else NOMAD_TOKEN.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from panel.config import Settings
from panel.drivers.nomad import NomadConnection, NomadDriver, NomadError, NomadErrorKind

__all__ = [
    "NAMESPACE_RULE",
    "app_driver",
    "create_team_token",
    "ensure_namespace",
    "management_driver",
    "namespace_for",
    "recorded_namespace",
    "team_policy_rules",
    "valid_namespace",
]

# Nomad's rule for namespace names (structs.validNamespaceName).
NAMESPACE_RULE = re.compile(r"^[a-zA-Z0-9-]{1,128}$")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 ._-]{1,200}")


def valid_namespace(name: str) -> str:
    """``name`` when Nomad accepts it as a namespace name; ValueError saying the rule if not."""
    if not NAMESPACE_RULE.fullmatch(name or ""):
        raise ValueError(
            f"{name!r} cannot name a Nomad namespace: use 1 to 128 letters, digits and dashes"
        )
    return name


def namespace_for(team: Any, settings: Settings) -> str:
    """The namespace a team's apps run in: its own, or NOMAD_NAMESPACE for a team not moved."""
    return getattr(team, "nomad_namespace", None) or settings.nomad_namespace


def recorded_namespace(row: Any, settings: Settings) -> str:
    """The namespace a deployment, build or run row was submitted to (rows from before
    namespaces were recorded: NOMAD_NAMESPACE, where everything ran then); the rule of
    :func:`namespace_for`, applied to what the row recorded."""
    return namespace_for(row, settings)


def app_driver(settings: Settings, app: Any) -> NomadDriver:
    """A driver addressing the namespace of the app's team."""
    return NomadDriver.for_namespace(settings, namespace_for(app.team, settings))


def management_driver(settings: Settings) -> NomadDriver:
    """A driver holding the management token: HELIOS_NOMAD_MANAGEMENT_TOKEN, else the one
    provisioning handed over with the connection, else the usual token."""
    connection = NomadConnection.from_settings(settings)
    return NomadDriver(replace(connection, token=connection.management_token or connection.token))


def ensure_namespace(settings: Settings, team: Any) -> str:
    """Create the team's namespace in Nomad unless it exists (GET, then POST); its name.

    Idempotent. Nothing is created for a team that runs in NOMAD_NAMESPACE (the operator's).
    A refusal becomes a DENIED NomadError that names both fixes.
    """
    namespace = namespace_for(team, settings)
    if not getattr(team, "nomad_namespace", None):
        return namespace
    driver = management_driver(settings)
    try:
        if driver.read_namespace(namespace) is not None:
            return namespace
        driver.apply_namespace(
            namespace, description=f"Helios team {team.name}", meta={"helios-team": team.slug}
        )
    except NomadError as exc:
        if exc.kind != NomadErrorKind.DENIED:
            raise
        # A command to paste: the team's name only when nothing in it means anything to a shell.
        shown = team.name if _PLAIN_NAME.fullmatch(team.name or "") else team.slug
        raise NomadError(
            NomadErrorKind.DENIED,
            f"Nomad refused to create namespace {namespace!r} for team {team.slug} (it needs a "
            "management token): set HELIOS_NOMAD_MANAGEMENT_TOKEN to one, or create it once by "
            f'hand: nomad namespace apply -description "Helios team {shown}" {namespace}',
        ) from exc
    return namespace


def app_namespaces(app: Any, settings: Settings) -> list[str]:
    """Every namespace the app's jobs were registered in, its team's current one first (its
    deployments record theirs; rows from before migration 020 count as NOMAD_NAMESPACE)."""
    from panel.models import Deployment

    current = namespace_for(app.team, settings)
    recorded = {
        recorded_namespace(row, settings)
        for row in Deployment.select(Deployment.nomad_namespace)
        .where((Deployment.app == app.id) & Deployment.nomad_job_version.is_null(False))
        .distinct()
    }
    return [current, *sorted(recorded - {current})]


def team_policy_rules(namespace: str) -> str:
    """The ACL policy of a team's Nomad token: read its namespace's jobs, allocations and
    logs; nothing else (no submitting, no exec, no other namespace)."""
    return (
        f'namespace "{valid_namespace(namespace)}" {{\n'
        '  policy = "read"\n'
        '  capabilities = ["read-logs", "read-fs"]\n'
        "}\n"
    )


def create_team_token(settings: Settings, team: Any) -> dict[str, Any]:
    """Write ACL policy ``helios-team-<slug>`` and create a client token holding it (with the
    management token); Nomad's answer, SecretID included (shown once, never stored)."""
    namespace = valid_namespace(team.nomad_namespace or "")
    policy = f"helios-team-{team.slug}"
    driver = management_driver(settings)
    driver.apply_acl_policy(
        policy,
        description=f"Helios team {team.slug}: read its namespace {namespace}",
        rules=team_policy_rules(namespace),
    )
    return {"Policy": policy, **driver.create_acl_token(f"helios-team-{team.slug}", [policy])}
