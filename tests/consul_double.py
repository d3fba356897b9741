"""A Consul HTTP API test double (a real HTTP server on 127.0.0.1) fed by the Nomad double.

It serves what Helios reads of Consul: ``GET /v1/health/state/<state>``, the list of
HealthCheck objects in a state
(https://developer.hashicorp.com/consul/api-docs/health#list-checks-in-state). What it lists
follows the Nomad double it is given, as a Consul agent next to each Nomad client would: every
Nomad node has its ``serfHealth`` node check, and every allocation Nomad runs (client status
``running``, desired ``run``) of a group with a ``consul`` service (Nomad's default provider)
has that service's instance registered with each of its checks, under the id Nomad gives it,
``_nomad-task-<alloc id>-group-<group>-<service>-<port label>``, and check ids
``_nomad-check-<hash>`` (MakeAllocServiceID and MakeCheckID in Nomad's
client/serviceregistration). A check passes until a test says otherwise.

ACLs (https://developer.hashicorp.com/consul/api-docs/api-structure#authentication): with
``token=`` set, a request must carry it in ``X-Consul-Token`` (or ``Authorization: Bearer``);
an unknown token is refused 403 "ACL not found"; no token is the anonymous one, whose reads of
the health endpoints are filtered to nothing (default policy deny) with
``X-Consul-Results-Filtered-By-ACLs: true``, as Consul filters rather than refuses list reads.
A query parameter the double does not model is answered 400 and recorded in ``violations``.

Test controls: ``set_check(alloc_id, status, output=None, name=None)``, ``stop()`` (then
unreachable) and ``start()`` again on the same port, ``requests`` (method, path, headers).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ConsulDouble", "run_consul_double", "service_id"]

STATES = ("passing", "warning", "critical")
DATACENTER = "dc1"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
SECOND_NS = 1_000_000_000
_REASONS = {"passing": "200 OK", "warning": "429 Too Many Requests"}


def service_id(alloc_id: str, group: str, service: str, port_label: str) -> str:
    """The id Nomad registers a group service's instance under in Consul."""
    return f"_nomad-task-{alloc_id}-group-{group}-{service}-{port_label}"


def _check_id(service: str, check: dict[str, Any]) -> str:
    """Nomad's check id: a hash of the service id and the check's definition."""
    text = json.dumps([service, check], sort_keys=True)
    return f"_nomad-check-{hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()}"


def _duration(nanoseconds: Any) -> str:
    """A Nomad duration (ns) as Consul writes one ("10s")."""
    return f"{int(nanoseconds or 0) / SECOND_NS:g}s"


