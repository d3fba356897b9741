"""Versioned events: ``v1.<noun>.<verb>``, each with a JSON schema, recorded and published.

Emitting an event writes an ``Event`` row (the audit log reads those) and publishes the same
document on Redis (live pages and notifications read that). The row is the record; a Redis
outage is logged and does not lose it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

import jsonschema
import redis

from panel.db import database
from panel.models import Event, Notifier, NotifierDelivery, Team, User, utcnow
from panel.notify import enqueue_delivery

__all__ = [
    "CHANNEL",
    "NOTICE_PREFIX",
    "SCHEMAS",
    "SUBJECT_RE",
    "EventError",
    "emit",
    "notify",
    "prepare_validators",
    "publish",
    "schema_for",
]

logger = logging.getLogger(__name__)

CHANNEL = "helios:events"
SUBJECT_RE = re.compile(r"^v[1-9][0-9]*\.[a-z][a-z_]*\.[a-z][a-z_]*$")

_SLUG = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}
_ID = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_HOST_IDS = {"type": "array", "items": _ID}
# SSH host key fingerprints as ssh-keygen -l shows them: "ED25519 SHA256:<43 base64 chars>".
_FINGERPRINTS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[A-Z0-9-]{2,12} SHA256:[A-Za-z0-9+/]{43}$"},
    "maxItems": 16,
}
_BUILD = {
    "app": _SLUG,
    "app_id": _ID,
    "build_id": _ID,
    "build": {"type": "integer", "minimum": 1},
    "git_sha": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
}
_BUILD_KEYS = ["app", "app_id", "build_id", "build", "git_sha"]
_REASON = {"type": "string", "maxLength": 2000}
_RUN = {"app": _SLUG, "app_id": _ID, "run_id": _ID, "release": {"type": "integer", "minimum": 1}}
_RUN_KEYS = ["app", "app_id", "run_id", "release"]
_NOTIFIER_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_DEPLOYMENT = {
    "app": _SLUG,
    "app_id": _ID,
    "deployment_id": _ID,
    "release_id": _ID,
    "release": {"type": "integer", "minimum": 1},
}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "v1.app.created": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "team": _SLUG,
            "source": {"enum": ["image", "repo"]},
        },
        ["app", "app_id", "team", "source"],
    ),
    "v1.app.deleted": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "team": _SLUG,
            "by": {"type": "string", "minLength": 1, "maxLength": 300},
            "retention_days": {"type": "integer", "minimum": 0},
        },
        ["app", "app_id", "team", "by", "retention_days"],
    ),
    "v1.app.scaled": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "from": {"type": "integer", "minimum": 1},
            "to": {"type": "integer", "minimum": 1},
            "deployment_id": _ID,
            "release": {"type": "integer", "minimum": 1},
        },
        ["app", "app_id", "from", "to", "deployment_id", "release"],
    ),
    "v1.app.stopped": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "by": {"type": "string", "minLength": 1, "maxLength": 300},
            "release": {"type": "integer", "minimum": 1},
        },
        ["app", "app_id", "by", "release"],
    ),
    "v1.app.started": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "deployment_id": _ID,
            "release": {"type": "integer", "minimum": 1},
            "reason": {"type": "string", "pattern": "^[a-z]{1,16}$"},
        },
        ["app", "app_id", "deployment_id", "release", "reason"],
    ),
    "v1.app.down": _object(
        {"app": _SLUG, "app_id": _ID, "reason": _REASON, "wanted": _COUNT, "healthy": _COUNT},
        ["app", "app_id", "reason", "wanted", "healthy"],
    ),
    "v1.app.recovered": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "reason": _REASON,
            "wanted": _COUNT,
            "healthy": _COUNT,
            "state": {"enum": ["healthy", "degraded"]},
        },
        ["app", "app_id", "reason", "wanted", "healthy", "state"],
    ),
    "v1.app.updated": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "fields": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-z][a-z_]{0,31}$"},
                "minItems": 1,
                "uniqueItems": True,
            },
        },
        ["app", "app_id", "fields"],
    ),
    "v1.app.repo_connected": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "repo": {"type": "string", "maxLength": 140},
            "github_repo_id": {"type": ["integer", "null"], "minimum": 1},
            "hook_id": {"type": ["integer", "null"], "minimum": 1},
            # token: through the person's GitHub token; hand: a repository id typed in
            "method": {"enum": ["token", "hand"]},
            "problem": {"type": "string", "maxLength": 500},
        },
        ["app", "app_id", "repo", "github_repo_id", "hook_id", "method"],
    ),
    "v1.app.webhook_secret_rotated": _object(
        {"app": _SLUG, "app_id": _ID, "hook_updated": {"type": "boolean"}},
        ["app", "app_id", "hook_updated"],
    ),
    "v1.app.drift_detected": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "state": {"enum": ["drifted", "missing", "stopped"]},
            "release": {"type": "integer", "minimum": 1},
            "deployment_id": _ID,
        },
        ["app", "app_id", "state", "release", "deployment_id"],
    ),
    "v1.app.drift_resolved": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "release": {"type": "integer", "minimum": 1},
            "deployment_id": _ID,
        },
        ["app", "app_id", "release", "deployment_id"],
    ),
    "v1.github_token.stored": _object(
        {
            "user_id": _ID,
            "email": {"type": "string", "maxLength": 254},
            "scopes": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-z][a-z:_]{0,39}$"},
                "maxItems": 32,
            },
        },
        ["user_id", "email", "scopes"],
    ),
    "v1.github_token.forgotten": _object(
        {"user_id": _ID, "email": {"type": "string", "maxLength": 254}},
        ["user_id", "email"],
    ),
    "v1.deployment.requested": _object(
        {
            **_DEPLOYMENT,
            "reason": {
                "enum": ["deploy", "rollback", "push", "build", "reapply", "restart", "start"]
            },
        },
        ["app", "app_id", "deployment_id", "release_id", "release", "reason"],
    ),
    "v1.deployment.started": _object(
        _DEPLOYMENT, ["app", "app_id", "deployment_id", "release_id", "release"]
    ),
    "v1.deployment.submitted": _object(
        {
            **_DEPLOYMENT,
            "nomad_job_version": {"type": "integer", "minimum": 0},
            "nomad_eval_id": {"type": "string", "maxLength": 36},
        },
        ["app", "app_id", "deployment_id", "release_id", "release", "nomad_job_version"],
    ),
    "v1.deployment.superseded": _object(
        {**_DEPLOYMENT, "by_deployment_id": _ID},
        ["app", "app_id", "deployment_id", "release_id", "release", "by_deployment_id"],
    ),
    "v1.deployment.cancelled": _object(
        {**_DEPLOYMENT, "reason": {"type": "string", "maxLength": 2000}},
        ["app", "app_id", "deployment_id", "release_id", "release", "reason"],
    ),
    "v1.build.requested": _object(
        {
            **_BUILD,
            "branch": {"type": "string", "maxLength": 255},
            "reason": {"type": "string", "maxLength": 200},
            "delivery": {"type": "string", "maxLength": 64},
        },
        [*_BUILD_KEYS, "branch", "reason"],
    ),
    "v1.build.started": _object(
        {**_BUILD, "nomad_job_id": {"type": "string", "maxLength": 128}},
        [*_BUILD_KEYS, "nomad_job_id"],
    ),
    "v1.build.succeeded": _object(
        {
            **_BUILD,
            "image": {"type": "string", "maxLength": 512},
            "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
            "deployment_id": _ID,
        },
        [*_BUILD_KEYS, "image", "digest"],
    ),
    "v1.build.failed": _object(
        {**_BUILD, "reason": _REASON, "exit_code": {"type": "integer"}},
        [*_BUILD_KEYS, "reason"],
    ),
    "v1.build.superseded": _object({**_BUILD, "by_build_id": _ID}, [*_BUILD_KEYS, "by_build_id"]),
    "v1.build.cancelled": _object({**_BUILD, "reason": _REASON}, [*_BUILD_KEYS, "reason"]),
    "v1.run.requested": _object(
        {
            **_RUN,
            "program": {"type": "string", "minLength": 1, "maxLength": 200},
            "args": _COUNT,
            "timeout": {"type": "integer", "minimum": 1, "maximum": 86400},
        },
        [*_RUN_KEYS, "program", "args", "timeout"],
    ),
    "v1.run.started": _object(
        {**_RUN, "nomad_job_id": {"type": "string", "maxLength": 128}},
        [*_RUN_KEYS, "nomad_job_id"],
    ),
    "v1.run.finished": _object(
        {
            **_RUN,
            "status": {"type": "string", "enum": ["succeeded", "failed", "timed_out"]},
            "reason": _REASON,
            "exit_code": {"type": "integer"},
        },
        [*_RUN_KEYS, "status", "reason"],
    ),
    "v1.env.changed": _object(
        {
            "app": _SLUG,
            "app_id": _ID,
            "key": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]{0,127}$"},
            "secret": {"type": "boolean"},
            "removed": {"type": "boolean"},
        },
        ["app", "app_id", "key", "secret", "removed"],
    ),
    "v1.domain.added": _object(
        {"app": _SLUG, "app_id": _ID, "hostname": {"type": "string", "maxLength": 253}},
        ["app", "app_id", "hostname"],
    ),
    "v1.domain.removed": _object(
        {"app": _SLUG, "app_id": _ID, "hostname": {"type": "string", "maxLength": 253}},
        ["app", "app_id", "hostname"],
    ),
    **{
        subject: _object(
            {
                "team": _SLUG,
                "user_id": _ID,
                "email": {"type": "string", "maxLength": 254},
                "role": {"enum": ["owner", "admin", "deployer", "viewer"]},
            },
            ["team", "user_id", "email", "role"],
        )
        for subject in ("v1.member.added", "v1.member.role_changed", "v1.member.removed")
    },
    "v1.team.namespace_moved": _object(
        {
            "team": _SLUG,
            "namespace": {"type": "string", "pattern": "^[a-zA-Z0-9-]{1,128}$"},
            "apps": {"type": "array", "items": _SLUG, "uniqueItems": True},
        },
        ["team", "namespace", "apps"],
    ),
    "v1.team.nomad_token_created": _object(
        {
            "team": _SLUG,
            "policy": {"type": "string", "pattern": "^helios-team-[a-z][a-z0-9-]{0,62}$"},
            "accessor_id": {"type": "string", "maxLength": 64},
        },
        ["team", "policy", "accessor_id"],
    ),
    "v1.team.created": _object(
        {"team": _SLUG, "name": {"type": "string", "minLength": 1, "maxLength": 200}},
        ["team", "name"],
    ),
    "v1.team.deleted": _object(
        {
            "team": _SLUG,
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "members": {"type": "integer", "minimum": 0},
        },
        ["team", "name", "members"],
    ),
    "v1.team.limits_changed": _object(
        {
            "team": _SLUG,
            "fields": {
                "type": "array",
                "items": {"enum": ["apps", "instances", "cpu_mhz", "memory_mb"]},
                "minItems": 1,
                "uniqueItems": True,
            },
            "limits": {
                "type": "object",
                "properties": {
                    measure: {"type": ["integer", "null"], "minimum": 1}
                    for measure in ("apps", "instances", "cpu_mhz", "memory_mb")
                },
                "required": ["apps", "instances", "cpu_mhz", "memory_mb"],
                "additionalProperties": False,
            },
        },
        ["team", "fields", "limits"],
    ),
    "v1.deployment.succeeded": _object(
        {**_DEPLOYMENT, "nomad_job_version": {"type": "integer", "minimum": 0}},
        ["app", "app_id", "deployment_id", "release_id", "release", "nomad_job_version"],
    ),
    "v1.deployment.failed": _object(
        {
            **_DEPLOYMENT,
            "reason": {"type": "string", "maxLength": 2000},
            "reverted_to_version": {"type": "integer", "minimum": 0},
        },
        ["app", "app_id", "deployment_id", "release_id", "release", "reason"],
    ),
    **{
        subject: _object(
            {
                "token_id": _ID,
                "name": {"type": "string", "maxLength": 100},
                "scopes": {
                    "type": "array",
                    "items": {"enum": ["read", "deploy", "admin"]},
                    "uniqueItems": True,
                },
                "expires_at": {"type": ["string", "null"], "maxLength": 40},
                "parent_token_id": _ID,
                "revoked_with_parent": {"type": "array", "items": _ID},
            },
            ["token_id", "name", "scopes"],
        )
        for subject in ("v1.token.created", "v1.token.revoked")
    },
    "v1.host.added": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "groups": {
                "type": "array",
                "items": {
                    "enum": ["nomad_servers", "nomad_clients", "edge", "build_nodes", "registry"]
                },
                "uniqueItems": True,
            },
        },
        ["host", "host_id", "groups"],
    ),
    "v1.host.keys_scanned": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "fingerprints": _FINGERPRINTS,
            "pinned": {"type": "boolean"},
            "changed": {"type": "boolean"},
        },
        ["host", "host_id", "fingerprints", "pinned", "changed"],
    ),
    "v1.host.keys_pinned": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "fingerprints": _FINGERPRINTS,
            "source": {"enum": ["scan", "operator"]},
            "replaced": _FINGERPRINTS,
        },
        ["host", "host_id", "fingerprints", "source"],
    ),
    "v1.host.draining": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "node_id": {"type": "string", "maxLength": 64},
            "allocations": {"type": "integer", "minimum": 0},
            "apps": {"type": "array", "items": {"type": "string", "maxLength": 128}},
            "deadline": {"type": "integer", "minimum": 1},
        },
        ["host", "host_id", "node_id", "allocations", "apps", "deadline"],
    ),
    "v1.host.drain_failed": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "reason": {"type": "string", "maxLength": 2000},
            "state": {"type": "string", "maxLength": 16},
        },
        ["host", "host_id", "reason", "state"],
    ),
    "v1.host.removed": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "address": {"type": "string", "maxLength": 253},
            "drained": {"type": "boolean"},
        },
        ["host", "host_id", "address", "drained"],
    ),
    "v1.host.maintenance_requested": _object(
        {
            "run_id": _ID,
            "host_ids": _HOST_IDS,
            "hosts": {"type": "array", "items": {"type": "string", "maxLength": 253}},
            "deadline": {"type": "integer", "minimum": 1},
        },
        ["run_id", "host_ids", "hosts", "deadline"],
    ),
    "v1.host.maintenance_started": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "run_id": _ID,
            "node_id": {"type": "string", "maxLength": 64},
        },
        ["host", "host_id", "run_id", "node_id"],
    ),
    "v1.host.maintenance_finished": _object(
        {"host": {"type": "string", "maxLength": 253}, "host_id": _ID, "run_id": _ID},
        ["host", "host_id", "run_id"],
    ),
    "v1.host.maintenance_failed": _object(
        {
            "host": {"type": "string", "maxLength": 253},
            "host_id": _ID,
            "run_id": _ID,
            "step": {"enum": ["drain", "update", "ready", "eligible"]},
            "reason": {"type": "string", "maxLength": 2000},
        },
        ["host", "host_id", "run_id", "step", "reason"],
    ),
    "v1.provision.requested": _object(
        {"run_id": _ID, "kind": {"enum": ["plan", "apply"]}, "host_ids": _HOST_IDS},
        ["run_id", "kind", "host_ids"],
    ),
    "v1.provision.started": _object(
        {"run_id": _ID, "kind": {"enum": ["plan", "apply", "maintain"]}, "host_ids": _HOST_IDS},
        ["run_id", "kind", "host_ids"],
    ),
    "v1.provision.finished": _object(
        {
            "run_id": _ID,
            "kind": {"enum": ["plan", "apply", "maintain"]},
            "status": {"enum": ["succeeded", "failed"]},
            "changed": {"type": "integer", "minimum": 0},
            "failed_hosts": {"type": "array", "items": {"type": "string", "maxLength": 253}},
        },
        ["run_id", "kind", "status", "changed", "failed_hosts"],
    ),
    "v1.signin.succeeded": _object(
        {
            "user_id": _ID,
            "email": {"type": "string", "maxLength": 254},
            "method": {"enum": ["password", "github"]},
            "address": {"type": "string", "maxLength": 64},
        },
        ["user_id", "email", "method", "address"],
    ),
    "v1.signin.failed": _object(
        {
            # The attempted email when it looks like one (never a password typed into it).
            "email": {"type": ["string", "null"], "maxLength": 254},
            "user_id": _ID,
            "method": {"enum": ["password", "github"]},
            "reason": {
                "enum": [
                    "wrong_password",
                    "unknown_account",
                    "disabled_account",
                    "no_password",
                    "github_refused",
                ]
            },
            "address": {"type": "string", "maxLength": 64},
            "backoff_seconds": {"type": "integer", "minimum": 1},
            "detail": {"type": "string", "maxLength": 300},
        },
        ["email", "method", "reason", "address"],
    ),
    "v1.session.revoked": _object(
        {
            "user_id": _ID,
            "email": {"type": "string", "maxLength": 254},
            "count": {"type": "integer", "minimum": 1},
            "reason": {
                "enum": [
                    "sign_out_everywhere",
                    "password_changed",
                    "password_reset",
                    "no_team_left",
                    "revoked",
                ]
            },
        },
        ["user_id", "email", "count", "reason"],
    ),
    "v1.notifier.created": _object(
        {
            "notifier_id": _ID,
            "name": _NOTIFIER_NAME,
            # the URL's host only: a webhook URL's path is often its secret
            "host": {"type": "string", "maxLength": 253},
            "format": {"enum": ["json", "slack"]},
            "subjects": {"type": "array", "items": {"type": "string", "maxLength": 100}},
        },
        ["notifier_id", "name", "host", "format", "subjects"],
    ),
    "v1.notifier.changed": _object(
        {"notifier_id": _ID, "name": _NOTIFIER_NAME, "enabled": {"type": "boolean"}},
        ["notifier_id", "name", "enabled"],
    ),
    **{
        subject: _object({"notifier_id": _ID, "name": _NOTIFIER_NAME}, ["notifier_id", "name"])
        for subject in (
            "v1.notifier.deleted",
            "v1.notifier.tested",
            "v1.notifier.secret_rotated",
        )
    },
    "v1.account.created": _object(
        {
            "user_id": _ID,
            "email": {"type": "string", "maxLength": 254},
            "team": _SLUG,
            "role": {"enum": ["viewer", "deployer", "admin", "owner"]},
            "operator": {"type": "boolean"},
        },
        ["user_id", "email", "team", "role", "operator"],
    ),
    "v1.password.changed": _object(
        {
            "user_id": _ID,
            "email": {"type": "string", "maxLength": 254},
            "method": {"enum": ["change", "reset"]},
        },
        ["user_id", "email", "method"],
    ),
    "v1.backup.created": _object(
        {
            "file": {"type": "string", "minLength": 1, "maxLength": 255},
            "size": _COUNT,
            "database": {"enum": ["sqlite", "postgresql"]},
            "scheduled": {"type": "boolean"},
            "counts": {"type": "object", "additionalProperties": _COUNT},
        },
        ["file", "size", "database", "scheduled", "counts"],
    ),
    "v1.backup.restored": _object(
        {
            "file": {"type": "string", "minLength": 1, "maxLength": 255},
            "created_at": {"type": "string", "maxLength": 40},
            "helios_version": {"type": "string", "maxLength": 40},
            "migrated": _COUNT,
            "replaced": {"type": "boolean"},
        },
        ["file", "created_at", "helios_version", "migrated", "replaced"],
    ),
}


class EventError(ValueError):
    """An event that does not match its subject's schema (a bug in the caller)."""


