"""Release snapshots: what an app's rows looked like when a release was cut, and the AppSpec
rendered from one. Snapshots are plain JSON so a rollback redeploys exactly what ran before."""

from __future__ import annotations

from typing import Any

from panel.config import Settings
from panel.spec import AppSpec

__all__ = ["SNAPSHOT_VERSION", "pending_changes", "policy_fields", "spec_from_snapshot"]

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


# Snapshot keys that are no setting a person changes (or are compared on their own below).
_NOT_SETTINGS = {"v", "slug", "git_sha", "from_repo", "env", "secrets", "domains", "image"}


def _shown(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "(none)"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def pending_changes(
    live: dict[str, Any], upcoming: dict[str, Any], *, compare_image: bool = True
) -> list[str]:
    """What deploying ``upcoming`` (a snapshot of the app now) would change over the ``live``
    release's snapshot, one readable line each; [] when nothing would. Secret values are never
    shown: a secret set again (even to the same value) counts as changed. ``compare_image``
    False for an app built from its repository, whose next image comes from a build."""
    lines = []
    if compare_image and live.get("image") != upcoming.get("image"):
        lines.append(f"image: {_shown(live.get('image'))} → {_shown(upcoming.get('image'))}")
    for key in [k for k in upcoming if k not in _NOT_SETTINGS]:
        if key in live and live[key] != upcoming[key]:
            lines.append(f"{key}: {_shown(live[key])} → {_shown(upcoming[key])}")
    old_env, new_env = live.get("env") or {}, upcoming.get("env") or {}
    for key in sorted(old_env.keys() | new_env.keys()):
        if key not in new_env:
            lines.append(f"variable {key}: removed")
        elif key not in old_env:
            lines.append(f"variable {key}: added ({_shown(new_env[key])})")
        elif old_env[key] != new_env[key]:
            lines.append(f"variable {key}: {_shown(old_env[key])} → {_shown(new_env[key])}")
    old_secrets, new_secrets = live.get("secrets") or {}, upcoming.get("secrets") or {}
    for key in sorted(old_secrets.keys() | new_secrets.keys()):
        if key not in new_secrets:
            lines.append(f"secret {key}: removed")
        elif key not in old_secrets:
            lines.append(f"secret {key}: added")
        elif old_secrets[key] != new_secrets[key]:
            lines.append(f"secret {key}: set to a new value")
    old_domains, new_domains = set(live.get("domains") or ()), set(upcoming.get("domains") or ())
    lines += [f"domain {name}: added" for name in sorted(new_domains - old_domains)]
    lines += [f"domain {name}: removed" for name in sorted(old_domains - new_domains)]
    return lines
