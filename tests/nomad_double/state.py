"""Simulated Nomad cluster state: jobs, versions, evaluations, allocations, deployments.

Time: the simulation advances one *step* at a time (``Cluster.step``); the server calls it on
reads when ``auto_advance`` is on, from a background thread every ``tick_interval`` seconds when
that is set, and tests can call ``NomadDouble.tick()``.
Per step: pending allocations start running; running allocations of a deployment get their
health (``health_policy``), which stands for MinHealthyTime/HealthyDeadline having passed;
then deployments are judged (fail / auto-promote / succeed) and the scheduler places the
next rolling batch (MaxParallel) and retries blocked placements.

Behaviour follows https://developer.hashicorp.com/nomad/docs/job-specification/update and
https://developer.hashicorp.com/nomad/api-docs/deployments. Every change goes through
``txn.Writes`` (one raft-like index per write, the events of that write).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from .batch import (
    SECOND,
    TERMINAL,
    BatchRun,
    Script,
    ScriptFn,
    default_build_script,
    is_build,
)
from .jobspec import group_resources
from .txn import Writes

HealthPolicy = Callable[[dict[str, Any], dict[str, Any]], bool]

# Deployment descriptions, nomad/structs/structs.go DeploymentStatusDescription*.
DESC_RUNNING = "Deployment is running"
DESC_NEEDS_PROMOTION = "Deployment is running but requires manual promotion"
DESC_AUTO_PROMOTION = "Deployment is running pending automatic promotion"
DESC_SUCCESSFUL = "Deployment completed successfully"
DESC_UNHEALTHY = "Failed due to unhealthy allocations"
DESC_DEADLINE = "Failed due to progress deadline"
DESC_FAILED_BY_USER = "Deployment marked as failed"
DESC_NEWER_JOB = "Cancelled due to newer version of job"
DESC_STOPPED_JOB = "Cancelled because job is stopped"
ENFORCE_PREFIX = "Enforcing job modify index"
DEFAULT_NAMESPACE_DESCRIPTION = "Default shared namespace"  # structs.DefaultNamespaceDescription


class ApiError(Exception):
    """An error answered with an HTTP status and Nomad's plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        """Keep status and message."""
        super().__init__(message)
        self.status = status
        self.message = message


def _id() -> str:
    """A Nomad-style UUID."""
    return str(uuid.uuid4())


def _now() -> int:
    """Wall-clock time in nanoseconds (Nomad's CreateTime/ModifyTime unit)."""
    return time.time_ns()


