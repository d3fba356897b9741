"""Secrets are versioned with releases: one Nomad Variable per app, items keyed per release.

Canaries render the new release's values while the running allocations keep rendering theirs
(the same text, so their change_mode never fires); a deploy that registers nothing leaves the
variable as it was; a revert runs with the values of the release it returns to; the items of
releases nothing can run any more are pruned. Templates are rendered here as a Nomad client
would (tests/gotemplate.py) against the double's variables.
"""

from __future__ import annotations

import copy

import pytest
from gotemplate import render_template
from rq import Queue

from panel.actions.apps import create_app, request_deploy, set_env, unset_env, update_app
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import Deployment, DeploymentStatus, Event, Team
from panel.reconcile.jobs import deploy_app, prune_secrets, runnable_releases
from panel.render.nomad import keep_release_items

from conftest import wait_until

PATH = "nomad/jobs/web"


@pytest.fixture
def app_row(db, redis_conn):
    team = Team.create(slug="acme", name="Acme")
    return create_app(
        actor=None, team=team, slug="web", image="registry.local/web:1", count=2,
        redis_conn=redis_conn,
    )  # fmt: skip


@pytest.fixture
def double(deploy_env, nomad_double, run_follower):
    """The double with time frozen (the test ticks it) and a follower watching."""
    nomad_double.auto_advance = False
    run_follower()
    return nomad_double


def secret(app, key: str, value: str) -> None:
    cipher = SecretCipher.from_settings(Settings.from_env())
    set_env(actor=None, app=app, key=key, value=value, secret=True, cipher=cipher)


def submit(app, redis_conn, image: str | None = None) -> Deployment:
    requested = request_deploy(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, image=image
    )
    deploy_app(requested.deployment.id)
    return Deployment.get_by_id(requested.deployment.id)


def settle(double, deployment: Deployment) -> Deployment:
    """Tick the double until the follower recorded the deployment's outcome."""

    def ended():
        double.tick()
        row = Deployment.get_by_id(deployment.id)
        return DeploymentStatus(row.status).is_terminal and row

    return wait_until(ended, timeout=30, interval=0.05, what=f"deployment #{deployment.id}")


def items(double) -> dict[str, str]:
    variable = double.cluster.variables.get(("default", PATH))
    return dict(variable["Items"]) if variable else {}


def version(double, number: int) -> dict:
    return next(v for v in double.cluster.versions("default", "web") if v["Version"] == number)


def rendered(double, job: dict) -> str:
    """What the web task of this job version renders from the variables, as a client would."""
    variables = {path: var["Items"] for (ns, path), var in double.cluster.variables.items()}
    templates = job["TaskGroups"][0]["Tasks"][0].get("Templates") or []
    return "".join(render_template(t["EmbeddedTmpl"], variables) for t in templates)


def variable_writes(double) -> list:
    return [r for r in double.requests if r.path.startswith("/v1/var/") and r.method != "GET"]


def live_versions(double) -> list[int]:
    return sorted(
        a["JobVersion"] for a in double.cluster.allocs.values() if a["DesiredStatus"] == "run"
    )


def test_canaries_read_the_new_release_while_running_allocations_render_the_same(
    double, app_row, redis_conn
):
    secret(app_row, "DATABASE_URL", "postgres://v1")
    first = settle(double, submit(app_row, redis_conn))
    assert first.status == DeploymentStatus.SUCCEEDED
    running_text = rendered(double, version(double, 0))
    assert running_text == 'DATABASE_URL="postgres://v1"\n'

    secret(app_row, "DATABASE_URL", "postgres://v2")
    secret(app_row, "API_KEY", "k2")
    second = submit(app_row, redis_conn, image="registry.local/web:2")
    assert second.nomad_job_version == 1
    assert live_versions(double) == [0, 0, 1, 1]  # canaries next to the running allocations
    assert items(double) == {
        "r1.DATABASE_URL": "postgres://v1",
        "r2.API_KEY": "k2",
        "r2.DATABASE_URL": "postgres://v2",
    }
    # The old allocations' template renders the very same text: no change, no restart.
    assert rendered(double, version(double, 0)) == running_text
    assert rendered(double, version(double, 1)) == 'API_KEY="k2"\nDATABASE_URL="postgres://v2"\n'

    assert settle(double, second).status == DeploymentStatus.SUCCEEDED
    assert live_versions(double) == [1, 1]
    queued = Queue("deploys", connection=redis_conn).jobs
    assert any(job.func_name.endswith("prune_secrets") for job in queued)
    assert prune_secrets(app_row.id) == "pruned"
    assert items(double) == {"r2.API_KEY": "k2", "r2.DATABASE_URL": "postgres://v2"}
    assert rendered(double, version(double, 1)) == 'API_KEY="k2"\nDATABASE_URL="postgres://v2"\n'
    for text in ("postgres://v1", "postgres://v2", "k2"):
        assert text not in repr([r.body for r in double.requests if r.path.startswith("/v1/job")])
        assert text not in repr([e.data for e in Event.select()])


