"""Reading a build job's allocation (pure): still going, or how it ended and why.

A build allocation runs ``fetch`` (prestart) then ``build``; both are batch tasks that Nomad
never restarts (RestartPolicy Attempts 0). The build task prints one line
``helios-build-digest sha256:<64 hex>`` once the image is pushed; that line is the only
evidence of success the follower takes (an exit 0 without it fails the build).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from panel.render.build import BUILD_TASK, DIGEST_MARKER, FETCH_TASK

__all__ = ["BuildVerdict", "find_digest", "judge_build_allocation", "last_lines", "newest"]

TIME_LIMIT_EXIT = 124  # the build runner's exit status when its time limit stopped it
_DIGEST_RE = re.compile(rf"^{DIGEST_MARKER} (sha256:[0-9a-f]{{64}})\s*$", re.MULTILINE)
_TERMINAL = ("complete", "failed", "lost")


@dataclass(frozen=True)
class BuildVerdict:
    """``done`` False: still going (``progress`` says how far). Otherwise ``succeeded`` and
    ``message``; ``exit_code`` of the task that decided it; ``needs_log`` when the build task's
    own output must be read (the digest of a success, the last lines of a failure)."""

    done: bool
    progress: str = ""
    succeeded: bool = False
    message: str = ""
    exit_code: int | None = None
    task: str = ""


def newest(allocations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The allocation that decides a build: the newest one (a batch job with no reschedule
    has one; a lost node may leave a replacement)."""
    if not allocations:
        return None
    return max(allocations, key=lambda a: (a.get("CreateIndex") or 0, a.get("ID", "")))


def _exit_code(state: dict[str, Any]) -> int | None:
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            code = event.get("ExitCode")
            if code is None:
                code = (event.get("Details") or {}).get("exit_code")
            try:
                return int(code)
            except (TypeError, ValueError):
                return None
    return None


def _oom_killed(state: dict[str, Any]) -> bool:
    for event in state.get("Events") or []:
        details = event.get("Details") or {}
        if str(details.get("oom_killed", "")).lower() == "true":
            return True
        if "OOM" in str(event.get("DisplayMessage", "")):
            return True
    return False


def judge_build_allocation(
    alloc: dict[str, Any], *, time_limit_s: int, memory_mb: int
) -> BuildVerdict:
    """What a build's allocation says now."""
    status = alloc.get("ClientStatus", "pending")
    states = alloc.get("TaskStates") or {}
    fetch, build = states.get(FETCH_TASK) or {}, states.get(BUILD_TASK) or {}
    if status not in _TERMINAL:
        if alloc.get("DesiredStatus") not in (None, "run"):
            return BuildVerdict(done=False, progress="stopping")
        if build.get("State") == "running":
            return BuildVerdict(done=False, progress="building the image")
        if fetch.get("State") == "running" or fetch.get("StartedAt"):
            return BuildVerdict(done=False, progress="fetching the commit")
        if status == "pending":
            return BuildVerdict(done=False, progress="waiting for a build node")
        return BuildVerdict(done=False, progress="starting")
    if status == "lost":
        return BuildVerdict(
            done=True, message="the build node stopped answering (allocation lost): push "
            "again or redeliver to build anew",
        )  # fmt: skip
    if status == "complete":
        return BuildVerdict(
            done=True, succeeded=True, exit_code=_exit_code(build) or 0, task=BUILD_TASK
        )
    # failed: say which task, and why in the words a person needs
    for name, state in ((FETCH_TASK, fetch), (BUILD_TASK, build)):
        if not state.get("Failed"):
            continue
        code = _exit_code(state)
        if _oom_killed(state):
            message = (
                f"the {name} step ran out of memory (limit {memory_mb} MB): raise "
                "HELIOS_BUILD_MEMORY or make the build use less"
            )
        elif code == TIME_LIMIT_EXIT:
            message = (
                f"the {name} step exceeded its time limit of {time_limit_s} s and was "
                "stopped: raise HELIOS_BUILD_TIMEOUT or speed the build up"
            )
        elif name == FETCH_TASK:
            message = f"fetching the commit failed (exit code {code})"
        else:
            message = f"the build failed (exit code {code})"
        return BuildVerdict(done=True, message=message, exit_code=code, task=name)
    return BuildVerdict(done=True, message="the build allocation failed (no task says why)")


def find_digest(log: str) -> str:
    """The digest the build task printed last, or ""."""
    found = _DIGEST_RE.findall(log)
    return found[-1] if found else ""


def last_lines(log: str, count: int = 5, width: int = 300) -> str:
    """The last non-empty lines of a log, each cut to ``width`` characters."""
    lines = [line[:width] for line in log.splitlines() if line.strip()]
    return "\n".join(lines[-count:])
