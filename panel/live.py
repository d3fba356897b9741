"""What runs, judged from Nomad's allocations and Consul's checks: each instance's state and an
app's health, and the buckets container metrics are kept in. Pure: the sampler
(``panel.reconcile.observe``) reads Nomad and Consul and stores what these functions make of it.

An app's health is its instances', not its last deployment's:

- ``healthy``: every instance Nomad wants running runs, with every task running and none
  found unhealthy;
- ``degraded``: some do, not all;
- ``down``: instances are wanted and none is healthy (crash-looping, failing checks, lost);
- ``not_running``: no instance is wanted (never deployed, stopped, or purged).

An instance is unhealthy when Nomad's deployment health says so, a task is not running
(restarting between crashes, dead), or one of its Consul checks is ``critical`` (``warning``
keeps it healthy, and shows). Consul knows an instance's service by the id Nomad gives it,
``_nomad-task-<alloc id>-group-<group>-<service>-<port label>``, so its checks are matched to the
allocation by that id (``checks_by_alloc``). When Consul could not be read the health is judged
from Nomad alone and says that the checks are unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

__all__ = [
    "CHECK_STATES",
    "FAILURE_EVENTS",
    "HEALTH_STATES",
    "RESOLUTIONS",
    "bucket_of",
    "checks_by_alloc",
    "instance_of",
    "judge_health",
    "last_known_checks",
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
CHECK_STATES = ("passing", "warning", "critical")  # a Consul check's Status
CHECK_OUTPUT_CHARS = 300  # of a check's output, kept per instance
# The id Nomad registers a group service's instance under in Consul ("_nomad-task-<alloc id>-
# group-<group>-<service>-<port label>"; its checks' ids are hashes): MakeAllocServiceID in
# https://github.com/hashicorp/nomad/blob/v1.3.14/client/serviceregistration/id.go
_NOMAD_SERVICE_ID = re.compile(
    r"_nomad-task-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-"
)
_NO_CHECKS: Mapping[str, Sequence[Mapping[str, Any]]] = MappingProxyType({})


def _event_text(event: Mapping[str, Any]) -> str:
    said = str(event.get("DisplayMessage") or event.get("Message") or "").strip()
    return f"{event.get('Type')}: {said}" if said else str(event.get("Type") or "")


def checks_by_alloc(checks: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Consul's checks (``GET /v1/health/state/any``) of the services Nomad registered, by
    allocation id, each as name, status and output (trimmed), in name order; others ignored."""
    found: dict[str, list[dict[str, str]]] = {}
    for check in checks:
        matched = _NOMAD_SERVICE_ID.match(str(check.get("ServiceID") or ""))
        if matched is None:
            continue
        status = str(check.get("Status") or "")
        found.setdefault(matched.group(1), []).append({
            "name": str(check.get("Name") or check.get("CheckID") or "")[:100],
            # Consul documents no other status; one it might add is shown, not judged.
            "status": status if status in CHECK_STATES else "warning",
            "output": " ".join(str(check.get("Output") or "").split())[:CHECK_OUTPUT_CHARS],
        })  # fmt: skip
    for listed in found.values():
        listed.sort(key=lambda check: (check["name"], check["status"], check["output"]))
    return found


def _failing_check(checks: Sequence[Mapping[str, Any]] | None) -> str:
    """What the first critical check says ("check 'alive' critical: HTTP GET …"), or ""."""
    check = next((c for c in checks or () if c.get("status") == "critical"), None)
    if check is None:
        return ""
    said = f"check '{check['name']}' critical"
    return f"{said}: {check['output']}" if check.get("output") else said


def instance_of(
    alloc: Mapping[str, Any], checks: Sequence[Mapping[str, Any]] | None = ()
) -> dict[str, Any]:
    """One allocation as the app page shows it, with its Consul ``checks`` (name, status,
    output: see checks_by_alloc; None when Consul could not be read)."""
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
        "health": _health_of(alloc, checks),
        "checks": None if checks is None else [dict(check) for check in checks],
        "restarts": restarts,
        "last_failure": _event_text(last)[:300] if last else "",
        "started_at": min(started) if started else None,
    }


def _health_of(alloc: Mapping[str, Any], checks: Sequence[Mapping[str, Any]] | None = ()) -> str:
    """healthy, unhealthy or starting (no verdict yet) for a wanted allocation."""
    nomad = _nomad_health_of(alloc)
    return "unhealthy" if nomad == "healthy" and _failing_check(checks) else nomad


def _nomad_health_of(alloc: Mapping[str, Any]) -> str:
    """The allocation's health as Nomad alone sees it."""
    if alloc.get("ClientStatus") != "running":
        return "unhealthy" if alloc.get("ClientStatus") in ("failed", "lost") else "starting"
    states = (alloc.get("TaskStates") or {}).values()
    if any((state or {}).get("State") != "running" for state in states):
        return "unhealthy"
    verdict = (alloc.get("DeploymentStatus") or {}).get("Healthy")
    if verdict is False:
        return "unhealthy"
    return "healthy"


def judge_health(
    allocs: Iterable[Mapping[str, Any]],
    checks: Mapping[str, Sequence[Mapping[str, Any]]] | None = _NO_CHECKS,
) -> dict[str, Any]:
    """The app's health from its job's allocations and their Consul ``checks`` (by allocation
    id, see checks_by_alloc; None: Consul could not be read): state, counts, a reason,
    instances."""
    wanted = sorted((a for a in allocs if a.get("DesiredStatus") == _WANTED), key=_alloc_id)
    instances = [
        instance_of(a, None if checks is None else checks.get(_alloc_id(a), ())) for a in wanted
    ]
    healthy = sum(1 for i in instances if i["health"] == "healthy")
    running = sum(1 for i in instances if i["status"] == "running")
    # A check failing where Nomad sees every task run says why; otherwise (down) a crash does.
    by_check = next((
        _failing_check(i["checks"])
        for a, i in zip(wanted, instances, strict=True)
        if i["health"] == "unhealthy" and _nomad_health_of(a) == "healthy"
    ), "")  # fmt: skip
    if not instances:
        state, reason = "not_running", "no instance is wanted in Nomad"
    elif healthy == len(instances):
        state, reason = "healthy", f"{healthy} of {len(instances)} instances healthy"
    elif healthy:
        state, reason = "degraded", f"{healthy} of {len(instances)} instances healthy"
        reason += f": {by_check}" if by_check else ""
    else:
        failing = by_check or next((i["last_failure"] for i in instances if i["last_failure"]), "")
        state = "down"
        reason = f"0 of {len(instances)} instances healthy" + (f": {failing}" if failing else "")
    if checks is None and instances:
        reason += " (Consul checks unknown: judged from Nomad alone)"
    return {
        "state": state,
        "reason": reason,
        "wanted": len(instances),
        "running": running,
        "healthy": healthy,
        "instances": instances,
    }


def last_known_checks(
    allocs: Iterable[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]
) -> dict[str, list[dict[str, Any]]] | None:
    """While Consul cannot be read: each allocation's checks as the last pass stored them (its
    ``stored`` instances), so an app down for a failing check does not look recovered because
    Consul stopped answering; None when no allocation has stored checks."""
    known = {i.get("alloc"): i.get("checks") for i in stored if i.get("checks") is not None}
    found = {
        _alloc_id(a): list(known[_alloc_id(a)[:8]]) for a in allocs if _alloc_id(a)[:8] in known
    }
    return found or None


def _alloc_id(alloc: Mapping[str, Any]) -> str:
    return str(alloc.get("ID") or "")


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
