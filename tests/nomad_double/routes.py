"""Cluster endpoints of the Nomad double and the index each one reports.

Endpoints follow the Nomad HTTP API docs (https://developer.hashicorp.com/nomad/api-docs):
jobs (/api-docs/jobs), evaluations (/api-docs/evaluations), deployments
(/api-docs/deployments), allocations (/api-docs/allocations), nodes (/api-docs/nodes),
namespaces (/api-docs/namespaces), ACL tokens (/api-docs/acl/tokens) and policies
(/api-docs/acl/policies), validate
(/api-docs/validate).

Each GET route that supports blocking queries names the index Nomad's RPC reports for it
(nomad/*_endpoint.go): the object's ``ModifyIndex`` for a single object that exists, else the
last index of its table (``state.Index("allocs")``...). Namespaced routes read the ``namespace``
query parameter (default ``default``; ``*`` lists every namespace).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .acl import ACL_DISABLED, POLICY_NOT_FOUND, TOKEN_NOT_FOUND, Token, secret_of
from .jobspec import multierror
from .state import ApiError, go_quote, namespace_object, public

if TYPE_CHECKING:
    from .server import NomadDouble


@dataclass
class RawBody:
    """A response body sent as-is."""

    data: bytes
    content_type: str


EMPTY = RawBody(b"", "application/json")


def q(query: dict[str, list[str]], name: str, default: str = "") -> str:
    """First value of a query parameter."""
    return query.get(name, [default])[0]


def truthy(value: str) -> bool:
    """Go strconv.ParseBool truthiness."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def ns(query: dict[str, list[str]]) -> str:
    """Namespace from the query string (Nomad default: 'default')."""
    return q(query, "namespace") or "default"


def in_ns(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """Whether obj belongs to the requested namespace (or all, with '*')."""
    return ns(query) in (obj["Namespace"], "*")


def lookup(table: dict[str, dict], item_id: str, what: str) -> dict:
    """Find by full ID or unique prefix, else 404 '<what> not found'."""
    if item_id in table:
        return table[item_id]
    matches = [v for k, v in table.items() if k.startswith(item_id)]
    if len(matches) == 1:
        return matches[0]
    raise ApiError(404, f"{what} not found")


def _modify_index(table: dict[str, dict], item_id: str, name: str, d: NomadDouble) -> int:
    """ModifyIndex of the object when found, else its table's index."""
    try:
        return lookup(table, item_id, "")["ModifyIndex"]
    except ApiError:
        return d.cluster.table(name)


# -- jobs ------------------------------------------------------------------------------------


def _register(d: NomadDouble, query: dict, body: Any, job_id: str | None = None) -> dict:
    """POST /v1/jobs and /v1/job/{id}."""
    if not isinstance(body, dict) or not body.get("Job"):
        raise ApiError(400, "Job must be specified")
    job = body["Job"]
    if job_id is not None and job.get("ID") != job_id:
        raise ApiError(400, "Job ID does not match name")
    namespace = body.get("Namespace") or job.get("Namespace") or ns(query)
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
            if a["JobID"] == job["ID"]
            and a["Namespace"] == job["Namespace"]
            and a["TaskGroup"] == group["Name"]
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
            "ModifyIndex": d.cluster.table("job_summary"),
        },
        CreateIndex=job["CreateIndex"],
        ModifyIndex=job["ModifyIndex"],
        JobModifyIndex=job["JobModifyIndex"],
        SubmitTime=job["SubmitTime"],
    )
    return stub


