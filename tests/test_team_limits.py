"""Per-team limits: usage counted, every path that makes a team use more admitted or refused with
the numbers, lowering always allowed, only site admins set limits (actions, page, API, CLI), and
two admissions at once never both passing (SQLite, then PostgreSQL)."""

from __future__ import annotations

import re
import threading

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import (
    ActionError,
    create_app,
    cut_release,
    request_deploy,
    request_reapply,
    request_rollback,
    update_app,
)
from panel.actions.common import as_local_operator
from panel.actions.lifecycle import scale_app, start_app, stop_app
from panel.actions.limits import set_team_limits, usage_of
from panel.actions.tokens import create_token
from panel.db import database, migrate_up, open_database
from panel.models import App, Deployment, DeploymentStatus, Event, Membership, Release, Role, Team
from panel.schema.limits import (
    AppClaim,
    Change,
    Limits,
    Overrun,
    Resources,
    Usage,
    apply_change,
    describe_overrun,
    overruns,
    team_usage,
)

from conftest import Auth

PASSWORD = "limits password 1234"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


# ---------------------------------------------------------------------------------------------
# Usage and the rule, pure
# ---------------------------------------------------------------------------------------------


def test_usage_counts_live_apps_and_what_running_ones_reserve():
    claims = [
        AppClaim(1, Resources(2, 500, 256)),  # never deployed: its settings
        # a rollback runs 3 x 250 while the settings say 1 x 1000: the larger of each measure
        AppClaim(2, Resources(1, 1000, 128), Resources(3, 250, 512)),
        AppClaim(3, Resources(4, 4000, 4096), Resources(4, 4000, 4096), stopped=True),
    ]
    assert team_usage(claims) == Usage(apps=3, instances=2 + 3, cpu_mhz=1000 + 1000,
                                       memory_mb=512 + 1536)  # fmt: skip
    assert team_usage([]) == Usage()
    started = apply_change(claims, Change(3, start=True))
    assert team_usage(started).instances == 9
    created = apply_change(claims, Change(settings=Resources(1, 100, 64)))
    assert team_usage(created) == Usage(4, 6, 2100, 2112)


def test_only_a_measure_growing_past_its_limit_is_refused():
    limits = Limits(apps=2, memory_mb=1000)
    assert overruns(Usage(1, 1, 100, 900), Usage(2, 2, 200, 1000), limits) == []
    assert overruns(Usage(1, 1, 100, 900), Usage(2, 2, 200, 1001), limits) == [
        Overrun("memory_mb", 900, 1001, 1000)
    ]
    # over the limit already (set below usage): less, or the same, passes; more does not
    assert overruns(Usage(5, 1, 0, 3000), Usage(5, 1, 0, 2000), limits) == []
    assert overruns(Usage(5, 1, 0, 3000), Usage(5, 1, 0, 3000), limits) == []
    assert [o.measure for o in overruns(Usage(5, 1, 0, 3000), Usage(6, 1, 0, 3001), limits)] == [
        "apps", "memory_mb",
    ]  # fmt: skip
    assert overruns(Usage(), Usage(99, 99, 99, 99), Limits()) == []


def test_the_refusal_names_the_limit_the_usage_the_change_and_the_fix():
    message = describe_overrun("acme", Overrun("memory_mb", 1536, 2600, 2048))
    assert message == (
        "team acme would use 2,600 MB of memory, over its limit of 2,048 MB (1,536 MB in use, "
        "this change adds 1,064 MB): lower the app's memory or count, or ask a site admin to "
        "raise the limit (helios teams limits acme --memory-mb N)"
    )


# ---------------------------------------------------------------------------------------------
# Every path that makes a team use more
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def team(db) -> Team:
    return Team.create(slug="acme", name="Acme")


def _limit(team: Team, **limits) -> None:
    Team.update(**{f"limit_{k}": v for k, v in limits.items()}).where(Team.id == team.id).execute()


def _app(team: Team, slug: str, count: int = 1, cpu: int = 250, memory: int = 256) -> App:
    return create_app(actor=None, team=team, slug=slug, image="nginx:1.27", count=count,
                      cpu_mhz=cpu, memory_mb=memory)  # fmt: skip


def _live(app: App, settings, redis_conn) -> App:
    """Deploy the app and record the deployment as succeeded (what the follower would do)."""
    requested = request_deploy(actor=None, app=app, settings=settings, redis_conn=redis_conn)
    Deployment.update(status=DeploymentStatus.SUCCEEDED.value).where(
        Deployment.id == requested.deployment.id
    ).execute()
    return App.get_by_id(app.id)


def _refused(call, *phrases: str) -> ActionError:
    with pytest.raises(ActionError) as caught:
        call()
    assert caught.value.code == "conflict", caught.value.message
    for phrase in phrases:
        assert phrase in caught.value.message, caught.value.message
    return caught.value


