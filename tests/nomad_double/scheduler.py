"""Job registration and the scheduler of the Nomad double.

Docs followed:
- register / CAS / versions: https://developer.hashicorp.com/nomad/api-docs/jobs#create-job
- plan: https://developer.hashicorp.com/nomad/api-docs/jobs#create-job-plan
- revert: https://developer.hashicorp.com/nomad/api-docs/jobs#revert-to-older-job-version
- stop / purge: https://developer.hashicorp.com/nomad/api-docs/jobs#stop-a-job
- evaluations: https://developer.hashicorp.com/nomad/docs/concepts/scheduling/scheduling

Writes follow Nomad's raft applies, so the event stream shows the same sequence: a register
is one ``JobRegistered`` write (job + pending evaluation); the scheduler then submits a plan
(``PlanResult``: allocations, deployment, job status) and updates the evaluation
(``EvaluationUpdated``: complete, maybe a blocked evaluation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .batch import TERMINAL
from .jobspec import (
    canonicalize,
    destructive_change,
    group_resources,
    group_update,
    job_diff,
    multierror,
    semantic_errors,
    spec_changed,
)
from .state import (
    DESC_AUTO_PROMOTION,
    DESC_NEWER_JOB,
    DESC_RUNNING,
    DESC_STOPPED_JOB,
    ENFORCE_PREFIX,
    ApiError,
    _id,
    _now,
    go_quote,
    in_pool,
)
from .watcher import DeploymentWatcher

PLAN_COUNTS = (
    "Place",
    "Canary",
    "DestructiveUpdate",
    "InPlaceUpdate",
    "Ignore",
    "Stop",
    "Migrate",
    "Preemptions",
)


class Scheduler(DeploymentWatcher):
    """Cluster plus the scheduling behaviour."""

    # -- registration ----------------------------------------------------------------------

    def admission_errors(self, namespace: str, job: dict[str, Any]) -> list[str]:
        """Job.Register's admission validators: the namespace check, then Job.Validate.

        The namespace message is jobNamespaceConstraintCheckHook's (nomad/job_endpoint_hooks.go).
        """
        errors = semantic_errors(job)
        job_namespace = job.get("Namespace") or namespace
        if job_namespace not in self.namespaces:
            missing = f"job {go_quote(job.get('ID', ''))} is in nonexistent namespace "
            errors.insert(0, missing + go_quote(job_namespace))
        return errors

    def register(
        self,
        namespace: str,
        job: dict[str, Any],
        enforce_index: bool = False,
        job_modify_index: int = 0,
        triggered_by: str = "job-register",
        msg_type: str = "JobRegistered",
    ) -> dict[str, Any]:
        """Register a job: new version only when the spec changed; always a new evaluation."""
        with self.lock:
            errors = self.admission_errors(namespace, job)
            if errors:
                raise ApiError(500, multierror(errors))
            job = canonicalize(job, namespace)
            versions = self.jobs.get((job["Namespace"], job["ID"]))
            existing = versions[-1] if versions else None
            if enforce_index:
                self._check_modify_index(existing, job_modify_index)
            changed = existing is None or spec_changed(existing, job)
            if changed:
                job.update(
                    Version=existing["Version"] + 1 if existing else 0,
                    Stable=False,
                    Status="pending",
                    StatusDescription="",
                    CreateIndex=existing["CreateIndex"] if existing else 0,
                    SubmitTime=_now(),
                )
                self.jobs.setdefault((job["Namespace"], job["ID"]), []).append(job)
                created = () if existing else ("CreateIndex",)
                self.touch("jobs", job, "ModifyIndex", "JobModifyIndex", *created)
            current = job if changed else existing
            evaluation = self.new_eval(current, triggered_by)
            # An unchanged job is not written again; only its evaluation is (Job.Register).
            self.commit(msg_type if changed else "EvaluationUpdated")
            if changed:
                self._stop_failed_canaries(current)
                self._start_deployment(current)
            self.process_eval(current, evaluation)
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

    def _check_modify_index(self, existing: dict[str, Any] | None, job_modify_index: int) -> None:
        """EnforceIndex check-and-set: 0 means 'must not exist', else must match."""
        status = self.cas_conflict_status
        if existing is not None and job_modify_index == 0:
            raise ApiError(status, f"{ENFORCE_PREFIX} 0: job already exists")
        if existing is not None and job_modify_index != existing["JobModifyIndex"]:
            raise ApiError(
                status,
                f"{ENFORCE_PREFIX} {job_modify_index}: job exists with conflicting "
                f"job modify index: {existing['JobModifyIndex']}",
            )
        if existing is None and job_modify_index != 0:
            raise ApiError(status, f"{ENFORCE_PREFIX} {job_modify_index}: job does not exist")

    def _start_deployment(self, job: dict[str, Any]) -> None:
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
            "_placed_any": False,
            "_idle_steps": 0,
            "_seen_healthy": {},
        }
        self.deployments[deployment["ID"]] = deployment
        self.touch("deployment", deployment, "CreateIndex", "ModifyIndex")

    def active_deployment(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The deployment of the job's current version, if any."""
        return next(
            (d for d in self.job_deployments(job) if d["JobVersion"] == job["Version"]), None
        )

    # -- scheduling --------------------------------------------------------------------------

    def process_eval(
        self,
        job: dict[str, Any],
        evaluation: dict[str, Any],
        plan: Callable[[], Any] | None = None,
    ) -> None:
        """Process an evaluation: one plan (PlanResult), then its update (EvaluationUpdated)."""
        self._active_eval = evaluation
        try:
            if plan is None:
                self._reconcile(job)
            else:
                plan()
        finally:
            self._active_eval = None
        self.commit("PlanResult")
        self.finish_eval(job, evaluation)

    def reschedule(self, job: dict[str, Any]) -> None:
        """A scheduler pass during a step, with an evaluation only when it does something.

        Stands for the evaluations Nomad's deployment watcher and blocked-evals tracker create;
        the evaluation is written first (EvaluationUpdated), then the plan, then its update.
        """
        self._active_eval = None
        try:
            self._reconcile(job)
            evaluation = self._active_eval
        finally:
            self._active_eval = None
        if evaluation is not None:
            self.commit("EvaluationUpdated", only=[evaluation])
        self.commit("PlanResult")
        if evaluation is not None:
            self.finish_eval(job, evaluation)
        self._unblock(job)

    def _stop_failed_canaries(self, job: dict[str, Any]) -> None:
        """Unpromoted canaries of a failed deployment are stopped by the next plan."""
        for alloc in self.live_allocs(job):
            deployment = self.deployments.get(alloc["DeploymentID"])
            status = alloc["DeploymentStatus"] or {}
            if deployment is None or deployment["Status"] != "failed" or not status.get("Canary"):
                continue
            if not deployment["TaskGroups"][alloc["TaskGroup"]]["Promoted"]:
                self.stop_alloc(alloc, "alloc not needed as deployment failed")

    def _reconcile(self, job: dict[str, Any]) -> bool:
        """Move the job's allocations towards its current version; True when anything changed."""
        changed = False
        self._stop_failed_canaries(job)
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
            new, old = [], []
            for alloc in self.live_allocs(job, name):
                if alloc["JobVersion"] == job["Version"]:
                    new.append(alloc)
                elif not destructive_change(self.job_version(alloc), job, name):
                    # In-place update: the allocation keeps running under the new version.
                    alloc["JobVersion"] = job["Version"]
                    if deployment is not None and alloc["DeploymentStatus"] is not None:
                        alloc["DeploymentID"] = deployment["ID"]
                        alloc["DeploymentStatus"]["Canary"] = False
                    self.touch("allocs", alloc, "ModifyIndex", "AllocModifyIndex")
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
            if job["Type"] == "batch":
                changed |= self._reschedule_failed(job, group, new)
            changed |= self._roll(job, group, deployment, state, new, old)
        if deployment is not None:
            self.recount(deployment)
        self._update_job_status(job)
        return changed

    def _roll(
        self,
        job: dict[str, Any],
        group: dict[str, Any],
        deployment: dict[str, Any] | None,
        state: dict[str, Any] | None,
        new: list[dict[str, Any]],
        old: list[dict[str, Any]],
    ) -> bool:
        """Scale the group to Count and replace old allocations MaxParallel at a time."""
        changed = False
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
        return changed

    def _reschedule_failed(
        self, job: dict[str, Any], group: dict[str, Any], new: list[dict[str, Any]]
    ) -> bool:
        """Replace failed batch allocations while the group's ReschedulePolicy allows it.

        Attempts counts the allocations before this one in its PreviousAllocation chain; the
        Delay is not simulated (the replacement is placed in the same pass). Attempts 0 and
        Unlimited false: a failed allocation stays failed and the job ends dead.
        """
        policy = group.get("ReschedulePolicy") or {}
        changed = False
        for alloc in [a for a in new if a["ClientStatus"] == "failed"]:
            attempts, previous = 0, alloc["PreviousAllocation"]
            while previous and previous in self.allocs:
                attempts += 1
                previous = self.allocs[previous]["PreviousAllocation"]
            if not policy.get("Unlimited") and attempts >= policy.get("Attempts", 0):
                continue
            self.stop_alloc(alloc, "alloc was rescheduled because it failed")
            new.remove(alloc)
            replacement = self.place(job, group, None, previous=alloc)
            if replacement is not None:
                new.append(replacement)
            changed = True
        return changed

    def _update_job_status(self, job: dict[str, Any]) -> None:
        """Job Status: pending (nothing running), running, dead (stopped).

        A batch job (state store getJobStatus) is "running" while an allocation is not
        terminal, and "dead" once every allocation is (complete or failed, none left to place).
        """
        live = self.live_allocs(job)
        if job.get("Stop"):
            status = "dead"
        elif job["Type"] == "batch" and live:
            done = all(a["ClientStatus"] in TERMINAL for a in live)
            placed = all(
                len(self.live_allocs(job, g["Name"])) >= g["Count"] for g in job["TaskGroups"]
            )
            status = "dead" if done and placed else "running"
        elif any(a["ClientStatus"] == "running" for a in live):
            status = "running"
        else:
            status = "pending"
        if job["Status"] != status:
            job["Status"] = status
            self.touch("jobs", job)

    def _unblock(self, job: dict[str, Any]) -> None:
        """Complete blocked evaluations once every group has its allocations placed."""
        placed = all(len(self.live_allocs(job, g["Name"])) >= g["Count"] for g in job["TaskGroups"])
        for evaluation in self.evals.values():
            if (
                evaluation["JobID"] == job["ID"]
                and evaluation["Namespace"] == job["Namespace"]
                and evaluation["Status"] == "blocked"
                and placed
            ):
                evaluation["Status"] = "complete"
                evaluation["StatusDescription"] = ""
                self.touch("evals", evaluation)
        self.commit("EvaluationUpdated")

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

    def scale(
        self, namespace: str, job_id: str, group: str, count: int | None, message: str
    ) -> dict[str, Any]:
        """POST /v1/job/{id}/scale: a new job version with one group's Count changed, registered
        as Job.Scale does (evaluation triggered by job-scaling); refused while a deployment of
        the job runs (nomad/job_endpoint.go Job.Scale)."""
        with self.lock:
            current = self.current(namespace, job_id)
            if not any(g["Name"] == group for g in current["TaskGroups"]):
                raise ApiError(
                    400, f"task group {go_quote(group)} specified for scaling does not exist in job"
                )
            if count is None:
                raise ApiError(400, "scaling action has no count")
            if count < 0:
                raise ApiError(400, "scaling action count can't be negative")
            active = self.active_deployment(current)
            if active is not None and active["Status"] in ("running", "paused"):
                raise ApiError(400, "job scaling blocked due to active deployment")
            scaled = copy.deepcopy(current)
            for task_group in scaled["TaskGroups"]:
                if task_group["Name"] == group:
                    task_group["Count"] = count
            result = self.register(namespace, scaled, triggered_by="job-scaling")
            return {key: result[key] for key in ("EvalID", "EvalCreateIndex", "JobModifyIndex",
                                                  "Index", "Warnings")}  # fmt: skip

    def deregister(self, namespace: str, job_id: str, purge: bool) -> dict[str, Any]:
        """DELETE /v1/job/{id}: stop (new version with Stop=true) or purge."""
        with self.lock:
            current = self.current(namespace, job_id)
            if not purge:
                stopped = copy.deepcopy(current)
                stopped["Stop"] = True
                result = self.register(
                    namespace, stopped, triggered_by="job-deregister", msg_type="JobDeregistered"
                )
                evaluation = self.evals[result["EvalID"]]
                modify = result["JobModifyIndex"]
            else:
                evaluation = self.new_eval(current, "job-deregister")
                del self.jobs[(namespace, job_id)]
                self.touch_table("jobs")  # a deleted job leaves no Job event (state/events.go)
                modify = self.commit("JobDeregistered")
                self.process_eval(current, evaluation, plan=lambda: self._purge(current))
            return {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": modify,
                "Index": evaluation["CreateIndex"],
            }

    # -- node drains (https://developer.hashicorp.com/nomad/api-docs/nodes#drain-node) ------

    def drain_node(
        self, node: dict[str, Any], spec: dict[str, Any] | None, meta: dict[str, str],
        mark_eligible: bool,
    ) -> dict[str, Any]:  # fmt: skip
        """POST /v1/node/{id}/drain: the node turns ineligible, its allocations (system jobs
        too unless IgnoreSystemJobs) are stopped and placed elsewhere by one evaluation per
        job; the drain ends at the next step once none is left. A null spec cancels it."""
        with self.lock:
            stamp = _rfc3339()
            if spec is None:
                node.update(Drain=False, DrainStrategy=None)
                if mark_eligible:
                    node["SchedulingEligibility"] = "eligible"
                if node["LastDrain"] and node["LastDrain"]["Status"] == "draining":
                    node["LastDrain"].update(Status="canceled", UpdatedAt=stamp)
                self.touch("nodes", node)
                index = self.commit("NodeDrain")
                return {"EvalIDs": None, "EvalCreateIndex": 0, "NodeModifyIndex": index,
                        "LastIndex": index}  # fmt: skip
            deadline = int(spec.get("Deadline") or 0)
            node.update(
                Drain=True,
                SchedulingEligibility="ineligible",
                DrainStrategy={
                    "Deadline": deadline,
                    "IgnoreSystemJobs": bool(spec.get("IgnoreSystemJobs")),
                    "ForceDeadline": _rfc3339(deadline / 1e9 if deadline > 0 else 0),
                    "StartedAt": stamp,
                },
                LastDrain={"Status": "draining", "StartedAt": stamp, "UpdatedAt": stamp,
                           "Meta": meta, "AccessorID": ""},
            )  # fmt: skip
            self.touch("nodes", node)
            index = self.commit("NodeDrain")
            node["_moving"] = []
            evals = self._migrate_next(node)
            return {
                "EvalIDs": [e["ID"] for e in evals] or None,
                "EvalCreateIndex": evals[0]["CreateIndex"] if evals else 0,
                "NodeModifyIndex": index,
                "LastIndex": self.index,
            }

    def set_eligibility(self, node: dict[str, Any], eligibility: str) -> dict[str, Any]:
        """POST /v1/node/{id}/eligibility: whether the node takes new allocations; refused
        while it drains (nomad/node_endpoint.go UpdateEligibility)."""
        with self.lock:
            if eligibility not in ("eligible", "ineligible"):
                raise ApiError(400, f"invalid scheduling eligibility {eligibility!r}")
            if node["DrainStrategy"] is not None and eligibility == "eligible":
                raise ApiError(
                    400,
                    "can not set node's scheduling eligibility to eligible while it is draining",
                )
            node["SchedulingEligibility"] = eligibility
            self.touch("nodes", node)
            index = self.commit("NodeEligibility")
            return {"EvalIDs": None, "EvalCreateIndex": 0, "NodeModifyIndex": index,
                    "LastIndex": index}  # fmt: skip

    def _migrate_next(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """Move the next allocations off a draining node, as Nomad's drainer does with each
        group's migrate block: at most MaxParallel (default 1) of a group in flight, the next
        ones only once the replacements of those moved before run. One evaluation per job."""
        moving: dict[tuple[str, str], list[dict[str, Any]]] = {}
        in_flight: dict[tuple[str, str, str], int] = {}
        for alloc_id in node.get("_moving", []):
            replacement = self.allocs.get(alloc_id)
            if (
                replacement
                and replacement["DesiredStatus"] == "run"
                and (replacement["ClientStatus"] == "pending")
            ):
                key = (replacement["Namespace"], replacement["JobID"], replacement["TaskGroup"])
                in_flight[key] = in_flight.get(key, 0) + 1
        for alloc in self._draining_allocs(node):
            versions = self.jobs.get((alloc["Namespace"], alloc["JobID"]))
            if not versions:
                continue
            group = next(
                (g for g in versions[-1]["TaskGroups"] if g["Name"] == alloc["TaskGroup"]), None
            )
            limit = int(((group or {}).get("Migrate") or {}).get("MaxParallel") or 1)
            key = (alloc["Namespace"], alloc["JobID"], alloc["TaskGroup"])
            if in_flight.get(key, 0) >= limit:
                continue
            in_flight[key] = in_flight.get(key, 0) + 1
            moving.setdefault((alloc["Namespace"], alloc["JobID"]), []).append(alloc)
        evals = []
        for key, allocs in moving.items():
            job = self.jobs[key][-1]
            evaluation = self.new_eval(job, "node-drain", NodeID=node["ID"])
            self.commit("EvaluationUpdated", only=[evaluation])
            self.process_eval(
                job, evaluation, plan=lambda j=job, a=allocs, n=node: self._migrate(j, a, n)
            )
            evals.append(evaluation)
        return evals

    def _migrate(
        self, job: dict[str, Any], allocs: list[dict[str, Any]], node: dict[str, Any]
    ) -> None:
        """The plan of a drain's evaluation: stop each allocation and place its replacement
        on another eligible node (outside any deployment, as Nomad's migrations are)."""
        for alloc in allocs:
            self.stop_alloc(alloc, "alloc is being migrated")
            group = next(g for g in job["TaskGroups"] if g["Name"] == alloc["TaskGroup"])
            placed = self.place(job, group, None, previous=alloc)
            if placed:
                node.setdefault("_moving", []).append(placed["ID"])

    def _draining_allocs(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The allocations a drain of ``node`` still has to move."""
        ignore_system = bool((node["DrainStrategy"] or {}).get("IgnoreSystemJobs"))
        return [
            a for a in self.allocs.values()
            if a["NodeID"] == node["ID"] and a["DesiredStatus"] == "run"
            and a["ClientStatus"] not in TERMINAL
            and not (ignore_system and a["JobType"] == "system")
        ]  # fmt: skip

    def finish_drains(self) -> None:
        """A step's drainer pass: a draining node moves its next allocations (see
        _migrate_next); one with nothing left to move ends its drain (DrainStrategy null,
        still ineligible, LastDrain complete)."""
        for node in self.nodes:
            if node["DrainStrategy"] is None:
                continue
            if self._draining_allocs(node):
                self._migrate_next(node)
                continue
            node.update(Drain=False, DrainStrategy=None)
            node["LastDrain"].update(Status="complete", UpdatedAt=_rfc3339())
            self.touch("nodes", node)
            self.commit("NodeDrain")

    def _purge(self, job: dict[str, Any]) -> None:
        """The plan for a purged job: stop everything, cancel its deployments."""
        for alloc in self.live_allocs(job):
            self.stop_alloc(alloc, "alloc not needed due to job purge")
        for deployment in self.job_deployments(job):
            if deployment["Status"] == "running":
                self._end(deployment, "cancelled", DESC_STOPPED_JOB)

    @staticmethod
    def _plan_metric(nodes: int) -> dict[str, Any]:
        """An AllocationMetric skeleton for plan placement failures (nodes: in the job's pool)."""
        return {
            "CoalescedFailures": -1,
            "DimensionExhausted": {},
            "NodesEvaluated": nodes,
            "NodesInPool": nodes,
            "NodesExhausted": nodes,
            "NodesAvailable": {"dc1": nodes},
        }

    def plan(self, namespace: str, job: dict[str, Any], diff: bool) -> dict[str, Any]:
        """POST /v1/job/{id}/plan: what a register would do, without doing it."""
        with self.lock:
            errors = self.admission_errors(namespace, job)
            if errors:
                raise ApiError(500, multierror(errors))
            job = canonicalize(job, namespace)
            versions = self.jobs.get((job["Namespace"], job["ID"]))
            existing = versions[-1] if versions else None
            job.setdefault("Version", existing["Version"] + 1 if existing else 0)
            pool = in_pool(self.nodes, job)
            free = [self.node_free(n) for n in pool]
            updates, failed = {}, {}
            changed = existing is not None and spec_changed(existing, job)
            for group in job["TaskGroups"]:
                updates[group["Name"]] = self._plan_group(
                    job, group, existing, changed, free, failed, len(pool)
                )
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

    def _plan_group(
        self,
        job: dict[str, Any],
        group: dict[str, Any],
        existing: dict[str, Any] | None,
        changed: bool,
        free: list[tuple[int, int]],
        failed: dict[str, Any],
        pool_size: int,
    ) -> dict[str, int]:
        """DesiredTGUpdates counts of one group (and its placement failures into failed)."""
        name = group["Name"]
        live = self.live_allocs(existing, name) if existing else []
        counts = dict.fromkeys(PLAN_COUNTS, 0)
        destructive = [a for a in live if destructive_change(self.job_version(a), job, name)]
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
            counts["Ignore"] = len(destructive) - counts["Stop"] - counts["DestructiveUpdate"]
        if changed:
            counts["InPlaceUpdate"] = len(others)
        else:
            counts["Ignore"] += len(others)
        counts["Place"] = max(-extra, 0)
        for _ in range(to_place):
            if self.place(job, group, None, dry_run=free) is None:
                metric = failed.setdefault(name, self._plan_metric(pool_size))
                metric["CoalescedFailures"] += 1
                if free:
                    cpu, _ = group_resources(group)
                    key = "cpu" if all(f[0] < cpu for f in free) else "memory"
                    metric["DimensionExhausted"][key] = pool_size
        return counts


def _rfc3339(offset: float = 0.0) -> str:
    """Now (plus ``offset`` seconds) as Nomad writes times in JSON (RFC 3339, UTC)."""
    moment = datetime.now(UTC) + timedelta(seconds=offset)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
