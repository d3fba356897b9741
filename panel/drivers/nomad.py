"""The only code that talks to Nomad: python-nomad behind small, typed calls.

Every failure becomes a :class:`NomadError` whose message says what to do, with the original
exception kept as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import nomad
import requests
from nomad.api import exceptions as nx

from panel.config import Settings

__all__ = [
    "EventStream",
    "LogStream",
    "NomadDriver",
    "NomadError",
    "NomadErrorKind",
    "nomad_configured",
    "use_stored_connection",
]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10  # seconds per Nomad API call
_INVALID_500 = re.compile(r"validation failed|errors? occurred|invalid", re.IGNORECASE)


class NomadErrorKind:
    """Why a Nomad call failed (string constants, stored in deployment messages)."""

    UNREACHABLE = "unreachable"
    DENIED = "denied"
    INVALID = "invalid"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    SERVER = "server"


class NomadError(RuntimeError):
    """A Nomad call failed; ``kind`` says why and ``retryable`` whether trying later may help."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def retryable(self) -> bool:
        """Unreachable clusters and 5xx answers may recover; the rest need a person."""
        return self.kind in {NomadErrorKind.UNREACHABLE, NomadErrorKind.SERVER}


@dataclass(frozen=True)
class NomadConnection:
    """Where and how to reach Nomad, from settings (the same variables the nomad CLI reads)."""

    address: str
    token: str = ""
    namespace: str = "default"
    region: str = ""
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    skip_verify: bool = False
    # Used only to create team namespaces and team tokens (HELIOS_NOMAD_MANAGEMENT_TOKEN, else
    # the one provisioning handed over); never sent by the driver itself.
    management_token: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> NomadConnection:
        """The connection described by NOMAD_* settings; without NOMAD_ADDR, the one
        provisioning handed over (see :func:`use_stored_connection`), if any."""
        if not settings.nomad_addr and _stored_source is not None:
            stored = _stored_source(settings)
            if stored is not None:
                if settings.nomad_management_token:  # the environment wins here too
                    return replace(stored, management_token=settings.nomad_management_token)
                return stored
        return cls(
            address=settings.nomad_addr.rstrip("/"),
            token=settings.nomad_token,
            namespace=settings.nomad_namespace,
            region=settings.nomad_region,
            ca_cert=settings.nomad_cacert,
            client_cert=settings.nomad_client_cert,
            client_key=settings.nomad_client_key,
            skip_verify=settings.nomad_skip_verify,
            management_token=settings.nomad_management_token,
        )


# Where a process finds the connection provisioning handed over (panel.cluster_access installs
# it when the process starts): kept out of this module, which reads no database.
_stored_source: Callable[[Settings], NomadConnection | None] | None = None


def use_stored_connection(source: Callable[[Settings], NomadConnection | None] | None) -> None:
    """Make ``source(settings)`` the connection used when NOMAD_ADDR is not set."""
    global _stored_source
    _stored_source = source


def nomad_configured(settings: Settings) -> bool:
    """Whether Helios has a Nomad cluster to talk to (NOMAD_ADDR, or provisioning's)."""
    return bool(NomadConnection.from_settings(settings).address)


def _reason(response: Any) -> str:
    if isinstance(response, requests.Response):
        # All lines: Nomad's multi-errors put the reasons after a "1 error occurred:" line.
        text = " ".join(response.text.split())
        return text[:500] if text else f"HTTP {response.status_code}"
    return str(response).splitlines()[0][:500] if str(response) else type(response).__name__


