"""Builds against the Nomad API double and the GitHub double: a build job registered once, its
allocation followed to the end, a success deploys the built digest, a failure deploys nothing
and says why, newer commits supersede or stop older builds, a killed worker is recovered."""

from __future__ import annotations

import pytest

from panel.actions.apps import create_app
from panel.actions.builds import request_build
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import App, Build, BuildStatus, Deployment, DeploymentStatus, Event, Team, User
from panel.reconcile.builds import build_app, sweep_builds
from panel.reconcile.jobs import deploy_app
from panel.render.build import build_variable_path

from conftest import wait_until
from github_double import GitHubDouble, Repo
from nomad_double.batch import TaskScript, build_digest

TOKEN = "gho_" + "b" * 36
REPO_ID = 4242
SHA = "a" * 40
SHA2 = "b" * 40
REGISTRY = "registry.test:5000"


@pytest.fixture
def github():
    files = {(sha, "Dockerfile"): "FROM scratch\n" for sha in (SHA, SHA2, "c" * 40)}
    repo = Repo(id=REPO_ID, full_name="acme/shop", private=True, files=files)
    double = GitHubDouble(TOKEN, [repo]).start()
    yield double
    double.stop()
    assert not double.problems, double.problems


@pytest.fixture
def build_env(deploy_env, github, monkeypatch, nomad_build_node):
    monkeypatch.setenv("HELIOS_REGISTRY", REGISTRY)
    monkeypatch.setenv("HELIOS_REGISTRY_USERNAME", "builder")
    monkeypatch.setenv("HELIOS_REGISTRY_PASSWORD", "registry-password-123")
    monkeypatch.setenv("HELIOS_GITHUB_API_URL", github.url)
    monkeypatch.setenv("HELIOS_BUILD_TIMEOUT", "60")
    return Settings.from_env()


@pytest.fixture
def shop(build_env, db, redis_conn) -> App:
    team = Team.create(slug="acme", name="Acme")
    person = User.create(
        email="dev@example.com", github_token=SecretCipher.from_settings(build_env).encrypt(TOKEN)
    )
    app = create_app(
        actor=None, team=team, slug="shop", repo="acme/shop", branch="main",
        redis_conn=redis_conn,
    )  # fmt: skip
    App.update(github_repo_id=REPO_ID, connected_by=person).where(App.id == app.id).execute()
    return App.get_by_id(app.id)


@pytest.fixture
def follow(run_follower, nomad_clock):
    return run_follower()


def request(app: App, redis_conn, sha: str = SHA) -> Build:
    requested = request_build(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, git_sha=sha,
        reason="push", by="github",
    )  # fmt: skip
    return requested.build


def ended(build_id: int, timeout: float = 30.0) -> Build:
    return wait_until(
        lambda: (row := Build.get_by_id(build_id)) and BuildStatus(row.status).is_terminal and row,
        timeout=timeout, what=f"build #{build_id} to end",
    )  # fmt: skip


def subjects(app: App) -> list[str]:
    return [e.subject for e in Event.select().order_by(Event.id) if e.data.get("app") == app.slug]


