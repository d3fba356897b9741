"""Job-spec helpers for the Nomad double: defaults, change classification, plan diffs."""

from __future__ import annotations

import copy
import json
from typing import Any

from .batch import BATCH_RESCHEDULE, BATCH_RESTART

SECOND = 1_000_000_000

# Fields Nomad sets itself; they never make a job "changed" (Job.SpecChanged in nomad/structs).
SERVER_FIELDS = {
    "Version",
    "Stable",
    "Status",
    "StatusDescription",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
}

# Default update strategy Nomad gives service jobs without an update block.
# https://developer.hashicorp.com/nomad/docs/job-specification/update
DEFAULT_UPDATE = {
    "Stagger": 30 * SECOND,
    "MaxParallel": 1,
    "HealthCheck": "checks",
    "MinHealthyTime": 10 * SECOND,
    "HealthyDeadline": 300 * SECOND,
    "ProgressDeadline": 600 * SECOND,
    "AutoRevert": False,
    "AutoPromote": False,
    "Canary": 0,
}

# Defaults from the resources block: https://developer.hashicorp.com/nomad/docs/job-specification/resources
DEFAULT_CPU = 100
DEFAULT_MEMORY = 300

# Group keys whose change Nomad applies in place (no new allocation).
IN_PLACE_GROUP_KEYS = {"Count", "Update", "Scaling", "Services"}
IN_PLACE_TASK_KEYS = {"Services"}