def _jobs(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/jobs."""
    return [
        _list_stub(d, versions[-1])
        for (_, job_id), versions in sorted(d.cluster.jobs.items())
        if job_id.startswith(q(query, "prefix")) and in_ns(versions[-1], query)
    ]


def _job(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """GET /v1/job/{id}."""
    return d.cluster.current(ns(query), job_id)


def _job_index(d: NomadDouble, query: dict, job_id: str) -> int:
    """Job.GetJob: the job's ModifyIndex, else the jobs table's."""
    versions = d.cluster.jobs.get((ns(query), job_id))
    return versions[-1]["ModifyIndex"] if versions else d.cluster.table("jobs")


def _versions(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """GET /v1/job/{id}/versions (newest first)."""
    versions = d.cluster.versions(ns(query), job_id)
    return {"Versions": list(reversed(versions)), "Diffs": None}


def _versions_index(d: NomadDouble, query: dict, job_id: str) -> int:
    """Job.GetJobVersions: the newest version's ModifyIndex, else the job_version table's."""
    versions = d.cluster.jobs.get((ns(query), job_id))
    return versions[-1]["ModifyIndex"] if versions else d.cluster.table("job_version")


def _deregister(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """DELETE /v1/job/{id}."""
    return d.cluster.deregister(ns(query), job_id, truthy(q(query, "purge", "false")))


def _plan(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """POST /v1/job/{id}/plan."""
    if not isinstance(body, dict) or not body.get("Job"):
        raise ApiError(400, "Job must be specified")
    if body["Job"].get("ID") != job_id:
        raise ApiError(400, "Job ID does not match")
    namespace = body["Job"].get("Namespace") or ns(query)
    return d.cluster.plan(namespace, body["Job"], bool(body.get("Diff")))


def _revert(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """POST /v1/job/{id}/revert."""
    if body.get("JobID") != job_id:
        raise ApiError(400, "Job ID does not match")
    prior = body.get("EnforcePriorVersion")
    return d.cluster.revert(ns(query), job_id, int(body["JobVersion"]), prior)


def _scale(d: NomadDouble, query: dict, body: Any, job_id: str) -> dict:
    """POST /v1/job/{id}/scale: set one group's count (https://developer.hashicorp.com/nomad/
    api-docs/jobs#scale-task-group)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Job scale request must be specified")
    group = (body.get("Target") or {}).get("Group")
    if not group:
        raise ApiError(400, "missing task group name for scaling action")
    count = body.get("Count")
    namespace = body.get("Namespace") or ns(query)
    return d.cluster.scale(namespace, job_id, group, count, body.get("Message") or "")


def _validate(d: NomadDouble, query: dict, body: Any) -> dict:
    """POST /v1/validate/job: Job.Validate's answer (the schema check already ran).

    Admission errors are reported, not raised: ValidationErrors lists them one by one, Error
    is their multierror text, DriverConfigValidated is always true (nomad/job_endpoint.go).
    """
    if not isinstance(body, dict) or not body.get("Job"):
        raise ApiError(400, "Job must be specified")
    errors = d.cluster.admission_errors(ns(query), body["Job"])
    return {
        "DriverConfigValidated": True,
        "ValidationErrors": errors or None,
        "Error": multierror(errors) if errors else "",
        "Warnings": "",
    }


def _of_job(kind: str) -> Callable[..., Any]:
    """Build GET /v1/job/{id}/<kind> handlers."""

    def handler(d: NomadDouble, query: dict, body: Any, job_id: str) -> Any:
        """List the job's allocations/evaluations/deployments (or its latest deployment)."""
        job = d.cluster.current(ns(query), job_id)
        mine = lambda o: o["JobID"] == job_id and o["Namespace"] == job["Namespace"]  # noqa: E731
        if kind == "allocations":
            found = [a for a in d.cluster.allocs.values() if mine(a)]
            return [public(a) for a in sorted(found, key=lambda a: -a["CreateIndex"])]
        if kind == "evaluations":
            found = [e for e in d.cluster.evals.values() if mine(e)]
            return sorted(found, key=lambda e: -e["CreateIndex"])
        deployments = d.cluster.job_deployments(job)
        if kind == "deployment":
            return public(deployments[0]) if deployments else None
        return public(deployments)

    return handler


def _table_index(*names: str) -> Callable[..., int]:
    """An index function reporting the last write to tables (list endpoints)."""
    return lambda d, query, *args: d.cluster.table(*names)


# -- allocations, evaluations, deployments, nodes --------------------------------------------


def _allocation(d: NomadDouble, query: dict, body: Any, alloc_id: str) -> dict:
    """GET /v1/allocation/{id} (includes the Job)."""
    alloc = lookup(d.cluster.allocs, alloc_id, "alloc")
    return {**public(alloc), "Job": d.cluster.job_version(alloc)}


def _allocations(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/allocations (AllocationListStub, oldest first)."""
    found = [a for a in d.cluster.allocs.values() if in_ns(a, query)]
    found = [a for a in found if a["ID"].startswith(q(query, "prefix"))]
    return [public(a) for a in sorted(found, key=lambda a: a["CreateIndex"])]


def _evaluation(d: NomadDouble, query: dict, body: Any, eval_id: str) -> dict:
    """GET /v1/evaluation/{id}."""
    return lookup(d.cluster.evals, eval_id, "eval")


def _evaluations(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/evaluations."""
    found = [e for e in d.cluster.evals.values() if in_ns(e, query)]
    return [e for e in found if e["ID"].startswith(q(query, "prefix"))]


def _deployment(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """GET /v1/deployment/{id}."""
    return public(lookup(d.cluster.deployments, dep_id, "deployment"))


def _deployments(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/deployments."""
    found = sorted(d.cluster.deployments.values(), key=lambda x: -x["CreateIndex"])
    return [public(x) for x in found if x["ID"].startswith(q(query, "prefix")) and in_ns(x, query)]


def _deployment_allocs(d: NomadDouble, query: dict, body: Any, dep_id: str) -> list:
    """GET /v1/deployment/allocations/{id}."""
    deployment = lookup(d.cluster.deployments, dep_id, "deployment")
    return [public(a) for a in d.cluster.allocs.values() if a["DeploymentID"] == deployment["ID"]]


def _promote(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """POST /v1/deployment/promote/{id}."""
    deployment = lookup(d.cluster.deployments, dep_id, "deployment")
    groups = None if body.get("All") else list(body.get("Groups") or [])
    return d.cluster.promote(deployment, groups)


def _fail(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """POST /v1/deployment/fail/{id}: reverts when a group has AutoRevert."""
    return d.cluster.fail(lookup(d.cluster.deployments, dep_id, "deployment"))


def _alloc_health(d: NomadDouble, query: dict, body: Any, dep_id: str) -> dict:
    """POST /v1/deployment/allocation-health/{id} (health_check = "manual")."""
    deployment = lookup(d.cluster.deployments, dep_id, "deployment")
    healthy = list(body.get("HealthyAllocationIDs") or [])
    return d.cluster.set_alloc_health(
        deployment, healthy, list(body.get("UnhealthyAllocationIDs") or [])
    )


def _nodes(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/nodes (NodeResources only with resources=true)."""
    with_resources = truthy(q(query, "resources", "false"))
    hidden = {"Attributes"} | (set() if with_resources else {"NodeResources", "ReservedResources"})
    return [{k: v for k, v in public(n).items() if k not in hidden} for n in d.cluster.nodes]


def _node(d: NomadDouble, query: dict, body: Any, node_id: str) -> dict:
    """GET /v1/node/{id}."""
    return public(lookup({n["ID"]: n for n in d.cluster.nodes}, node_id, "node"))


def _node_allocations(d: NomadDouble, query: dict, body: Any, node_id: str) -> list:
    """GET /v1/node/{id}/allocations (every namespace: the node endpoint is not namespaced)."""
    node = lookup({n["ID"]: n for n in d.cluster.nodes}, node_id, "node")
    found = [a for a in d.cluster.allocs.values() if a["NodeID"] == node["ID"]]
    return [public(a) for a in sorted(found, key=lambda a: a["CreateIndex"])]


def _node_drain(d: NomadDouble, query: dict, body: Any, node_id: str) -> dict:
    """POST /v1/node/{id}/drain: DrainSpec null ends a drain (MarkEligible makes the node
    eligible again); else the node turns ineligible and its allocations migrate."""
    node = lookup({n["ID"]: n for n in d.cluster.nodes}, node_id, "node")
    return d.cluster.drain_node(
        node, body.get("DrainSpec"), dict(body.get("Meta") or {}), bool(body.get("MarkEligible"))
    )


def _node_eligibility(d: NomadDouble, query: dict, body: Any, node_id: str) -> dict:
    """POST /v1/node/{id}/eligibility: the node takes new allocations, or not."""
    node = lookup({n["ID"]: n for n in d.cluster.nodes}, node_id, "node")
    return d.cluster.set_eligibility(node, str(body.get("Eligibility") or ""))


# -- namespaces and ACL ------------------------------------------------------------------------

NAMESPACE_NAME = re.compile(r"^[a-zA-Z0-9-]{1,128}$")  # structs.validNamespaceName


def _namespaces(d: NomadDouble, query: dict, body: Any) -> list:
    """GET /v1/namespaces (sorted by name)."""
    prefix = q(query, "prefix")
    return [v for k, v in sorted(d.cluster.namespaces.items()) if k.startswith(prefix)]


def _namespace(d: NomadDouble, query: dict, body: Any, name: str) -> dict:
    """GET /v1/namespace/{name}."""
    if name not in d.cluster.namespaces:
        raise ApiError(404, "Namespace not found")  # command/agent/namespace_endpoint.go
    return d.cluster.namespaces[name]


def _namespace_upsert(d: NomadDouble, query: dict, body: Any, name: str = "") -> RawBody:
    """POST /v1/namespace[/{name}]: create or update; an empty 200 with X-Nomad-Index."""
    if not isinstance(body, dict):
        raise ApiError(400, "EOF")
    given = body.get("Name", "")
    if name and given != name:
        raise ApiError(400, "Namespace name does not match request path")
    problems = []
    if not NAMESPACE_NAME.match(given):
        problems.append(
            f"invalid name {go_quote(given)}. Must match regex {NAMESPACE_NAME.pattern}"
        )
    if len(body.get("Description", "")) > 256:
        problems.append("description longer than 256")
    if problems:
        raise ApiError(500, f"Invalid namespace {go_quote(given)}: {multierror(problems)}")
    cluster = d.cluster
    namespace = cluster.namespaces.get(given) or namespace_object(given, "", 0)
    namespace.update(
        Description=body.get("Description", ""),
        Quota=body.get("Quota", ""),
        Meta=body.get("Meta"),
        Capabilities=body.get("Capabilities"),
    )
    digest = hashlib.blake2b(json.dumps(public(namespace), sort_keys=True).encode(), digest_size=32)
    namespace["Hash"] = base64.b64encode(digest.digest()).decode()
    created = () if given in cluster.namespaces else ("CreateIndex",)
    cluster.namespaces[given] = namespace
    cluster.touch("namespaces", namespace, "ModifyIndex", *created)
    cluster.commit(None)
    return EMPTY


def _require_acl(d: NomadDouble) -> None:
    """Nomad answers every ACL endpoint with 400 "ACL support disabled" when ACLs are off."""
    if not d.tokens.enabled:
        raise ApiError(400, ACL_DISABLED)


def _token_self(d: NomadDouble, query: dict, body: Any) -> dict:
    """GET /v1/acl/token/self: ACL.ResolveToken (nomad/acl_endpoint.go, agent/acl_endpoint.go).

    ACLs disabled -> 400 "ACL support disabled"; a token that does not resolve -> 404
    "ACL token not found" (the RPC finds no token; the HTTP layer answers 404).
    """
    _require_acl(d)
    token = d.tokens.by_secret.get(secret_of(d.current_headers()))
    if token is None:
        raise ApiError(404, TOKEN_NOT_FOUND)
    return token.as_json()


_POLICY_NAME = re.compile(r"[a-zA-Z0-9-]{1,128}")  # structs.validPolicyName


def _policy(d: NomadDouble, query: dict, body: Any, name: str) -> dict:
    """GET /v1/acl/policy/{name} (https://developer.hashicorp.com/nomad/api-docs/acl/policies)."""
    _require_acl(d)
    policy = d.acl_policies.get(name)
    if policy is None:
        raise ApiError(404, POLICY_NOT_FOUND)
    return policy


def _policy_upsert(d: NomadDouble, query: dict, body: Any, name: str) -> RawBody:
    """POST /v1/acl/policy/{name}: create or update (ACL.UpsertPolicies); answers no body."""
    _require_acl(d)
    if not isinstance(body, dict):
        raise ApiError(400, "Request decode failed: not a policy")
    if body.get("Name") != name:
        raise ApiError(400, "Policy name does not match request path")
    if not _POLICY_NAME.fullmatch(name):
        raise ApiError(500, f"invalid name {go_quote(name)}")
    if not str(body.get("Rules") or "").strip():
        raise ApiError(500, "failed to parse rules: policy has no rules")
    cluster = d.cluster
    existing = d.acl_policies.get(name)
    policy = {
        "Name": name,
        "Description": body.get("Description", ""),
        "Rules": body["Rules"],
        "JobACL": body.get("JobACL"),
        "CreateIndex": existing["CreateIndex"] if existing else 0,
        "ModifyIndex": 0,
    }
    cluster.touch_table("acl_policy")
    index = cluster.commit(None)
    policy["ModifyIndex"] = index
    policy["CreateIndex"] = policy["CreateIndex"] or index
    d.acl_policies[name] = policy
    return EMPTY


def _token_create(d: NomadDouble, query: dict, body: Any) -> dict:
    """POST /v1/acl/token: create a token (https://developer.hashicorp.com/nomad/api-docs/acl/tokens#create-token).

    Nomad makes the AccessorID and SecretID; a client token needs policies that exist.
    """
    _require_acl(d)
    if not isinstance(body, dict):
        raise ApiError(400, "Request decode failed: not a token")
    if body.get("AccessorID") or body.get("SecretID"):
        raise ApiError(400, "token accessor and secret are set by Nomad when creating a token")
    kind = body.get("Type") or "client"
    policies = list(body.get("Policies") or [])
    if kind not in ("client", "management"):
        raise ApiError(500, f"token type must be client or management: {go_quote(kind)}")
    if kind == "client" and not policies:
        raise ApiError(500, "client token missing policies")
    missing = [name for name in policies if name not in d.acl_policies]
    if missing:
        raise ApiError(500, f"cannot find policy {missing[0]}")
    token = Token(str(uuid.uuid4()), str(body.get("Name") or ""), kind, policies or None)
    d.cluster.touch_table("acl_token")
    token.index = d.cluster.commit(None)
    return d.tokens.add(token).as_json()


def _token(d: NomadDouble, query: dict, body: Any, accessor: str) -> dict:
    """GET /v1/acl/token/{accessor}: 404 "ACL token not found" when Nomad has none."""
    _require_acl(d)
    token = d.tokens.by_accessor(accessor)
    if token is None:
        raise ApiError(404, TOKEN_NOT_FOUND)
    return token.as_json()


def _leader(d: NomadDouble, query: dict, body: Any) -> str:
    """GET /v1/status/leader: the leader's RPC address as a JSON string.

    https://developer.hashicorp.com/nomad/api-docs/status#read-leader
    """
    return "127.0.0.1:4647"


ID = r"([^/]+)"
IndexFn = Callable[..., int] | None
ROUTES: list[tuple[str, str, Callable[..., Any], IndexFn]] = [
    ("GET", r"/v1/jobs", _jobs, _table_index("jobs", "job_summary")),
    ("POST", r"/v1/jobs", _register, None),
    ("GET", rf"/v1/job/{ID}", _job, _job_index),
    ("POST", rf"/v1/job/{ID}", _register, None),
    ("DELETE", rf"/v1/job/{ID}", _deregister, None),
    ("GET", rf"/v1/job/{ID}/versions", _versions, _versions_index),
    ("POST", rf"/v1/job/{ID}/plan", _plan, None),
    ("POST", rf"/v1/job/{ID}/revert", _revert, None),
    ("POST", rf"/v1/job/{ID}/scale", _scale, None),
    ("GET", rf"/v1/job/{ID}/allocations", _of_job("allocations"), _table_index("allocs")),
    ("GET", rf"/v1/job/{ID}/evaluations", _of_job("evaluations"), _table_index("evals")),
    ("GET", rf"/v1/job/{ID}/deployments", _of_job("deployments"), _table_index("deployment")),
    ("GET", rf"/v1/job/{ID}/deployment", _of_job("deployment"), _table_index("deployment")),
    ("GET", r"/v1/allocations", _allocations, _table_index("allocs")),
    (
        "GET",
        rf"/v1/allocation/{ID}",
        _allocation,
        lambda d, query, i: _modify_index(d.cluster.allocs, i, "allocs", d),
    ),
    ("GET", r"/v1/evaluations", _evaluations, _table_index("evals")),
    (
        "GET",
        rf"/v1/evaluation/{ID}",
        _evaluation,
        lambda d, query, i: _modify_index(d.cluster.evals, i, "evals", d),
    ),
    ("GET", r"/v1/deployments", _deployments, _table_index("deployment")),
    (
        "GET",
        rf"/v1/deployment/{ID}",
        _deployment,
        lambda d, query, i: _modify_index(d.cluster.deployments, i, "deployment", d),
    ),
    ("POST", rf"/v1/deployment/promote/{ID}", _promote, None),
    ("POST", rf"/v1/deployment/fail/{ID}", _fail, None),
    ("POST", rf"/v1/deployment/allocation-health/{ID}", _alloc_health, None),
    ("GET", rf"/v1/deployment/allocations/{ID}", _deployment_allocs, _table_index("allocs")),
    ("POST", r"/v1/validate/job", _validate, None),
    ("GET", r"/v1/nodes", _nodes, _table_index("nodes")),
    ("GET", rf"/v1/node/{ID}", _node, _table_index("nodes")),
    ("GET", rf"/v1/node/{ID}/allocations", _node_allocations, _table_index("allocs")),
    ("POST", rf"/v1/node/{ID}/drain", _node_drain, None),
    ("POST", rf"/v1/node/{ID}/eligibility", _node_eligibility, None),
    ("GET", r"/v1/namespaces", _namespaces, _table_index("namespaces")),
    (
        "GET",
        rf"/v1/namespace/{ID}",
        _namespace,
        lambda d, query, n: (
            d.cluster.namespaces.get(n, {}).get("ModifyIndex") or d.cluster.table("namespaces")
        ),
    ),
    ("POST", r"/v1/namespace", _namespace_upsert, None),
    ("POST", rf"/v1/namespace/{ID}", _namespace_upsert, None),
    ("GET", r"/v1/acl/token/self", _token_self, None),
    ("GET", rf"/v1/acl/token/{ID}", _token, None),
    ("POST", r"/v1/acl/token", _token_create, None),
    ("GET", rf"/v1/acl/policy/{ID}", _policy, None),
    ("POST", rf"/v1/acl/policy/{ID}", _policy_upsert, None),
    ("GET", r"/v1/status/leader", _leader, None),
]
