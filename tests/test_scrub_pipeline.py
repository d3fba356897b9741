"""The scrubber in the whole pipeline: an app with the 50 generated secrets of test_scrub.py
prints each of them in each of the 17 encodings (through the Nomad double, read by a real
follower), and also with secrets cut between two reads of its stream; then no form of any
secret is in the stored log, the SSE streams, the text download, the HTML pages, an error page,
anything in Redis (RQ's job data included) or the worker's own log.

Every cut position of every secret is covered by test_scrub.py on the scrubber itself; here the
cuts are made by the stream (lines longer than a stored chunk, written in two pieces), at a
sample of positions, and the stored rows show that each line was indeed cut there.
"""

from __future__ import annotations

import logging
import threading
from functools import cache

import pytest
from test_scrub import ENCODINGS, leak_case, make_secrets

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy, set_env
from panel.actions.logs import MAX_CHUNK_BYTES
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import AppLog, Deployment, DeploymentStatus, Team, User
from panel.reconcile.jobs import deploy_app

from conftest import wait_until

PASSWORD = "correct horse battery"
CUT_KEYS = ["SHORT_3", "REGEX_1", "UNICODE_2", "DATABASE_URL", "STRIPE_KEY", "LONG_0",
            "TLS_PRIVATE_KEY", "GOOGLE_CREDENTIALS"]  # fmt: skip
PAD = "p" * (MAX_CHUNK_BYTES + 100)  # longer than a stored chunk: the collector cuts the line


@cache
def cases() -> list[tuple[str, str, str]]:
    """(key, line printed, what of it must go) for every secret in every encoding."""
    found = []
    for index, (key, encoding) in enumerate(
        (key, encoding) for encoding in ENCODINGS for key in make_secrets()
    ):
        line, gone, _, _ = leak_case(index, key, encoding)
        found.append((key, line, gone))
    return found


@pytest.fixture
def web(deploy_env, db, redis_conn):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", count=1, redis_conn=redis_conn,
    )  # fmt: skip
    cipher = SecretCipher.from_settings(Settings.from_env())
    for key, value in make_secrets().items():
        set_env(actor=None, app=app, key=key, value=value, secret=True, cipher=cipher)
    return app


def forms_left(text: str) -> list[str]:
    """The secrets' forms (or the parts of them that must go) still in ``text``."""
    left = [gone[:40] for _key, _line, gone in cases() if gone and gone in text]
    for key in CUT_KEYS:
        value = make_secrets()[key]
        left += [f"{key} raw"] if value.strip() and value.strip() in text else []
    return left


def test_no_form_of_any_secret_leaves_the_pipeline(
    web, redis_conn, nomad_double, run_follower, client, auth, caplog
):
    caplog.set_level(logging.INFO)
    nomad_double.auto_advance = False
    printed = "".join(line + "\n" for _key, line, _gone in cases())
    nomad_double.set_logs(printed, "stdout")
    run_follower()
    requested = request_deploy(
        actor=None, app=web, settings=Settings.from_env(), redis_conn=redis_conn
    )
    deploy_app(requested.deployment.id)
    deployment = Deployment.get_by_id(requested.deployment.id)

    def ended():
        nomad_double.tick()
        return DeploymentStatus(Deployment.get_by_id(deployment.id).status).is_terminal

    wait_until(ended, timeout=60, interval=0.05, what="the deploy")
    last_line = cases()[-1][1].splitlines()[-1]

    def stored() -> str:
        rows = AppLog.select().where((AppLog.app == web.id) & (AppLog.stream == "stdout"))
        return "".join(row.text for row in rows.order_by(AppLog.seq))

    wait_until(lambda: "\n" + last_line[:20] in stored() or last_line[:20] in stored(),
               timeout=60, what="every leak line stored")  # fmt: skip

    # Secrets cut between two reads: a line longer than a chunk, written in two pieces.
    cut_lines = []
    for n, key in enumerate(CUT_KEYS):
        value = make_secrets()[key]
        for j in sorted({1, len(value) // 2, len(value) - 1}):
            marker = f"cut-{n}-{j}"
            before, rest = f"{marker} {PAD} {value[:j]}", f"{value[j:]} end-{marker}\n"
            printed += before
            nomad_double.set_logs(printed, "stdout")
            wait_until(lambda m=marker: m in stored(), timeout=30, what=f"{marker} stored")
            printed += rest
            nomad_double.set_logs(printed, "stdout")
            cut_lines.append((key, marker))
    wait_until(lambda: f"end-{cut_lines[-1][1]}" in stored(), timeout=30, what="the last cut")
    text = stored()
    for key, marker in cut_lines:
        # Its first part was stored before the rest was written: the secret was replaced whole.
        line = text.split(f"{marker} ", 1)[1].split(f"end-{marker}", 1)[0]
        assert f"[secret {key}]" in line, (key, marker)

    assert forms_left(text) == []
    assert text.count("[secret ") >= len(cases())

    # Every reader: the SSE streams, the download, pages, an error page.
    auth.login("owner@example.com", PASSWORD)
    bodies = {
        "deployment log stream": client.get(f"/apps/web/deployments/{deployment.id}/log"),
        "deployment log download": client.get(f"/apps/web/deployments/{deployment.id}/log.txt"),
        "deployment page": client.get(f"/apps/web/deployments/{deployment.id}"),
        "logs page": client.get("/apps/web/logs"),
        "logs download": client.get("/apps/web/logs.txt"),
        "error page": client.get(
            "/apps/web/logs.txt", query_string={"since": make_secrets()["SHORT_3"]}
        ),
        "environment page": client.get("/apps/web/env"),
    }
    token = create_token(User.get(User.email == "owner@example.com"), "ci", ["read"], days=1)
    api = {"Authorization": f"Bearer {token.secret}"}
    bodies["API log"] = client.get("/api/v1/apps/web/logs?limit=1000", headers=api)
    bodies["API deployment log stream"] = client.get(
        f"/api/v1/apps/web/deployments/{deployment.id}/log?follow=true&after=0", headers=api
    )
    for name, response in bodies.items():
        body = response.get_data(as_text=True)
        assert response.status_code in (200, 400), name
        assert forms_left(body) == [], name
    for name in ("deployment log stream", "API log", "API deployment log stream"):
        assert "[secret " in bodies[name].get_data(as_text=True), name

    # Redis: RQ's job data and everything else.
    everything = []
    for key in redis_conn.scan_iter(count=1000):
        kind = redis_conn.type(key)
        if kind == b"string":
            everything.append(redis_conn.get(key))
        elif kind == b"hash":
            everything += list(redis_conn.hgetall(key).values())
        elif kind == b"list":
            everything += redis_conn.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            everything += list(
                redis_conn.smembers(key) if kind == b"set" else redis_conn.zrange(key, 0, -1)
            )
    dump = "\n".join(item.decode("utf-8", "replace") for item in everything if item)
    assert forms_left(dump) == []

    # The worker's and the follower's own log lines.
    assert threading.active_count() > 1
    assert forms_left(caplog.text) == []