def canonicalize(job: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Fill in the defaults Nomad applies on register (Job.Canonicalize)."""
    job = copy.deepcopy(job)
    job.setdefault("Name", job["ID"])
    job.setdefault("Type", "service")
    job.setdefault("Priority", 50)
    job.setdefault("Region", "global")
    job["Namespace"] = job.get("Namespace") or namespace
    job.setdefault("AllAtOnce", False)
    job.setdefault("Stop", False)
    job.setdefault("ParentID", "")
    job_update = job.get("Update")
    for group in job.get("TaskGroups", []):
        group.setdefault("Count", 1)
        if job["Type"] == "service":
            merged = dict(DEFAULT_UPDATE)
            merged.update(job_update or {})
            merged.update(group.get("Update") or {})
            group["Update"] = merged
        if job["Type"] == "batch":
            group["RestartPolicy"] = {**BATCH_RESTART, **(group.get("RestartPolicy") or {})}
            group["ReschedulePolicy"] = {
                **BATCH_RESCHEDULE,
                **(group.get("ReschedulePolicy") or {}),
            }
        for task in group.get("Tasks", []):
            resources = task.setdefault("Resources", {})
            resources.setdefault("CPU", DEFAULT_CPU)
            resources.setdefault("MemoryMB", DEFAULT_MEMORY)
    if job["Type"] == "service":
        merged = dict(DEFAULT_UPDATE)
        merged.update(job_update or {})
        job["Update"] = merged
    return job


def spec_of(job: dict[str, Any]) -> dict[str, Any]:
    """The user-controlled part of a stored job (server fields removed)."""
    return {key: value for key, value in job.items() if key not in SERVER_FIELDS}


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Nomad's Job.SpecChanged: compare everything but server-managed fields."""
    return _canon(spec_of(old)) != _canon(spec_of(new))


def _canon(value: Any) -> str:
    """Stable JSON text for comparisons."""
    return json.dumps(value, sort_keys=True)


def find_group(job: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Return the task group called name."""
    return next((g for g in job.get("TaskGroups", []) if g.get("Name") == name), None)


def group_update(job: dict[str, Any], group: dict[str, Any]) -> dict[str, Any] | None:
    """Effective update strategy of a group (None: no deployments, e.g. batch jobs)."""
    if job.get("Type") != "service":
        return None
    update = group.get("Update") or job.get("Update")
    if not update or not update.get("MaxParallel"):
        return None
    return update


def destructive_change(old_job: dict, new_job: dict, group: str) -> bool:
    """True when moving an allocation of old_job to new_job needs a new allocation.

    Follows scheduler/util.go tasksUpdated: tasks (config, env, resources, meta...), networks,
    volumes and job meta are destructive; count, update, services and scaling are in place.
    """
    old_group, new_group = find_group(old_job, group), find_group(new_job, group)
    if old_group is None or new_group is None:
        return True
    if _canon(old_job.get("Meta")) != _canon(new_job.get("Meta")):
        return True

    def strip(g: dict) -> dict:
        out = {k: v for k, v in g.items() if k not in IN_PLACE_GROUP_KEYS}
        out["Tasks"] = [
            {k: v for k, v in t.items() if k not in IN_PLACE_TASK_KEYS} for t in g.get("Tasks", [])
        ]
        return out

    return _canon(strip(old_group)) != _canon(strip(new_group))


def group_resources(group: dict[str, Any]) -> tuple[int, int]:
    """Total (CPU MHz, memory MB) one allocation of the group reserves."""
    cpu = mem = 0
    for task in group.get("Tasks", []):
        resources = task.get("Resources") or {}
        cpu += resources.get("CPU", DEFAULT_CPU)
        mem += resources.get("MemoryMB", DEFAULT_MEMORY)
    return cpu, mem


def semantic_errors(job: dict[str, Any]) -> list[str]:
    """A few of the checks Nomad's Job.Validate makes after decoding (not schema checks)."""
    errors = []
    if " " in job.get("ID", ""):
        errors.append("Job ID contains a space")
    if not job.get("Datacenters"):
        errors.append("Missing job datacenters")
    if not job.get("TaskGroups"):
        errors.append("Missing job task groups")
    names = [g.get("Name") for g in job.get("TaskGroups", [])]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"Job task group {name} redefined")
    for group in job.get("TaskGroups", []):
        if group.get("Count", 1) < 0:
            errors.append(f"Task group {group.get('Name')} count can't be negative")
    return errors


def multierror(errors: list[str]) -> str:
    """Format errors like Go's hashicorp/go-multierror (how Nomad reports Job.Validate)."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


# ---------------------------------------------------------------------------------------
# Plan diffs: https://developer.hashicorp.com/nomad/api-docs/jobs#create-job-plan
# (JobDiff / TaskGroupDiff / TaskDiff / ObjectDiff / FieldDiff as in nomad/structs/diff.go)


def _diff_type(old: Any, new: Any) -> str:
    """Added / Deleted / Edited / None for two values."""
    if old is None and new is not None:
        return "Added"
    if new is None and old is not None:
        return "Deleted"
    return "None" if _canon(old) == _canon(new) else "Edited"


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Flatten scalars/lists of scalars to 'Name' -> text, like Nomad's flatmap."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}[{key}]" if prefix else key))
        return out
    if isinstance(value, list):
        out = {}
        for i, sub in enumerate(value):
            out.update(_flatten(sub, f"{prefix}[{i}]"))
        return out
    return {
        prefix: ""
        if value is None
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    }


def _object_diff(name: str, old: Any, new: Any) -> dict[str, Any]:
    """Nomad-style diff of two (possibly absent) objects."""
    fields, objects = [], []
    keys = sorted(set((old or {}).keys()) | set((new or {}).keys()))
    for key in keys:
        o, n = (old or {}).get(key), (new or {}).get(key)
        if isinstance(o, dict) or isinstance(n, dict):
            sub = _object_diff(key, o, n)
            if sub["Type"] != "None":
                objects.append(sub)
            continue
        old_flat, new_flat = _flatten(o, key), _flatten(n, key)
        for flat in sorted(set(old_flat) | set(new_flat)):
            t = _diff_type(old_flat.get(flat), new_flat.get(flat))
            if t != "None":
                fields.append(
                    {
                        "Type": t,
                        "Name": flat,
                        "Old": old_flat.get(flat, ""),
                        "New": new_flat.get(flat, ""),
                        "Annotations": None,
                    }
                )
    return {
        "Type": _diff_type(old, new)
        if (fields or objects or old is None or new is None)
        else "None",
        "Name": name,
        "Fields": fields or None,
        "Objects": objects or None,
    }


def job_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Compute a JobDiff between the current job (or None) and a proposed one."""
    old_spec = spec_of(old) if old else None
    new_spec = spec_of(new)
    top_old = {k: v for k, v in (old_spec or {}).items() if k != "TaskGroups"}
    top_new = {k: v for k, v in new_spec.items() if k != "TaskGroups"}
    top = _object_diff("Job", top_old if old else None, top_new)
    groups = []
    names = [g["Name"] for g in (old_spec or {}).get("TaskGroups", [])]
    names += [g["Name"] for g in new_spec.get("TaskGroups", []) if g["Name"] not in names]
    for name in names:
        og = find_group(old_spec, name) if old_spec else None
        ng = find_group(new_spec, name)
        og_top = {k: v for k, v in og.items() if k != "Tasks"} if og else None
        ng_top = {k: v for k, v in ng.items() if k != "Tasks"} if ng else None
        gdiff = _object_diff(name, og_top, ng_top)
        tasks = []
        task_names = [t["Name"] for t in (og or {}).get("Tasks", [])]
        task_names += [
            t["Name"] for t in (ng or {}).get("Tasks", []) if t["Name"] not in task_names
        ]
        destructive = old is not None and og is not None and ng is not None
        destructive = destructive and destructive_change(old, new, name)
        for tname in task_names:
            ot = next((t for t in (og or {}).get("Tasks", []) if t["Name"] == tname), None)
            nt = next((t for t in (ng or {}).get("Tasks", []) if t["Name"] == tname), None)
            tdiff = _object_diff(tname, ot, nt)
            annotation = "forces create/destroy update" if destructive else "forces in-place update"
            tdiff["Annotations"] = [annotation] if tdiff["Type"] == "Edited" else None
            tasks.append(tdiff)
        changed = gdiff["Type"] != "None" or any(t["Type"] != "None" for t in tasks)
        groups.append(
            {
                "Type": gdiff["Type"]
                if gdiff["Type"] != "None"
                else ("Edited" if changed else "None"),
                "Name": name,
                "Fields": gdiff["Fields"],
                "Objects": gdiff["Objects"],
                "Tasks": tasks,
                "Updates": None,
            }
        )
    changed = top["Type"] != "None" or any(g["Type"] != "None" for g in groups)
    kind = "Added" if old is None else ("Edited" if changed else "None")
    return {
        "Type": kind,
        "ID": new["ID"],
        "Fields": top["Fields"],
        "Objects": top["Objects"],
        "TaskGroups": groups,
    }
