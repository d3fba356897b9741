"""Teams as Nomad namespaces: a new team's apps deploy into a namespace named after it (created
by Helios), teams from before stay in NOMAD_NAMESPACE until moved, cluster-wide reads see every
namespace, a refused namespace creation says how to fix it, and moving a team redeploys its apps
into the new namespace and purges the old jobs."""

from __future__ import annotations

import re
import subprocess

import pytest

from panel.actions.apps import create_app, request_deploy
from panel.actions.common import ActionError
from panel.actions.team_namespace import move_team_namespace
from panel.actions.teams import create_team
from panel.config import Settings
from panel.models import AppHealth, Deployment, DeploymentStatus, Event, Team
from panel.namespaces import namespace_for
from panel.reconcile.jobs import deploy_app, prune_secrets
from panel.reconcile.observe import sample

from conftest import helios_command, process_env, wait_until
from nomad_double.acl import Token


@pytest.fixture
def follow(run_follower, nomad_clock):
    return run_follower()


def _app(team, slug: str, redis_conn):
    return create_app(actor=None, team=team, slug=slug, image=f"registry.local/{slug}:1",
                      count=1, redis_conn=redis_conn)  # fmt: skip


def _deploy(app, redis_conn) -> Deployment:
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    assert deploy_app(requested.deployment.id) == "registered"
    return _finished(requested.deployment.id)


def _finished(deployment_id: int) -> Deployment:
    return wait_until(
        lambda: (row := Deployment.get_by_id(deployment_id))
        and DeploymentStatus(row.status).is_terminal
        and row,
        timeout=30, what=f"deployment #{deployment_id} to end",
    )  # fmt: skip


def _jobs(double, namespace: str) -> set[str]:
    """IDs `nomad job status -namespace=<namespace>` lists (jobs not stopped)."""
    return {
        job_id
        for (ns, job_id), _ in double.cluster.jobs.items()
        if ns == namespace and not double.cluster.current(ns, job_id).get("Stop")
    }


def test_new_teams_run_in_their_own_namespace_legacy_teams_in_nomad_namespace(
    deploy_env, nomad_double, follow, redis_conn
):
    acme = create_team(actor=None, slug="acme", name="Acme Corp")
    globex = create_team(actor=None, slug="globex")
    legacy = Team.create(slug="old-team", name="Old")  # from before namespaces: NULL
    assert (acme.nomad_namespace, globex.nomad_namespace, legacy.nomad_namespace) == (
        "acme", "globex", None,
    )  # fmt: skip
    apps = [_app(acme, "web", redis_conn), _app(acme, "api", redis_conn),
            _app(globex, "shop", redis_conn), _app(legacy, "blog", redis_conn)]  # fmt: skip
    for app in apps:
        done = _deploy(app, redis_conn)
        assert done.status == DeploymentStatus.SUCCEEDED, done.status_message
    assert _jobs(nomad_double, "acme") == {"web", "api"}
    assert _jobs(nomad_double, "globex") == {"shop"}
    assert _jobs(nomad_double, "default") == {"blog"}
    created = nomad_double.cluster.namespaces["acme"]
    assert created["Description"] == "Helios team Acme Corp"
    assert created["Meta"] == {"helios-team": "acme"}
    assert [d.nomad_namespace for d in Deployment.select().order_by(Deployment.id)] == [
        "acme", "acme", "globex", "default",
    ]  # fmt: skip
    # Created once (GET, then POST only while missing); the default one never.
    posts = nomad_double.requests_to("POST", r"/v1/namespace/.*")
    assert sorted(r.path for r in posts) == ["/v1/namespace/acme", "/v1/namespace/globex"]

    # Cluster-wide reads see every namespace: the follower's stream (above) and the sampler.
    report = sample(Settings.from_env(), redis_conn)
    assert report.allocations == 4
    assert {h.app.slug for h in AppHealth.select() if h.running == 1} == {
        "web", "api", "shop", "blog",
    }  # fmt: skip
    [listing] = nomad_double.requests_to("GET", r"/v1/allocations")
    assert listing.query["namespace"] == ["*"]
    streams = nomad_double.requests_to("GET", r"/v1/event/stream")
    assert streams and all(r.query["namespace"] == ["*"] for r in streams)


