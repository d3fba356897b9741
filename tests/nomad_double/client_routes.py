"""Client endpoints (stats, logs) and variables of the Nomad double.

Client: https://developer.hashicorp.com/nomad/api-docs/client (not in the OpenAPI description).
Variables: https://developer.hashicorp.com/nomad/api-docs/variables — keyed by namespace and
path, so a variable written in one namespace is not visible from another.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .routes import EMPTY, ID, RawBody, lookup, ns, q, truthy
from .state import ApiError, _now

if TYPE_CHECKING:
    from .server import NomadDouble


def _stats(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> dict:
    """GET /v1/client/allocation/{id}/stats: plausible numbers from the reservation."""
    alloc = lookup(d.cluster.allocs, alloc_id, "Unknown allocation")
    if alloc["ID"] in d.stats_override:
        return d.stats_override[alloc["ID"]]
    tasks = {}
    for name, res in alloc["AllocatedResources"]["Tasks"].items():
        rss = res["Memory"]["MemoryMB"] * 1024 * 1024 * 2 // 5
        tasks[name] = {
            "ResourceUsage": {
                "MemoryStats": {
                    "RSS": rss,
                    "Cache": 0,
                    "Swap": 0,
                    "Usage": rss + 4096,
                    "MaxUsage": rss + 8192,
                    "KernelUsage": 0,
                    "KernelMaxUsage": 0,
                    "Measured": ["RSS", "Cache", "Swap", "Usage", "Max Usage"],
                },
                "CpuStats": {
                    "SystemMode": 1.2,
                    "UserMode": 3.4,
                    "TotalTicks": res["Cpu"]["CpuShares"] * 0.1,
                    "ThrottledPeriods": 0,
                    "ThrottledTime": 0,
                    "Percent": 4.6,
                    "Measured": ["System Mode", "User Mode", "Percent"],
                },
                "DeviceStats": None,
            },
            "Timestamp": _now(),
            "Pids": None,
        }
    first = next(iter(tasks.values()), None)
    total = dict(first["ResourceUsage"]) if first else None
    return {"ResourceUsage": total, "Tasks": tasks, "Timestamp": _now()}


def _log_text(d: NomadDouble, alloc: dict[str, Any], task: str, kind: str) -> str:
    """A task's log: set_logs for this allocation, what its batch script wrote, set_logs for
    any allocation, else a line saying the task started."""
    run = alloc.get("_run")
    for key in ((alloc["ID"], task, kind),):
        if key in d.logs:
            return d.logs[key]
    if run is not None:
        return run.logs[(task, kind)]
    return next(
        (d.logs[key] for key in ((None, task, kind), (None, None, kind)) if key in d.logs),
        f"{task} started\n" if kind == "stdout" else "",
    )


def _frame(data: bytes, task: str, kind: str, offset: int) -> bytes:
    """One StreamFrame of the JSON (not plain) log encoding."""
    frame = {"Data": base64.b64encode(data).decode(), "File": f"alloc/logs/{task}.{kind}.0"}
    return json.dumps({**frame, "Offset": offset}).encode()


@dataclass
class LogFollow:
    """A followed log of a task: sent as it grows until the task is dead (or stopped).

    Nomad's fs logs endpoint with follow=true keeps the response open and streams what the
    task writes; the stream ends when the task is dead and everything was sent.
    """

    alloc: dict[str, Any]
    task: str
    kind: str
    start: int
    plain: bool

    def serve(self, handler: Any, d: NomadDouble) -> None:
        """Write the log with chunked encoding as it grows (runs on the request's thread)."""
        handler.send_response(200)
        ctype = "text/plain; charset=utf-8" if self.plain else "application/json"
        handler.send_header("Content-Type", ctype)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")  # the double ends the connection after it
        handler.end_headers()
        sent = self.start
        with d.cluster.lock:
            d.log_follows += 1
            number = d.log_follows
        try:
            while True:
                with d.cluster.lock:
                    if number <= d.log_break:  # cut: no last chunk, the connection just ends
                        with contextlib.suppress(OSError):
                            handler.connection.shutdown(socket.SHUT_RDWR)
                        return
                    data = _log_text(d, self.alloc, self.task, self.kind).encode()
                    dead = (self.alloc["TaskStates"] or {}).get(self.task, {}).get("State")
                    dead = dead == "dead" or self.alloc["DesiredStatus"] != "run"
                    if len(data) <= sent and not dead and not d._stopping.is_set():
                        d.cluster.changed.wait(0.5)
                        continue
                if len(data) > sent:
                    chunk = (
                        data[sent:]
                        if self.plain
                        else _frame(data[sent:], self.task, self.kind, len(data))
                    )
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    handler.wfile.flush()
                    sent = len(data)
                if dead or d._stopping.is_set():
                    handler.wfile.write(b"0\r\n\r\n")
                    return
        except OSError:
            pass  # the client went away
        finally:
            handler.close_connection = True


def _logs(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> Any:
    """GET /v1/client/fs/logs/{id}: plain text or base64 JSON frames (followed: streamed)."""
    alloc = lookup(d.cluster.allocs, alloc_id, "Unknown allocation")
    task, kind = q(query, "task"), q(query, "type")
    if task not in alloc["AllocatedResources"]["Tasks"]:
        raise ApiError(
            400, f"task group {alloc['TaskGroup']!r} does not have task with name {task!r}"
        )
    state = (alloc["TaskStates"] or {}).get(task) or {}
    if alloc.get("_run") is not None and not state.get("StartedAt"):
        # client/fs_endpoint.go: no logs before the task started, follow or not.
        raise ApiError(404, f'task "{task}" not started yet. No logs available')
    data = _log_text(d, alloc, task, kind).encode()
    offset = int(q(query, "offset", "0") or 0)
    start = max(len(data) - offset, 0) if q(query, "origin", "start") == "end" else offset
    plain = truthy(q(query, "plain", "false"))
    if truthy(q(query, "follow", "false")):
        return LogFollow(alloc, task, kind, min(start, len(data)), plain)
    chunk = data[start:]
    if plain:
        return RawBody(chunk, "text/plain; charset=utf-8")
    return RawBody(_frame(chunk, task, kind, len(data)) if chunk else b"", "application/json")


# -- variables (Nomad 1.4+) ----------------------------------------------------------------------


def _var_get(d: NomadDouble, query: dict, body: Any, path: str) -> dict:
    """GET /v1/var/{path}."""
    var = d.cluster.variables.get((ns(query), path))
    if var is None:
        raise ApiError(404, "variable not found")
    return var


def _cas_check(d: NomadDouble, query: dict, current: dict | None) -> None:
    """Check-and-set: cas=0 means must not exist; otherwise must equal ModifyIndex (409)."""
    if "cas" not in query:
        return
    cas = int(q(query, "cas"))
    if (current is None and cas != 0) or (current is not None and current["ModifyIndex"] != cas):
        raise ApiError(409, current or {})


def _var_put(d: NomadDouble, query: dict, body: Any, path: str) -> dict:
    """PUT /v1/var/{path}."""
    key = (ns(query), path)
    current = d.cluster.variables.get(key)
    _cas_check(d, query, current)
    items = (body or {}).get("Items")
    if not items or not all(isinstance(v, str) for v in items.values()):
        raise ApiError(400, "variable missing required Items object")
    now = _now()
    var = {
        "Namespace": key[0],
        "Path": path,
        "Items": dict(items),
        "CreateIndex": current["CreateIndex"] if current else 0,
        "CreateTime": current["CreateTime"] if current else now,
        "ModifyTime": now,
    }
    d.cluster.variables[key] = var
    d.cluster.touch("variables", var, "ModifyIndex", *(() if current else ("CreateIndex",)))
    d.cluster.commit(None)
    return var


def _var_delete(d: NomadDouble, query: dict, body: Any, path: str) -> RawBody:
    """DELETE /v1/var/{path} (empty 200 response)."""
    key = (ns(query), path)
    _cas_check(d, query, d.cluster.variables.get(key))
    if d.cluster.variables.pop(key, None) is not None:
        d.cluster.touch_table("variables")
        d.cluster.commit(None)
    return EMPTY


def _vars(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/vars (metadata only)."""
    prefix = q(query, "prefix")
    return [
        {k: v for k, v in var.items() if k != "Items"}
        for (namespace, path), var in sorted(d.cluster.variables.items())
        if path.startswith(prefix) and ns(query) in (namespace, "*")
    ]


def _var_index(d: NomadDouble, query: dict, path: str) -> int:
    """Variables.Read: the variable's ModifyIndex, else the variables table's."""
    var = d.cluster.variables.get((ns(query), path))
    return var["ModifyIndex"] if var else d.cluster.table("variables")


CLIENT_ROUTES: list[tuple[str, str, Callable[..., Any], Callable[..., int] | None]] = [
    ("GET", rf"/v1/client/allocation/{ID}/stats", _stats, None),
    ("GET", rf"/v1/client/fs/logs/{ID}", _logs, None),
    ("GET", r"/v1/var/(.+)", _var_get, _var_index),
    ("PUT", r"/v1/var/(.+)", _var_put, None),
    ("DELETE", r"/v1/var/(.+)", _var_delete, None),
    ("GET", r"/v1/vars", _vars, lambda d, query: d.cluster.table("variables")),
]