def schema_for(subject: str) -> dict[str, Any]:
    """The JSON schema of an event subject."""
    try:
        return SCHEMAS[subject]
    except KeyError:
        raise EventError(
            f"unknown event subject {subject!r}: add it to panel.events.SCHEMAS"
        ) from None


@functools.cache
def _validator(subject: str) -> jsonschema.protocols.Validator:
    """The checked validator of a subject's schema, built once per process (checking the
    schema itself on every event cost more than the rest of an emit)."""
    schema = schema_for(subject)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def prepare_validators() -> None:
    """Build every subject's validator now: a worker does it once, before it forks work horses
    that would each build theirs again."""
    for subject in SCHEMAS:
        _validator(subject)


def validate_event(subject: str, data: dict[str, Any]) -> None:
    """Raise EventError unless ``data`` matches the schema of ``subject``."""
    error = jsonschema.exceptions.best_match(_validator(subject).iter_errors(data))
    if error is not None:
        raise EventError(f"{subject}: {error.message}")


def emit(
    subject: str,
    data: dict[str, Any],
    *,
    actor: str = "system",
    team: Team | int | None = None,
    user: User | int | None = None,
    redis_conn: redis.Redis | None = None,
) -> Event:
    """Validate, record and (after the commit) publish an event; return the stored row.

    ``team`` is the team an event belongs to (its members read it in the audit log); ``user``
    the person it is about when it belongs to no team (sign-ins, personal tokens).
    """
    validate_event(subject, data)
    row = Event.create(
        subject=subject, actor=actor, team=team, user=user, data=data, created_at=utcnow()
    )
    if row.team_id is not None:
        _fan_out(row, redis_conn)
    if redis_conn is not None:
        # Published once the transaction that recorded it commits (at once outside one), and
        # never when it rolls back: whoever reads the row on the event finds it, and the state
        # that came with it.
        database.after_commit(lambda: publish(redis_conn, row))
    return row


