"""HTTP front of the Nomad double: routing, ACL, request validation, error injection.

Endpoints follow the Nomad HTTP API docs (https://developer.hashicorp.com/nomad/api-docs):
jobs (/api-docs/jobs), evaluations (/api-docs/evaluations), deployments
(/api-docs/deployments), allocations (/api-docs/allocations), nodes (/api-docs/nodes),
client stats and logs (/api-docs/client), variables (/api-docs/variables).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .jobspec import multierror, semantic_errors
from .scheduler import Scheduler
from .state import ApiError, HealthPolicy, _now
from .validation import validate_request

PERMISSION_DENIED = "Permission denied"  # structs.ErrPermissionDenied
TOKEN_NOT_FOUND = "ACL token not found"  # structs.ErrTokenNotFound
PUBLIC = {"/v1/jobs/parse"}  # no ACL check (no security in the spec either)


@dataclass
class RecordedRequest:
    """One request the double received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


class NomadDouble:
    """A fake Nomad server on 127.0.0.1 backed by a simulated cluster."""

    def __init__(
        self,
        spec_path: str | Path,
        token: str | None = None,
        nodes: list[tuple[int, int]] | None = None,
        health_policy: HealthPolicy | None = None,
        auto_advance: bool = True,
        progress_deadline_steps: int = 3,
        cas_conflict_status: int = 400,
        port: int = 0,
    ) -> None:
        """Configure the double; call start() (or use run_nomad_double)."""
        self.spec_path = str(Path(spec_path).resolve())
        self.token = token
        self.auto_advance = auto_advance
        self.cluster = Scheduler(
            nodes if nodes is not None else [(4000, 8192), (4000, 8192)],
            health_policy=health_policy,
            progress_deadline_steps=progress_deadline_steps,
            cas_conflict_status=cas_conflict_status,
        )
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.logs: dict[tuple[str | None, str | None, str], str] = {}
        self.stats_override: dict[str, dict[str, Any]] = {}
        self._failures: list[tuple[int, Any]] = []
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base address for nomad.Nomad(address=...)."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> NomadDouble:
        """Start serving in a daemon thread (same port again after stop())."""
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: clients now get connection errors ("unreachable")."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            for conn in list(self._connections):  # drop keep-alive connections too
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    # -- test controls ---------------------------------------------------------------------------

    def set_health(self, policy: HealthPolicy | bool) -> None:
        """Decide allocation health: callable(job_version_dict, alloc_dict) -> bool, or a bool."""
        self.cluster.health_policy = policy if callable(policy) else (lambda job, alloc: policy)

    def tick(self, steps: int = 1) -> None:
        """Advance the simulation (allocation start, health, deployment progress)."""
        self.cluster.step(steps)

    def fail_next(self, n: int = 1, status: int = 500, body: Any = "injected failure") -> None:
        """Answer the next n (valid, authorised) requests with status and body."""
        self._failures.extend([(status, body)] * n)

    def set_logs(
        self, text: str, type_: str = "stdout", alloc_id: str | None = None, task: str | None = None
    ) -> None:
        """Set log contents for an allocation/task (None matches any)."""
        self.logs[(alloc_id, task, type_)] = text

    def assert_no_violations(self) -> None:
        """Fail the test when any request did not match the API spec."""
        assert not self.violations, "Nomad API violations:\n" + "\n".join(self.violations)

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose method matches and path matches the regex."""
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # -- request handling --------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Process one request; returns (status, body, extra headers)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode(errors="replace")
        self.requests.append(RecordedRequest(method, path, query, body, dict(headers)))
        lower = {k.lower(): v for k, v in headers.items()}
        if self.token is not None and path not in PUBLIC:
            given = lower.get("x-nomad-token") or lower.get("authorization", "").removeprefix(
                "Bearer "
            )
            if not given:
                return 403, PERMISSION_DENIED, {}
            if given != self.token:
                return 403, TOKEN_NOT_FOUND, {}
        problems = validate_request(self.spec_path, method, path, query, headers, raw_body or None)
        if problems:
            for problem in problems:
                self.violations.append(f"{method} {path}: {problem}")
            return 400, "invalid request: " + "; ".join(problems), {}
        if self._failures:
            status, failure = self._failures.pop(0)
            return status, failure, {}
        try:
            if method == "GET" and self.auto_advance:
                self.cluster.step()
            with self.cluster.lock:
                status, result = self._route(method, path, query, body)
                return status, result, {"X-Nomad-Index": str(self.cluster.index)}
        except ApiError as exc:
            return exc.status, exc.message, {}

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        """Dispatch to the handler for method + path."""
        for verb, regex, func in ROUTES:
            match = re.fullmatch(regex, path)
            if verb == method and match:
                return 200, func(self, query, body, *match.groups())
        if any(re.fullmatch(regex, path) for _, regex, _ in ROUTES):
            raise ApiError(405, "Invalid method")
        raise ApiError(404, "Invalid URL path")


def _q(query: dict[str, list[str]], name: str, default: str = "") -> str:
    """First value of a query parameter."""
    return query.get(name, [default])[0]


def _truthy(value: str) -> bool:
    """Go strconv.ParseBool truthiness."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _ns(query: dict[str, list[str]]) -> str:
    """Namespace from the query string (Nomad default: 'default')."""
    return _q(query, "namespace") or "default"


