"""Release snapshots: what an app's rows looked like when a release was cut, and the AppSpec
rendered from one. Snapshots are plain JSON so a rollback redeploys exactly what ran before."""

from __future__ import annotations

from typing import Any

from panel.config import Settings
from panel.spec import AppSpec

__all__ = ["SNAPSHOT_VERSION", "policy_fields", "spec_from_snapshot"]

SNAPSHOT_VERSION = 1


def policy_fields(settings: Settings) -> dict[str, Any]:
    """The AppSpec fields that come from the installation's settings, not from the app."""
    return {
        "base_domain": settings.base_domain,
        "datacenters": settings.nomad_datacenters,
        "auto_promote": settings.deploy_auto_promote,
        "auto_revert": settings.deploy_auto_revert,
        "min_healthy_time_s": settings.deploy_min_healthy_time,
        "healthy_deadline_s": settings.deploy_healthy_deadline,
        "progress_deadline_s": settings.deploy_progress_deadline,
        "certresolver": settings.tls_certresolver,
        "entrypoint": settings.traefik_entrypoint,
    }


def spec_from_snapshot(
    snapshot: dict[str, Any],
    *,
    team: str,
    release: int,
    deployment: int,
    settings: Settings,
) -> AppSpec:
    """The validated AppSpec of one release, as deployed by one deployment."""
    command = snapshot.get("command") or ""
    return AppSpec(
        slug=snapshot["slug"],
        team=team,
        image=snapshot["image"],
        git_sha=snapshot.get("git_sha", ""),
        release=release,
        deployment=deployment,
        port=snapshot["port"],
        health_path=snapshot["health_path"],
        cpu_mhz=snapshot["cpu_mhz"],
        memory_mb=snapshot["memory_mb"],
        memory_max_mb=snapshot["memory_max_mb"],
        processes=({"name": "web", "command": command, "count": snapshot["count"]},),
        env=tuple(sorted(snapshot.get("env", {}).items())),
        secret_keys=tuple(sorted(snapshot.get("secrets", {}))),
        domains=tuple(snapshot.get("domains", ())),
        **policy_fields(settings),
    )