def test_a_build_registers_once_and_its_success_deploys_the_built_digest(
    shop, redis_conn, nomad_double, follow
):
    build = request(shop, redis_conn)
    assert build_app(build.id) == "registered"
    assert build_app(build.id) == "following"  # a second run registers nothing
    job_id = "shop-build-1"
    assert len(nomad_double.requests_to("POST", f"/v1/job/{job_id}$")) == 1
    job = nomad_double.cluster.current("default", job_id)
    assert job["Type"] == "batch" and job["Meta"]["helios.git_sha"] == SHA
    assert job["Meta"]["helios.builder"] == "dockerfile"
    assert "registry-password-123" not in str(job) and TOKEN not in str(job)
    done = ended(build.id)
    digest = build_digest(job_id, SHA)
    assert done.status == "succeeded", done.status_message
    assert done.digest == digest and done.image == f"{REGISTRY}/acme/shop@{digest}"
    # the credentials the build read are gone once it ended
    paths = {("default", build_variable_path(job_id, task)) for task in ("fetch", "build")}
    wait_until(
        lambda: not paths & set(nomad_double.cluster.variables), what="the credentials to go"
    )
    deployment = Deployment.get_by_id(done.deployment_id)
    assert deployment.release.image == done.image and deployment.release.git_sha == SHA
    assert deploy_app(deployment.id) == "registered"
    finished = wait_until(
        lambda: (row := Deployment.get_by_id(deployment.id)) and row.status != "running" and row,
        what="the deploy to end",
    )
    assert finished.status == DeploymentStatus.SUCCEEDED.value, finished.status_message
    web = nomad_double.cluster.current("default", "shop")
    assert web["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == done.image
    assert subjects(shop)[:5] == [
        "v1.app.created", "v1.build.requested", "v1.build.started",
        "v1.deployment.requested", "v1.build.succeeded",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            {
                "fetch": TaskScript(stdout=["fetched"]),
                "build": TaskScript(stderr=["error: RUN make failed"], exit_code=2),
            },
            "the build failed (exit code 2)",
        ),
        (
            {"fetch": TaskScript(stderr=["fatal: repository not found"], exit_code=128)},
            "fetching the commit failed (exit code 128)",
        ),
        (
            {"fetch": TaskScript(), "build": TaskScript(steps=50, time_limit=3)},
            "exceeded its time limit of 60 s",
        ),
        (
            {"fetch": TaskScript(), "build": TaskScript(stdout=["COMMIT"])},
            "without printing the pushed image's digest",
        ),
        (
            {"fetch": TaskScript(), "build": TaskScript(stdout=["STEP 1/3"], oom=True)},
            "ran out of memory (limit 2048 MB)",
        ),
    ],
    ids=["build-fails", "fetch-fails", "time-limit", "no-digest", "memory-limit"],
)
def test_a_failed_build_deploys_nothing_and_says_why(
    shop, redis_conn, nomad_double, follow, script, expected
):
    nomad_double.set_batch_script(script, kind="build")
    build = request(shop, redis_conn)
    assert build_app(build.id) == "registered"
    done = ended(build.id)
    assert done.status == "failed"
    assert expected in done.status_message
    assert done.deployment_id is None and Deployment.select().count() == 0
    assert ("default", "shop") not in nomad_double.cluster.jobs  # the app never changed
    failed = Event.get(Event.subject == "v1.build.failed")
    assert expected in failed.data["reason"]


def test_a_newer_push_supersedes_a_queued_build_and_stops_a_running_one(
    shop, redis_conn, nomad_double, follow
):
    nomad_double.set_batch_script(
        {"fetch": TaskScript(), "build": TaskScript(steps=10_000)}, kind="build"
    )
    first = request(shop, redis_conn, SHA)
    assert build_app(first.id) == "registered"
    second = request(shop, redis_conn, SHA2)
    assert Build.get_by_id(first.id).status == "cancelled"
    assert "build #2 of a newer commit" in Build.get_by_id(first.id).status_message
    third = request(shop, redis_conn, "c" * 40)
    assert Build.get_by_id(second.id).status == "superseded"
    # the same commit again is the build under way, not another one
    again = request(shop, redis_conn, "c" * 40)
    assert again.id == third.id and Build.select().count() == 3
    from panel.reconcile.builds import stop_build

    assert stop_build(first.id) == "stopped"
    wait_until(
        lambda: nomad_double.cluster.current("default", "shop-build-1")["Status"] == "dead",
        what="the older build's job to stop",
    )
    assert Build.get_by_id(first.id).status == "cancelled"  # never a deploy of it
    assert Deployment.select().count() == 0


def test_builds_need_a_repo_app_and_a_registry(build_env, db, redis_conn, monkeypatch):
    from panel.actions.common import ActionError

    team = Team.create(slug="acme", name="Acme")
    image_app = create_app(
        actor=None, team=team, slug="img", image="nginx:1.27", redis_conn=redis_conn
    )
    with pytest.raises(ActionError, match="runs an image"):
        request(image_app, redis_conn)
    monkeypatch.setenv("HELIOS_REGISTRY", "")
    repo_app = create_app(actor=None, team=team, slug="src", repo="acme/src", redis_conn=redis_conn)
    with pytest.raises(ActionError, match="HELIOS_REGISTRY"):
        request(repo_app, redis_conn)
    assert Build.select().count() == 0


