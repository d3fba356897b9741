"""The only code that talks to Nomad: python-nomad behind small, typed calls.

Every failure becomes a :class:`NomadError` whose message says what to do, with the original
exception kept as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nomad
import requests
from nomad.api import exceptions as nx

from panel.config import Settings

__all__ = ["NomadDriver", "NomadError", "NomadErrorKind"]

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

    @classmethod
    def from_settings(cls, settings: Settings) -> NomadConnection:
        """The connection described by NOMAD_* settings."""
        return cls(
            address=settings.nomad_addr.rstrip("/"),
            token=settings.nomad_token,
            namespace=settings.nomad_namespace,
            region=settings.nomad_region,
            ca_cert=settings.nomad_cacert,
            client_cert=settings.nomad_client_cert,
            client_key=settings.nomad_client_key,
            skip_verify=settings.nomad_skip_verify,
        )


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
                "no Nomad cluster is configured: set NOMAD_ADDR, e.g. https://nomad.internal:4646",
            )
        self.connection = connection
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
            raise NomadError(
                NomadErrorKind.UNREACHABLE,
                f"Nomad is not reachable at {address} ({_reason(exc)}): start the cluster "
                "or point NOMAD_ADDR at a server",
            ) from exc
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
            raise NomadError(
                NomadErrorKind.UNREACHABLE,
                f"Nomad is not reachable at {address} ({_reason(response)}): start the cluster "
                "or point NOMAD_ADDR at a server",
            ) from exc

    # -- jobs ----------------------------------------------------------------------------------

    def read_job(self, job_id: str) -> dict[str, Any] | None:
        """The registered job, or None when Nomad has none by that id."""
        try:
            with self._call(f"job {job_id!r}"):
                return self._api.job.get_job(job_id)
        except NomadError as exc:
            if exc.kind == NomadErrorKind.NOT_FOUND:
                return None
            raise

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

    def revert_job(self, job_id: str, version: int, *, current_version: int) -> dict[str, Any]:
        """Re-register version ``version`` if the job is still at ``current_version``."""
        with self._call(f"reverting job {job_id!r} to version {version}"):
            return self._api.job.revert_job(job_id, version, enforce_prior_version=current_version)

    # -- evaluations and deployments -------------------------------------------------------------

    def evaluation(self, eval_id: str) -> dict[str, Any]:
        """One evaluation (placement results live in FailedTGAllocs)."""
        with self._call(f"evaluation {eval_id}"):
            return self._api.evaluation.get_evaluation(eval_id)

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

    def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        """CPU and memory use of an allocation (answered by its client node)."""
        with self._call(f"stats of allocation {alloc_id}"):
            return self._api.client.allocation.read_allocation_stats(alloc_id)

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

    # -- variables -------------------------------------------------------------------------------

    def read_variable(self, path: str) -> dict[str, Any] | None:
        """A Nomad Variable, or None when there is none at ``path``."""
        try:
            with self._call(f"variable {path!r}"):
                return self._api.variable.get_variable(path)
        except NomadError as exc:
            if exc.kind == NomadErrorKind.NOT_FOUND:
                return None
            raise

    def write_variable(self, path: str, items: dict[str, str], *, cas: int) -> dict[str, Any]:
        """Write a Nomad Variable if its ModifyIndex is still ``cas`` (0: must not exist)."""
        body = {"Path": path, "Items": items}
        with self._call(f"writing variable {path!r}"):
            return self._api.variable.create_variable(path, body, cas=cas)

    def delete_variable(self, path: str, *, cas: int) -> None:
        """Delete a Nomad Variable if its ModifyIndex is still ``cas``."""
        with self._call(f"deleting variable {path!r}"):
            self._api.variable.delete_variable(path, cas=cas)
