"""Batch allocations of the Nomad double: scripted tasks run by a simulated client.

Docs and source followed:
- lifecycle: https://developer.hashicorp.com/nomad/docs/job-specification/lifecycle (prestart
  tasks that are not sidecars run to completion before the main tasks start; poststop tasks
  run after the main tasks end);
- task events (nomad/structs/structs.go ``TaskReceived`` "Received", ``TaskSetup`` "Task Setup",
  ``TaskStarted`` "Started", ``TaskTerminated`` "Terminated" with ``ExitCode``/``Signal``,
  ``TaskNotRestarting`` "Not Restarting" with ``FailsTask``, ``TaskSiblingFailed``
  "Sibling Task Failed", ``TaskKilling`` "Killing", ``TaskKilled`` "Killed") and their display
  messages (client/allocrunner/taskrunner ``PopulateEventDisplayMessage``);
- restarts: client/allocrunner/taskrunner/restarts: with ``Attempts = 0`` a non-zero exit is
  "Policy allows no restarts" and fails the task; a batch task that exits 0 is not restarted;
- client status (client/allocrunner ``getClientStatus``): any failed task -> "failed"; all
  tasks dead and none failed -> "complete"; otherwise "running" once a task started.

A task does what its :class:`TaskScript` says, in steps of the double's clock: it starts in
one step, writes its lines over the next ``steps`` steps and then exits with ``exit_code``. A
``time_limit`` stands for the build job's own limit (its runner stops the steps with
``timeout`` and exits 124 after saying so on stderr, see panel/render/build.py RUNNER_SCRIPT):
Nomad 1.4 itself has no time limit for a task, so the task ends as that runner ends it.
Not simulated: restarts (RestartPolicy Attempts > 0; the task runs once) and the reschedule
Delay (a replacement is placed in the next scheduler pass).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SECOND = 1_000_000_000
TIME_LIMIT_EXIT = 124  # GNU timeout's status, which the build runner exits with
OOM_EXIT = 137  # SIGKILL from the kernel's OOM killer (128 + 9)
KILL_EXIT = 143  # a container stopped with SIGTERM (128 + 15)
TERMINAL = ("complete", "failed", "lost")
NO_RESTARTS = "Policy allows no restarts"  # restarts.go ReasonNoRestartsAllowed

# Defaults Job.Canonicalize gives a batch group without restart / reschedule blocks
# (nomad/structs/structs.go DefaultBatchJobRestartPolicy, DefaultBatchJobReschedulePolicy).
BATCH_RESTART = {"Attempts": 3, "Interval": 86_400 * SECOND, "Delay": 15 * SECOND, "Mode": "fail"}
BATCH_RESCHEDULE = {
    "Attempts": 1,
    "Interval": 86_400 * SECOND,
    "Delay": 5 * SECOND,
    "DelayFunction": "constant",
    "MaxDelay": 0,
    "Unlimited": False,
}


@dataclass
class TaskScript:
    """What one task of a batch allocation does in the double.

    stdout/stderr: lines it writes (spread over its run); exit_code: how it exits; steps: how
    many steps of the double's clock it runs; time_limit: steps after which its runner stops it
    (exit 124 and a "time limit" line on stderr), None for no limit; oom: it ends killed for
    its memory limit (the docker driver's Terminated event: exit 137, Details oom_killed
    "true").
    """

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    exit_code: int = 0
    steps: int = 1
    time_limit: int | None = None
    oom: bool = False  # the kernel kills it for its memory limit when it exits (exit 137)


Script = dict[str, TaskScript]
ScriptFn = Callable[[dict[str, Any]], Script]


def build_digest(job_id: str, sha: str) -> str:
    """The image digest the default build script prints for a build job (sha256:<64 hex>)."""
    return "sha256:" + hashlib.sha256(f"{job_id}@{sha}".encode()).hexdigest()


def default_build_script(job: dict[str, Any]) -> Script:
    """A build that works: fetch prints "fetched <sha>", build prints the digest line."""
    sha = (job.get("Meta") or {}).get("helios.git_sha", "0" * 40)
    digest = build_digest(job["ID"], sha)
    return {
        "fetch": TaskScript(stdout=[f"fetched {sha}"], steps=1),
        "build": TaskScript(
            stdout=[
                "STEP 1/2: FROM docker.io/library/alpine:3.20",
                "STEP 2/2: COPY . /app",
                "COMMIT",
                f"helios-build-digest {digest}",
            ],
            steps=2,
        ),
    }


def is_build(job: dict[str, Any]) -> bool:
    """Whether a job is a Helios build (Meta helios.kind = build)."""
    return (job.get("Meta") or {}).get("helios.kind") == "build"


def _rfc3339(ns: int) -> str:
    """Nomad's time.Time JSON form (UTC, nanoseconds)."""
    seconds, rest = divmod(ns, SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


def event(kind: str, display: str, **fields: Any) -> dict[str, Any]:
    """A TaskEvent as the client reports it (the fields the double fills)."""
    return {
        "Type": kind,
        "Time": time.time_ns(),
        "Message": "",
        "DisplayMessage": display,
        "Details": {},
        "FailsTask": False,
        "ExitCode": 0,
        "Signal": 0,
        "KillTimeout": 0,
        "KillReason": "",
        "RestartReason": "",
        "FailedSibling": "",
        **fields,
    }


def terminated(exit_code: int, signal: int = 0) -> dict[str, Any]:
    """A Terminated event ("Exit Code: N[, Signal: S]")."""
    display = f"Exit Code: {exit_code}" + (f", Signal: {signal}" if signal else "")
    return event("Terminated", display, ExitCode=exit_code, Signal=signal)


def phase_of(task: dict[str, Any]) -> int:
    """0: prestart (not sidecar), 1: main (with sidecars and poststart), 2: poststop."""
    hook = (task.get("Lifecycle") or {}).get("Hook", "")
    if hook == "prestart" and not (task.get("Lifecycle") or {}).get("Sidecar"):
        return 0
    return 2 if hook == "poststop" else 1


class BatchRun:
    """The client side of one batch allocation: task states, logs, the script's progress."""

    def __init__(self, group: dict[str, Any], script: Script) -> None:
        """Prepare the tasks of group with their scripts (a task without one exits 0)."""
        self.tasks = {t["Name"]: t for t in group.get("Tasks", [])}
        self.script = {name: script.get(name) or TaskScript() for name in self.tasks}
        self.logs: dict[tuple[str, str], str] = {
            (name, kind): "" for name in self.tasks for kind in ("stdout", "stderr")
        }
        self.elapsed = dict.fromkeys(self.tasks, 0)
        self.written = {name: {"stdout": 0, "stderr": 0} for name in self.tasks}
        self.phase = -1
        self.state: dict[str, dict[str, Any]] = {}

    # -- steps ---------------------------------------------------------------------------------

    def begin(self, alloc: dict[str, Any]) -> None:
        """The client received the allocation: every task is set up; the first phase starts."""
        alloc["TaskStates"] = {
            name: {
                "State": "pending",
                "Failed": False,
                "Restarts": 0,
                "LastRestart": None,
                "StartedAt": None,
                "FinishedAt": None,
                "Events": [
                    event("Received", "Task received by client"),
                    event("Task Setup", "Building Task Directory"),
                ],
            }
            for name in self.tasks
        }
        self.state = alloc["TaskStates"]
        alloc["ClientStatus"] = "running"
        alloc["ClientDescription"] = "Tasks are running"
        self._next_phase(alloc)

    def advance(self, alloc: dict[str, Any]) -> None:
        """One step: running tasks write and maybe exit; then failure or the next phase."""
        self.state = alloc["TaskStates"]
        failed = None
        for name, script in self.script.items():
            if self.state[name]["State"] != "running":
                continue
            self.elapsed[name] += 1
            limit = script.time_limit
            if limit is not None and self.elapsed[name] >= limit and script.steps > limit:
                self._write_share(name, limit / script.steps)
                self._append(
                    name,
                    "stderr",
                    f"helios-{name}: time limit of {limit} s exceeded: stopped after {limit} s",
                )
                failed = self._exit(name, TIME_LIMIT_EXIT) or failed
            else:
                self._write_share(name, min(self.elapsed[name] / max(script.steps, 1), 1.0))
                if self.elapsed[name] >= script.steps:
                    code = OOM_EXIT if script.oom else script.exit_code
                    failed = self._exit(name, code, oom=script.oom) or failed
        if failed:
            self._fail_siblings(failed)
        self._settle(alloc)

    def _settle(self, alloc: dict[str, Any]) -> None:
        """Client status from the task states; start the next phase when this one is done."""
        states = self.state.values()
        if any(s["Failed"] for s in states):
            if all(s["State"] == "dead" for s in states):
                alloc["ClientStatus"] = "failed"
                alloc["ClientDescription"] = "Failed tasks"
            return
        current = [n for n, t in self.tasks.items() if phase_of(t) == self.phase]
        if all(self.state[n]["State"] == "dead" for n in current):
            self._next_phase(alloc)
        if all(s["State"] == "dead" for s in states):
            alloc["ClientStatus"] = "complete"
            alloc["ClientDescription"] = "All tasks have completed"

    def _next_phase(self, alloc: dict[str, Any]) -> None:
        """Start the tasks of the next phase that has any."""
        while self.phase < 2:
            self.phase += 1
            names = [n for n, t in self.tasks.items() if phase_of(t) == self.phase]
            if names:
                for name in names:
                    state = self.state[name]
                    state["State"] = "running"
                    state["StartedAt"] = _rfc3339(time.time_ns())
                    state["Events"].append(event("Started", "Task started by client"))
                return

    def _write_share(self, task: str, share: float) -> None:
        """Write the script's lines up to share (0..1) of each stream."""
        script = self.script[task]
        for kind, lines in (("stdout", script.stdout), ("stderr", script.stderr)):
            upto = int(len(lines) * share + 1e-9)
            for line in lines[self.written[task][kind] : upto]:
                self._append(task, kind, line)
            self.written[task][kind] = max(self.written[task][kind], upto)

    def _append(self, task: str, kind: str, line: str) -> None:
        """Append one line to a task's log."""
        self.logs[(task, kind)] += line + "\n"

    def _exit(self, task: str, code: int, *, oom: bool = False) -> str | None:
        """The task's process exited with code; returns the task's name when that fails it."""
        state = self.state[task]
        ended = terminated(code)
        if oom:  # drivers/docker: SetOOMKilled → Details oom_killed, "OOM Killed" message
            ended["Details"] = {"oom_killed": "true", "exit_code": str(code)}
            ended["DisplayMessage"] = f'Exit Code: {code}, Exit Message: "OOM Killed"'
        state["Events"].append(ended)
        state["State"] = "dead"
        state["FinishedAt"] = _rfc3339(time.time_ns())
        if code == 0:
            return None
        # Restarts are not simulated: Attempts 0 (the build job's) fails at once; with more
        # attempts Nomad would restart the task first, which the double does not do.
        state["Events"].append(
            event("Not Restarting", NO_RESTARTS, RestartReason=NO_RESTARTS, FailsTask=True)
        )
        state["Failed"] = True
        return task

    def _fail_siblings(self, failed: str) -> None:
        """A failed task kills the others (allocrunner: TaskSiblingFailed)."""
        for state in self.state.values():
            if state["State"] == "dead":
                continue
            state["Events"].append(
                event(
                    "Sibling Task Failed",
                    f'Task\'s sibling "{failed}" failed',
                    FailedSibling=failed,
                )
            )
            if state["State"] == "running":
                state["Events"].append(terminated(KILL_EXIT))
            state["Events"].append(event("Killed", "Task successfully killed"))
            state["State"] = "dead"
            state["FinishedAt"] = _rfc3339(time.time_ns())

    def kill(self, alloc: dict[str, Any], kill_timeouts: dict[str, int]) -> None:
        """The allocation is stopped: running tasks are killed, none counts as failed.

        client/allocrunner: Killing ("Sent interrupt. Waiting <kill_timeout> before force
        killing"), Terminated, Killed; tasks that had not started are only marked Killed. A
        killed task is not a failed one, so the allocation ends "complete" unless a task had
        already failed (getClientStatus).
        """
        self.state = alloc["TaskStates"] or {}
        for name, state in self.state.items():
            if state["State"] == "dead":
                continue
            if state["State"] == "running":
                timeout = kill_timeouts.get(name, 5 * SECOND) // SECOND
                state["Events"].append(
                    event(
                        "Killing",
                        f"Sent interrupt. Waiting {timeout}s before force killing",
                        KillTimeout=kill_timeouts.get(name, 5 * SECOND),
                    )
                )
                state["Events"].append(terminated(KILL_EXIT))
            state["Events"].append(event("Killed", "Task successfully killed"))
            state["State"] = "dead"
            state["FinishedAt"] = _rfc3339(time.time_ns())
        failed = any(s["Failed"] for s in self.state.values())
        alloc["ClientStatus"] = "failed" if failed else "complete"
        alloc["ClientDescription"] = "Failed tasks" if failed else "All tasks have completed"
