"""What the build and run watchers share: the batch jobs they watch, by row id and by Nomad job
id, and reading one job's allocations."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from panel.drivers.nomad import NomadDriver, NomadError, NomadErrorKind

__all__ = ["BatchJobs"]


class _Watch(Protocol):
    job_id: str
    namespace: str


W = TypeVar("W", bound=_Watch)


class BatchJobs(Generic[W]):
    """Watched rows (builds or runs) by id and by their Nomad job (the follower's loop only)."""

    driver: NomadDriver | None

    def __init__(self) -> None:
        self.watched: dict[int, W] = {}
        self.by_job: dict[str, int] = {}

    def _track(self, row_id: int, watch: W) -> None:
        self.watched[row_id] = watch
        self.by_job[watch.job_id] = row_id

    def _forget(self, row_id: int) -> None:
        watch = self.watched.pop(row_id, None)
        if watch is not None:
            self.by_job.pop(watch.job_id, None)

    def resync_all(self) -> None:
        for watch in list(self.watched.values()):
            self.resync(watch)

    def resync(self, watch: W) -> None:
        raise NotImplementedError

    def _nomad(self, watch: W) -> NomadDriver:
        """The driver addressing the namespace of the watched job."""
        assert self.driver is not None
        return self.driver.in_namespace(watch.namespace)

    def _allocations(self, watch: W) -> list[dict[str, Any]]:
        """The job's allocations; none when Nomad has no such job (any more)."""
        try:
            return self._nomad(watch).allocations(watch.job_id)
        except NomadError as exc:
            if exc.kind != NomadErrorKind.NOT_FOUND:
                raise
            return []
