"""Events: every subject has a schema, every emitted event matches it, rows and Redis agree."""

from __future__ import annotations

import json

import jsonschema
import pytest

from panel.events import CHANNEL, SCHEMAS, SUBJECT_RE, EventError, emit
from panel.models import Event, Team

SAMPLES = {
    "v1.app.created": {"app": "web", "app_id": 1, "team": "acme", "source": "image"},
    "v1.app.deleted": {
        "app": "web", "app_id": 1, "team": "acme", "by": "admin@example.com",
        "retention_days": 30,
    },
    "v1.app.scaled": {
        "app": "web", "app_id": 1, "from": 2, "to": 3, "deployment_id": 7, "release": 3,
    },
    "v1.app.stopped": {"app": "web", "app_id": 1, "by": "dev@example.com", "release": 3},
    "v1.app.started": {
        "app": "web", "app_id": 1, "deployment_id": 8, "release": 3, "reason": "start",
    },
    "v1.deployment.requested": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "reason": "deploy",
    },
    "v1.deployment.started": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
    },
    "v1.deployment.submitted": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "nomad_job_version": 4, "nomad_eval_id": "5b1c2e0a-2b7a-4a4e-9f0e-0c6f6c1d2e3f",
    },
    "v1.app.repo_connected": {
        "app": "web", "app_id": 1, "repo": "acme/web", "github_repo_id": 42, "hook_id": 1000,
        "method": "token",
    },
    "v1.app.webhook_secret_rotated": {"app": "web", "app_id": 1, "hook_updated": True},
    "v1.app.drift_detected": {
        "app": "web", "app_id": 1, "state": "drifted", "release": 3, "deployment_id": 7,
    },
    "v1.app.drift_resolved": {"app": "web", "app_id": 1, "release": 3, "deployment_id": 7},
    "v1.github_token.stored": {
        "user_id": 2, "email": "dev@example.com", "scopes": ["repo", "read:user"],
    },
    "v1.github_token.forgotten": {"user_id": 2, "email": "dev@example.com"},
    "v1.build.requested": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "branch": "main", "reason": "push", "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    },
    "v1.build.started": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "nomad_job_id": "shop-build-1",
    },
    "v1.build.succeeded": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "image": "registry.internal:5000/acme/shop@sha256:" + "b" * 64,
        "digest": "sha256:" + "b" * 64, "deployment_id": 9,
    },
    "v1.app.down": {
        "app": "web", "app_id": 1, "reason": "0 of 2 instances healthy: Terminated: OOM Killed",
        "wanted": 2, "healthy": 0,
    },
    "v1.app.recovered": {
        "app": "web", "app_id": 1, "reason": "1 of 2 instances healthy", "wanted": 2,
        "healthy": 1, "state": "degraded",
    },
    "v1.build.failed": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "reason": "the build failed (exit code 2)", "exit_code": 2,
    },
    "v1.build.superseded": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "by_build_id": 5,
    },
    "v1.build.cancelled": {
        "app": "shop", "app_id": 2, "build_id": 4, "build": 1, "git_sha": "a" * 40,
        "reason": "stopped: build #2 of a newer commit replaces it",
    },
    "v1.run.requested": {
        "app": "web", "app_id": 1, "run_id": 5, "release": 3, "program": "python", "args": 2,
        "timeout": 1800,
    },
    "v1.run.started": {
        "app": "web", "app_id": 1, "run_id": 5, "release": 3, "nomad_job_id": "web-run-5",
    },
    "v1.run.finished": {
        "app": "web", "app_id": 1, "run_id": 5, "release": 3, "status": "failed",
        "reason": "the command exited with code 3", "exit_code": 3,
    },
    "v1.deployment.superseded": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "by_deployment_id": 8,
    },
    "v1.deployment.cancelled": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "reason": "cancelled by dev@example.com before it reached Nomad",
    },
    "v1.env.changed": {"app": "web", "app_id": 1, "key": "API_KEY", "secret": True,
                       "removed": False},
    "v1.domain.added": {"app": "web", "app_id": 1, "hostname": "shop.example.com"},
    "v1.domain.removed": {"app": "web", "app_id": 1, "hostname": "shop.example.com"},
    "v1.app.updated": {"app": "web", "app_id": 1, "fields": ["count", "image"]},
    "v1.member.added": {"team": "acme", "user_id": 2, "email": "dev@example.com",
                        "role": "deployer"},
    "v1.member.role_changed": {"team": "acme", "user_id": 2, "email": "dev@example.com",
                               "role": "admin"},
    "v1.member.removed": {"team": "acme", "user_id": 2, "email": "dev@example.com",
                          "role": "admin"},
    "v1.team.namespace_moved": {"team": "acme", "namespace": "acme", "apps": ["web"]},
    "v1.team.nomad_token_created": {"team": "acme", "policy": "helios-team-acme",
                                     "accessor_id": "7f1c5e1a-3b57-4c3e-9d4a"},
    "v1.team.created": {"team": "acme", "name": "Acme"},
    "v1.team.deleted": {"team": "acme", "name": "Acme", "members": 2},
    "v1.team.limits_changed": {
        "team": "acme", "fields": ["memory_mb"],
        "limits": {"apps": None, "instances": 20, "cpu_mhz": None, "memory_mb": 4096},
    },
    "v1.deployment.succeeded": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "nomad_job_version": 4,
    },
    "v1.deployment.failed": {
        "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
        "reason": "Failed due to unhealthy allocations", "reverted_to_version": 2,
    },
    "v1.host.added": {"host": "node-1", "host_id": 1, "groups": ["nomad_servers"]},
    "v1.token.created": {"token_id": 3, "name": "ci", "scopes": ["deploy"],
                         "expires_at": "2027-01-01T00:00:00Z", "parent_token_id": 2},
    "v1.token.revoked": {"token_id": 2, "name": "laptop", "scopes": ["admin"], "expires_at": None,
                         "revoked_with_parent": [3]},
    "v1.host.keys_scanned": {"host": "node-1", "host_id": 1, "pinned": True, "changed": True,
                             "fingerprints": [f"ED25519 SHA256:{'A' * 43}"]},
    "v1.host.keys_pinned": {"host": "node-1", "host_id": 1, "source": "scan",
                            "fingerprints": [f"ED25519 SHA256:{'A' * 43}"],
                            "replaced": [f"RSA SHA256:{'B' * 43}"]},
    "v1.host.draining": {"host": "node-1", "host_id": 1, "node_id": "5f1c9e2a", "allocations": 2,
                         "apps": ["shop", "web"], "deadline": 600},
    "v1.host.drain_failed": {"host": "node-1", "host_id": 1, "state": "ready",
                             "reason": "the drain did not complete within 600 s"},
    "v1.host.removed": {"host": "node-1", "host_id": 1, "address": "10.0.0.5", "drained": True},
    "v1.host.maintenance_requested": {"run_id": 3, "host_ids": [1, 2],
                                      "hosts": ["node-1", "node-2"], "deadline": 600},
    "v1.host.maintenance_started": {"host": "node-1", "host_id": 1, "run_id": 3,
                                    "node_id": "5f1c9e2a"},
    "v1.host.maintenance_finished": {"host": "node-1", "host_id": 1, "run_id": 3},
    "v1.host.maintenance_failed": {"host": "node-2", "host_id": 2, "run_id": 3, "step": "drain",
                                   "reason": "the drain did not complete within 660 s"},
    "v1.provision.requested": {"run_id": 1, "kind": "plan", "host_ids": [1, 2]},
    "v1.provision.started": {"run_id": 1, "kind": "apply", "host_ids": [1]},
    "v1.provision.finished": {
        "run_id": 1, "kind": "apply", "status": "failed", "changed": 3, "failed_hosts": ["n2"],
    },
    "v1.signin.succeeded": {"user_id": 2, "email": "dev@example.com", "method": "password",
                            "address": "192.0.2.7"},
    "v1.signin.failed": {"email": None, "method": "password", "reason": "unknown_account",
                         "address": "192.0.2.7", "backoff_seconds": 2},
    "v1.session.revoked": {"user_id": 2, "email": "dev@example.com", "count": 3,
                           "reason": "password_changed"},
    "v1.account.created": {
        "user_id": 2, "email": "dev@example.com", "team": "acme", "role": "owner",
        "operator": False,
    },
    "v1.password.changed": {"user_id": 2, "email": "dev@example.com", "method": "change"},
    "v1.backup.created": {"file": "helios-backup-20261206T104500Z.tar", "size": 81920,
                          "database": "sqlite", "scheduled": True,
                          "counts": {"apps": 3, "secrets": 5}},
    "v1.backup.restored": {"file": "helios-backup-20261206T104500Z.tar",
                           "created_at": "2026-12-06T10:45:00Z", "helios_version": "0.1.0",
                           "migrated": 0, "replaced": False},
    "v1.notifier.created": {"notifier_id": 1, "name": "chat", "host": "hooks.example.com",
                            "format": "slack", "subjects": ["v1.deployment.failed"]},
    "v1.notifier.changed": {"notifier_id": 1, "name": "chat", "enabled": False},
    "v1.notifier.deleted": {"notifier_id": 1, "name": "chat"},
    "v1.notifier.tested": {"notifier_id": 1, "name": "chat"},
    "v1.notifier.secret_rotated": {"notifier_id": 1, "name": "chat"},
}  # fmt: skip