def _fan_out(row: Event, redis_conn: redis.Redis | None) -> None:
    """A delivery row for each enabled notifier of the event's team that wants its subject,
    each queued (one job id per notifier and event) once the transaction commits."""
    wanted = Notifier.select(Notifier.id, Notifier.subjects).where(
        (Notifier.team == row.team_id) & Notifier.enabled
    )
    for notifier in wanted:
        if row.subject not in notifier.subjects:
            continue
        delivery = NotifierDelivery.create(
            notifier=notifier.id, event=row.id, subject=row.subject, created_at=utcnow()
        )
        if redis_conn is not None:
            database.after_commit(functools.partial(enqueue_delivery, redis_conn, delivery.id))


def to_document(row: Event) -> dict[str, Any]:
    """The published form of an event."""
    return {
        "id": row.id,
        "subject": row.subject,
        "actor": row.actor,
        "team_id": row.team_id,
        "time": row.created_at.isoformat() + "Z",
        "data": row.data,
    }


NOTICE_PREFIX = "live."  # transient notices for live pages: published, never stored


def notify(redis_conn: redis.Redis, subject: str, data: dict[str, Any]) -> None:
    """Tell live pages that something changed which is not an event worth keeping (a progress
    note): published on the events channel after the transaction commits, never stored."""
    if not subject.startswith(NOTICE_PREFIX):
        raise ValueError(f"a notice's subject starts with {NOTICE_PREFIX!r}: {subject!r}")
    document = json.dumps({"id": None, "subject": subject, "data": data})

    def send() -> None:
        try:
            redis_conn.publish(CHANNEL, document)
        except redis.RedisError as exc:
            logger.warning("notice %s not published: %s", subject, exc)

    database.after_commit(send)


def publish(redis_conn: redis.Redis, row: Event) -> None:
    """Publish a recorded event on Redis; failures are logged, the row stays."""
    try:
        redis_conn.publish(CHANNEL, json.dumps(to_document(row)))
    except redis.RedisError as exc:
        logger.warning("event %s #%s recorded but not published: %s", row.subject, row.id, exc)
