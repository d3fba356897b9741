"""GitHub webhook deliveries: the signature check and what a delivery asks of an app (pure).

GitHub signs each delivery with the hook's secret: ``X-Hub-Signature-256: sha256=<hex>``, an
HMAC-SHA256 over the exact bytes of the body. :func:`signature_matches` checks that in constant
time and refuses anything else (no header, ``sha1=`` only, uppercase or truncated hex).
:func:`decide` reads a verified delivery and says what it means for one app: build a commit of
its tracked branch, answer a ping, or nothing (with the reason, kept with the delivery).
Repositories are matched by GitHub's numeric id, which survives renames and cannot be spoofed
by a look-alike name. Only the payload fields Helios uses are modelled; the rest is ignored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "Decision",
    "Intent",
    "PushPayload",
    "decide",
    "sign",
    "signature_matches",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps a delivery's payload at 25 MB
_SIGNATURE_RE = re.compile(r"sha256=([0-9a-f]{64})")
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"


def sign(secret: str, body: bytes) -> str:
    """The header value GitHub sends for ``body`` under ``secret``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is GitHub's signature of exactly ``body`` under ``secret``.

    An empty secret never matches (a hook without a secret is refused, not trusted). The
    header must be ``sha256=`` and 64 lowercase hex digits, as GitHub writes it; the digests
    are compared in constant time.
    """
    if not secret or not header or not _SIGNATURE_RE.fullmatch(header):
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"), header.encode("ascii"))


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Repository(_Payload):
    """The repository a delivery is about."""

    id: int = Field(gt=0)
    full_name: str = ""


class PushPayload(_Payload):
    """The fields of a ``push`` delivery that decide a build."""

    ref: str
    after: str
    deleted: bool = False
    repository: Repository


class Intent(enum.StrEnum):
    """What a delivery asks of an app."""

    BUILD = "build"  # build this commit of the tracked branch, then deploy it
    PONG = "pong"  # answer a ping
    NOTHING = "nothing"  # acknowledged, nothing to do (the reason says why)


@dataclass(frozen=True)
class Decision:
    """What to do with a verified delivery for one app, and why."""

    intent: Intent
    reason: str
    git_sha: str = ""
    branch: str = ""


def decide(event: str, payload: Any, *, repo_id: int, branch: str) -> Decision:
    """What ``event`` with ``payload`` asks of an app tracking ``branch`` of ``repo_id``.

    Only a push of a new commit to the tracked branch of that very repository builds; tags,
    deleted branches, other branches and other events are acknowledged and do nothing.
    """
    if event == "ping":
        return Decision(Intent.PONG, "GitHub's ping: the hook reaches Helios")
    if event != "push":
        return Decision(Intent.NOTHING, f"{event!r} deliveries change nothing (only pushes do)")
    try:
        push = PushPayload.model_validate(payload)
    except ValidationError:
        return Decision(Intent.NOTHING, "a push without the fields a build needs (ref, after)")
    if push.repository.id != repo_id:
        return Decision(Intent.NOTHING, "a push to another repository than the app's")
    if not push.ref.startswith(BRANCH_PREFIX):
        return Decision(Intent.NOTHING, f"{push.ref} is not a branch: tags are not deployed")
    pushed = push.ref.removeprefix(BRANCH_PREFIX)
    if push.deleted or push.after == _ZERO_SHA:
        return Decision(Intent.NOTHING, f"branch {pushed} was deleted: nothing to build")
    if pushed != branch:
        return Decision(Intent.NOTHING, f"a push to {pushed}, not to the tracked branch {branch}")
    if not _SHA_RE.fullmatch(push.after):
        return Decision(Intent.NOTHING, "the pushed commit id is not 40 lowercase hex digits")
    return Decision(Intent.BUILD, f"a push to {branch}", git_sha=push.after, branch=branch)