def public(obj: Any) -> Any:
    """Strip private bookkeeping keys (leading underscore) from a state object."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


def go_quote(text: str) -> str:
    """Go's %q for the plain strings the double formats (names, IDs)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Cluster(Writes):
    """All mutable state of the double; every public method takes the lock."""

    def __init__(
        self,
        nodes: list[tuple[int, int]],
        health_policy: HealthPolicy | None = None,
        progress_deadline_steps: int = 3,
        cas_conflict_status: int = 400,
    ) -> None:
        """Create nodes from (cpu MHz, memory MB) pairs."""
        super().__init__()
        self.steps = 0
        self.health_policy: HealthPolicy = health_policy or (lambda job, alloc: True)
        # What the "Alloc Unhealthy" task event says of an allocation found unhealthy.
        self.unhealthy_message = (
            "Task not running for min_healthy_time of 10s by healthy_deadline of 5m0s"
        )
        self.progress_deadline_steps = progress_deadline_steps
        self.cas_conflict_status = cas_conflict_status
        self.jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes = [self._make_node(i, cpu, mem) for i, (cpu, mem) in enumerate(nodes)]
        # The default namespace always exists (https://developer.hashicorp.com/nomad/api-docs/namespaces).
        self.namespaces: dict[str, dict[str, Any]] = {
            "default": namespace_object("default", DEFAULT_NAMESPACE_DESCRIPTION, 1)
        }
        self.table_index.update(nodes=1, namespaces=1)
        self._active_eval: dict[str, Any] | None = None
        # (matches(job), script(job)) pairs for batch allocations, newest first.
        self.batch_scripts: list[tuple[Callable[[dict], bool], ScriptFn]] = []

    def add_node(self, cpu: int = 4000, mem: int = 8192, pool: str = "default") -> dict[str, Any]:
        """Register one more ready client node (NodeRegister); returns it."""
        with self.lock:
            node = self._make_node(len(self.nodes), cpu, mem, pool)
            self.nodes.append(node)
            self.touch("nodes", node, "CreateIndex", "ModifyIndex")
            self.commit("NodeRegistration")
            return node

    # -- helpers -------------------------------------------------------------------------

    def _make_node(self, i: int, cpu: int, mem: int, pool: str = "default") -> dict[str, Any]:
        """Build a ready docker-capable client node in a node pool (Nomad 1.6+)."""
        return {
            "ID": _id(),
            "Name": f"client-{i + 1}",
            "Datacenter": "dc1",
            "NodePool": pool,
            "Address": f"10.0.0.{i + 10}",
            "NodeClass": "",
            "Version": "1.4.3",
            "Status": "ready",
            "StatusDescription": "",
            "SchedulingEligibility": "eligible",
            "Drain": False,
            "DrainStrategy": None,
            "LastDrain": None,
            "Drivers": {"docker": {"Detected": True, "Healthy": True}},
            "NodeResources": {
                "Cpu": {"CpuShares": cpu},
                "Memory": {"MemoryMB": mem},
                "Disk": {"DiskMB": 100_000},
            },
            "ReservedResources": {"Cpu": {"CpuShares": 0}, "Memory": {"MemoryMB": 0}},
            "Attributes": {
                "kernel.name": "linux",
                "driver.docker": "1",
                "cpu.totalcompute": str(cpu),
            },
            "CreateIndex": 1,
            "ModifyIndex": 1,
            "_next_port": 20000,
        }

    def script_for(self, job: dict[str, Any]) -> Script:
        """The script a new batch allocation of job runs (set_batch_script, else defaults)."""
        for matches, script in self.batch_scripts:
            if matches(job):
                return script(job)
        return default_build_script(job) if is_build(job) else {}

    def versions(self, namespace: str, job_id: str) -> list[dict[str, Any]]:
        """All stored versions of a job (oldest first) or raise 404."""
        versions = self.jobs.get((namespace, job_id))
        if not versions:
            raise ApiError(404, "job not found")
        return versions

    def current(self, namespace: str, job_id: str) -> dict[str, Any]:
        """The latest version of a job."""
        return self.versions(namespace, job_id)[-1]

    def job_version(self, alloc: dict[str, Any]) -> dict[str, Any]:
        """The job version an allocation runs."""
        versions = self.jobs[(alloc["Namespace"], alloc["JobID"])]
        return next(v for v in versions if v["Version"] == alloc["JobVersion"])

    def live_allocs(self, job: dict[str, Any], group: str | None = None) -> list[dict[str, Any]]:
        """Allocations of a job that should be running."""
        return [
            a
            for a in self.allocs.values()
            if a["JobID"] == job["ID"]
            and a["Namespace"] == job["Namespace"]
            and a["DesiredStatus"] == "run"
            and (group is None or a["TaskGroup"] == group)
        ]

    def job_deployments(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Deployments of a job, newest first."""
        found = [
            d
            for d in self.deployments.values()
            if d["JobID"] == job["ID"] and d["Namespace"] == job["Namespace"]
        ]
        return sorted(found, key=lambda d: d["CreateIndex"], reverse=True)

    def node_free(self, node: dict[str, Any]) -> tuple[int, int]:
        """Unreserved (cpu, memory) of a node."""
        cpu = node["NodeResources"]["Cpu"]["CpuShares"]
        mem = node["NodeResources"]["Memory"]["MemoryMB"]
        for alloc in self.allocs.values():
            if (
                alloc["NodeID"] == node["ID"]
                and alloc["DesiredStatus"] == "run"
                and alloc["ClientStatus"] not in TERMINAL
            ):
                cpu -= alloc["_cpu"]
                mem -= alloc["_mem"]
        return cpu, mem

    # -- evaluations -----------------------------------------------------------------------

    def new_eval(self, job: dict[str, Any], triggered_by: str, **extra: Any) -> dict[str, Any]:
        """Create a pending evaluation in the write in progress."""
        now = _now()
        evaluation = {
            "ID": _id(),
            "Namespace": job["Namespace"],
            "Priority": job.get("Priority", 50),
            "Type": job.get("Type", "service"),
            "TriggeredBy": triggered_by,
            "JobID": job["ID"],
            "JobModifyIndex": job.get("JobModifyIndex", 0),
            "Status": "pending",
            "StatusDescription": "",
            "DeploymentID": "",
            "FailedTGAllocs": None,
            "BlockedEval": "",
            "PreviousEval": "",
            "QueuedAllocations": {g["Name"]: 0 for g in job.get("TaskGroups", [])},
            "SnapshotIndex": 0,
            "CreateTime": now,
            "ModifyTime": now,
        }
        evaluation.update(extra)
        self.evals[evaluation["ID"]] = evaluation
        self.touch("evals", evaluation, "CreateIndex", "ModifyIndex")
        return evaluation

    def _record_failure(self, job: dict, group: dict, cpu: int, mem: int) -> None:
        """Note a placement failure on the evaluation being processed (it gets a blocked eval)."""
        evaluation = self._active_eval
        if evaluation is None:
            # A retry during a step: the existing blocked evaluation already covers it.
            if any(
                e["JobID"] == job["ID"] and e["Namespace"] == job["Namespace"]
                and e["Status"] == "blocked"
                for e in self.evals.values()
            ):  # fmt: skip
                return
            evaluation = self._active_eval = self.new_eval(job, "queued-allocs")
        failed = evaluation["FailedTGAllocs"] = evaluation["FailedTGAllocs"] or {}
        metric = failed.get(group["Name"])
        if metric is None:
            # Only the ready nodes of the job's pool and datacenters are evaluated; with none,
            # NodesEvaluated is 0 ("No nodes were eligible for evaluation" in the CLI).
            pool = in_pool(self.nodes, job)
            dims: dict[str, int] = {}
            filtered: dict[str, int] = {}
            exhausted = 0
            for node in pool:
                unmet = unmet_constraint(node, job, group)
                if unmet is not None:
                    filtered[unmet] = filtered.get(unmet, 0) + 1
                    continue
                free_cpu, free_mem = self.node_free(node)
                key = "cpu" if free_cpu < cpu else "memory" if free_mem < mem else None
                if key:
                    dims[key] = dims.get(key, 0) + 1
                    exhausted += 1
            failed[group["Name"]] = {
                "NodesEvaluated": len(pool),
                "NodesFiltered": sum(filtered.values()),
                "NodesInPool": len(pool),
                "NodesAvailable": {
                    dc: sum(n["Datacenter"] == dc for n in pool)
                    for dc in job.get("Datacenters") or ["dc1"]
                },
                "ClassFiltered": None,
                "ConstraintFiltered": filtered or None,
                "NodesExhausted": exhausted,
                "ClassExhausted": None,
                "DimensionExhausted": dims or None,
                "QuotaExhausted": None,
                "ScoreMetaData": None,
                "AllocationTime": 12000,
                "CoalescedFailures": 0,
            }
        else:
            metric["CoalescedFailures"] += 1
        evaluation["QueuedAllocations"][group["Name"]] = (
            evaluation["QueuedAllocations"].get(group["Name"], 0) + 1
        )

    def finish_eval(self, job: dict[str, Any], evaluation: dict[str, Any]) -> None:
        """The scheduler's update of a processed evaluation (EvaluationUpdated).

        Placement failures leave a blocked evaluation to retry them
        (https://developer.hashicorp.com/nomad/docs/concepts/scheduling/scheduling).
        """
        deployment = next(
            (d for d in self.job_deployments(job) if d["JobVersion"] == job.get("Version")), None
        )
        evaluation.update(
            Status="complete",
            SnapshotIndex=self.index,
            DeploymentID=deployment["ID"] if deployment else evaluation["DeploymentID"],
            ModifyTime=_now(),
        )
        if evaluation["FailedTGAllocs"] and not evaluation["BlockedEval"]:
            blocked = self.new_eval(
                job,
                "queued-allocs",
                Status="blocked",
                StatusDescription="created to place remaining allocations",
                PreviousEval=evaluation["ID"],
            )
            evaluation["BlockedEval"] = blocked["ID"]
        self.touch("evals", evaluation)
        self.commit("EvaluationUpdated")

    # -- placement ---------------------------------------------------------------------------

    def place(
        self,
        job: dict[str, Any],
        group: dict[str, Any],
        deployment: dict[str, Any] | None,
        canary: bool = False,
        previous: dict[str, Any] | None = None,
        dry_run: list[tuple[int, int]] | None = None,
    ) -> dict[str, Any] | None:
        """Place one allocation of group on the first node with room (None if none fits)."""
        cpu, mem = group_resources(group)
        if dry_run is not None:
            for i, (free_cpu, free_mem) in enumerate(dry_run):
                if free_cpu >= cpu and free_mem >= mem:
                    dry_run[i] = (free_cpu - cpu, free_mem - mem)
                    return {}
            return None
        node = next(
            (
                n
                for n in in_pool(self.nodes, job)
                if unmet_constraint(n, job, group) is None
                and all(f >= r for f, r in zip(self.node_free(n), (cpu, mem), strict=True))
            ),
            None,
        )
        if node is None:
            self._record_failure(job, group, cpu, mem)
            return None
        evaluation = self._active_eval or self.new_eval(job, "deployment-watcher")
        self._active_eval = evaluation
        used = {a["Name"] for a in self.live_allocs(job, group["Name"]) if a["JobVersion"] >= 0}
        slot = next(i for i in range(10_000) if f"{job['ID']}.{group['Name']}[{i}]" not in used)
        ports = []
        for network in group.get("Networks") or []:
            for port in network.get("DynamicPorts") or []:
                node["_next_port"] += 1
                ports.append(
                    {
                        "Label": port["Label"],
                        "Value": node["_next_port"],
                        "To": port.get("To", 0),
                        "HostIP": node["Address"],
                    }
                )
            for port in network.get("ReservedPorts") or []:
                ports.append({**port, "HostIP": node["Address"]})
        alloc = {
            "ID": _id(),
            "Namespace": job["Namespace"],
            "EvalID": evaluation["ID"],
            "Name": f"{job['ID']}.{group['Name']}[{slot}]",
            "NodeID": node["ID"],
            "NodeName": node["Name"],
            "JobID": job["ID"],
            "JobType": job["Type"],
            "JobVersion": job["Version"],
            "TaskGroup": group["Name"],
            "DesiredStatus": "run",
            "DesiredDescription": "",
            "ClientStatus": "pending",
            "ClientDescription": "No tasks have started",
            "TaskStates": None,
            "DeploymentID": deployment["ID"] if deployment else "",
            "DeploymentStatus": {"Canary": canary, "Healthy": None, "Timestamp": None}
            if deployment
            else None,
            "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
            "PreviousAllocation": previous["ID"] if previous else "",
            "NextAllocation": "",
            "FollowupEvalID": "",
            "AllocatedResources": {
                "Tasks": {
                    t["Name"]: {
                        "Cpu": {"CpuShares": t["Resources"]["CPU"]},
                        "Memory": {
                            "MemoryMB": t["Resources"]["MemoryMB"],
                            "MemoryMaxMB": t["Resources"].get("MemoryMaxMB", 0),
                        },
                    }
                    for t in group.get("Tasks", [])
                },
                "Shared": {"DiskMB": 300, "Ports": ports},
            },
            "CreateTime": _now(),
            "ModifyTime": _now(),
            "_cpu": cpu,
            "_mem": mem,
            "_step": self.steps,
        }
        if job["Type"] == "batch":
            alloc["_run"] = BatchRun(group, self.script_for(job))
            alloc["_kill_timeouts"] = {
                t["Name"]: t.get("KillTimeout", 5 * SECOND) for t in group.get("Tasks", [])
            }
        if previous:
            previous["NextAllocation"] = alloc["ID"]
            self.touch("allocs", previous)
        self.allocs[alloc["ID"]] = alloc
        self.touch("allocs", alloc, "CreateIndex", "ModifyIndex", "AllocModifyIndex")
        if deployment:
            state = deployment["TaskGroups"][group["Name"]]
            state["PlacedAllocs"] += 1
            if canary:
                state["PlacedCanaries"].append(alloc["ID"])
            deployment["_placed_any"] = True
            self.touch("deployment", deployment)
        return alloc

    def stop_alloc(self, alloc: dict[str, Any], description: str) -> None:
        """Stop an allocation (frees its resources at once)."""
        alloc["DesiredStatus"] = "stop"
        alloc["DesiredDescription"] = description
        run = alloc.get("_run")
        if run is not None and alloc["ClientStatus"] == "running":
            run.kill(alloc, alloc["_kill_timeouts"])
        elif alloc["ClientStatus"] in ("pending", "running"):
            alloc["ClientStatus"] = "complete"
            alloc["ClientDescription"] = "All tasks have completed"
        alloc["ModifyTime"] = _now()
        self.touch("allocs", alloc, "ModifyIndex", "AllocModifyIndex")


def in_pool(nodes: list[dict[str, Any]], job: dict[str, Any]) -> list[dict[str, Any]]:
    """Ready, eligible nodes of the job's node pool ("default" when it names none, as
    Job.Canonicalize sets it) in one of its datacenters."""
    pool = job.get("NodePool") or "default"
    datacenters = job.get("Datacenters") or ["dc1"]
    return [
        n
        for n in nodes
        if n["NodePool"] == pool
        and (n["Datacenter"] in datacenters or "*" in datacenters)
        and n["Status"] == "ready"
        and n["SchedulingEligibility"] == "eligible"
    ]


def _target(node: dict[str, Any], text: str) -> str | None:
    """Resolve a constraint target like ${node.pool} or ${attr.kernel.name} on a node."""
    if not (text.startswith("${") and text.endswith("}")):
        return text
    name = text[2:-1]
    fixed = {
        "node.pool": node["NodePool"],
        "node.datacenter": node["Datacenter"],
        "node.class": node["NodeClass"],
        "node.unique.id": node["ID"],
        "node.unique.name": node["Name"],
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("attr."):
        return node["Attributes"].get(name[5:])
    if name.startswith("meta."):
        return (node.get("Meta") or {}).get(name[5:])
    return None


def unmet_constraint(
    node: dict[str, Any], job: dict[str, Any], group: dict[str, Any]
) -> str | None:
    """The first equality constraint of the job, group or its tasks the node fails, as Nomad
    names it in ConstraintFiltered ("${node.pool} = build"); None when all hold. Operands
    other than =, ==, is, != and not are not simulated (they hold)."""
    found = list(job.get("Constraints") or []) + list(group.get("Constraints") or [])
    for task in group.get("Tasks", []):
        found += task.get("Constraints") or []
    for constraint in found:
        operand = constraint.get("Operand") or "="
        if operand not in ("=", "==", "is", "!=", "not"):
            continue
        left = _target(node, constraint.get("LTarget", ""))
        right = _target(node, constraint.get("RTarget", ""))
        equal = left is not None and left == right
        if equal != (operand in ("=", "==", "is")):
            return f"{constraint.get('LTarget', '')} {operand} {constraint.get('RTarget', '')}"
    return None


def namespace_object(name: str, description: str, index: int) -> dict[str, Any]:
    """A structs.Namespace as GET /v1/namespace/{name} returns it."""
    return {
        "Name": name,
        "Description": description,
        "Quota": "",
        "Capabilities": None,
        "Meta": None,
        "CreateIndex": index,
        "ModifyIndex": index,
    }