def test_a_refused_namespace_fails_the_deploy_saying_how_to_fix_it(
    deploy_env, nomad_double, db, redis_conn, monkeypatch
):
    nomad_double.tokens.add(Token(secret="client-secret", name="helios"))
    monkeypatch.setenv("NOMAD_TOKEN", "client-secret")
    team = create_team(actor=None, slug="acme", name="Acme")
    app = _app(team, "web", redis_conn)
    requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                               redis_conn=redis_conn)  # fmt: skip
    assert deploy_app(requested.deployment.id) == DeploymentStatus.FAILED.value
    row = Deployment.get_by_id(requested.deployment.id)
    assert "Nomad refused to create namespace 'acme' for team acme" in row.status_message
    assert "set HELIOS_NOMAD_MANAGEMENT_TOKEN" in row.status_message
    assert 'nomad namespace apply -description "Helios team Acme" acme' in row.status_message
    assert "acme" not in nomad_double.cluster.namespaces

    # With a management token for namespaces only, it goes through; jobs keep NOMAD_TOKEN.
    nomad_double.tokens.add(Token(secret="mgmt-secret", name="ops", type="management"))
    monkeypatch.setenv("HELIOS_NOMAD_MANAGEMENT_TOKEN", "mgmt-secret")
    again = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                           redis_conn=redis_conn)  # fmt: skip
    assert deploy_app(again.deployment.id) == "registered"
    refused, post = nomad_double.requests_to("POST", r"/v1/namespace/acme")
    assert refused.headers.get("X-Nomad-Token") == "client-secret"
    assert post.headers.get("X-Nomad-Token") == "mgmt-secret"
    [register] = nomad_double.requests_to("POST", r"/v1/job/web")
    assert register.headers.get("X-Nomad-Token") == "client-secret"
    assert register.query["namespace"] == ["acme"]


def test_moving_a_team_redeploys_into_its_namespace_and_purges_the_old_job(
    deploy_env, nomad_double, follow, redis_conn
):
    settings = Settings.from_env()
    team = Team.create(slug="acme", name="Acme")  # a team from before: NOMAD_NAMESPACE
    web = _app(team, "web", redis_conn)
    first = _deploy(web, redis_conn)
    assert first.status == DeploymentStatus.SUCCEEDED, first.status_message
    assert namespace_for(team, settings) == "default" and _jobs(nomad_double, "default") == {"web"}

    move = move_team_namespace(actor=None, team=team, settings=settings, redis_conn=redis_conn)
    assert move.namespace == "acme" and list(move.deployments) == ["web"]
    assert Team.get_by_id(team.id).nomad_namespace == "acme"
    assert nomad_double.cluster.namespaces["acme"]["Meta"] == {"helios-team": "acme"}
    moved = Deployment.get_by_id(move.deployments["web"])
    assert moved.reason == "reapply" and moved.release_id == first.release_id
    assert deploy_app(moved.id) == "registered"
    assert _finished(moved.id).status == DeploymentStatus.SUCCEEDED
    assert _jobs(nomad_double, "acme") == {"web"}
    assert _jobs(nomad_double, "default") == {"web"}  # still serving until the clean-up
    assert prune_secrets(web.id) == "pruned"  # queued by the follower after every outcome
    assert ("default", "web") not in nomad_double.cluster.jobs  # purged
    assert _jobs(nomad_double, "acme") == {"web"}
    assert Event.select().where(Event.subject == "v1.team.namespace_moved").count() == 1

    # Running it again changes nothing: the app runs in the namespace already.
    again = move_team_namespace(actor=None, team=Team.get_by_id(team.id), settings=settings,
                                redis_conn=redis_conn)  # fmt: skip
    assert (again.deployments, again.already) == ({}, ["web"])


def test_a_move_that_nomad_refuses_moves_nothing(deploy_env, nomad_double, db, redis_conn,
                                                  monkeypatch):  # fmt: skip
    nomad_double.tokens.add(Token(secret="client-secret", name="helios"))
    monkeypatch.setenv("NOMAD_TOKEN", "client-secret")
    team = Team.create(slug="acme", name="Acme")
    with pytest.raises(ActionError, match="management token") as caught:
        move_team_namespace(actor=None, team=team, settings=Settings.from_env(),
                            redis_conn=redis_conn)  # fmt: skip
    assert "nothing was moved" in str(caught.value)
    assert Team.get_by_id(team.id).nomad_namespace is None


