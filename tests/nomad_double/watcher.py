"""Time, client updates and the deployment watcher of the Nomad double.

Docs followed:
- canaries, auto-promote, auto-revert, progress deadline:
  https://developer.hashicorp.com/nomad/docs/job-specification/update
- promote / fail / allocation health: https://developer.hashicorp.com/nomad/api-docs/deployments

One step: clients report allocation changes (pending -> running -> health) in one
``AllocationUpdated`` write, which also updates the deployments' health counts as Nomad's state
store does; then the watcher judges each running deployment (``DeploymentStatusUpdate``,
``DeploymentPromotion``, ``AllocationUpdateDesiredStatus`` for replacements); then the
scheduler passes of ``Scheduler.reschedule``. The scheduling methods used here (register,
process_eval, _update_job_status) live in the ``Scheduler`` subclass.
"""

from __future__ import annotations

import copy
from typing import Any

from .batch import TERMINAL
from .jobspec import find_group, group_update, spec_changed
from .state import (
    DESC_DEADLINE,
    DESC_FAILED_BY_USER,
    DESC_NEEDS_PROMOTION,
    DESC_RUNNING,
    DESC_SUCCESSFUL,
    DESC_UNHEALTHY,
    ApiError,
    Cluster,
    _now,
)


class DeploymentWatcher(Cluster):
    """Steps of simulated time and the deployment watcher (mixed into Scheduler)."""

    # -- time ----------------------------------------------------------------------------------

    def step(self, count: int = 1) -> None:
        """Advance the simulation count steps (see the module docstring)."""
        with self.lock:
            for _ in range(count):
                self.steps += 1
                self._advance_allocs()
                for deployment in list(self.deployments.values()):
                    if deployment["Status"] == "running":
                        self._watch(deployment)
                for versions in list(self.jobs.values()):
                    self.reschedule(versions[-1])  # type: ignore[attr-defined]
                self.finish_drains()  # type: ignore[attr-defined]

    def _advance_allocs(self) -> None:
        """pending -> running -> health decided by the health policy (one client update)."""
        touched = set()
        for alloc in list(self.allocs.values()):
            if alloc["DesiredStatus"] != "run" or alloc["_step"] >= self.steps:
                continue
            job = self.job_version(alloc)
            if alloc.get("_run") is not None:
                self._advance_batch(alloc)
            elif alloc["ClientStatus"] == "pending":
                group = find_group(job, alloc["TaskGroup"]) or {}
                alloc["ClientStatus"] = "running"
                alloc["ClientDescription"] = "Tasks are running"
                alloc["TaskStates"] = {
                    t["Name"]: {
                        "State": "running",
                        "Failed": False,
                        "Restarts": 0,
                        "StartedAt": "2024-01-01T00:00:00Z",
                        "FinishedAt": None,
                        "Events": [
                            {
                                "Type": "Started",
                                "Time": _now(),
                                "DisplayMessage": "Task started by client",
                            }
                        ],
                    }
                    for t in group.get("Tasks", [])
                }
                alloc["_step"] = self.steps
                self.touch("allocs", alloc)
                current = self.jobs[(alloc["Namespace"], alloc["JobID"])][-1]
                self._update_job_status(current)  # type: ignore[attr-defined]
            elif self._client_sets_health(job, alloc):
                healthy = bool(self.health_policy(job, copy.deepcopy(alloc)))
                alloc["DeploymentStatus"].update(Healthy=healthy, Timestamp=_now())
                if not healthy:  # allocrunner's health hook says so in a task event
                    for state in (alloc["TaskStates"] or {}).values():
                        state["Events"].append({
                            "Type": "Alloc Unhealthy", "Time": _now(),
                            "DisplayMessage": self.unhealthy_message,
                        })  # fmt: skip
                self.touch("allocs", alloc, "ModifyIndex", "DeploymentStatus.ModifyIndex")
                touched.add(alloc["DeploymentID"])
        for deployment_id in touched:
            self.recount(self.deployments[deployment_id])
        self.commit("AllocationUpdated")

    def _advance_batch(self, alloc: dict[str, Any]) -> None:
        """One client update of a batch allocation: its tasks' next step (see batch.py)."""
        if alloc["ClientStatus"] in TERMINAL:
            return
        run = alloc["_run"]
        if alloc["ClientStatus"] == "pending":
            run.begin(alloc)
        else:
            run.advance(alloc)
        alloc["_step"] = self.steps
        alloc["ModifyTime"] = _now()
        self.touch("allocs", alloc)
        current = self.jobs[(alloc["Namespace"], alloc["JobID"])][-1]
        self._update_job_status(current)  # type: ignore[attr-defined]

    @staticmethod
    def _client_sets_health(job: dict[str, Any], alloc: dict[str, Any]) -> bool:
        """Health still unknown and not left to the operator (health_check = "manual")."""
        status = alloc["DeploymentStatus"]
        if not status or status["Healthy"] is not None:
            return False
        group = find_group(job, alloc["TaskGroup"]) or {}
        return (group_update(job, group) or {}).get("HealthCheck") != "manual"

    def recount(self, deployment: dict[str, Any]) -> None:
        """Update the deployment's per-group health counts from its allocations."""
        ours = [a for a in self.allocs.values() if a["DeploymentID"] == deployment["ID"]]
        for name, state in deployment["TaskGroups"].items():
            health = [a["DeploymentStatus"]["Healthy"] for a in ours if a["TaskGroup"] == name]
            counts = (health.count(True), health.count(False))
            if counts != (state["HealthyAllocs"], state["UnhealthyAllocs"]):
                state["HealthyAllocs"], state["UnhealthyAllocs"] = counts
                self.touch("deployment", deployment)

    # -- the deployment watcher ------------------------------------------------------------------

    def _watch(self, deployment: dict[str, Any]) -> None:
        """Count progress, then fail, replace, promote or succeed."""
        job = self.jobs[(deployment["Namespace"], deployment["JobID"])][-1]
        seen = deployment["_seen_healthy"]
        progress = any(
            s["HealthyAllocs"] > seen.get(n, 0) for n, s in deployment["TaskGroups"].items()
        )
        deployment["_seen_healthy"] = {
            n: s["HealthyAllocs"] for n, s in deployment["TaskGroups"].items()
        }
        fresh = [
            a
            for a in self.allocs.values()
            if a["DeploymentID"] == deployment["ID"]
            and a["DeploymentStatus"]["Healthy"] is False
            and a["DesiredStatus"] == "run"
        ]
        for alloc in fresh:
            state = deployment["TaskGroups"][alloc["TaskGroup"]]
            if not state["ProgressDeadline"]:
                # progress_deadline = 0: the first unhealthy allocation fails the deployment.
                self.fail(deployment, DESC_UNHEALTHY, rollback=state["AutoRevert"])
                return
        if fresh:
            self._replace(job, deployment, fresh)
        deployment["_idle_steps"] = 0 if progress else deployment["_idle_steps"] + 1
        # progress_deadline = 0 has no deadline, only failure of the first unhealthy allocation
        # (https://developer.hashicorp.com/nomad/docs/job-specification/update#progress_deadline).
        timed = [s for s in deployment["TaskGroups"].values() if s["ProgressDeadline"]]
        if (
            timed
            and deployment["_placed_any"]
            and deployment["_idle_steps"] > self.progress_deadline_steps
        ):
            self.fail(deployment, DESC_DEADLINE, rollback=any(s["AutoRevert"] for s in timed))
            return
        pending = {
            n: s
            for n, s in deployment["TaskGroups"].items()
            if s["DesiredCanaries"] and not s["Promoted"]
        }
        if pending:
            self._await_promotion(deployment, pending)
        elif self._complete(job, deployment):
            self._succeed(job, deployment)

    def _await_promotion(self, deployment: dict[str, Any], pending: dict[str, Any]) -> None:
        """Auto-promote healthy canaries, or say that the deployment needs promotion."""
        ready = all(
            len(s["PlacedCanaries"]) >= s["DesiredCanaries"]
            and all(self.allocs[a]["DeploymentStatus"]["Healthy"] for a in s["PlacedCanaries"])
            for s in pending.values()
        )
        if ready and all(s["AutoPromote"] for s in pending.values()):
            self.promote(deployment, list(pending))
        elif ready and deployment["StatusDescription"] != DESC_NEEDS_PROMOTION:
            deployment["StatusDescription"] = DESC_NEEDS_PROMOTION
            self.touch("deployment", deployment)
            self.commit("DeploymentStatusUpdate")

    def _complete(self, job: dict[str, Any], deployment: dict[str, Any]) -> bool:
        """Every group has DesiredTotal healthy allocations of this deployment and no others."""
        for name, state in deployment["TaskGroups"].items():
            live = self.live_allocs(job, name)
            done = [
                a
                for a in live
                if a["DeploymentID"] == deployment["ID"] and a["DeploymentStatus"]["Healthy"]
            ]
            if len(done) < state["DesiredTotal"] or len(live) > len(done):
                return False
        return True

    def _succeed(self, job: dict[str, Any], deployment: dict[str, Any]) -> None:
        """Mark the deployment successful and its job version stable, in one write."""
        self._end(deployment, "successful", DESC_SUCCESSFUL)
        version = next(
            v
            for v in self.jobs[(job["Namespace"], job["ID"])]
            if v["Version"] == deployment["JobVersion"]
        )
        version["Stable"] = True
        self.touch("jobs", version)
        self.commit("DeploymentStatusUpdate")

    def _replace(self, job: dict[str, Any], deployment: dict[str, Any], allocs: list) -> None:
        """Reschedule unhealthy allocations (progress-based deployments replace them).

        The watcher marks them for rescheduling with an evaluation
        (AllocationUpdateDesiredStatus); the scheduler stops and replaces them.
        """
        for alloc in allocs:
            alloc["DesiredTransition"]["Reschedule"] = True
            self.touch("allocs", alloc)
        evaluation = self.new_eval(job, "alloc-failure", DeploymentID=deployment["ID"])
        self.commit("AllocationUpdateDesiredStatus")

        def plan() -> None:
            """Stop each unhealthy allocation and place its replacement."""
            for alloc in allocs:
                self.stop_alloc(alloc, "alloc was rescheduled because it failed")
                group = find_group(job, alloc["TaskGroup"])
                self.place(job, group, deployment, alloc["DeploymentStatus"]["Canary"], alloc)

        self.process_eval(job, evaluation, plan=plan)  # type: ignore[attr-defined]

    def _end(self, deployment: dict[str, Any], status: str, description: str) -> None:
        """Set a terminal deployment status."""
        deployment["Status"] = status
        deployment["StatusDescription"] = description
        self.touch("deployment", deployment)

    # -- deployment API ----------------------------------------------------------------------

    def promote(self, deployment: dict[str, Any], groups: list[str] | None) -> dict[str, Any]:
        """Promote canaries of the named groups (None: all groups)."""
        with self.lock:
            if deployment["Status"] != "running":
                raise ApiError(
                    500, f"Can't promote terminal deployment with status {deployment['Status']!r}"
                )
            states = deployment["TaskGroups"]
            names = [n for n in (groups or states) if states[n]["DesiredCanaries"]]
            for name in names:
                healthy = sum(
                    bool(self.allocs[a]["DeploymentStatus"]["Healthy"])
                    for a in states[name]["PlacedCanaries"]
                )
                wanted = states[name]["DesiredCanaries"]
                if healthy < wanted:
                    raise ApiError(
                        500, f'Task group "{name}" has {healthy}/{wanted} healthy allocations'
                    )
            for name in names:
                states[name]["Promoted"] = True
                for alloc_id in states[name]["PlacedCanaries"]:
                    self.allocs[alloc_id]["DeploymentStatus"]["Canary"] = False
                    self.touch("allocs", self.allocs[alloc_id])
            deployment["StatusDescription"] = DESC_RUNNING
            self.touch("deployment", deployment)
            job = self.jobs[(deployment["Namespace"], deployment["JobID"])][-1]
            evaluation = self.new_eval(job, "deployment-watcher", DeploymentID=deployment["ID"])
            index = self.commit("DeploymentPromotion")
            self.process_eval(job, evaluation)  # type: ignore[attr-defined]
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "DeploymentModifyIndex": index,
                "Index": index,
            }

    def set_alloc_health(
        self, deployment: dict[str, Any], healthy: list[str], unhealthy: list[str]
    ) -> dict[str, Any]:
        """POST /v1/deployment/allocation-health/{id}: the operator sets health (manual)."""
        with self.lock:
            if deployment["Status"] != "running":
                raise ApiError(500, "can't set health of allocations for a terminal deployment")
            for alloc_id, value in [(a, True) for a in healthy] + [(a, False) for a in unhealthy]:
                alloc = self.allocs.get(alloc_id)
                if alloc is None or alloc["DeploymentID"] != deployment["ID"]:
                    raise ApiError(500, f"Allocation {alloc_id!r} is not part of the deployment")
                alloc["DeploymentStatus"].update(Healthy=value, Timestamp=_now())
                self.touch("allocs", alloc, "ModifyIndex", "DeploymentStatus.ModifyIndex")
            self.recount(deployment)
            job = self.jobs[(deployment["Namespace"], deployment["JobID"])][-1]
            evaluation = self.new_eval(job, "deployment-watcher", DeploymentID=deployment["ID"])
            index = self.commit("DeploymentAllocHealth")
            self.process_eval(job, evaluation)  # type: ignore[attr-defined]
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "DeploymentModifyIndex": index,
                "RevertedJobVersion": None,
                "Index": index,
            }

    def fail(
        self,
        deployment: dict[str, Any],
        description: str = DESC_FAILED_BY_USER,
        rollback: bool = True,
    ) -> dict[str, Any]:
        """Fail a deployment; roll back to the latest stable version when AutoRevert is set.

        One DeploymentStatusUpdate write holds the status, the evaluation and the rolled-back
        job version; the next plan stops the unpromoted canaries.
        """
        with self.lock:
            if deployment["Status"] not in ("running", "paused"):
                raise ApiError(500, "can't fail terminal deployment")
            auto_revert = rollback and any(
                s["AutoRevert"] for s in deployment["TaskGroups"].values()
            )
            versions = self.jobs[(deployment["Namespace"], deployment["JobID"])]
            current = versions[-1]
            stable = next(
                (
                    v
                    for v in reversed(versions)
                    if v["Stable"] and v["Version"] != current["Version"]
                ),
                None,
            )
            reverted = None
            if auto_revert and stable is not None:
                if spec_changed(stable, current):
                    description = f"{description} - rolling back to job version {stable['Version']}"
                    reverted = stable["Version"]
                else:
                    description = (
                        f"{description} - not rolling back to stable job version "
                        f"{stable['Version']} as current job has same specification"
                    )
            self._end(deployment, "failed", description)
            if reverted is not None:
                result = self.register(  # type: ignore[attr-defined]
                    current["Namespace"],
                    copy.deepcopy(stable),
                    triggered_by="deployment-watcher",
                    msg_type="DeploymentStatusUpdate",
                )
                eval_id = result["EvalID"]
            else:
                evaluation = self.new_eval(
                    current, "deployment-watcher", DeploymentID=deployment["ID"]
                )
                self.commit("DeploymentStatusUpdate")
                self.process_eval(current, evaluation)  # type: ignore[attr-defined]
                eval_id = evaluation["ID"]
            return {
                "EvalID": eval_id,
                "EvalCreateIndex": self.evals[eval_id]["CreateIndex"],
                "DeploymentModifyIndex": deployment["ModifyIndex"],
                "RevertedJobVersion": reverted,
                "Index": deployment["ModifyIndex"],
            }
