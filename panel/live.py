"""What runs, judged from Nomad's allocations: each instance's state and an app's health, and
the buckets container metrics are kept in. Pure: the sampler (``panel.reconcile.observe``)
reads Nomad and stores what these functions make of it.

An app's health is its instances', not its last deployment's:

- ``healthy``: every instance Nomad wants running runs, with every task running and none
  found unhealthy;
- ``degraded``: some do, not all;
- ``down``: instances are wanted and none is healthy (crash-looping, failing checks, lost);
- ``not_running``: no instance is wanted (never deployed, stopped, or purged).

An instance is unhealthy when Nomad's deployment health says so, or a task is not running
(restarting between crashes, dead). Checks run by Consul reach Helios through that deployment
health only: between deployments a failing check does not show here (see the README).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FAILURE_EVENTS",
    "HEALTH_STATES",
    "RESOLUTIONS",
    "bucket_of",
    "instance_of",
    "judge_health",
    "usage_of",
]

HEALTH_STATES = ("healthy", "degraded", "down", "not_running")
# (seconds per point, seconds kept): 10 s points for an hour, 1 min for a day, 10 min a week.
RESOLUTIONS = ((10, 3600), (60, 86_400), (600, 7 * 86_400))
FAILURE_EVENTS = (
    "Terminated", "Restarting", "Not Restarting", "Driver Failure", "Alloc Unhealthy",
    "Killing", "Failed Validation", "Setup Failure", "Task hook failed",
)  # fmt: skip
_WANTED = "run"


def _event_text(event: Mapping[str, Any]) -> str:
    said = str(event.get("DisplayMessage") or event.get("Message") or "").strip()
    return f"{event.get('Type')}: {said}" if said else str(event.get("Type") or "")


def instance_of(alloc: Mapping[str, Any]) -> dict[str, Any]:
    """One allocation as the app page shows it."""
    states = alloc.get("TaskStates") or {}
    restarts = sum(int((state or {}).get("Restarts") or 0) for state in states.values())
    failures = [
        event
        for state in states.values()
        for event in (state or {}).get("Events") or ()
        if str(event.get("Type") or "") in FAILURE_EVENTS
    ]
    # The latest event that says why (a crash, a driver failure, unhealthy); "Restarting" and
    # "Killing" only when nothing says more.
    telling = [e for e in failures if e.get("Type") not in ("Restarting", "Killing")]
    last = max(telling or failures, key=lambda event: int(event.get("Time") or 0), default=None)
    started = [str((s or {}).get("StartedAt") or "") for s in states.values()]
    started = [value for value in started if value and not value.startswith("0001-")]
    return {
        "alloc": str(alloc.get("ID") or "")[:8],
        "group": str(alloc.get("TaskGroup") or ""),
        "node": str(alloc.get("NodeName") or alloc.get("NodeID") or "")[:64],
        "version": alloc.get("JobVersion"),
        "status": str(alloc.get("ClientStatus") or ""),
        "health": _health_of(alloc),
        "restarts": restarts,
        "last_failure": _event_text(last)[:300] if last else "",
        "started_at": min(started) if started else None,
    }


def _health_of(alloc: Mapping[str, Any]) -> str:
    """healthy, unhealthy or starting (no verdict yet) for a wanted allocation."""
    if alloc.get("ClientStatus") != "running":
        return "unhealthy" if alloc.get("ClientStatus") in ("failed", "lost") else "starting"
    states = (alloc.get("TaskStates") or {}).values()
    if any((state or {}).get("State") != "running" for state in states):
        return "unhealthy"
    verdict = (alloc.get("DeploymentStatus") or {}).get("Healthy")
    if verdict is False:
        return "unhealthy"
    return "healthy"


def judge_health(allocs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The app's health from its job's allocations: state, counts, a reason, instances."""
    wanted = [a for a in allocs if a.get("DesiredStatus") == _WANTED]
    instances = [instance_of(a) for a in sorted(wanted, key=lambda a: str(a.get("ID")))]
    healthy = sum(1 for i in instances if i["health"] == "healthy")
    running = sum(1 for i in instances if i["status"] == "running")
    if not instances:
        state, reason = "not_running", "no instance is wanted in Nomad"
    elif healthy == len(instances):
        state, reason = "healthy", f"{healthy} of {len(instances)} instances healthy"
    elif healthy:
        state, reason = "degraded", f"{healthy} of {len(instances)} instances healthy"
    else:
        failing = next((i["last_failure"] for i in instances if i["last_failure"]), "")
        state = "down"
        reason = f"0 of {len(instances)} instances healthy" + (f": {failing}" if failing else "")
    return {
        "state": state,
        "reason": reason,
        "wanted": len(instances),
        "running": running,
        "healthy": healthy,
        "instances": instances,
    }


def usage_of(stats: Mapping[str, Any]) -> tuple[float, int]:
    """(CPU in MHz, memory in bytes) an allocation uses, from Nomad's allocation stats."""
    usage = stats.get("ResourceUsage") or {}
    cpu = float((usage.get("CpuStats") or {}).get("TotalTicks") or 0.0)
    memory = usage.get("MemoryStats") or {}
    used = int(memory.get("RSS") or 0) or int(memory.get("Usage") or 0)
    return cpu, used


def bucket_of(at: int, resolution: int) -> int:
    """The start (epoch seconds) of the ``resolution``-second bucket holding ``at``."""
    return at - at % resolution
