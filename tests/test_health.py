"""/healthz and /readyz, including the 503 paths with their reasons."""

from __future__ import annotations

import shutil

import redis

from panel.db import build_database


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_readyz_503_when_redis_is_down(app, client):
    from conftest import free_port

    app.extensions["helios.redis"] = redis.Redis(port=free_port(), socket_connect_timeout=1)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert set(body["problems"]) == {"redis"}
    assert body["problems"]["redis"] == "redis not reachable: the panel's log says why"
    assert body["request_id"] == response.headers["X-Request-Id"]


def test_readyz_503_when_the_database_is_unreachable(app, client, tmp_path):
    missing = tmp_path / "no-such-dir" / "helios.db"
    broken = build_database(f"sqlite:///{missing}")
    shutil.rmtree(missing.parent)  # build_database made it; a vanished volume looks like this
    app.extensions["helios.database"] = broken
    response = client.get("/readyz")
    assert response.status_code == 503
    problems = response.get_json()["problems"]
    assert set(problems) == {"database"}
    assert "unable to open database file" not in problems["database"]  # the log says it


def test_unknown_route_is_a_page_not_a_traceback(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"Traceback" not in response.data
    api = client.get("/api/v1/nothing")
    assert api.status_code == 404
    assert api.get_json()["error"] == "not_found"