def test_cli_move_namespace(deploy_env, nomad_double, settings, db, redis_conn):
    Team.create(slug="acme", name="Acme")
    command = helios_command("teams", "move-namespace", "acme")
    env = process_env(settings, NOMAD_ADDR=nomad_double.url)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "acme runs in Nomad namespace acme" in done.stdout
    assert Team.get(Team.slug == "acme").nomad_namespace == "acme"
    missing = subprocess.run(helios_command("teams", "move-namespace", "nope"), env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 4 and "no team named 'nope'" in missing.stderr


def test_the_team_page_shows_the_namespace_and_offers_the_move_to_site_admins(
    client, auth, db, redis_conn
):
    from panel.actions.accounts import create_user

    password = "namespace password 1234"
    create_user("ops@example.com", password, team_slug="acme", is_operator=True)
    create_user("dev@example.com", password, team_slug="acme")
    # A team from before namespaces per team (migration 020 left it NULL): NOMAD_NAMESPACE.
    Team.update(nomad_namespace=None).where(Team.slug == "acme").execute()
    assert auth.login("ops@example.com", password).status_code == 302
    page = client.get("/teams/acme").get_data(as_text=True)
    assert '<code id="team-namespace">default</code>' in page
    assert "nomad job status -namespace=default" in page
    assert "Move to its own namespace" in page
    token = re.search(r'name="csrf_token"[^>]*?value="([^"]+)"', page).group(1)
    # No Nomad cluster here: the move is refused with the reason, and nothing moves.
    answer = client.post("/teams/acme/move-namespace", data={"csrf_token": token})
    assert answer.status_code == 302 and answer.location.endswith("/teams/acme#namespace")
    shown = client.get("/teams/acme").get_data(as_text=True)
    assert "no Nomad cluster is configured" in shown and "nothing was moved" in shown
    assert Team.get(Team.slug == "acme").nomad_namespace is None

    client.post("/logout", data={"csrf_token": token})
    assert auth.login("dev@example.com", password).status_code == 302
    page = client.get("/teams/acme").get_data(as_text=True)
    assert '<code id="team-namespace">default</code>' in page
    assert "Move to its own namespace" not in page  # site admins only


def test_the_double_limits_a_namespace_scoped_token_to_its_namespace(deploy_env, nomad_double,
                                                                     db, redis_conn):  # fmt: skip
    """As a team token would be: a client token whose policy reaches namespace acme only."""
    import requests

    for team in (create_team(actor=None, slug="acme"), create_team(actor=None, slug="globex")):
        app = _app(team, f"{team.slug}-web", redis_conn)
        requested = request_deploy(actor=None, app=app, settings=Settings.from_env(),
                                   redis_conn=redis_conn)  # fmt: skip
        assert deploy_app(requested.deployment.id) == "registered"
    nomad_double.tokens.add(Token(secret="ops", name="ops", type="management"))
    nomad_double.tokens.add(Token(secret="acme-read", name="acme", namespaces=["acme"]))

    def get(path: str, namespace: str, token: str) -> requests.Response:
        return requests.get(f"{nomad_double.url}{path}", params={"namespace": namespace},
                            headers={"X-Nomad-Token": token}, timeout=5)  # fmt: skip

    every = get("/v1/jobs", "*", "ops").json()
    assert {j["ID"] for j in every} == {"acme-web", "globex-web"}
    assert [j["ID"] for j in get("/v1/jobs", "*", "acme-read").json()] == ["acme-web"]
    assert [j["ID"] for j in get("/v1/jobs", "acme", "acme-read").json()] == ["acme-web"]
    assert get("/v1/jobs", "globex", "acme-read").status_code == 403
    assert get("/v1/job/globex-web", "globex", "acme-read").status_code == 403
    assert {a["Namespace"] for a in get("/v1/allocations", "*", "acme-read").json()} == {"acme"}


def test_a_team_nomad_token_reads_only_its_namespace(deploy_env, nomad_double, db, redis_conn,
                                                     monkeypatch):  # fmt: skip
    from panel.actions.team_namespace import create_team_nomad_token

    nomad_double.tokens.add(Token(secret="mgmt-secret", name="helios", type="management"))
    monkeypatch.setenv("NOMAD_TOKEN", "mgmt-secret")
    settings = Settings.from_env()
    legacy = Team.create(slug="old-team", name="Old")
    with pytest.raises(ActionError, match="move it first"):
        create_team_nomad_token(actor=None, team=legacy, settings=settings, redis_conn=redis_conn)
    team = create_team(actor=None, slug="acme")
    token = create_team_nomad_token(actor=None, team=team, settings=settings,
                                    redis_conn=redis_conn)  # fmt: skip
    assert (token.policy, token.namespace) == ("helios-team-acme", "acme")
    rules = nomad_double.acl_policies["helios-team-acme"]["Rules"]
    assert 'namespace "acme" {' in rules and 'policy = "read"' in rules
    assert '"read-logs", "read-fs"' in rules and "write" not in rules
    created = nomad_double.tokens.by_secret[token.secret]
    assert (created.type, created.policies, created.accessor) == (
        "client", ["helios-team-acme"], token.accessor,
    )  # fmt: skip
    assert "acme" in nomad_double.cluster.namespaces
    [event] = Event.select().where(Event.subject == "v1.team.nomad_token_created")
    assert event.data["accessor_id"] == token.accessor
    assert token.secret not in repr(event.data)