def test_creating_an_app_is_admitted_under_the_limits_and_refused_over_them(team):
    _app(team, "web", count=3, memory=512)
    _limit(team, memory_mb=2048, apps=3)
    _refused(
        lambda: _app(team, "big", memory=1064),
        "team acme would use 2,600 MB of memory, over its limit of 2,048 MB (1,536 MB in use, "
        "this change adds 1,064 MB): lower the app's memory or count",
        "helios teams limits acme --memory-mb N",
    )
    assert not App.select().where(App.slug == "big").exists()
    assert not Event.select().where(Event.data.contains('"big"')).exists()
    _app(team, "small", memory=512)  # exactly at the limit: admitted
    assert usage_of(team) == Usage(apps=2, instances=4, cpu_mhz=1000, memory_mb=2048)
    _limit(team, memory_mb=None)
    _app(team, "third")
    _refused(lambda: _app(team, "fourth"), "would use 4 apps, over its limit of 3 apps",
             "--apps N")  # fmt: skip


def test_changing_resources_is_checked_and_lowering_always_passes(team):
    web = _app(team, "web", count=2, cpu=1000)
    _limit(team, cpu_mhz=2500)
    _refused(lambda: update_app(actor=None, app=web, cpu_mhz=1500),
             "would use 3,000 MHz of CPU, over its limit of 2,500 MHz")  # fmt: skip
    _refused(lambda: update_app(actor=None, app=App.get_by_id(web.id), count=3), "MHz of CPU")
    assert App.get_by_id(web.id).cpu_mhz == 1000
    update_app(actor=None, app=App.get_by_id(web.id), port=9090)  # no resource: not checked
    _limit(team, cpu_mhz=500)  # set below what the team uses already
    update_app(actor=None, app=App.get_by_id(web.id), cpu_mhz=800)  # less: allowed
    assert usage_of(team).cpu_mhz == 1600
    _refused(lambda: update_app(actor=None, app=App.get_by_id(web.id), cpu_mhz=900), "MHz")


def test_scaling_up_is_checked_and_scaling_down_passes_over_the_limit(team, settings, redis_conn):
    web = _live(_app(team, "web", count=2), settings, redis_conn)
    _limit(team, instances=3)
    _refused(lambda: scale_app(actor=None, app=web, count=4, redis_conn=redis_conn),
             "team acme would use 4 instances, over its limit of 3 instances (2 instances in "
             "use, this change adds 2 instances)", "--instances N")  # fmt: skip
    assert App.get_by_id(web.id).count == 2
    scale_app(actor=None, app=web, count=3, redis_conn=redis_conn)
    _limit(team, instances=1)
    scale_app(actor=None, app=App.get_by_id(web.id), count=2, redis_conn=redis_conn)
    assert usage_of(team).instances == 2


def test_a_deployment_that_runs_more_is_checked_before_anything_is_written(
    team, settings, redis_conn
):
    web = _live(_app(team, "web", count=3), settings, redis_conn)
    web = update_app(actor=None, app=web, count=1)
    web = _live(web, settings, redis_conn)  # release 2 runs one instance
    _limit(team, instances=2)
    releases = Release.select().count()
    deployments = Deployment.select().count()
    # a rollback to release 1 runs three again
    _refused(
        lambda: request_rollback(
            actor=None, app=web, release_number=1, settings=settings, redis_conn=redis_conn
        ),
        "would use 3 instances, over its limit of 2 instances",
    )
    # a build whose helios.toml asks for more than the panel's settings
    _refused(
        lambda: cut_release(
            actor=None,
            app=web,
            settings=settings,
            redis_conn=redis_conn,
            image="nginx:1.28",
            git_sha="",
            reason="build",
            repo_settings={"count": 5},
        ),
        "would use 5 instances",
    )
    assert (Release.select().count(), Deployment.select().count()) == (releases, deployments)
    request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)  # same: fine


def test_starting_a_stopped_app_is_checked_as_it_runs_nothing_while_stopped(
    team, settings, redis_conn
):
    web = _live(_app(team, "web", count=2, memory=512), settings, redis_conn)
    stop_app(actor=None, app=web, redis_conn=redis_conn)
    assert usage_of(team) == Usage(apps=1, instances=0, cpu_mhz=0, memory_mb=0)
    _app(team, "api", memory=512)
    _limit(team, memory_mb=1024)
    web = App.get_by_id(web.id)
    _refused(lambda: start_app(actor=None, app=web, settings=settings, redis_conn=redis_conn),
             "would use 1,536 MB of memory, over its limit of 1,024 MB (512 MB in use, this "
             "change adds 1,024 MB)")  # fmt: skip
    # a re-apply of a stopped app would start it too
    _refused(lambda: request_reapply(actor=None, app=web, settings=settings,
                                     redis_conn=redis_conn), "MB of memory")  # fmt: skip
    assert App.get_by_id(web.id).is_stopped
    scale_app(actor=None, app=web, count=1, redis_conn=redis_conn)  # stopped: uses nothing
    start_app(actor=None, app=App.get_by_id(web.id), settings=settings, redis_conn=redis_conn)
    assert usage_of(team).memory_mb == 1024


