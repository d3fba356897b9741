"""What the follower watches: registered deployments, found by job version or evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from panel.models import Deployment, utcnow

__all__ = ["Watch", "Watched"]


@dataclass
class Watch:
    """One registered deployment the follower waits on."""

    deployment_id: int
    app_id: int
    job_id: str
    version: int
    eval_id: str | None
    nomad_deployment_id: str | None
    deadline: float  # time.monotonic() at which HELIOS_DEPLOY_TIMEOUT ends it
    seen_index: int = 0  # ModifyIndex of the newest state of Nomad's deployment applied
    placed: bool = False  # Nomad's deployment placed at least one allocation
    progress: str = ""  # the latest progress line, written at most once a second
    written: str = ""
    written_at: float = float("-inf")
    namespace: str = ""  # of its job ("": the driver's, NOMAD_NAMESPACE)

    @classmethod
    def of(cls, deployment: Deployment, timeout: int) -> Watch:
        """A watch for a registered deployment row; its deadline counts from its start."""
        start: datetime = deployment.started_at or deployment.requested_at
        left = timeout - (utcnow() - start).total_seconds()
        return cls(
            deployment_id=deployment.id,
            app_id=deployment.app_id,
            job_id=deployment.app.slug,
            version=deployment.nomad_job_version,
            eval_id=deployment.nomad_eval_id,
            nomad_deployment_id=deployment.nomad_deployment_id,
            deadline=time.monotonic() + left,
            written=deployment.status_message,
            namespace=deployment.nomad_namespace or "",
        )


class Watched:
    """The watched deployments, by id and by (job, version) — each version is one deployment."""

    def __init__(self) -> None:
        self._by_id: dict[int, Watch] = {}
        self._by_version: dict[tuple[str, int], Watch] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, deployment_id: object) -> bool:
        return deployment_id in self._by_id

    def all(self) -> list[Watch]:
        """Every watch, oldest deployment first."""
        return [self._by_id[key] for key in sorted(self._by_id)]

    def ids(self) -> list[int]:
        """The ids of the watched deployments."""
        return sorted(self._by_id)

    def add(self, watch: Watch) -> None:
        """Watch a deployment."""
        self._by_id[watch.deployment_id] = watch
        self._by_version[(watch.job_id, watch.version)] = watch

    def remove(self, deployment_id: int) -> None:
        """Stop watching a deployment (finished, or ended elsewhere)."""
        watch = self._by_id.pop(deployment_id, None)
        if watch is not None:
            self._by_version.pop((watch.job_id, watch.version), None)

    def by_version(self, job_id: str, version: int) -> Watch | None:
        """The deployment that registered this version of this job, if watched."""
        return self._by_version.get((job_id, version))

    def by_evaluation(self, eval_id: str) -> Watch | None:
        """The deployment whose registration created this evaluation, if watched."""
        return next((w for w in self._by_id.values() if w.eval_id == eval_id), None)