def test_a_release_that_cannot_be_placed_leaves_the_variable_as_it_was(double, app_row, redis_conn):
    secret(app_row, "DATABASE_URL", "postgres://v1")
    settle(double, submit(app_row, redis_conn))
    before = copy.deepcopy(double.cluster.variables[("default", PATH)])
    writes = len(variable_writes(double))

    secret(app_row, "DATABASE_URL", "postgres://v2")
    update_app(actor=None, app=app_row, memory_mb=200_000)
    failed = submit(app_row, redis_conn)
    assert failed.status == DeploymentStatus.FAILED
    assert failed.status_message.startswith("placement failed")
    assert double.cluster.variables[("default", PATH)] == before
    assert len(variable_writes(double)) == writes  # not even written and taken back


def test_a_release_nomad_refuses_takes_its_items_out_again(double, app_row, redis_conn):
    secret(app_row, "DATABASE_URL", "postgres://v1")
    settle(double, submit(app_row, redis_conn))
    before = items(double)

    secret(app_row, "DATABASE_URL", "postgres://v2")
    gate = double.hold("POST", r"/v1/job/web", when="before")
    requested = request_deploy(
        actor=None, app=app_row, settings=Settings.from_env(), redis_conn=redis_conn
    )
    import threading

    outcome: list[str] = []
    run = threading.Thread(target=lambda: outcome.append(deploy_app(requested.deployment.id)))
    run.start()
    assert gate.reached.wait(30)
    assert "r2.DATABASE_URL" in items(double)  # written before the register
    double.fail_next(1, 500, "1 error occurred:\n\t* Task group web validation failed")
    gate.release()
    run.join(30)
    assert outcome == [DeploymentStatus.FAILED]
    row = Deployment.get_by_id(requested.deployment.id)
    assert "Nomad refused registering job 'web'" in row.status_message
    assert items(double) == before


def test_a_revert_runs_with_the_values_of_the_release_it_returns_to(double, app_row, redis_conn):
    double.set_health(lambda job, alloc: job["Meta"]["helios.release"] != "2")
    secret(app_row, "DATABASE_URL", "postgres://v1")
    settle(double, submit(app_row, redis_conn))
    secret(app_row, "DATABASE_URL", "postgres://v2")
    reverted = settle(double, submit(app_row, redis_conn, image="registry.local/web:2"))
    assert reverted.status == DeploymentStatus.REVERTED, reverted.status_message

    current = double.cluster.current("default", "web")
    assert current["Version"] == 2 and current["Meta"]["helios.release"] == "1"
    assert rendered(double, current) == 'DATABASE_URL="postgres://v1"\n'
    wait_until(lambda: double.tick() or set(live_versions(double)) == {2}, what="the revert")
    assert prune_secrets(app_row.id) == "pruned"
    assert items(double) == {"r1.DATABASE_URL": "postgres://v1"}  # release 2 can run no more
    assert rendered(double, current) == 'DATABASE_URL="postgres://v1"\n'


def test_a_release_without_secrets_renders_no_template_and_the_variable_goes(
    double, app_row, redis_conn
):
    secret(app_row, "DATABASE_URL", "postgres://v1")
    settle(double, submit(app_row, redis_conn))
    unset_env(actor=None, app=app_row, key="DATABASE_URL")
    second = settle(double, submit(app_row, redis_conn))
    assert second.status == DeploymentStatus.SUCCEEDED
    assert "Templates" not in version(double, 1)["TaskGroups"][0]["Tasks"][0]
    assert prune_secrets(app_row.id) == "pruned"
    assert ("default", PATH) not in double.cluster.variables  # Nomad refuses empty variables


# ---------------------------------------------------------------------------------------------
# What may still run
# ---------------------------------------------------------------------------------------------


def _version(number: int, release: int, stable: bool) -> dict:
    return {"Version": number, "Stable": stable, "Meta": {"helios.release": str(release)}}


def _alloc(job_version: int, client: str = "running", desired: str = "run") -> dict:
    return {"JobVersion": job_version, "ClientStatus": client, "DesiredStatus": desired}


@pytest.mark.parametrize(
    ("allocations", "expected"),
    [
        ([_alloc(2), _alloc(2)], {3, 2}),  # current, and what a failure would revert to
        ([_alloc(1), _alloc(2, "pending")], {3, 2}),
        ([_alloc(0), _alloc(2)], {3, 2, 1}),  # an old allocation still runs release 1
        ([_alloc(0, "complete", "stop")], {3, 2}),  # a stopped one does not
        ([_alloc(9)], None),  # a version Nomad no longer lists: keep everything
    ],
)
def test_prune_keeps_what_can_run(allocations, expected):
    versions = [_version(2, 3, False), _version(1, 2, True), _version(0, 1, True)]
    assert runnable_releases(versions, allocations) == expected


def test_once_the_current_version_is_stable_older_releases_can_go():
    versions = [_version(1, 2, True), _version(0, 1, True)]
    assert runnable_releases(versions, [_alloc(1), _alloc(1)]) == {2}
    assert runnable_releases([], []) == set()


def test_prune_keeps_items_helios_did_not_write():
    items = {"r1.A": "1", "r2.A": "2", "operator_note": "x", "r3": "y"}
    assert keep_release_items(items, {2}) == {"r2.A": "2", "operator_note": "x", "r3": "y"}