@dataclass
class Seen:
    """One request the double received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class ConsulDouble:
    """A fake Consul HTTP API on 127.0.0.1 whose services are the Nomad double's allocations."""

    def __init__(self, nomad: Any, token: str | None = None, port: int = 0) -> None:
        """nomad: a started NomadDouble. token: turn ACLs on with this (management) token."""
        self.nomad = nomad
        self.token = token
        self.requests: list[Seen] = []
        self.violations: list[str] = []
        # (alloc id, check name or None for all) -> (status, output or None for the default)
        self._set: dict[tuple[str, str | None], tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base address, as HELIOS_CONSUL_ADDR."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> ConsulDouble:
        """Serve from a daemon thread (the same port again after stop())."""
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving: clients now get connection errors."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- test controls -----------------------------------------------------------------------

    def set_check(
        self, alloc_id: str, status: str, output: str | None = None, name: str | None = None
    ) -> None:
        """From now on the allocation's checks (or only the one called ``name``) are in
        ``status`` and say ``output`` (None: what Consul says of an HTTP check in it)."""
        assert status in STATES, status
        with self._lock:
            if name is None:
                for key in [key for key in self._set if key[0] == alloc_id]:
                    del self._set[key]
            self._set[(alloc_id, name)] = (status, output)

    # -- what Consul knows -------------------------------------------------------------------

    def checks(self) -> list[dict[str, Any]]:
        """Every HealthCheck Consul would list now: node checks, then service checks."""
        cluster = self.nomad.cluster
        with cluster.lock:
            found = [self._node_check(node["Name"]) for node in cluster.nodes]
            for alloc in sorted(cluster.allocs.values(), key=lambda a: a["ID"]):
                if alloc["ClientStatus"] == "running" and alloc["DesiredStatus"] == "run":
                    found += self._alloc_checks(alloc, cluster.job_version(alloc))
        return found

    def _node_check(self, node: str) -> dict[str, Any]:
        return {
            **self._check_base(node),
            "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
            "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
            "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
        }  # fmt: skip

    def _check_base(self, node: str) -> dict[str, Any]:
        """Fields of every HealthCheck (Consul CE: no Namespace or Partition)."""
        return {"Node": node, "Notes": "", "ExposedPort": 0, "Definition": {}, "CreateIndex": 10,
                "ModifyIndex": 10}  # fmt: skip

    def _alloc_checks(self, alloc: dict[str, Any], job: dict[str, Any]) -> list[dict[str, Any]]:
        group = next(g for g in job["TaskGroups"] if g["Name"] == alloc["TaskGroup"])
        ports = {p["Label"]: p for p in alloc["AllocatedResources"]["Shared"]["Ports"]}
        canary = bool((alloc.get("DeploymentStatus") or {}).get("Canary"))
        found = []
        for service in group.get("Services") or []:
            if (service.get("Provider") or "consul") != "consul":
                continue
            sid = service_id(alloc["ID"], group["Name"], service["Name"], service["PortLabel"])
            tags = service.get("CanaryTags") if canary and service.get("CanaryTags") else None
            for check in service.get("Checks") or []:
                port = ports.get(check.get("PortLabel") or service["PortLabel"]) or {}
                url = f"http://{port.get('HostIP', '127.0.0.1')}:{port.get('Value', 0)}"
                status, output = self._status(alloc["ID"], check["Name"])
                if output is None and check.get("Type") == "http":
                    said = _REASONS.get(status, "500 Internal Server Error")
                    output = f"HTTP GET {url}{check.get('Path', '')}: {said} Output: ok"
                found.append({
                    **self._check_base(alloc["NodeName"]),
                    "CheckID": _check_id(sid, check), "Name": check["Name"], "Status": status,
                    "Output": output or "", "ServiceID": sid, "ServiceName": service["Name"],
                    "ServiceTags": list(tags or service.get("Tags") or []),
                    "Type": check.get("Type", ""), "Interval": _duration(check.get("Interval")),
                    "Timeout": _duration(check.get("Timeout")),
                })  # fmt: skip
        return found

    def _status(self, alloc_id: str, name: str) -> tuple[str, str | None]:
        with self._lock:
            return (
                self._set.get((alloc_id, name))
                or self._set.get((alloc_id, None))
                or ("passing", None)
            )


class _Handler(BaseHTTPRequestHandler):
    double: ConsulDouble  # HTTP/1.0: a connection per request, so stop() is unreachable at once

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``double.requests``."""

    def do_GET(self) -> None:
        """Route a GET."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        self.double.requests.append(Seen("GET", parts.path, query, dict(self.headers.items())))
        prefix = "/v1/health/state/"
        if not parts.path.startswith(prefix):
            return self._answer(404, "Invalid URL path: not a recognized HTTP API endpoint\n")
        unknown = sorted(set(query) - {"dc"})
        if unknown:
            self.double.violations.append(f"GET {parts.path}: unmodelled parameters {unknown}")
            return self._answer(400, f"the double does not model {unknown}\n")
        if query.get("dc", [DATACENTER])[0] != DATACENTER:
            return self._answer(500, "No path to datacenter\n")
        state = parts.path.removeprefix(prefix)
        if state not in (*STATES, "any"):
            return self._answer(400, "Invalid check state\n")
        allowed = self._allowed()
        if allowed is None:
            return self._answer(403, "ACL not found\n")
        checks = [c for c in self.double.checks() if state in ("any", c["Status"])]
        headers = {"X-Consul-Index": "10", "X-Consul-KnownLeader": "true"}
        if not allowed:
            checks, headers[FILTERED_HEADER] = [], "true"
        return self._answer(200, checks, headers)

    def _allowed(self) -> bool | None:
        """True: the management token (or ACLs off); False: anonymous; None: unknown token."""
        if self.double.token is None:
            return True
        given = self.headers.get("X-Consul-Token") or ""
        bearer = self.headers.get("Authorization") or ""
        given = given or bearer.removeprefix("Bearer ").strip()
        if not given:
            return False
        return True if given == self.double.token else None

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        kind = "text/plain; charset=utf-8" if isinstance(body, str) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def run_consul_double(nomad: Any, **options: Any) -> Iterator[ConsulDouble]:
    """A started ConsulDouble following ``nomad`` (options of ConsulDouble), stopped after."""
    double = ConsulDouble(nomad, **options).start()
    try:
        yield double
    finally:
        double.stop()