def _public(obj: Any) -> Any:
    """Strip private bookkeeping keys (leading underscore) from a state object."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_public(v) for v in obj]
    return obj


# -- jobs ------------------------------------------------------------------------------------


def _register(d: NomadDouble, query: dict, body: Any, job_id: str | None = None) -> dict:
    """POST /v1/jobs and /v1/job/{id}."""
    if not isinstance(body, dict) or not body.get("Job"):
        raise ApiError(400, "Job must be specified")
    job = body["Job"]
    if job_id is not None and job.get("ID") != job_id:
        raise ApiError(400, "Job ID does not match name")
    namespace = body.get("Namespace") or job.get("Namespace") or _ns(query)
    return d.cluster.register(
        namespace, job, bool(body.get("EnforceIndex")), int(body.get("JobModifyIndex") or 0)
    )


def _list_stub(d: NomadDouble, job: dict) -> dict:
    """JobListStub with a JobSummary."""
    summary = {}
    for group in job["TaskGroups"]:
        allocs = [
            a
            for a in d.cluster.allocs.values()
            if a["JobID"] == job["ID"] and a["TaskGroup"] == group["Name"]
        ]
        summary[group["Name"]] = {
            "Queued": 0,
            "Complete": sum(a["ClientStatus"] == "complete" for a in allocs),
            "Failed": sum(a["ClientStatus"] == "failed" for a in allocs),
            "Running": sum(a["ClientStatus"] == "running" for a in allocs),
            "Starting": sum(a["ClientStatus"] == "pending" for a in allocs),
            "Lost": 0,
            "Unknown": 0,
        }
    keys = ("ID", "ParentID", "Name", "Namespace", "Datacenters", "Type", "Priority", "Stop")
    stub = {k: job.get(k) for k in keys}
    stub.update(
        Periodic=bool(job.get("Periodic")),
        ParameterizedJob=bool(job.get("ParameterizedJob")),
        Status=job["Status"],
        StatusDescription="",
        JobSummary={
            "JobID": job["ID"],
            "Namespace": job["Namespace"],
            "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": job["CreateIndex"],
            "ModifyIndex": job["ModifyIndex"],
        },
        CreateIndex=job["CreateIndex"],
        ModifyIndex=job["ModifyIndex"],
        JobModifyIndex=job["JobModifyIndex"],
        SubmitTime=job["SubmitTime"],
    )
    return stub


def _jobs(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/jobs."""
    prefix, namespace = _q(query, "prefix"), _ns(query)
    return [
        _list_stub(d, versions[-1])
        for (ns, job_id), versions in sorted(d.cluster.jobs.items())
        if job_id.startswith(prefix) and namespace in (ns, "*")
    ]