# ---------------------------------------------------------------------------------------------
# Setting limits: site admins only
# ---------------------------------------------------------------------------------------------


def test_only_site_admins_set_limits_and_each_change_is_an_event(db):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    team = Team.get(Team.slug == "acme")
    with pytest.raises(ActionError) as caught:
        set_team_limits(actor=owner, team=team, limits={"apps": 2})
    assert caught.value.code == "not_found"
    admin = create_user("root@example.com", PASSWORD, team_slug="ops", is_operator=True)
    set_team_limits(actor=admin, team=team, limits={"apps": 2, "memory_mb": "4096"})
    set_team_limits(actor=admin, team=team, limits={"apps": 2})  # unchanged: no event
    with as_local_operator("alice"):
        set_team_limits(actor=None, team=team, limits={"apps": "none"})
    events = list(Event.select().where(Event.subject == "v1.team.limits_changed"))
    assert [(e.actor, e.data["fields"]) for e in events] == [
        ("root@example.com", ["apps", "memory_mb"]),
        ("operator alice (local shell)", ["apps"]),
    ]
    assert events[-1].data["limits"] == {"apps": None, "instances": None, "cpu_mhz": None,
                                         "memory_mb": 4096}  # fmt: skip
    for bad in (0, -1, "x", True, 1.5, "1e3", 10**12, {"a": 1}):
        with pytest.raises(ActionError) as caught:
            set_team_limits(actor=admin, team=team, limits={"cpu_mhz": bad})
        assert caught.value.code == "invalid"
        assert 'or "none" for no limit' in caught.value.message
    with pytest.raises(ActionError):
        set_team_limits(actor=admin, team=team, limits={"disk_gb": 1})


def _signed_in(client, auth, email: str):
    assert auth.login(email, PASSWORD).status_code == 302
    return client


def test_the_team_page_shows_usage_to_members_and_the_form_to_site_admins(db, app, client, auth):
    create_user("owner@example.com", PASSWORD, team_slug="acme")
    team = Team.get(Team.slug == "acme")
    _app(team, "web", count=2, cpu=500, memory=512)
    _limit(team, memory_mb=4096, apps=1)
    viewer = create_user("viewer@example.com", PASSWORD, team_slug="home")
    Membership.create(user=viewer, team=team, role=Role.VIEWER.value)
    admin = create_user("root@example.com", PASSWORD, team_slug="ops", is_operator=True)
    Membership.create(user=admin, team=team, role=Role.VIEWER.value)

    page = _signed_in(client, auth, "viewer@example.com").get("/teams/acme")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="usage-title">Usage' in html
    memory = html[html.index('id="usage-memory_mb"') :]
    assert "1,024 MB" in memory[:600] and "4,096 MB" in memory[:600]
    assert '<meter min="0" max="4096"' in memory[:600]
    cpu = html[html.index('id="usage-cpu_mhz"') :]
    assert "1,000 MHz" in cpu[:400] and "no limit" in cpu[:400]
    assert "Save limits" not in html
    token = CSRF_RE.search(html).group(1)
    refused = client.post("/teams/acme/limits", data={"apps": "5", "csrf_token": token})
    assert refused.status_code == 403
    assert Team.get_by_id(team.id).limit_apps == 1

    client = app.test_client()  # the site admin, signed in afresh
    auth = Auth(client)
    html = _signed_in(client, auth, "root@example.com").get("/teams/acme").get_data(as_text=True)
    assert "Save limits" in html and 'value="4096"' in html
    token = CSRF_RE.search(html).group(1)
    bad = client.post("/teams/acme/limits", data={"apps": "0", "csrf_token": token})
    assert bad.status_code == 422 and "apps 0 is out of range" in bad.get_data(as_text=True)
    done = client.post("/teams/acme/limits", data={
        "apps": "3", "instances": "", "cpu_mhz": "8000", "memory_mb": "", "csrf_token": token,
    })  # fmt: skip
    assert done.status_code == 302
    row = Team.get_by_id(team.id)
    assert (row.limit_apps, row.limit_instances, row.limit_cpu_mhz, row.limit_memory_mb) == (
        3, None, 8000, None,
    )  # fmt: skip


