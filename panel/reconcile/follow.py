"""Reading Nomad's answers (pure): plans, placement failures and deployment states."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from panel.states import DeploymentStatus

__all__ = [
    "Outcome",
    "describe_plan",
    "judge_deployment",
    "judge_evaluation",
    "placed_anything",
    "placement_failure",
]

_ROLLED_BACK = re.compile(r"rolling back to job version (\d+)")


@dataclass(frozen=True)
class Outcome:
    """How a deployment ended, in Helios's words."""

    status: DeploymentStatus
    message: str
    reverted_to: int | None = None
    by_deployment: int | None = None


def placement_failure(failed: dict[str, Any] | None) -> str:
    """A sentence naming each group Nomad could not place and why; "" when all fit."""
    if not failed:
        return ""
    parts = []
    for group, metric in sorted(failed.items()):
        reasons = [
            f"{dimension} exhausted on {count} node(s)"
            for dimension, count in sorted((metric.get("DimensionExhausted") or {}).items())
        ]
        reasons += [
            f"{constraint} filtered {count} node(s)"
            for constraint, count in sorted((metric.get("ConstraintFiltered") or {}).items())
        ]
        if not metric.get("NodesAvailable"):
            reasons.append("no nodes available in the datacenter")
        detail = "; ".join(reasons) or "no reason given"
        parts.append(f"group {group!r}: {detail}")
    return (
        "placement failed, the cluster has no room for this release ("
        + " / ".join(parts)
        + "): lower count, CPU or memory, or add client nodes"
    )


def describe_plan(plan: dict[str, Any]) -> str:
    """What a Nomad plan will do, per group, e.g. "web: 2 canary, 2 ignore"."""
    updates = (plan.get("Annotations") or {}).get("DesiredTGUpdates") or {}
    parts = []
    for group, counts in sorted(updates.items()):
        changes = [f"{n} {kind.lower()}" for kind, n in sorted(counts.items()) if n]
        parts.append(f"{group}: {', '.join(changes) or 'no change'}")
    return "; ".join(parts) or "no change"


def _progress(deployment: dict[str, Any]) -> str:
    groups = []
    for name, state in sorted((deployment.get("TaskGroups") or {}).items()):
        text = f"{name}: {state.get('HealthyAllocs', 0)}/{state.get('DesiredTotal', 0)} healthy"
        if state.get("DesiredCanaries"):
            placed = len(state.get("PlacedCanaries") or ())
            text += f", canaries {placed}/{state['DesiredCanaries']}"
            text += " promoted" if state.get("Promoted") else ""
        groups.append(text)
    description = deployment.get("StatusDescription") or "running"
    return f"{description} ({'; '.join(groups)})" if groups else description


def judge_deployment(deployment: dict[str, Any]) -> Outcome | str:
    """An Outcome once Nomad's deployment is over, else a line describing its progress."""
    status = deployment.get("Status")
    description = deployment.get("StatusDescription") or status or "unknown"
    if status == "successful":
        return Outcome(DeploymentStatus.SUCCEEDED, f"Nomad: {description}")
    if status == "failed":
        rolled_back = _ROLLED_BACK.search(description)
        if rolled_back:
            return Outcome(
                DeploymentStatus.REVERTED,
                f"Nomad: {description}; the previous stable version runs again",
                reverted_to=int(rolled_back.group(1)),
            )
        return Outcome(DeploymentStatus.FAILED, f"Nomad: {description}")
    if status == "cancelled":
        return Outcome(DeploymentStatus.CANCELLED, f"Nomad cancelled it: {description}")
    return _progress(deployment)


def placed_anything(deployment: dict[str, Any] | None) -> bool:
    """Whether Nomad's deployment placed at least one allocation of any group."""
    groups = (deployment or {}).get("TaskGroups") or {}
    return any(state.get("PlacedAllocs") for state in groups.values())


def judge_evaluation(evaluation: dict[str, Any], *, placed: bool) -> Outcome | None:
    """An Outcome when the evaluation of a registration ends the deployment, else None.

    A completed evaluation whose groups could not be placed ends it only when nothing was
    placed at all (else Nomad's blocked evaluation places the rest when room appears); a
    failed evaluation means Nomad's scheduler gave up on it.
    """
    status = evaluation.get("Status")
    if status == "failed":
        reason = evaluation.get("StatusDescription") or "no reason given"
        return Outcome(DeploymentStatus.FAILED, f"Nomad's scheduler failed to place it: {reason}")
    failure = placement_failure(evaluation.get("FailedTGAllocs"))
    if status == "complete" and failure and not placed:
        return Outcome(DeploymentStatus.FAILED, failure)
    return None