def _job(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """GET /v1/job/{id}."""
    return d.cluster.current(_ns(query), job_id)


def _versions(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """GET /v1/job/{id}/versions (newest first)."""
    versions = d.cluster.versions(_ns(query), job_id)
    return {"Versions": list(reversed(versions)), "Diffs": None}


def _deregister(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """DELETE /v1/job/{id}."""
    return d.cluster.deregister(_ns(query), job_id, _truthy(_q(query, "purge", "false")))


def _plan(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """POST /v1/job/{id}/plan."""
    if not isinstance(body, dict) or not body.get("Job"):
        raise ApiError(400, "Job must be specified")
    if body["Job"].get("ID") != job_id:
        raise ApiError(400, "Job ID does not match")
    namespace = body["Job"].get("Namespace") or _ns(query)
    return d.cluster.plan(namespace, body["Job"], bool(body.get("Diff")))


def _revert(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """POST /v1/job/{id}/revert."""
    if body.get("JobID") != job_id:
        raise ApiError(400, "Job ID does not match")
    prior = body.get("EnforcePriorVersion")
    return d.cluster.revert(_ns(query), job_id, int(body["JobVersion"]), prior)


def _validate(d: NomadDouble, query: dict, body: Any) -> dict:
    """POST /v1/validate/job: Nomad's semantic checks (the schema check already ran)."""
    errors = semantic_errors((body or {}).get("Job") or {})
    return {
        "DriverConfigValidated": True,
        "ValidationErrors": errors or None,
        "Error": multierror(errors) if errors else "",
        "Warnings": "",
    }


def _deployment_allocs(d: NomadDouble, query: dict, body: Any, dep_id: str) -> list:
    """GET /v1/deployment/allocations/{id}."""
    deployment = _lookup(d.cluster.deployments, dep_id, "deployment")
    return [_public(a) for a in d.cluster.allocs.values() if a["DeploymentID"] == deployment["ID"]]


def _of_job(kind: str) -> Callable[..., Any]:
    """Build GET /v1/job/{id}/<kind> handlers."""

    def handler(d: NomadDouble, query: dict, body: Any, job_id: str) -> Any:
        """List the job's allocations/evaluations/deployments (or its latest deployment)."""
        job = d.cluster.current(_ns(query), job_id)
        if kind == "allocations":
            found = [a for a in d.cluster.allocs.values() if a["JobID"] == job_id]
            return [_alloc_stub(a) for a in sorted(found, key=lambda a: -a["CreateIndex"])]
        if kind == "evaluations":
            found = [e for e in d.cluster.evals.values() if e["JobID"] == job_id]
            return sorted(found, key=lambda e: -e["CreateIndex"])
        deployments = d.cluster.job_deployments(job)
        if kind == "deployment":
            return _public(deployments[0]) if deployments else None
        return _public(deployments)

    return handler


# -- allocations, evaluations, deployments, nodes --------------------------------------------


def _alloc_stub(alloc: dict) -> dict:
    """AllocationListStub (no Job)."""
    return _public(alloc)


def _lookup(table: dict[str, dict], item_id: str, what: str) -> dict:
    """Find by full ID or unique prefix, else 404 '<what> not found'."""
    if item_id in table:
        return table[item_id]
    matches = [v for k, v in table.items() if k.startswith(item_id)]
    if len(matches) == 1:
        return matches[0]
    raise ApiError(404, f"{what} not found")


def _allocation(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> dict:
    """GET /v1/allocation/{id} (includes the Job)."""
    alloc = _lookup(d.cluster.allocs, alloc_id, "alloc")
    return {**_public(alloc), "Job": d.cluster.job_version(alloc)}


def _evaluation(d: NomadDouble, query: dict, body: Any, eval_id: str) -> dict:
    """GET /v1/evaluation/{id}."""
    return _lookup(d.cluster.evals, eval_id, "eval")


def _deployment(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """GET /v1/deployment/{id}."""
    return _public(_lookup(d.cluster.deployments, dep_id, "deployment"))


def _deployments(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/deployments."""
    found = sorted(d.cluster.deployments.values(), key=lambda x: -x["CreateIndex"])
    return [_public(x) for x in found if x["ID"].startswith(_q(query, "prefix"))]


def _promote(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """POST /v1/deployment/promote/{id}."""
    deployment = _lookup(d.cluster.deployments, dep_id, "deployment")
    groups = None if body.get("All") else list(body.get("Groups") or [])
    return d.cluster.promote(deployment, groups)


def _fail(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """POST /v1/deployment/fail/{id}: reverts when a group has AutoRevert."""
    return d.cluster.fail(_lookup(d.cluster.deployments, dep_id, "deployment"))


def _nodes(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/nodes (NodeResources only with resources=true)."""
    with_resources = _truthy(_q(query, "resources", "false"))
    hidden = {"Attributes"} | (set() if with_resources else {"NodeResources", "ReservedResources"})
    return [{k: v for k, v in _public(n).items() if k not in hidden} for n in d.cluster.nodes]


def _node(d: NomadDouble, query: dict, body: Any, node_id: str) -> dict:
    """GET /v1/node/{id}."""
    return _public(_lookup({n["ID"]: n for n in d.cluster.nodes}, node_id, "node"))


# -- client endpoints --------------------------------------------------------------------------


def _stats(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> dict:
    """GET /v1/client/allocation/{id}/stats: plausible numbers from the reservation."""
    alloc = _lookup(d.cluster.allocs, alloc_id, "Unknown allocation")
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


def _logs(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> Any:
    """GET /v1/client/fs/logs/{id}: plain text or base64 JSON frames."""
    alloc = _lookup(d.cluster.allocs, alloc_id, "Unknown allocation")
    task, kind = _q(query, "task"), _q(query, "type")
    if task not in alloc["AllocatedResources"]["Tasks"]:
        raise ApiError(
            400, f"task group {alloc['TaskGroup']!r} does not have task with name {task!r}"
        )
    text = next(
        (
            d.logs[key]
            for key in ((alloc["ID"], task, kind), (None, task, kind), (None, None, kind))
            if key in d.logs
        ),
        f"{task} started\n" if kind == "stdout" else "",
    )
    data = text.encode()
    offset = int(_q(query, "offset", "0") or 0)
    start = max(len(data) - offset, 0) if _q(query, "origin", "start") == "end" else offset
    chunk = data[start:]
    if _truthy(_q(query, "plain", "false")):
        return RawBody(chunk, "text/plain; charset=utf-8")
    frame = {
        "Data": base64.b64encode(chunk).decode(),
        "File": f"alloc/logs/{task}.{kind}.0",
        "Offset": len(data),
    }
    return RawBody(json.dumps(frame).encode() if chunk else b"", "application/json")


@dataclass
class RawBody:
    """A response body sent as-is."""

    data: bytes
    content_type: str


# -- variables (Nomad 1.4+) ----------------------------------------------------------------------


def _var_get(d: NomadDouble, query: dict, body: Any, path: str) -> dict:
    """GET /v1/var/{path}."""
    var = d.cluster.variables.get((_ns(query), path))
    if var is None:
        raise ApiError(404, "variable not found")
    return var


def _cas_check(d: NomadDouble, query: dict, current: dict | None) -> None:
    """Check-and-set: cas=0 means must not exist; otherwise must equal ModifyIndex (409)."""
    if "cas" not in query:
        return
    cas = int(_q(query, "cas"))
    if (current is None and cas != 0) or (current is not None and current["ModifyIndex"] != cas):
        raise ApiError(409, current or {})


def _var_put(d: NomadDouble, query: dict, body: Any, path: str) -> dict:
    """PUT /v1/var/{path}."""
    key = (_ns(query), path)
    current = d.cluster.variables.get(key)
    _cas_check(d, query, current)
    items = (body or {}).get("Items")
    if not items or not all(isinstance(v, str) for v in items.values()):
        raise ApiError(400, "variable missing required Items object")
    index, now = d.cluster.bump(), _now()
    var = {
        "Namespace": key[0],
        "Path": path,
        "Items": dict(items),
        "CreateIndex": current["CreateIndex"] if current else index,
        "CreateTime": current["CreateTime"] if current else now,
        "ModifyIndex": index,
        "ModifyTime": now,
    }
    d.cluster.variables[key] = var
    return var


def _var_delete(d: NomadDouble, query: dict, body: Any, path: str) -> RawBody:
    """DELETE /v1/var/{path} (empty 200 response)."""
    key = (_ns(query), path)
    _cas_check(d, query, d.cluster.variables.get(key))
    d.cluster.variables.pop(key, None)
    d.cluster.bump()
    return RawBody(b"", "application/json")


def _vars(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/vars (metadata only)."""
    prefix = _q(query, "prefix")
    return [
        {k: v for k, v in var.items() if k != "Items"}
        for (ns, path), var in sorted(d.cluster.variables.items())
        if path.startswith(prefix) and _ns(query) in (ns, "*")
    ]


def _leader(d: NomadDouble, query: dict, body: Any) -> str:
    """GET /v1/status/leader: the leader's RPC address as a JSON string.

    https://developer.hashicorp.com/nomad/api-docs/status#read-leader
    """
    return "127.0.0.1:4647"


ID = r"([^/]+)"
ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", r"/v1/jobs", _jobs),
    ("POST", r"/v1/jobs", _register),
    ("GET", rf"/v1/job/{ID}", _job),
    ("POST", rf"/v1/job/{ID}", _register),
    ("DELETE", rf"/v1/job/{ID}", _deregister),
    ("GET", rf"/v1/job/{ID}/versions", _versions),
    ("POST", rf"/v1/job/{ID}/plan", _plan),
    ("POST", rf"/v1/job/{ID}/revert", _revert),
    ("GET", rf"/v1/job/{ID}/allocations", _of_job("allocations")),
    ("GET", rf"/v1/job/{ID}/evaluations", _of_job("evaluations")),
    ("GET", rf"/v1/job/{ID}/deployments", _of_job("deployments")),
    ("GET", rf"/v1/job/{ID}/deployment", _of_job("deployment")),
    ("GET", rf"/v1/allocation/{ID}", _allocation),
    ("GET", rf"/v1/evaluation/{ID}", _evaluation),
    ("GET", r"/v1/deployments", _deployments),
    ("GET", rf"/v1/deployment/{ID}", _deployment),
    ("POST", rf"/v1/deployment/promote/{ID}", _promote),
    ("POST", rf"/v1/deployment/fail/{ID}", _fail),
    ("GET", rf"/v1/deployment/allocations/{ID}", _deployment_allocs),
    ("POST", r"/v1/validate/job", _validate),
    ("GET", r"/v1/nodes", _nodes),
    ("GET", rf"/v1/node/{ID}", _node),
    ("GET", rf"/v1/client/allocation/{ID}/stats", _stats),
    ("GET", rf"/v1/client/fs/logs/{ID}", _logs),
    ("GET", r"/v1/var/(.+)", _var_get),
    ("PUT", r"/v1/var/(.+)", _var_put),
    ("DELETE", r"/v1/var/(.+)", _var_delete),
    ("GET", r"/v1/vars", _vars),
    ("GET", r"/v1/status/leader", _leader),
]


class _Handler(BaseHTTPRequestHandler):
    """Translate http.server calls into NomadDouble.handle()."""

    double: NomadDouble
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        """Read the request, let the double handle it, write the answer."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        status, result, extra = self.double.handle(self.command, self.path, headers, raw)
        if isinstance(result, RawBody):
            data, ctype = result.data, result.content_type
        elif isinstance(result, str) and status >= 400:
            data, ctype = result.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(_public(result)).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Nomad-KnownLeader", "true")
        self.send_header("X-Nomad-LastContact", "0")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def setup(self) -> None:
        """Track the connection so stop() can drop it."""
        super().setup()
        self.double._connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        self.double._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@contextmanager
def run_nomad_double(**options: Any) -> Iterator[NomadDouble]:
    """Start a NomadDouble (options of NomadDouble.__init__; spec_path defaults to SPEC_PATH)."""
    from . import REFERENCE_DIR

    options.setdefault("spec_path", REFERENCE_DIR / "nomad-openapi.yaml")
    double = NomadDouble(**options).start()
    try:
        yield double
    finally:
        double.stop()