def test_subjects_are_versioned_and_schemas_are_valid():
    assert set(SAMPLES) == set(SCHEMAS)
    for subject, schema in SCHEMAS.items():
        assert SUBJECT_RE.match(subject), subject
        jsonschema.Draft202012Validator.check_schema(schema)


def test_emit_records_and_publishes_every_subject(db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    for subject, data in SAMPLES.items():
        emit(subject, data, actor="dev@example.com", team=team, redis_conn=redis_conn)

    published = []
    while len(published) < len(SAMPLES):
        message = pubsub.get_message(timeout=2)
        assert message is not None, "an event was recorded but not published"
        published.append(json.loads(message["data"]))
    rows = list(Event.select().order_by(Event.id))
    assert [row.subject for row in rows] == list(SAMPLES)
    for row, document in zip(rows, published, strict=True):
        jsonschema.validate(row.data, SCHEMAS[row.subject])
        assert document["id"] == row.id
        assert document["subject"] == row.subject
        assert document["data"] == row.data
        assert document["actor"] == "dev@example.com"
        assert document["team_id"] == team.id


@pytest.mark.parametrize(
    ("subject", "data", "message"),
    [
        ("v1.app.vanished", {}, "unknown event subject"),
        ("v1.app.created", {"app": "web"}, "required"),
        ("v1.app.created", {**SAMPLES["v1.app.created"], "extra": 1}, "Additional properties"),
        ("v1.app.created", {**SAMPLES["v1.app.created"], "app": "Bad Slug"}, "does not match"),
    ],
)
def test_invalid_events_are_refused_and_not_recorded(db, subject, data, message):
    with pytest.raises(EventError, match=message):
        emit(subject, data)
    assert Event.select().count() == 0


def test_redis_outage_keeps_the_row(db):
    import redis

    from conftest import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    row = emit("v1.app.created", SAMPLES["v1.app.created"], redis_conn=dead)
    assert Event.get_by_id(row.id).data == SAMPLES["v1.app.created"]


def test_events_are_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    for subject in SCHEMAS:
        assert f"`{subject}`" in doc


def test_an_event_is_published_after_its_transaction_commits_and_never_on_rollback(db, redis_conn):
    from panel.db import database

    team = Team.create(slug="acme", name="Acme")
    subject, data = next(iter(SAMPLES.items()))
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    with database.atomic():
        kept = emit(subject, data, team=team, redis_conn=redis_conn)
        assert pubsub.get_message(timeout=0.5) is None, "published before the commit"
    message = pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"])["id"] == kept.id

    with pytest.raises(RuntimeError), database.atomic():
        emit(subject, data, team=team, redis_conn=redis_conn)
        raise RuntimeError("the change fails after its event was recorded")
    assert pubsub.get_message(timeout=0.5) is None, "an event of a rolled-back change went out"
    assert [row.id for row in Event.select()] == [kept.id]
