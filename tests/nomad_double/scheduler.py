"""Job registration, scheduling and the deployment watcher of the Nomad double.

Docs followed:
- register / CAS / versions: https://developer.hashicorp.com/nomad/api-docs/jobs#create-job
- plan: https://developer.hashicorp.com/nomad/api-docs/jobs#create-job-plan
- revert: https://developer.hashicorp.com/nomad/api-docs/jobs#revert-to-older-job-version
- stop / purge: https://developer.hashicorp.com/nomad/api-docs/jobs#stop-a-job
- canaries, auto-promote, auto-revert, progress deadline:
  https://developer.hashicorp.com/nomad/docs/job-specification/update
- promote / fail: https://developer.hashicorp.com/nomad/api-docs/deployments
"""

from __future__ import annotations

import copy
from typing import Any

from .jobspec import (
    canonicalize,
    destructive_change,
    find_group,
    group_resources,
    group_update,
    job_diff,
    multierror,
    semantic_errors,
    spec_changed,
)
from .state import (
    DESC_AUTO_PROMOTION,
    DESC_DEADLINE,
    DESC_FAILED_BY_USER,
    DESC_NEEDS_PROMOTION,
    DESC_NEWER_JOB,
    DESC_RUNNING,
    DESC_STOPPED_JOB,
    DESC_SUCCESSFUL,
    DESC_UNHEALTHY,
    ENFORCE_PREFIX,
    ApiError,
    Cluster,
    _id,
    _now,
)