def test_the_api_reads_usage_for_members_and_lets_only_site_admins_set_limits(db, client):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    team = Team.get(Team.slug == "acme")
    _app(team, "web", count=2, memory=300)
    read = {"Authorization": f"Bearer {create_token(owner, 'r', ['read']).secret}"}
    admin_token = {"Authorization": f"Bearer {create_token(owner, 'a', ['admin']).secret}"}
    answer = client.get("/api/v1/teams/acme/limits", headers=read)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {
        "team": "acme", "apps": {"used": 1, "limit": None},
        "instances": {"used": 2, "limit": None}, "cpu_mhz": {"used": 500, "limit": None},
        "memory_mb": {"used": 600, "limit": None},
    }  # fmt: skip
    refused = client.put("/api/v1/teams/acme/limits", json={"apps": 1}, headers=admin_token)
    assert refused.status_code == 403
    assert "site admin" in refused.get_json()["message"]

    root = create_user("root@example.com", PASSWORD, team_slug="ops", is_operator=True)
    op = {"Authorization": f"Bearer {create_token(root, 'op', ['admin']).secret}"}
    assert client.get("/api/v1/teams/acme/limits", headers=op).status_code == 200
    done = client.put("/api/v1/teams/acme/limits", json={"memory_mb": 512, "apps": None},
                      headers=op)  # fmt: skip
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["memory_mb"] == {"used": 600, "limit": 512}
    bad = client.put("/api/v1/teams/acme/limits", json={"instances": 0}, headers=op)
    assert bad.status_code == 422 and bad.get_json()["field"] == "instances"
    unknown = client.put("/api/v1/teams/acme/limits", json={"disk": 1}, headers=op)
    assert unknown.status_code == 422
    missing = client.get("/api/v1/teams/nope/limits", headers=op)
    assert missing.status_code == 404
    # the limit is now below usage: growth is refused through the API with the message
    grow = client.patch("/api/v1/apps/web", json={"memory_mb": 400}, headers=admin_token)
    assert grow.status_code == 409
    assert "team acme would use 800 MB of memory" in grow.get_json()["message"]
    shrink = client.patch("/api/v1/apps/web", json={"memory_mb": 200}, headers=admin_token)
    assert shrink.status_code == 200, shrink.get_json()


def test_the_cli_shows_usage_and_sets_limits_for_site_admins_only(
    settings, db, live_panel, tmp_path
):
    from test_cli_client import Helios

    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    _app(Team.get(Team.slug == "acme"), "web", count=2, memory=512)
    root = create_user("root@example.com", PASSWORD, team_slug="ops", is_operator=True)
    home = tmp_path / "home"
    home.mkdir()
    helios = Helios(settings, home)

    def run(user, *args):
        token = create_token(user, "cli", ["admin"]).secret
        return helios("teams", "limits", *args, HELIOS_URL=live_panel, HELIOS_TOKEN=token)

    shown = run(owner, "acme")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"memory\s+1,024 MB\s+no limit", shown.stdout), shown.stdout
    refused = run(owner, "acme", "--apps", "3")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "site admin" in refused.stderr
    bad = run(root, "acme", "--memory-mb", "lots")
    assert bad.returncode == 2 and 'or "none" for no limit' in bad.stderr
    done = run(root, "acme", "--memory-mb", "1000", "--apps", "none")
    assert done.returncode == 0, done.stderr
    assert "Limits of acme saved." in done.stdout
    assert re.search(r"memory\s+1,024 MB \(over the limit\)\s+1,000 MB", done.stdout), done.stdout
    assert Team.get(Team.slug == "acme").limit_memory_mb == 1000


# ---------------------------------------------------------------------------------------------
# Two admissions at once
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def any_team(any_database_url):
    """A team on a fresh database: SQLite, then PostgreSQL."""
    handle = open_database(any_database_url)
    migrate_up()
    handle.connect(reuse_if_open=True)
    yield Team.create(slug="acme", name="Acme")
    handle.close()


def test_two_admissions_at_once_never_both_pass(any_team):
    team = any_team
    rounds, outcomes = 6, []
    for number in range(rounds):
        _limit(team, apps=number + 1, memory_mb=None)
        barrier = threading.Barrier(2)
        results: list[str] = []

        def create(slug: str, barrier=barrier, results=results) -> None:
            with database.connection_context():
                barrier.wait()
                try:
                    _app(team, slug)
                    results.append("created")
                except ActionError as exc:
                    assert exc.code == "conflict", exc.message
                    results.append("refused")

        threads = [threading.Thread(target=create, args=(f"r{number}-{side}",))
                   for side in ("a", "b")]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        outcomes.append(sorted(results))
    assert outcomes == [["created", "refused"]] * rounds
    assert App.live().where(App.team == team.id).count() == rounds