class NomadDriver:
    """Typed calls to one Nomad cluster."""

    def __init__(self, connection: NomadConnection) -> None:
        if not connection.address:
            raise NomadError(
                NomadErrorKind.UNREACHABLE,
                "no Nomad cluster is configured: set NOMAD_ADDR, e.g. "
                "https://nomad.internal:4646, or provision the cluster (Hosts → Apply)",
            )
        self.connection = connection
        self._others: dict[str, NomadDriver] = {}  # in_namespace's drivers
        verify: bool | str = connection.ca_cert or not connection.skip_verify
        cert = (connection.client_cert, connection.client_key) if connection.client_cert else ()
        session = requests.Session()
        session.headers["User-Agent"] = "helios"
        self._api = nomad.Nomad(
            address=connection.address,
            token=connection.token or None,
            namespace=connection.namespace or None,
            region=connection.region or None,
            timeout=REQUEST_TIMEOUT,
            verify=verify,
            cert=cert,
            session=session,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> NomadDriver:
        """A driver for the cluster the settings point at."""
        return cls(NomadConnection.from_settings(settings))

    @classmethod
    def for_namespace(cls, settings: Settings, namespace: str) -> NomadDriver:
        """A driver for the settings' cluster whose calls address ``namespace`` (``*``: every
        namespace, for list endpoints and the event stream only)."""
        return cls(replace(NomadConnection.from_settings(settings), namespace=namespace))

    def in_namespace(self, namespace: str) -> NomadDriver:
        """A driver for the same cluster and token addressing ``namespace`` (kept per driver:
        one session per namespace)."""
        if not namespace or namespace == self.connection.namespace:
            return self
        if namespace not in self._others:
            self._others[namespace] = NomadDriver(replace(self.connection, namespace=namespace))
        return self._others[namespace]

    def _or_none(self, what: str, fetch: Callable[[], Any]) -> Any:
        """``fetch()``'s answer, or None when Nomad has no such thing (a 404)."""
        try:
            with self._call(what):
                return fetch()
        except NomadError as exc:
            if exc.kind == NomadErrorKind.NOT_FOUND:
                return None
            raise

    # -- namespaces ------------------------------------------------------------------------------

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        """A namespace (GET /v1/namespace/<name>), or None when Nomad has none by that name."""
        return self._or_none(f"namespace {name!r}", lambda: self._api.namespace.get_namespace(name))

    def apply_namespace(self, name: str, *, description: str, meta: dict[str, str]) -> None:
        """Create or update a namespace (POST /v1/namespace/<name>; needs a management token)."""
        body = {"Name": name, "Description": description, "Meta": meta}
        with self._call(f"creating namespace {name!r}"):
            self._api.namespace.request(name, method="post", json=body)

    def apply_acl_policy(self, name: str, *, description: str, rules: str) -> None:
        """Create or update an ACL policy (POST /v1/acl/policy/<name>; a management token)."""
        body = {"Name": name, "Description": description, "Rules": rules}
        with self._call(f"writing ACL policy {name!r}"):
            self._api.acl.request("policy", name, method="post", json=body)

    def create_acl_token(self, name: str, policies: Sequence[str]) -> dict[str, Any]:
        """A new client token holding ``policies`` (POST /v1/acl/token), SecretID included."""
        body = {"Name": name, "Type": "client", "Policies": list(policies)}
        with self._call(f"creating ACL token {name!r}"):
            return self._api.acl.request("token", method="post", json=body).json()

    # -- error translation -------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        address = self.connection.address
        try:
            yield
        except nx.URLNotAuthorizedNomadException as exc:
            raise NomadError(
                NomadErrorKind.DENIED,
                f"Nomad at {address} denied {what} ({_reason(exc.nomad_resp)}): set NOMAD_TOKEN "
                f"to a token whose policy allows it in namespace {self.connection.namespace!r}",
            ) from exc
        except nx.URLNotFoundNomadException as exc:
            raise NomadError(
                NomadErrorKind.NOT_FOUND, f"Nomad has no {what}: {_reason(exc.nomad_resp)}"
            ) from exc
        except nx.BadRequestNomadException as exc:
            reason = _reason(exc.nomad_resp)
            kind = NomadErrorKind.CONFLICT if "modify index" in reason else NomadErrorKind.INVALID
            raise NomadError(kind, f"Nomad refused {what}: {reason}") from exc
        except nx.VariableConflict as exc:
            # Not the response body: on a cas conflict Nomad returns the variable, values included.
            raise NomadError(
                NomadErrorKind.CONFLICT,
                f"Nomad refused {what}: the variable changed meanwhile (check-and-set index is "
                "stale); read it again and retry",
            ) from exc
        except nx.TimeoutNomadException as exc:  # a streaming request's connection error
            raise NomadError(NomadErrorKind.UNREACHABLE, _unreachable(address, exc)) from exc
        except nx.BaseNomadException as exc:
            response = exc.nomad_resp
            if isinstance(response, requests.Response) and "modify index" in response.text:
                raise NomadError(
                    NomadErrorKind.CONFLICT, f"Nomad refused {what}: {_reason(response)}"
                ) from exc
            if isinstance(response, requests.Response) and _INVALID_500.search(response.text):
                # Nomad answers job validation errors with 500: retrying cannot help.
                raise NomadError(
                    NomadErrorKind.INVALID, f"Nomad refused {what}: {_reason(response)}"
                ) from exc
            if isinstance(response, requests.Response):
                raise NomadError(
                    NomadErrorKind.SERVER,
                    f"Nomad failed {what} with HTTP {response.status_code}: {_reason(response)}",
                ) from exc
            raise NomadError(NomadErrorKind.UNREACHABLE, _unreachable(address, response)) from exc

    # -- jobs ----------------------------------------------------------------------------------

    def read_job(self, job_id: str) -> dict[str, Any] | None:
        """The registered job, or None when Nomad has none by that id."""
        return self._or_none(f"job {job_id!r}", lambda: self._api.job.get_job(job_id))

    def job_versions(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored version of a job, newest first."""
        with self._call(f"versions of job {job_id!r}"):
            return self._api.job.get_versions(job_id)["Versions"]

    def plan_job(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Nomad's dry run of ``body``, with the diff against what runs."""
        with self._call(f"a plan for job {job_id!r}"):
            return self._api.job.plan_job(job_id, body, diff=True)

    def register_job(
        self, job_id: str, body: dict[str, Any], *, modify_index: int
    ) -> dict[str, Any]:
        """Register ``body`` only if the job's modify index is still ``modify_index`` (0: new)."""
        guarded = {**body, "EnforceIndex": True, "JobModifyIndex": modify_index}
        with self._call(f"registering job {job_id!r}"):
            return self._api.job.register_job(job_id, guarded)

    def stop_job(self, job_id: str) -> None:
        """Stop a job (deregister without purge: its history stays readable); gone is fine."""
        try:
            with self._call(f"stopping job {job_id!r}"):
                self._api.job.deregister_job(job_id, purge=False)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.NOT_FOUND:
                raise

    def purge_job(self, job_id: str) -> None:
        """Stop a job and purge it at once (DELETE /v1/job/<id>?purge=true: no history left in
        Nomad, the name free); gone already is fine."""
        try:
            with self._call(f"purging job {job_id!r}"):
                self._api.job.deregister_job(job_id, purge=True)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.NOT_FOUND:
                raise

    def scale_job(self, job_id: str, group: str, count: int, *, message: str) -> dict[str, Any]:
        """Set one group's count (POST /v1/job/<id>/scale): Nomad stores a new job version with
        only that count changed and starts or stops allocations; ``message`` is kept in the
        job's scaling events (`nomad job scaling-events`)."""
        body = {"Count": count, "Target": {"Group": group}, "Message": message}
        with self._call(f"scaling group {group!r} of job {job_id!r} to {count}"):
            return self._api.job.request(job_id, "scale", json=body, method="post").json()

    def revert_job(self, job_id: str, version: int, *, current_version: int) -> dict[str, Any]:
        """Re-register version ``version`` if the job is still at ``current_version``."""
        with self._call(f"reverting job {job_id!r} to version {version}"):
            return self._api.job.revert_job(job_id, version, enforce_prior_version=current_version)

    # -- evaluations and deployments -------------------------------------------------------------

    def evaluation(self, eval_id: str) -> dict[str, Any]:
        """One evaluation (placement results live in FailedTGAllocs)."""
        # python-nomad adds the namespace to job endpoints only: evaluations get it here.
        with self._call(f"evaluation {eval_id}"):
            return self._api.evaluation.request(
                eval_id, method="get", params=self._namespace()
            ).json()

    def job_deployments(self, job_id: str) -> list[dict[str, Any]]:
        """Every deployment of a job."""
        with self._call(f"deployments of job {job_id!r}"):
            return self._api.job.get_deployments(job_id)

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """One deployment with its per-group canary and health counts."""
        with self._call(f"deployment {deployment_id}"):
            return self._api.deployment.get_deployment(deployment_id)

    def promote(self, deployment_id: str) -> dict[str, Any]:
        """Promote every canary of a deployment."""
        with self._call(f"promoting deployment {deployment_id}"):
            return self._api.deployment.promote_deployment_all(deployment_id)

    def fail(self, deployment_id: str) -> dict[str, Any]:
        """Mark a deployment failed (Nomad reverts when the group has AutoRevert)."""
        with self._call(f"failing deployment {deployment_id}"):
            return self._api.deployment.fail_deployment(deployment_id)

    # -- allocations ---------------------------------------------------------------------------

    def allocations(self, job_id: str) -> list[dict[str, Any]]:
        """The allocations of a job."""
        with self._call(f"allocations of job {job_id!r}"):
            return self._api.job.get_allocations(job_id)

    def all_allocations(self) -> list[dict[str, Any]]:
        """Every allocation of the namespace, as stubs (task states included): one request."""
        with self._call("allocations"):
            return self._api.allocations.get_allocations()

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        """One allocation, with its task states and events."""
        with self._call(f"allocation {alloc_id!r}"):
            return self._api.allocation.get_allocation(alloc_id)

    def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        """CPU and memory use of an allocation (answered by its client node)."""
        with self._call(f"stats of allocation {alloc_id}"):
            return self._api.client.allocation.read_allocation_stats(alloc_id)

    def read_log(
        self, alloc_id: str, task: str, *, stderr: bool = False, tail: int = 65_536
    ) -> str:
        """The last ``tail`` bytes of a task's log as they are now (not followed)."""
        params = {
            "task": task,
            "type": "stderr" if stderr else "stdout",
            "plain": "true",
            "origin": "end",
            "offset": tail,
        }
        with self._call(f"logs of allocation {alloc_id}"):
            response = self._api.client.stream_logs.request(alloc_id, method="get", params=params)
        return response.content.decode("utf-8", "replace")

    def stream_logs(
        self, alloc_id: str, task: str, *, stderr: bool = False, offset: int = 50_000
    ) -> Iterator[str]:
        """Follow a task's log from ``offset`` bytes before its end, one line at a time."""
        params = {
            "task": task,
            "type": "stderr" if stderr else "stdout",
            "follow": "true",
            "plain": "true",
            "origin": "end",
            "offset": offset,
        }
        with self._call(f"logs of allocation {alloc_id}"):
            response = self._api.client.stream_logs.request(
                alloc_id, method="get", params=params, stream=True
            )
        with contextlib.closing(response):
            yield from response.iter_lines(chunk_size=1, decode_unicode=True)

    def follow_log(
        self, alloc_id: str, task: str, *, stderr: bool = False, offset: int = 0,
        read_timeout: float = 300.0,
    ) -> LogStream:  # fmt: skip
        """Follow a task's log from byte ``offset`` of its start (``origin=start``).

        https://developer.hashicorp.com/nomad/api-docs/client#stream-logs — with ``follow``
        Nomad keeps the response open while the task runs and ends it once the task is dead and
        everything was sent. Raises NOT_FOUND while the task has not started (no logs yet);
        reading raises UNREACHABLE when the connection breaks or nothing arrives for
        ``read_timeout`` seconds.
        """
        params = {
            "task": task,
            "type": "stderr" if stderr else "stdout",
            "follow": "true",
            "plain": "true",
            "origin": "start",
            "offset": offset,
        }
        with self._call(f"logs of task {task!r} of allocation {alloc_id}"):
            response = self._api.client.stream_logs.request(
                alloc_id, method="get", params=params, stream=True,
                timeout=(REQUEST_TIMEOUT, read_timeout),
            )  # fmt: skip
        return LogStream(response, self.connection.address)

    # -- client nodes --------------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """Every client node, as stubs (ID, Name, Status, SchedulingEligibility, Drain …)."""
        with self._call("client nodes"):
            return self._api.nodes.request(method="get", params=self._namespace()).json()

    def node_by_name(self, name: str) -> dict[str, Any] | None:
        """The stub of the client node named ``name`` (a host's hostname); None when none is."""
        return next((node for node in self.nodes() if node.get("Name") == name), None)

    def node_allocations(self, node_id: str) -> list[dict[str, Any]]:
        """The allocations placed on a node (GET /v1/node/<id>/allocations)."""
        with self._call(f"allocations of node {node_id}"):
            return self._api.node.request(
                node_id, "allocations", method="get", params=self._namespace()
            ).json()

    def drain_node(self, node_id: str, *, deadline: int, meta: dict[str, str]) -> dict[str, Any]:
        """Start draining a node (POST /v1/node/<id>/drain): it takes no new allocations and
        its service allocations move to other nodes within ``deadline`` seconds; system jobs
        stay. ``meta`` is kept in the node's LastDrain (`nomad node status`)."""
        body = {
            "NodeID": node_id,
            "DrainSpec": {"Deadline": deadline * 1_000_000_000, "IgnoreSystemJobs": True},
            "Meta": meta,
        }
        with self._call(f"draining node {node_id}"):
            return self._api.node.request(
                node_id, "drain", json=body, method="post", params=self._namespace()
            ).json()

    def set_node_eligibility(self, node_id: str, *, eligible: bool) -> dict[str, Any]:
        """Let a node take new allocations again, or stop it from taking any
        (POST /v1/node/<id>/eligibility); what runs on it stays."""
        body = {"NodeID": node_id, "Eligibility": "eligible" if eligible else "ineligible"}
        with self._call(f"eligibility of node {node_id}"):
            return self._api.node.request(
                node_id, "eligibility", json=body, method="post", params=self._namespace()
            ).json()

    def watch_node(self, node_id: str, *, index: int, wait: int) -> tuple[dict[str, Any], int]:
        """(the node, its index) once it changed after ``index`` or ``wait`` seconds passed
        (a blocking query: GET /v1/node/<id>?index=…&wait=…)."""
        params = {"index": index, "wait": f"{wait}s", **self._namespace()}
        with self._call(f"node {node_id}"):
            response = self._api.node.request(
                node_id, method="get", params=params, timeout=(REQUEST_TIMEOUT, wait + 30)
            )
        return response.json(), int(response.headers.get("X-Nomad-Index") or 0)

    # -- variables -------------------------------------------------------------------------------

    def read_variable(self, path: str) -> dict[str, Any] | None:
        """A Nomad Variable, or None when there is none at ``path``."""
        namespace = self.connection.namespace
        return self._or_none(
            f"variable {path!r}", lambda: self._api.variable.get_variable(path, namespace=namespace)
        )

    def write_variable(self, path: str, items: dict[str, str], *, cas: int) -> dict[str, Any]:
        """Write a Nomad Variable if its ModifyIndex is still ``cas`` (0: must not exist)."""
        body = {"Path": path, "Items": items}
        # python-nomad 2.1 does not add the namespace to /v1/var (its endpoint is "var", not in
        # its list of namespaced endpoints): every variable call names it.
        with self._call(f"writing variable {path!r}"):
            return self._api.variable.create_variable(
                path, body, namespace=self.connection.namespace, cas=cas
            )

    def delete_variable(self, path: str, *, cas: int) -> None:
        """Delete a Nomad Variable if its ModifyIndex is still ``cas``."""
        with self._call(f"deleting variable {path!r}"):
            self._api.variable.delete_variable(path, namespace=self.connection.namespace, cas=cas)

    # -- the event stream ------------------------------------------------------------------------

    def open_event_stream(
        self, *, index: int, topics: Sequence[str], read_timeout: float
    ) -> EventStream:
        """Subscribe to Nomad's event stream in our namespace from ``index`` (0: its buffer).

        https://developer.hashicorp.com/nomad/api-docs/events — returns once Nomad answered
        (it sends a heartbeat at once); reading raises UNREACHABLE when nothing at all, not even
        a heartbeat, arrives for ``read_timeout`` seconds.
        """
        params = {"index": index, "topic": list(topics), **self._namespace()}
        with self._call("the event stream"):
            response = self._api.event.stream.request(
                method="get", params=params, stream=True, timeout=(REQUEST_TIMEOUT, read_timeout)
            )
        return EventStream(response, self.connection.address)

    def _namespace(self) -> dict[str, str]:
        """The namespace query parameter for endpoints python-nomad leaves without one."""
        return {"namespace": self.connection.namespace} if self.connection.namespace else {}

    # -- validation ------------------------------------------------------------------------------

    def validate_job(self, body: dict[str, Any]) -> list[str]:
        """Nomad's own check of a register body (POST /v1/validate/job): errors, [] when valid."""
        job = body.get("Job") or {}
        if self.connection.namespace and "Namespace" not in job:
            # Nomad validates in the job's own namespace, "default" when it names none; unlike
            # registering, validating does not take the namespace from the query string.
            job = {**job, "Namespace": self.connection.namespace}
        params = {"namespace": job["Namespace"]} if "Namespace" in job else {}
        what = f"validating job {job.get('ID', '')!r}"
        try:
            with self._call(what):
                response = self._api.validate.request(
                    "job", method="post", json={**body, "Job": job}, params=params
                )
        except NomadError as exc:
            if exc.kind == NomadErrorKind.INVALID:  # Nomad could not even read the body
                return [str(exc)]
            raise
        answer = response.json()
        errors = [str(error) for error in answer.get("ValidationErrors") or ()]
        return errors or ([answer["Error"]] if answer.get("Error") else [])

    # -- the token Helios uses -------------------------------------------------------------------

    def read_own_token(self, *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any] | None:
        """The ACL token in NOMAD_TOKEN as Nomad knows it; None when the cluster has no ACLs.

        A token Nomad does not know is DENIED; a TLS failure is UNREACHABLE with a message that
        names the TLS setting to fix (as for every call).
        """
        address = self.connection.address
        try:
            with self._call("reading the ACL token in NOMAD_TOKEN"):
                response = self._api.acl.request("token", "self", method="get", timeout=timeout)
        except NomadError as exc:
            answer = getattr(exc.__cause__, "nomad_resp", None)
            if isinstance(answer, requests.Response):
                if answer.status_code == 400 and _ACL_DISABLED in answer.text:
                    return None
                if exc.kind in {NomadErrorKind.DENIED, NomadErrorKind.NOT_FOUND}:
                    refused = self._refused(answer)
                    raise NomadError(NomadErrorKind.DENIED, refused) from exc.__cause__
            raise
        except OSError as exc:  # requests: a certificate or key file in the settings is missing
            raise NomadError(
                NomadErrorKind.UNREACHABLE,
                f"TLS with Nomad at {address} cannot start ({exc}): point NOMAD_CACERT, "
                "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY at readable PEM files",
            ) from exc
        return response.json()

    def _refused(self, answer: requests.Response) -> str:
        address = self.connection.address
        if not self.connection.token:
            return f"Nomad at {address} has ACLs enabled and needs a token: set NOMAD_TOKEN"
        return f"Nomad at {address} refused the token: check NOMAD_TOKEN ({_reason(answer)})"


_ACL_DISABLED = "ACL support disabled"  # GET /v1/acl/token/self answers 400 with this
_SSL_DETAIL = re.compile(r"^\[SSL: \w+\] | \(_ssl\.c:\d+\)$")


def _tls_failure(error: Any) -> ssl.SSLError | None:
    """The ssl error somewhere inside a requests/urllib3 error, if any."""
    pending, seen = [error], set()
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError):
            return item
        pending += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
    return None


def _tls_message(address: str, failure: ssl.SSLError) -> str:
    """What went wrong in the TLS handshake, and which setting fixes it."""
    detail = getattr(failure, "verify_message", "") or (
        _SSL_DETAIL.sub("", failure.args[1]) if len(failure.args) > 1 else str(failure)
    )
    reason = failure.reason or ""
    if reason == "CERTIFICATE_VERIFY_FAILED":
        fix = "set NOMAD_CACERT to the CA certificate that signed Nomad's certificate"
    elif "CERTIFICATE" in reason or "HANDSHAKE_FAILURE" in reason:
        fix = (
            "Nomad asks for a client certificate: set NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY "
            "to one its CA signed"
        )
    elif isinstance(failure, ssl.SSLEOFError):
        # How a refused client certificate often shows: the server's alert is lost when it
        # closes a connection whose request it never read (the close resets it).
        fix = (
            "Nomad ended the connection: if it requires client certificates, set "
            "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY to one its CA signed; else check NOMAD_CACERT"
        )
    else:
        fix = "check NOMAD_ADDR (https://), NOMAD_CACERT, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY"
    return f"TLS with Nomad at {address} failed ({detail}): {fix}"


class EventStream:
    """An open ``/v1/event/stream`` response, read one JSON line at a time."""

    def __init__(self, response: requests.Response, address: str) -> None:
        self._response = response
        self._address = address

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Each batch ``{"Index", "Events"}``, ``{}`` for a heartbeat, and ``{"Error": text}``
        when Nomad ends the stream with an error (e.g. "event dropped from buffer")."""
        try:
            for line in self._response.iter_lines(chunk_size=None):
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    yield {"Error": line.decode(errors="replace")[:500]}
                    return
        except (requests.RequestException, OSError) as exc:
            raise NomadError(NomadErrorKind.UNREACHABLE, _unreachable(self._address, exc)) from exc

    def close(self) -> None:
        """End the stream now, also from another thread blocked reading it."""
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._response.close()


class LogStream:
    """An open, followed ``/v1/client/fs/logs`` response (plain text), read in raw pieces."""

    def __init__(self, response: requests.Response, address: str) -> None:
        self._response = response
        self._address = address
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        """The log's bytes as they arrive; the iteration ends when Nomad ends the response, or
        quietly when :meth:`close` ended it."""
        try:
            for piece in self._response.iter_content(chunk_size=None):
                if piece:
                    yield piece
        except (requests.RequestException, OSError, AttributeError) as exc:
            if self._closed:  # urllib3 reads from a closed response as from None
                return
            raise NomadError(NomadErrorKind.UNREACHABLE, _unreachable(self._address, exc)) from exc
        finally:
            self._response.close()

    def close(self) -> None:
        """End the stream now, also from another thread blocked reading it: its socket is shut
        down, which wakes the reader, whose iteration then closes the response (closing it
        from here would wait for the reader's lock, i.e. for Nomad to send something)."""
        self._closed = True
        sock = _socket_of(self._response)
        if sock is None:
            self._response.close()
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed response reads from: its urllib3 connection's, or, when the server
    said ``Connection: close`` (urllib3 then lets the connection go), http.client's file's."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:  # HTTPResponse._fp (http.client) → .fp (BufferedReader) → .raw (SocketIO)
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _errors_within(error: Any) -> Iterator[BaseException]:
    """Every exception inside a requests/urllib3 error: causes, contexts, reasons, args."""
    pending, seen = [error], set()
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        pending += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]


# Words of the OS errors behind a failed connection, in the order they are checked.
_CONNECT_REASONS = (
    ("refused", "connection refused"),
    ("name or service not known", "its host name does not resolve"),
    ("temporary failure in name resolution", "its host name does not resolve"),
    ("nodename nor servname", "its host name does not resolve"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "the network is unreachable"),
    ("reset by peer", "it reset the connection"),
    ("remote end closed", "it closed the connection"),
    ("connection aborted", "it closed the connection"),
)


def _unreachable(address: str, error: Any) -> str:
    """Why Nomad did not answer, in a few words (never a library's repr), and what to do."""
    failure = _tls_failure(error)
    if failure is not None:
        return _tls_message(address, failure)
    reason = ""
    for item in _errors_within(error):
        if isinstance(item, requests.Timeout | TimeoutError | socket.timeout) or (
            "timed out" in str(item).lower()
        ):
            reason = "no answer in time"
            break
        text = str(item).lower()
        reason = next((words for key, words in _CONNECT_REASONS if key in text), "")
        if reason:
            break
    reason = reason or "the connection failed"
    return (
        f"Nomad at {address} is not answering ({reason}): start the cluster or point NOMAD_ADDR "
        "at a server"
    )
