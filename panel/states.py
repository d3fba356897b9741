"""The states and ranks Helios's records move through (pure: the core and the models share them)."""

from __future__ import annotations

import enum

__all__ = ["BuildStatus", "DeploymentStatus", "ProvisionStatus", "Role", "RunStatus", "TokenScope"]


class Role(enum.StrEnum):
    """What a member may do in a team, strongest first."""

    OWNER = "owner"
    ADMIN = "admin"
    DEPLOYER = "deployer"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher may do more: viewer 0, deployer 1, admin 2, owner 3."""
        return _ROLE_ORDER.index(self)


_ROLE_ORDER = (Role.VIEWER, Role.DEPLOYER, Role.ADMIN, Role.OWNER)


class DeploymentStatus(enum.StrEnum):
    """Where a deployment is on its way from request to outcome."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERTED = "reverted"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen to the deployment."""
        return self not in {DeploymentStatus.QUEUED, DeploymentStatus.RUNNING}


class BuildStatus(enum.StrEnum):
    """Where a build of one commit is: queued, running in Nomad, then how it ended."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer push came before it started
    CANCELLED = "cancelled"  # stopped while it ran: a newer push, or a person

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen to the build."""
        return self not in {BuildStatus.QUEUED, BuildStatus.RUNNING}


class RunStatus(enum.StrEnum):
    """Where a one-off command (``helios run``) is: queued, running in Nomad, then how it ended."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the command exited 0
    FAILED = "failed"  # it exited non-zero, or never ran (the message says why)
    TIMED_OUT = "timed_out"  # still running at its timeout: stopped

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen to the run."""
        return self not in {RunStatus.QUEUED, RunStatus.RUNNING}


class TokenScope(enum.StrEnum):
    """What an API token may do."""

    READ = "read"
    DEPLOY = "deploy"
    ADMIN = "admin"


class ProvisionStatus(enum.StrEnum):
    """Where a provisioning run is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended."""
        return self in {ProvisionStatus.SUCCEEDED, ProvisionStatus.FAILED}
