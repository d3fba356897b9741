"""Moving a team's apps into a Nomad namespace of their own (site admins).

Teams created before namespaces per team run in the installation's NOMAD_NAMESPACE
(``team.nomad_namespace`` NULL). Moving one (`helios teams move-namespace TEAM`, or the team
page) sets its namespace to its slug, creates that namespace in Nomad, and queues an ordinary
deployment of each live app's current release there (canaries as usual). Once such a deployment
succeeded, the deploy engine purges the app's job from the namespace it ran in before
(``panel.reconcile.jobs``): until then the old job keeps serving. Safe to run again: apps that
already run in the team's namespace, or have a deployment queued or running, are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from panel.actions.apps import _queued, _record_deployment
from panel.actions.common import ActionError, actor_name, authorize_operator
from panel.actions.drift import live_deployments
from panel.config import Settings
from panel.db import database
from panel.drivers.nomad import NomadError
from panel.events import emit
from panel.models import App, Build, Deployment, DeploymentStatus, OneOffRun, Team, User
from panel.namespaces import (
    create_team_token,
    ensure_namespace,
    recorded_namespace,
    valid_namespace,
)

__all__ = [
    "NamespaceMove",
    "TeamToken",
    "create_team_nomad_token",
    "move_team_namespace",
    "record_job_namespace",
]

_UNDER_WAY = (DeploymentStatus.QUEUED.value, DeploymentStatus.RUNNING.value)


def record_job_namespace(row: Deployment | Build | OneOffRun, namespace: str) -> None:
    """Record on a deployment, build or run the namespace its job is submitted to (before it
    is), so followers and clean-ups address that namespace even after its team moved."""
    model = type(row)
    model.update(nomad_namespace=namespace).where(model.id == row.id).execute()
    row.nomad_namespace = namespace


@dataclass
class NamespaceMove:
    """What a move did: the team's namespace, and per app what happened."""

    team: str
    namespace: str
    deployments: dict[str, int] = field(default_factory=dict)  # app -> deployment queued
    already: list[str] = field(default_factory=list)  # runs in the namespace already
    busy: list[str] = field(default_factory=list)  # a deployment is under way: not touched
    undeployed: list[str] = field(default_factory=list)  # no live release: nothing to move


def move_team_namespace(
    *, actor: User | None, team: Team, settings: Settings, redis_conn: redis.Redis
) -> NamespaceMove:
    """Give ``team`` its own namespace and redeploy its live apps there (see the module)."""
    authorize_operator(actor)
    try:
        namespace = valid_namespace(team.slug)
    except ValueError as exc:
        raise ActionError("invalid", str(exc)) from None
    team.nomad_namespace = namespace
    try:
        ensure_namespace(settings, team)
    except NomadError as exc:
        raise ActionError("conflict", f"{exc} — nothing was moved") from None
    move = NamespaceMove(team=team.slug, namespace=namespace)
    apps = list(App.live().where(App.team == team.id).order_by(App.slug))
    live = live_deployments([app.id for app in apps])
    with database.atomic():
        Team.update(nomad_namespace=namespace).where(Team.id == team.id).execute()
        queued = []
        for app in apps:
            app.team = team
            current = live.get(app.id)
            under_way = Deployment.select().where(
                (Deployment.app == app.id) & Deployment.status.in_(_UNDER_WAY)
            )
            if under_way.exists():
                move.busy.append(app.slug)
            elif current is None:
                move.undeployed.append(app.slug)
            elif recorded_namespace(current, settings) == namespace:
                move.already.append(app.slug)
            elif app.stopped_at is not None:
                move.undeployed.append(app.slug)  # stopped: its next start deploys there
            else:
                deployment = _record_deployment(
                    actor=actor, app=app, release=current.release, reason="reapply",
                    redis_conn=redis_conn, instance_count=current.instance_count,
                )  # fmt: skip
                move.deployments[app.slug] = deployment.id
                queued.append(deployment)
        emit("v1.team.namespace_moved", {"team": team.slug, "namespace": namespace,
             "apps": sorted(move.deployments)}, actor=actor_name(actor), team=team,
             redis_conn=redis_conn)  # fmt: skip
    for deployment in queued:
        _queued(deployment, redis_conn, settings)
    return move


@dataclass(frozen=True)
class TeamToken:
    """A team's new Nomad token: its policy, accessor and secret (shown once, never stored)."""

    team: str
    namespace: str
    policy: str
    accessor: str
    secret: str


def create_team_nomad_token(
    *, actor: User | None, team: Team, settings: Settings, redis_conn: redis.Redis
) -> TeamToken:
    """Create a Nomad token that reads only the team's namespace (its jobs, allocations and
    logs), for operators who give teams CLI access; site admins only. Refused for a team not
    moved to a namespace of its own (NOMAD_NAMESPACE is shared)."""
    authorize_operator(actor)
    if not team.nomad_namespace:
        raise ActionError(
            "conflict",
            f"{team.slug} runs in the shared namespace (NOMAD_NAMESPACE), so a token for it "
            f"would see other teams' apps: move it first (`helios teams move-namespace "
            f"{team.slug}`)",
        )
    try:
        ensure_namespace(settings, team)
        answer = create_team_token(settings, team)
    except NomadError as exc:
        raise ActionError("conflict", f"{exc} — no token was created") from None
    token = TeamToken(
        team=team.slug, namespace=team.nomad_namespace, policy=answer["Policy"],
        accessor=answer.get("AccessorID", ""), secret=answer.get("SecretID", ""),
    )  # fmt: skip
    emit("v1.team.nomad_token_created", {"team": team.slug, "policy": token.policy,
         "accessor_id": token.accessor}, actor=actor_name(actor), team=team,
         redis_conn=redis_conn)  # fmt: skip
    return token
