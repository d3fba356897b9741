"""SIGKILL the worker at several points of deploy_app; a fresh worker finishes the job.

Each kill point pauses the Nomad double on one request, kills the worker process that sent it,
lets the request complete (or not) and starts a new worker, whose startup sweep queues the
unfinished deployment again. Whatever the point: one job version per deployment, and every
deployment ends in a terminal state.
"""

from __future__ import annotations

import re
import signal
import threading

import pytest

from panel.actions import create_app, request_deploy
from panel.config import Settings
from panel.models import Deployment, DeploymentStatus, Team

from conftest import wait_until

# (name, method, path regex, whether Nomad processes the request before the kill)
KILL_POINTS = [
    ("before-plan", "POST", r"/v1/job/web/plan", False),
    ("after-register", "POST", r"/v1/job/web", True),
    ("while-following", "GET", r"/v1/job/web/deployments", True),
]


class Trap:
    """Hold the first matching request of the double until released."""

    def __init__(self, double, method: str, pattern: str, process_first: bool) -> None:
        self.hit = threading.Event()
        self.release = threading.Event()
        self.armed = True
        original = double.handle

        def handle(method_, raw_path, headers, raw_body):
            path = raw_path.split("?", 1)[0]
            caught = self.armed and method_ == method and re.fullmatch(pattern, path)
            if caught:
                self.armed = False
                if process_first:
                    answer = original(method_, raw_path, headers, raw_body)
                    self.hit.set()
                    self.release.wait(30)
                    return answer
                self.hit.set()
                self.release.wait(30)
            return original(method_, raw_path, headers, raw_body)

        double.handle = handle


@pytest.mark.parametrize(
    ("name", "method", "pattern", "process_first"), KILL_POINTS, ids=[p[0] for p in KILL_POINTS]
)
def test_sigkill_at_any_point_never_duplicates_a_version(
    deploy_env, nomad_double, start_worker, redis_conn, name, method, pattern, process_first
):
    team = Team.create(slug="acme", name="Acme")
    app = create_app(actor=None, team=team, slug="web", image="registry.local/web:1", count=2)
    settings = Settings.from_env()
    first = request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    worker = start_worker(**deploy_env)
    wait_until(
        lambda: Deployment.get_by_id(first.deployment.id).status == "succeeded",
        timeout=60, what="the first deployment",
    )  # fmt: skip

    trap = Trap(nomad_double, method, pattern, process_first)
    second = request_deploy(
        actor=None, app=app, settings=settings, redis_conn=redis_conn,
        image="registry.local/web:2",
    )  # fmt: skip
    assert trap.hit.wait(60), f"the worker never sent {method} {pattern}"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    trap.release.set()

    start_worker(**deploy_env)
    row = wait_until(
        lambda: (d := Deployment.get_by_id(second.deployment.id))
        and DeploymentStatus(d.status).is_terminal
        and d,
        timeout=60, what="the second deployment to finish after the kill",
    )  # fmt: skip
    versions = nomad_double.cluster.versions("default", "web")
    per_deployment = [v["Meta"].get("helios.deployment") for v in versions]
    assert per_deployment.count(str(first.deployment.id)) == 1
    assert per_deployment.count(str(second.deployment.id)) == 1
    assert row.status == DeploymentStatus.SUCCEEDED, row.status_message
    assert all(DeploymentStatus(d.status).is_terminal for d in Deployment.select()), (
        "a deployment was left unfinished"
    )
