"""HTTP front of the Nomad double: routing, ACL, request validation, test controls.

The endpoints live in ``routes.py`` and ``client_routes.py``, the event stream in
``stream.py``/``events.py``, blocking queries in ``blocking.py``
(https://developer.hashicorp.com/nomad/api-docs).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .acl import PERMISSION_DENIED, TOKEN_SELF, Token, Tokens, secret_of
from .batch import Script, ScriptFn
from .blocking import block, query_options
from .client_routes import CLIENT_ROUTES, LogFollow
from .controls import Gate, Ticker
from .events import EventBroker, Subscription
from .routes import ROUTES, RawBody, q
from .scheduler import Scheduler
from .state import ApiError, HealthPolicy, public
from .stream import STREAM_PATH, allows, serve_stream, stream_request
from .validation import build_openapi, validate_request

ALL_ROUTES = ROUTES + CLIENT_ROUTES


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
        tick_interval: float | None = None,
        event_buffer_size: int = 100,
        heartbeat_interval: float = 30.0,
    ) -> None:
        """Configure the double; call start() (or use run_nomad_double).

        token: enable ACLs with this management token. tick_interval: advance the simulation
        every so many seconds from a thread of its own (None: only on reads with
        auto_advance, and tick()). event_buffer_size: Nomad's server option of that name.
        heartbeat_interval: seconds between event stream heartbeats (Nomad: 30).
        """
        self.spec_path = str(Path(spec_path).resolve())
        self.token = token
        self.auto_advance = auto_advance
        self.heartbeat_interval = heartbeat_interval
        self.cluster = Scheduler(
            nodes if nodes is not None else [(4000, 8192), (4000, 8192)],
            health_policy=health_policy,
            progress_deadline_steps=progress_deadline_steps,
            cas_conflict_status=cas_conflict_status,
        )
        self.broker = EventBroker(event_buffer_size)
        self.cluster.on_commit = self.broker.publish
        self.tokens = Tokens()
        self.acl_policies: dict[str, dict[str, Any]] = {}
        if token is not None:
            self.tokens.add(Token(token, "Bootstrap Token", "management"))
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.logs: dict[tuple[str | None, str | None, str], str] = {}
        self.log_break = 0  # followed logs opened before this count is raised are cut
        self.log_follows = 0  # followed logs opened so far
        self.stats_override: dict[str, dict[str, Any]] = {}
        self._failures: list[tuple[int, Any]] = []
        self._gates: list[Gate] = []
        self._gates_lock = threading.Lock()
        self._local = threading.local()
        self._stopping = threading.Event()
        self._ticker = Ticker(tick_interval, self.cluster.step) if tick_interval else None
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
        build_openapi(self.spec_path)  # seconds on first use: not inside a client's timeout
        self._stopping.clear()
        self.broker.stopped = False
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        if self._ticker is not None:
            self._ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving: clients now get connection errors ("unreachable")."""
        if self._ticker is not None:
            self._ticker.stop()
        self._stopping.set()
        with self.cluster.lock:
            self.cluster.changed.notify_all()  # blocked queries return now
        self.broker.stop()
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

    def add_node(self, pool: str = "default", cpu: int = 4000, mem: int = 8192) -> dict[str, Any]:
        """Add a ready client node in a node pool (e.g. "build"); returns the node."""
        return self.cluster.add_node(cpu, mem, pool)

    def set_batch_script(
        self,
        script: Script | ScriptFn,
        job_id: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Script what the tasks of new batch allocations do (see batch.TaskScript).

        script: {task: TaskScript} or a function of the job returning one. job_id: only that
        job; kind: only jobs whose Meta helios.kind is kind; neither: every batch job. The
        latest matching call wins; without one, build jobs run batch.default_build_script.
        """

        def matches(job: dict[str, Any]) -> bool:
            """Whether this script is for job."""
            meta_kind = (job.get("Meta") or {}).get("helios.kind")
            return (job_id is None or job["ID"] == job_id) and (kind is None or meta_kind == kind)

        make = script if callable(script) else (lambda job: dict(script))
        with self.cluster.lock:
            self.cluster.batch_scripts.insert(0, (matches, make))

    def tick(self, steps: int = 1) -> None:
        """Advance the simulation (allocation start, health, deployment progress)."""
        self.cluster.step(steps)

    def fail_next(self, n: int = 1, status: int = 500, body: Any = "injected failure") -> None:
        """Answer the next n (valid, authorised) requests with status and body."""
        self._failures.extend([(status, body)] * n)

    def set_logs(
        self, text: str, type_: str = "stdout", alloc_id: str | None = None, task: str | None = None
    ) -> None:
        """Set log contents for an allocation/task (None matches any); followed logs send
        what was added."""
        with self.cluster.lock:
            self.logs[(alloc_id, task, type_)] = text
            self.cluster.changed.notify_all()

    def break_log_streams(self) -> None:
        """Cut every followed log open now, abruptly (no last chunk): a broken connection."""
        with self.cluster.lock:
            self.log_break = self.log_follows
            self.cluster.changed.notify_all()

    def add_token(
        self,
        name: str = "helios",
        type_: str = "client",
        policies: list[str] | None = None,
        deny: list[tuple[str, str]] | None = None,
        secret: str | None = None,
    ) -> dict[str, Any]:
        """Add an ACL token (enables ACLs); deny=[(method, path_regex)] calls get 403.

        Returns the token as /v1/acl/token/self shows it (SecretID is the one to send).
        """
        with self.cluster.lock:
            token = Token(
                secret or str(uuid.uuid4()),
                name,
                type_,
                policies if policies is not None else (["helios"] if type_ == "client" else None),
                list(deny or []),
            )
            self.cluster.touch_table("acl_token")
            token.index = self.cluster.commit(None)
            return self.tokens.add(token).as_json()

    def hold(
        self, method: str, path_regex: str, when: str = "before", timeout: float = 60.0
    ) -> Gate:
        """Hold the first matching request inside the double until gate.release().

        when="before": before it is processed; when="after": processed, response not sent.
        """
        gate = Gate(method, path_regex, when, timeout)
        with self._gates_lock:
            self._gates.append(gate)
        return gate

    def drop_streams(self) -> int:
        """Close every open event stream connection abruptly; returns how many."""
        return self.broker.drop()

    def stall_streams(self, seconds: float) -> None:
        """Make every event stream send nothing at all (heartbeats included) for seconds."""
        self.broker.stall(seconds)

    @property
    def open_streams(self) -> int:
        """Event streams open now."""
        return self.broker.open_streams

    @property
    def streams_opened(self) -> int:
        """Event streams opened since the double was created."""
        return self.broker.opened

    def assert_no_violations(self) -> None:
        """Fail the test when any request did not match the API spec."""
        assert not self.violations, "Nomad API violations:\n" + "\n".join(self.violations)

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose method matches and path matches the regex."""
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # -- request handling --------------------------------------------------------------------------

    def current_headers(self) -> dict[str, str]:
        """Headers of the request this thread is handling."""
        return getattr(self._local, "headers", {})

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
        record = RecordedRequest(method, path, query, body, dict(headers))
        self.requests.append(record)
        self._local.headers = dict(headers)
        self._gate(method, path, "before", record)
        answer = self._process(method, path, query, headers, raw_body, body)
        self._gate(method, path, "after", record)
        return answer

    def _gate(self, method: str, path: str, when: str, record: RecordedRequest) -> None:
        """Hold the request if an armed gate catches it here."""
        with self._gates_lock:
            gate = next((g for g in self._gates if g.matches(method, path, when)), None)
            if gate is not None:
                gate.armed = False
        if gate is not None:
            gate.hold(record)

    def _process(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw_body: bytes,
        body: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        """ACL, validation, injected failures, then the route."""
        secret = secret_of(headers)
        if path != TOKEN_SELF:
            denied = self.tokens.check(method, path, secret, q(query, "namespace"))
            if denied:
                return 403, denied, {}
        try:
            if path == STREAM_PATH:
                return self._open_stream(method, query, secret)
            problems = validate_request(
                self.spec_path, method, path, query, headers, raw_body or None
            )
            if problems:
                return self._invalid(method, path, problems)
            if self._failures:
                status, failure = self._failures.pop(0)
                return status, failure, {}
            if method == "GET" and self.auto_advance:
                self.cluster.step()
            with self.cluster.lock:
                status, answer, extra = self._route(method, path, query, body)
            if q(query, "namespace") == "*":
                answer = self.tokens.visible(secret, answer)
            return status, answer, extra
        except ApiError as exc:
            return exc.status, exc.message, {}

    def _invalid(self, method: str, path: str, problems: list[str]) -> tuple[int, str, dict]:
        """Record spec violations and answer 400."""
        for problem in problems:
            self.violations.append(f"{method} {path}: {problem}")
        return 400, "invalid request: " + "; ".join(problems), {}

    def _open_stream(self, method: str, query: dict, secret: str) -> tuple[int, Any, dict]:
        """GET /v1/event/stream: check the query, subscribe (the handler then streams)."""
        if method != "GET":
            raise ApiError(405, "Invalid method")
        try:
            violations, index, topics = stream_request(query)
        except ApiError as exc:
            self.violations.append(f"GET {STREAM_PATH}: {exc.message}")
            raise
        if violations:
            return self._invalid(method, STREAM_PATH, violations)
        token = self.tokens.by_secret.get(secret)
        if self.tokens.enabled and (token is None or not allows(token.type, topics)):
            return 403, PERMISSION_DENIED, {}
        if self._failures:
            status, failure = self._failures.pop(0)
            return status, failure, {}
        namespace = q(query, "namespace") or "default"
        return 200, self.broker.subscribe(topics, namespace, index), {}

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any, dict]:
        """Dispatch to the handler for method + path (blocking when asked to)."""
        for verb, regex, func, index_of in ALL_ROUTES:
            match = re.fullmatch(regex, path)
            if verb != method or not match:
                continue
            args = match.groups()
            if index_of is None:
                result = func(self, query, body, *args)
                return 200, result, {"X-Nomad-Index": str(self.cluster.index)}
            min_index, wait = query_options(query)
            index = block(
                self.cluster,
                partial(index_of, self, query, *args),
                min_index,
                wait,
                self._stopping,
            )
            meta = {"X-Nomad-Index": str(index)}
            try:
                return 200, func(self, query, body, *args), meta
            except ApiError as exc:
                return exc.status, exc.message, meta
        if any(re.fullmatch(regex, path) for _, regex, _, _ in ALL_ROUTES):
            raise ApiError(405, "Invalid method")
        raise ApiError(404, "Invalid URL path")


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
        if isinstance(result, LogFollow):
            result.serve(self, self.double)
            return
        if isinstance(result, Subscription):
            serve_stream(self, self.double.broker, result, self.double.heartbeat_interval)
            return
        if isinstance(result, RawBody):
            data, ctype = result.data, result.content_type
        elif isinstance(result, str) and status >= 400:
            data, ctype = result.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(public(result)).encode(), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Nomad-KnownLeader", "true")
            self.send_header("X-Nomad-LastContact", "0")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away (e.g. killed while held)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def setup(self) -> None:
        """Track the connection so stop() can drop it; send answers at once, as Nomad (Go)
        does: without TCP_NODELAY, a body written after its headers waits ~40 ms for the
        client's delayed ACK."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.double._connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        self.double._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@contextmanager
def run_nomad_double(**options: Any) -> Iterator[NomadDouble]:
    """Start a NomadDouble (options of NomadDouble.__init__; spec_path: the pinned spec)."""
    from .reference import NOMAD_SPEC, reference_file

    if "spec_path" not in options:
        options["spec_path"] = reference_file(NOMAD_SPEC)
    double = NomadDouble(**options).start()
    try:
        yield double
    finally:
        double.stop()