def test_a_worker_that_died_before_registering_is_recovered_by_the_sweep(
    shop, redis_conn, nomad_double, follow, build_env
):
    from panel.actions.builds import claim_build

    build = request(shop, redis_conn)
    assert claim_build(build.id) is not None  # a worker claimed it, then died
    Build.update(heartbeat_at=Build.requested_at).where(Build.id == build.id).execute()
    import rq

    rq.Queue("deploys", connection=redis_conn).empty()  # its job died with the worker
    done = sweep_builds(redis_conn, build_env, stale_s=0)
    assert done["requeued"] == [build.id]
    assert Build.get_by_id(build.id).attempts == 1
    attempt = rq.Queue("deploys", connection=redis_conn).job_ids
    assert attempt == [f"build-{build.id}-2"]
    assert build_app(build.id) == "registered"
    assert ended(build.id).status == "succeeded"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_worker_killed_while_registering_a_build_leaves_it_terminal_after_recovery(
    shop, redis_conn, nomad_double, follow, start_worker, deploy_env, build_env, when
):
    """SIGKILL the worker whose job is inside Nomad's register call (held by the double before
    Nomad registered it, or after); a new worker's sweep runs the build again, which registers
    the job once (or finds the one registered), and the build and its deploy end."""
    from conftest import kill_worker, work_horse_pid

    env = {
        **deploy_env,
        "HELIOS_REGISTRY": REGISTRY,
        "HELIOS_REGISTRY_USERNAME": "builder",
        "HELIOS_REGISTRY_PASSWORD": "registry-password-123",
        "HELIOS_GITHUB_API_URL": build_env.github_api_url,
        "HELIOS_BUILD_TIMEOUT": "60",
    }
    gate = nomad_double.hold("POST", r"^/v1/job/shop-build-1$", when=when)
    worker = start_worker(**env)
    build = request(shop, redis_conn)
    assert gate.reached.wait(30), "the build job never reached Nomad's register call"
    horse = work_horse_pid(worker)
    killed = kill_worker(worker)
    assert horse in killed
    gate.release()
    assert Build.get_by_id(build.id).status == "running"  # claimed, never recorded
    start_worker(**env)  # its sweep finds the build's run dead and runs it again
    done = ended(build.id, timeout=60)
    assert done.status == "succeeded", done.status_message
    assert done.attempts == 1
    versions = nomad_double.cluster.versions("default", "shop-build-1")
    assert len(versions) == 1  # one registration of the build job, whatever happened
    deployment = wait_until(
        lambda: (row := Deployment.get_or_none(Deployment.id == done.deployment_id))
        and row.status in ("succeeded", "failed")
        and row,
        timeout=60, what="the deploy of the recovered build",
    )  # fmt: skip
    assert deployment.status == "succeeded", deployment.status_message
    assert Build.select().count() == 1 and Deployment.select().count() == 1


SHA3 = "e" * 40


def test_the_commits_helios_toml_wins_and_the_release_says_which_keys_it_set(
    shop, redis_conn, nomad_double, follow, github
):
    repo = github.repos["acme/shop"]
    repo.files[(SHA3, "Dockerfile")] = "FROM scratch\n"
    repo.files[(SHA3, "helios.toml")] = 'port = 9000\nhealth_path = "/up"\n'
    build = request(shop, redis_conn, SHA3)
    assert build_app(build.id) == "registered"
    done = ended(build.id)
    assert done.status == "succeeded" and done.repo_settings == {"port": 9000, "health_path": "/up"}
    release = Deployment.get_by_id(done.deployment_id).release
    assert release.config["port"] == 9000 and release.config["health_path"] == "/up"
    assert release.config["from_repo"] == ["health_path", "port"]
    assert App.get_by_id(shop.id).port == 8080  # the panel's own value is kept


def test_a_bad_helios_toml_fails_the_build_before_anything_runs(
    shop, redis_conn, nomad_double, github
):
    repo = github.repos["acme/shop"]
    repo.files[(SHA3, "Dockerfile")] = "FROM scratch\n"
    repo.files[(SHA3, "helios.toml")] = "port = 70000\n"
    build = request(shop, redis_conn, SHA3)
    assert build_app(build.id) == "failed"
    row = Build.get_by_id(build.id)
    assert "helios.toml" in row.status_message and "port" in row.status_message
    assert not nomad_double.requests_to("POST", r"^/v1/job/shop-build-1$")


def test_without_a_dockerfile_the_build_uses_buildpacks(shop, redis_conn, nomad_double, follow):
    build = request(shop, redis_conn, SHA3)  # the double has no Dockerfile at this commit
    assert build_app(build.id) == "registered"
    job = nomad_double.cluster.current("default", "shop-build-1")
    assert job["Meta"]["helios.builder"] == "buildpacks"
    assert Build.get_by_id(build.id).builder == "buildpacks"
    assert ended(build.id).status == "succeeded"


def test_a_named_dockerfile_that_is_missing_fails_with_how_to_fix_it(
    shop, redis_conn, nomad_double
):
    App.update(dockerfile="docker/web.Dockerfile").where(App.id == shop.id).execute()
    build = request(App.get_by_id(shop.id), redis_conn, SHA)
    assert build_app(build.id) == "failed"
    message = Build.get_by_id(build.id).status_message
    assert "docker/web.Dockerfile is not in the repository" in message