class Scheduler(Cluster):
    """Cluster plus the scheduling behaviour."""

    # -- registration ----------------------------------------------------------------------

    def register(
        self,
        namespace: str,
        job: dict[str, Any],
        enforce_index: bool = False,
        job_modify_index: int = 0,
        triggered_by: str = "job-register",
    ) -> dict[str, Any]:
        """Register a job: new version only when the spec changed; always a new evaluation."""
        with self.lock:
            errors = semantic_errors(job)
            if errors:
                raise ApiError(500, multierror(errors))
            job = canonicalize(job, namespace)
            versions = self.jobs.get((job["Namespace"], job["ID"]))
            existing = versions[-1] if versions else None
            if enforce_index:
                if existing is not None and job_modify_index == 0:
                    raise ApiError(
                        self.cas_conflict_status, f"{ENFORCE_PREFIX} 0: job already exists"
                    )
                if existing is not None and job_modify_index != existing["JobModifyIndex"]:
                    raise ApiError(
                        self.cas_conflict_status,
                        f"{ENFORCE_PREFIX} {job_modify_index}: job exists with conflicting "
                        f"job modify index: {existing['JobModifyIndex']}",
                    )
                if existing is None and job_modify_index != 0:
                    raise ApiError(
                        self.cas_conflict_status,
                        f"{ENFORCE_PREFIX} {job_modify_index}: job does not exist",
                    )
            if existing is None or spec_changed(existing, job):
                index = self.bump()
                job.update(
                    Version=existing["Version"] + 1 if existing else 0,
                    Stable=False,
                    Status="pending",
                    StatusDescription="",
                    CreateIndex=existing["CreateIndex"] if existing else index,
                    ModifyIndex=index,
                    JobModifyIndex=index,
                    SubmitTime=_now(),
                )
                self.jobs.setdefault((job["Namespace"], job["ID"]), []).append(job)
                self._start_deployment(job, existing)
                current = job
            else:
                current = existing
            evaluation = self._schedule(current, triggered_by)
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": current["JobModifyIndex"],
                "Warnings": "",
                "Index": evaluation["CreateIndex"],
                "LastIndex": evaluation["CreateIndex"],
                "KnownLeader": False,
                "LastContact": 0,
            }

    def _start_deployment(self, job: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Cancel the running deployment and create one for this version if it has updates."""
        for deployment in self.job_deployments(job):
            if deployment["Status"] in ("running", "paused"):
                stopped = job.get("Stop")
                self._end(deployment, "cancelled", DESC_STOPPED_JOB if stopped else DESC_NEWER_JOB)
        if job.get("Stop") or job["Type"] != "service":
            return
        groups = {}
        for group in job["TaskGroups"]:
            update = group_update(job, group)
            if update is None:
                continue
            live = self.live_allocs(job, group["Name"])
            destructive = any(
                destructive_change(self.job_version(a), job, group["Name"]) for a in live
            )
            groups[group["Name"]] = {
                "AutoRevert": update["AutoRevert"],
                "AutoPromote": update["AutoPromote"],
                "ProgressDeadline": update["ProgressDeadline"],
                "RequireProgressBy": None,
                "Promoted": False,
                "PlacedCanaries": [],
                "DesiredCanaries": update["Canary"] if destructive else 0,
                "DesiredTotal": group["Count"],
                "PlacedAllocs": 0,
                "HealthyAllocs": 0,
                "UnhealthyAllocs": 0,
            }
        if not groups:
            return
        index = self.bump()
        canaries = any(g["DesiredCanaries"] for g in groups.values())
        auto = canaries and all(g["AutoPromote"] for g in groups.values() if g["DesiredCanaries"])
        deployment = {
            "ID": _id(),
            "Namespace": job["Namespace"],
            "JobID": job["ID"],
            "JobVersion": job["Version"],
            "JobModifyIndex": job["JobModifyIndex"],
            "JobSpecModifyIndex": job["JobModifyIndex"],
            "JobCreateIndex": job["CreateIndex"],
            "IsMultiregion": False,
            "TaskGroups": groups,
            "Status": "running",
            "StatusDescription": DESC_AUTO_PROMOTION if auto else DESC_RUNNING,
            "CreateIndex": index,
            "ModifyIndex": index,
            "_placed_any": False,
            "_idle_steps": 0,
        }
        self.deployments[deployment["ID"]] = deployment

    def active_deployment(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The deployment of the job's current version, if any."""
        return next(
            (d for d in self.job_deployments(job) if d["JobVersion"] == job["Version"]), None
        )

    # -- scheduling --------------------------------------------------------------------------

    def _schedule(self, job: dict[str, Any], triggered_by: str) -> dict[str, Any]:
        """Run one evaluation for job and return it."""
        deployment = self.active_deployment(job)
        self._active_eval = self.new_eval(
            job, triggered_by, DeploymentID=deployment["ID"] if deployment else ""
        )
        try:
            self._reconcile(job)
            return self._active_eval
        finally:
            self._active_eval = None

    def _reconcile(self, job: dict[str, Any]) -> bool:
        """Move the job's allocations towards its current version; True when anything changed."""
        changed = False
        if job.get("Stop"):
            for alloc in self.live_allocs(job):
                self.stop_alloc(alloc, "alloc not needed due to job update")
                changed = True
            self._update_job_status(job)
            return changed
        deployment = self.active_deployment(job)
        running = deployment is not None and deployment["Status"] == "running"
        for group in job["TaskGroups"]:
            name = group["Name"]
            live = self.live_allocs(job, name)
            new, old = [], []
            for alloc in live:
                if alloc["JobVersion"] == job["Version"]:
                    new.append(alloc)
                elif not destructive_change(self.job_version(alloc), job, name):
                    # In-place update: the allocation keeps running under the new version.
                    alloc["JobVersion"] = job["Version"]
                    alloc["ModifyIndex"] = alloc["AllocModifyIndex"] = self.bump()
                    if deployment is not None and alloc["DeploymentStatus"] is not None:
                        alloc["DeploymentID"] = deployment["ID"]
                        alloc["DeploymentStatus"]["Canary"] = False
                    new.append(alloc)
                    changed = True
                else:
                    old.append(alloc)
            state = (deployment or {}).get("TaskGroups", {}).get(name)
            if deployment is not None and state is not None and not running:
                continue  # a failed/cancelled deployment makes no further progress
            if state is not None and state["DesiredCanaries"] and not state["Promoted"]:
                canaries = [a for a in new if a["DeploymentStatus"]["Canary"]]
                for _ in range(state["DesiredCanaries"] - len(canaries)):
                    changed |= self.place(job, group, deployment, canary=True) is not None
                continue
            count = group["Count"]
            surplus = len(new) + len(old) - count
            for alloc in (old + new)[: max(surplus, 0)]:
                self.stop_alloc(alloc, "alloc not needed due to job update")
                (old if alloc in old else new).remove(alloc)
                changed = True
            for _ in range(count - len(new) - len(old)):
                changed |= self.place(job, group, deployment) is not None
            if state is None:
                batch = old  # no update strategy: replace everything at once
            else:
                max_parallel = (group_update(job, group) or {}).get("MaxParallel", 1)
                in_flight = [a for a in new if a["DeploymentStatus"]["Healthy"] is not True]
                batch = old[: max(max_parallel - len(in_flight), 0)]
            for alloc in batch:
                self.stop_alloc(alloc, "alloc is being updated due to job update")
                changed |= self.place(job, group, deployment, previous=alloc) is not None
        self._update_job_status(job)
        return changed

    def _update_job_status(self, job: dict[str, Any]) -> None:
        """Job Status: pending (nothing running), running, dead (stopped)."""
        live = self.live_allocs(job)
        if job.get("Stop"):
            job["Status"] = "dead"
        elif any(a["ClientStatus"] == "running" for a in live):
            job["Status"] = "running"
        else:
            job["Status"] = "pending"

    # -- time ----------------------------------------------------------------------------------

    def step(self, count: int = 1) -> None:
        """Advance the simulation count steps (see module docstring of state.py)."""
        with self.lock:
            for _ in range(count):
                self.steps += 1
                self._advance_allocs()
                for deployment in list(self.deployments.values()):
                    if deployment["Status"] == "running":
                        self._watch(deployment)
                for versions in list(self.jobs.values()):
                    job = versions[-1]
                    self._active_eval = None
                    try:
                        self._reconcile(job)
                        self._unblock(job)
                    finally:
                        self._active_eval = None

    def _unblock(self, job: dict[str, Any]) -> None:
        """Complete blocked evaluations once every group has its allocations placed."""
        placed = all(len(self.live_allocs(job, g["Name"])) >= g["Count"] for g in job["TaskGroups"])
        for evaluation in self.evals.values():
            if evaluation["JobID"] == job["ID"] and evaluation["Status"] == "blocked" and placed:
                evaluation["Status"] = "complete"
                evaluation["StatusDescription"] = ""
                evaluation["ModifyIndex"] = self.bump()

    def _advance_allocs(self) -> None:
        """pending -> running -> health decided by the health policy."""
        for alloc in list(self.allocs.values()):
            if alloc["DesiredStatus"] != "run" or alloc["_step"] >= self.steps:
                continue
            if alloc["ClientStatus"] == "pending":
                job = self.job_version(alloc)
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
                alloc["ModifyIndex"] = self.bump()
                self._update_job_status(self.jobs[(alloc["Namespace"], alloc["JobID"])][-1])
            elif alloc["DeploymentStatus"] and alloc["DeploymentStatus"]["Healthy"] is None:
                healthy = bool(self.health_policy(self.job_version(alloc), copy.deepcopy(alloc)))
                index = self.bump()
                alloc["DeploymentStatus"].update(
                    Healthy=healthy, Timestamp=_now(), ModifyIndex=index
                )
                alloc["ModifyIndex"] = index

    def _watch(self, deployment: dict[str, Any]) -> None:
        """The deployment watcher: count health, fail, replace, promote or succeed."""
        job = self.jobs[(deployment["Namespace"], deployment["JobID"])][-1]
        ours = [a for a in self.allocs.values() if a["DeploymentID"] == deployment["ID"]]
        progress = False
        for name, state in deployment["TaskGroups"].items():
            group_allocs = [a for a in ours if a["TaskGroup"] == name]
            healthy = [a for a in group_allocs if a["DeploymentStatus"]["Healthy"] is True]
            unhealthy = [a for a in group_allocs if a["DeploymentStatus"]["Healthy"] is False]
            progress |= len(healthy) > state["HealthyAllocs"]
            state["HealthyAllocs"], state["UnhealthyAllocs"] = len(healthy), len(unhealthy)
            fresh = [a for a in unhealthy if a["DesiredStatus"] == "run"]
            if fresh and not state["ProgressDeadline"]:
                # progress_deadline = 0: the first unhealthy allocation fails the deployment.
                self.fail(deployment, DESC_UNHEALTHY, rollback=state["AutoRevert"])
                return
            for alloc in fresh:  # progress-based: unhealthy allocations are replaced
                self.stop_alloc(alloc, "alloc was rescheduled because it failed")
                group = find_group(job, name)
                self.place(job, group, deployment, alloc["DeploymentStatus"]["Canary"], alloc)
        deployment["_idle_steps"] = 0 if progress else deployment["_idle_steps"] + 1
        if deployment["_placed_any"] and deployment["_idle_steps"] > self.progress_deadline_steps:
            rollback = any(s["AutoRevert"] for s in deployment["TaskGroups"].values())
            self.fail(deployment, DESC_DEADLINE, rollback=rollback)
            return
        pending = {
            n: s
            for n, s in deployment["TaskGroups"].items()
            if s["DesiredCanaries"] and not s["Promoted"]
        }
        if pending:
            ready = all(
                len(s["PlacedCanaries"]) >= s["DesiredCanaries"]
                and all(self.allocs[a]["DeploymentStatus"]["Healthy"] for a in s["PlacedCanaries"])
                for s in pending.values()
            )
            if ready and all(s["AutoPromote"] for s in pending.values()):
                self.promote(deployment, list(pending))
            elif ready:
                deployment["StatusDescription"] = DESC_NEEDS_PROMOTION
            return
        for name, state in deployment["TaskGroups"].items():
            live = self.live_allocs(job, name)
            done = [
                a
                for a in live
                if a["DeploymentID"] == deployment["ID"] and a["DeploymentStatus"]["Healthy"]
            ]
            if len(done) < state["DesiredTotal"] or len(live) > len(done):
                return
        self._end(deployment, "successful", DESC_SUCCESSFUL)
        version = next(
            v
            for v in self.jobs[(job["Namespace"], job["ID"])]
            if v["Version"] == deployment["JobVersion"]
        )
        version["Stable"] = True

    def _end(self, deployment: dict[str, Any], status: str, description: str) -> None:
        """Set a terminal deployment status."""
        deployment["Status"] = status
        deployment["StatusDescription"] = description
        deployment["ModifyIndex"] = self.bump()

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
                unhealthy = [
                    a
                    for a in states[name]["PlacedCanaries"]
                    if not self.allocs[a]["DeploymentStatus"]["Healthy"]
                ]
                healthy = len(states[name]["PlacedCanaries"]) - len(unhealthy)
                if healthy < states[name]["DesiredCanaries"]:
                    wanted = states[name]["DesiredCanaries"]
                    raise ApiError(
                        500, f'Task group "{name}" has {healthy}/{wanted} healthy allocations'
                    )
            for name in names:
                states[name]["Promoted"] = True
                for alloc_id in states[name]["PlacedCanaries"]:
                    self.allocs[alloc_id]["DeploymentStatus"]["Canary"] = False
            deployment["StatusDescription"] = DESC_RUNNING
            deployment["ModifyIndex"] = self.bump()
            job = self.jobs[(deployment["Namespace"], deployment["JobID"])][-1]
            evaluation = self._schedule(job, "deployment-watcher")
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "DeploymentModifyIndex": deployment["ModifyIndex"],
                "Index": deployment["ModifyIndex"],
            }

    def fail(
        self,
        deployment: dict[str, Any],
        description: str = DESC_FAILED_BY_USER,
        rollback: bool = True,
    ) -> dict[str, Any]:
        """Fail a deployment; roll back to the latest stable version when AutoRevert is set."""
        with self.lock:
            if deployment["Status"] not in ("running", "paused"):
                raise ApiError(500, "can't fail terminal deployment")
            for state in deployment["TaskGroups"].values():
                if not state["Promoted"]:
                    for alloc_id in state["PlacedCanaries"]:
                        alloc = self.allocs[alloc_id]
                        if alloc["DesiredStatus"] == "run":
                            self.stop_alloc(alloc, "alloc not needed as deployment failed")
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
                result = self.register(
                    current["Namespace"], copy.deepcopy(stable), triggered_by="deployment-watcher"
                )
            else:
                result = {"EvalID": self.new_eval(current, "deployment-watcher")["ID"]}
            return {
                "EvalID": result["EvalID"],
                "EvalCreateIndex": self.index,
                "DeploymentModifyIndex": deployment["ModifyIndex"],
                "RevertedJobVersion": reverted,
                "Index": self.index,
            }

    # -- other job endpoints --------------------------------------------------------------------

    def revert(self, namespace: str, job_id: str, version: int, enforce_prior: int | None) -> dict:
        """POST /v1/job/{id}/revert: re-register an older version as a new version."""
        with self.lock:
            versions = self.versions(namespace, job_id)
            current = versions[-1]
            if enforce_prior is not None and enforce_prior != current["Version"]:
                have = current["Version"]
                raise ApiError(
                    500, f"current job has version {have}; enforcing version {enforce_prior}"
                )
            if version == current["Version"]:
                raise ApiError(500, f"can't revert to current version {version}")
            target = next((v for v in versions if v["Version"] == version), None)
            if target is None:
                raise ApiError(
                    500, f"job {job_id!r} in namespace {namespace!r} at version {version} not found"
                )
            return self.register(namespace, copy.deepcopy(target))

    def deregister(self, namespace: str, job_id: str, purge: bool) -> dict[str, Any]:
        """DELETE /v1/job/{id}: stop (new version with Stop=true) or purge."""
        with self.lock:
            current = self.current(namespace, job_id)
            if purge:
                for alloc in self.live_allocs(current):
                    self.stop_alloc(alloc, "alloc not needed due to job purge")
                for deployment in self.job_deployments(current):
                    if deployment["Status"] == "running":
                        self._end(deployment, "cancelled", DESC_STOPPED_JOB)
                evaluation = self.new_eval(current, "job-deregister")
                del self.jobs[(namespace, job_id)]
                modify = self.index
            else:
                stopped = copy.deepcopy(current)
                stopped["Stop"] = True
                result = self.register(namespace, stopped, triggered_by="job-deregister")
                evaluation = self.evals[result["EvalID"]]
                modify = result["JobModifyIndex"]
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": modify,
                "Index": evaluation["CreateIndex"],
            }

    def _plan_metric(self) -> dict[str, Any]:
        """An AllocationMetric skeleton for plan placement failures."""
        return {
            "CoalescedFailures": -1,
            "DimensionExhausted": {},
            "NodesEvaluated": len(self.nodes),
            "NodesExhausted": len(self.nodes),
            "NodesAvailable": {"dc1": len(self.nodes)},
        }

    def plan(self, namespace: str, job: dict[str, Any], diff: bool) -> dict[str, Any]:
        """POST /v1/job/{id}/plan: what a register would do, without doing it."""
        with self.lock:
            errors = semantic_errors(job)
            if errors:
                raise ApiError(500, multierror(errors))
            job = canonicalize(job, namespace)
            versions = self.jobs.get((job["Namespace"], job["ID"]))
            existing = versions[-1] if versions else None
            job.setdefault("Version", existing["Version"] + 1 if existing else 0)
            free = [self.node_free(n) for n in self.nodes]
            updates, failed = {}, {}
            for group in job["TaskGroups"]:
                name = group["Name"]
                live = self.live_allocs(existing, name) if existing else []
                counts = dict.fromkeys(
                    (
                        "Place",
                        "Canary",
                        "DestructiveUpdate",
                        "InPlaceUpdate",
                        "Ignore",
                        "Stop",
                        "Migrate",
                        "Preemptions",
                    ),
                    0,
                )
                changed = existing is not None and spec_changed(existing, job)
                destructive = [
                    a for a in live if destructive_change(self.job_version(a), job, name)
                ]
                others = [a for a in live if a not in destructive]
                update = group_update(job, group) or {}
                extra = len(live) - group["Count"]
                counts["Stop"] = max(extra, 0)
                to_place = max(-extra, 0)
                if destructive and update.get("Canary"):
                    counts["Canary"] = update["Canary"]
                    counts["Ignore"] = len(destructive) - counts["Stop"]
                    to_place += update["Canary"]
                elif destructive:
                    width = update.get("MaxParallel") or len(destructive)
                    counts["DestructiveUpdate"] = min(width, len(destructive) - counts["Stop"])
                    counts["Ignore"] = (
                        len(destructive) - counts["Stop"] - counts["DestructiveUpdate"]
                    )
                if changed:
                    counts["InPlaceUpdate"] = len(others)
                else:
                    counts["Ignore"] += len(others)
                counts["Place"] = max(-extra, 0)
                for _ in range(to_place):
                    if self.place(job, group, None, dry_run=free) is None:
                        metric = failed.setdefault(name, self._plan_metric())
                        metric["CoalescedFailures"] += 1
                        cpu, _ = group_resources(group)
                        key = "cpu" if all(f[0] < cpu for f in free) else "memory"
                        metric["DimensionExhausted"][key] = len(self.nodes)
                updates[name] = counts
            return {
                "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": None},
                "Diff": job_diff(existing, job) if diff else None,
                "FailedTGAllocs": failed or None,
                "JobModifyIndex": existing["JobModifyIndex"] if existing else 0,
                "CreatedEvals": None,
                "Warnings": "",
                "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
                "Index": existing["JobModifyIndex"] if existing else 0,
            }
