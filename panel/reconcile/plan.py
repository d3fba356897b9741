"""Nomad's plan diff as lines a person reads, like `nomad job plan` prints them (pure)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_plan"]

_MARK = {"Added": "+", "Deleted": "-", "Edited": "~", "None": " "}


def _fields(fields: list[dict[str, Any]] | None, indent: str, prefix: str = "") -> list[str]:
    lines = []
    for field in fields or ():
        mark = _MARK.get(field.get("Type", "None"), "?")
        if mark == " ":
            continue
        name = f"{prefix}[{field['Name']}]" if prefix else field["Name"]
        old, new = field.get("Old", ""), field.get("New", "")
        if mark == "+":
            lines.append(f"{indent}+ {name}: {new!r}")
        elif mark == "-":
            lines.append(f"{indent}- {name}: {old!r}")
        else:
            lines.append(f"{indent}~ {name}: {old!r} => {new!r}")
    return lines


def _objects(objects: list[dict[str, Any]] | None, indent: str) -> list[str]:
    lines = []
    for obj in objects or ():
        if obj.get("Type") == "None":
            continue
        lines += _fields(obj.get("Fields"), indent, obj["Name"])
        lines += _objects(obj.get("Objects"), indent)
    return lines


def _annotated(name: str, notes: list[str] | None) -> str:
    return f"{name} ({', '.join(notes)})" if notes else name


def format_plan(plan: dict[str, Any]) -> list[str]:
    """The changes a plan would make, one line each; a single line when nothing changes."""
    diff = plan.get("Diff") or {}
    if diff.get("Type", "None") == "None":
        return ["No changes: the job in Nomad already matches."]
    mark = _MARK.get(diff["Type"], "~")
    lines = [f'{mark} Job: "{diff.get("ID", "")}"']
    lines += _fields(diff.get("Fields"), "  ")
    lines += _objects(diff.get("Objects"), "  ")
    updates = (plan.get("Annotations") or {}).get("DesiredTGUpdates") or {}
    for group in diff.get("TaskGroups") or ():
        counts = updates.get(group["Name"], {})
        summary = [f"{n} {kind.lower()}" for kind, n in sorted(counts.items()) if n]
        head = _annotated(f'Task Group: "{group["Name"]}"', summary)
        lines.append(f"  {_MARK.get(group.get('Type', 'None'), '~')} {head}")
        lines += _fields(group.get("Fields"), "    ")
        lines += _objects(group.get("Objects"), "    ")
        for task in group.get("Tasks") or ():
            if task.get("Type") == "None":
                continue
            head = _annotated(f'Task: "{task["Name"]}"', task.get("Annotations"))
            lines.append(f"    {_MARK.get(task['Type'], '~')} {head}")
            lines += _fields(task.get("Fields"), "      ")
            lines += _objects(task.get("Objects"), "      ")
    return lines
