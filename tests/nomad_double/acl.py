"""ACL tokens of the Nomad double (https://developer.hashicorp.com/nomad/api-docs/acl/tokens).

ACLs are enabled when the double has at least one token. Tokens are given with the
``X-Nomad-Token`` header or ``Authorization: Bearer`` (https://developer.hashicorp.com/nomad/api-docs#acls).
Policies are stored (POST/GET /v1/acl/policy/{name}) but not enforced: a management token may
do everything; a client token everything but management-only operations (namespace writes,
ACL policy and token management, event topics other than jobs and nodes);
any token can additionally be denied calls with ``deny=[(method, path_regex), ...]``, which
then get Nomad's 403 "Permission denied".
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PERMISSION_DENIED = "Permission denied"  # structs.ErrPermissionDenied
TOKEN_NOT_FOUND = "ACL token not found"  # structs.ErrTokenNotFound
ACL_DISABLED = "ACL support disabled"  # nomad/acl_endpoint.go aclDisabled (a 400)
PUBLIC = {"/v1/jobs/parse"}  # no ACL check (no security in the spec either)
TOKEN_SELF = "/v1/acl/token/self"
# Endpoints whose objects live in a namespace (the ``namespace`` query parameter picks it).
NAMESPACED = re.compile(r"/v1/(jobs?|allocations|deployments?|evaluations?|vars?)(/.*)?")
POLICY_NOT_FOUND = "ACL policy not found"  # command/agent/acl_endpoint.go aclPolicyQuery
# Calls that need a management token (the "ACL Required" column of the namespaces, ACL
# policies and ACL tokens docs).
MANAGEMENT_ONLY = [
    ("POST", r"/v1/namespace(/[^/]+)?"),
    ("DELETE", r"/v1/namespace/[^/]+"),
    ("GET", r"/v1/acl/policy/[^/]+"),
    ("POST", r"/v1/acl/policy/[^/]+"),
    ("POST", r"/v1/acl/token"),
    ("GET", r"/v1/acl/token/(?!self$)[^/]+"),
]


@dataclass
class Token:
    """One ACL token (structs.ACLToken) and the calls it is denied."""

    secret: str
    name: str
    type: str = "client"
    policies: list[str] | None = None
    deny: list[tuple[str, str]] = field(default_factory=list)
    accessor: str = field(default_factory=lambda: str(uuid.uuid4()))
    create_time: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    )
    index: int = 1
    # The namespaces a client token's policy reaches (e.g. `namespace "acme" { policy = "read"
    # }`); None: every one. Elsewhere it is denied; with namespace=* lists hold only those.
    namespaces: list[str] | None = None

    def sees(self, namespace: str) -> bool:
        """Whether the token's policy reaches objects of ``namespace``."""
        return self.type == "management" or self.namespaces is None or namespace in self.namespaces

    def denies(self, method: str, path: str) -> bool:
        """Whether this token may not make the call."""
        rules = list(self.deny) + (MANAGEMENT_ONLY if self.type != "management" else [])
        return any(m == method and re.fullmatch(p, path) for m, p in rules)

    def as_json(self) -> dict[str, Any]:
        """The token as GET /v1/acl/token/self returns it (SecretID included, as Nomad does)."""
        digest = hashlib.sha256(f"{self.name}{self.type}{self.policies}".encode()).digest()
        return {
            "AccessorID": self.accessor,
            "SecretID": self.secret,
            "Name": self.name,
            "Type": self.type,
            "Policies": self.policies,
            "Roles": None,
            "Global": self.type == "management",
            "Hash": base64.b64encode(digest).decode(),
            "CreateTime": self.create_time,
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
        }


class Tokens:
    """The double's token table."""

    def __init__(self) -> None:
        """No tokens: ACLs disabled."""
        self.by_secret: dict[str, Token] = {}

    @property
    def enabled(self) -> bool:
        """ACLs are on when any token exists."""
        return bool(self.by_secret)

    def add(self, token: Token) -> Token:
        """Register a token."""
        self.by_secret[token.secret] = token
        return token

    def by_accessor(self, accessor: str) -> Token | None:
        """The token with this accessor ID, or None."""
        return next((t for t in self.by_secret.values() if t.accessor == accessor), None)

    def check(self, method: str, path: str, secret: str, namespace: str = "") -> str | None:
        """The 403 message for this call (in ``namespace``, from its query), or None when it
        is allowed."""
        if not self.enabled or path in PUBLIC:
            return None
        if not secret:
            return PERMISSION_DENIED
        token = self.by_secret.get(secret)
        if token is None:
            # The event stream turns every authentication failure into "Permission denied"
            # (nomad/event_endpoint.go, EventBroker.SubscribeWithACLCheck).
            return PERMISSION_DENIED if path == "/v1/event/stream" else TOKEN_NOT_FOUND
        if token.denies(method, path):
            return PERMISSION_DENIED
        scoped = NAMESPACED.fullmatch(path) and namespace != "*"
        return PERMISSION_DENIED if scoped and not token.sees(namespace or "default") else None

    def visible(self, secret: str, items: Any) -> Any:
        """A namespace=* list as the token may see it (objects of namespaces it reaches)."""
        token = self.by_secret.get(secret)
        if token is None or not isinstance(items, list):
            return items
        return [i for i in items if not isinstance(i, dict) or token.sees(i.get("Namespace", ""))]


def secret_of(headers: dict[str, str]) -> str:
    """The token a request carries (X-Nomad-Token, else Authorization: Bearer)."""
    lower = {k.lower(): v for k, v in headers.items()}
    return lower.get("x-nomad-token") or lower.get("authorization", "").removeprefix("Bearer ")
