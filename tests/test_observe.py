"""The sampler against the Nomad double: each app's health and instances come from Nomad's
allocations (not its last deployment), its CPU and memory from allocation stats; an app that
goes down and comes back says so once each; the points stay bounded over a simulated week;
the app page and the dashboard show it. With the Consul double next to it, a critical check
makes its instance unhealthy and is named in the reason; an unreachable Consul or a refused
token leaves the checks unknown, never an app down."""

from __future__ import annotations

import pytest
from test_deploy_secrets import settle, submit

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.observe import prune_metrics, record_usage
from panel.config import Settings
from panel.drivers.consul import ConsulDriver, ConsulError
from panel.live import RESOLUTIONS, checks_by_alloc, judge_health
from panel.models import AppHealth, AppMetric, DeploymentStatus, Event, Team
from panel.reconcile.observe import sample

PASSWORD = "correct horse battery"
MB = 1024 * 1024


@pytest.fixture
def web(db, redis_conn):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    return create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="web",
        image="registry.local/web:1", count=2, redis_conn=redis_conn,
    )  # fmt: skip


@pytest.fixture
def running(deploy_env, nomad_double, run_follower, web, redis_conn):
    """web deployed, two instances running."""
    nomad_double.auto_advance = False
    run_follower()
    assert settle(nomad_double, submit(web, redis_conn)).status == DeploymentStatus.SUCCEEDED
    return nomad_double


def crash(double, *, oom: bool) -> None:
    """Every web allocation's task restarts between crashes, as a client reports it."""
    with double.cluster.lock:
        for alloc in double.cluster.allocs.values():
            if alloc["JobID"] != "web" or alloc["DesiredStatus"] != "run":
                continue
            state = alloc["TaskStates"]["web"]
            state.update(State="pending", Restarts=state["Restarts"] + 1)
            ended = 'Exit Code: 137, Exit Message: "OOM Killed"' if oom else "Exit Code: 1"
            state["Events"] += [
                {"Type": "Terminated", "Time": 10**18 + state["Restarts"], "DisplayMessage": ended},
                {"Type": "Restarting", "Time": 10**18 + state["Restarts"] + 1,
                 "DisplayMessage": "Task restarting in 15s"},
            ]  # fmt: skip
            double.cluster.touch("allocs", alloc)
        double.cluster.commit("AllocationUpdated")


def recover(double) -> None:
    with double.cluster.lock:
        for alloc in double.cluster.allocs.values():
            if alloc["JobID"] == "web" and alloc["DesiredStatus"] == "run":
                alloc["TaskStates"]["web"]["State"] = "running"
                double.cluster.touch("allocs", alloc)
        double.cluster.commit("AllocationUpdated")


def subjects() -> list[str]:
    return [e.subject for e in Event.select().where(Event.subject.startswith("v1.app."))
            .order_by(Event.id) if e.subject in ("v1.app.down", "v1.app.recovered")]  # fmt: skip


def test_health_instances_and_use_come_from_nomad(running, web, redis_conn):
    report = sample(Settings.from_env(), redis_conn, now=1_800_000_000)
    assert (report.apps, report.stats_read, report.stats_failed) == (1, 2, 0)
    assert report.requests == 3  # one list of every allocation, one stats read per instance
    health = AppHealth.get(AppHealth.app == web.id)
    assert (health.state, health.wanted, health.running, health.healthy) == ("healthy", 2, 2, 2)
    assert [i["version"] for i in health.instances] == [0, 0]
    assert all(i["node"] and i["started_at"] and i["restarts"] == 0 for i in health.instances)
    points = {p.resolution: p for p in AppMetric.select().where(AppMetric.app == web.id)}
    assert set(points) == {10, 60, 600}
    stats = [running.cluster.allocs[a]["AllocatedResources"]["Tasks"]["web"]
             for a in running.cluster.allocs]  # fmt: skip
    assert points[10].memory_sum == sum(t["Memory"]["MemoryMB"] * MB * 2 // 5 for t in stats)
    assert points[10].cpu_sum == pytest.approx(sum(t["Cpu"]["CpuShares"] * 0.1 for t in stats))
    assert points[10].cpu_limit == 2 * web.cpu_mhz
    assert points[10].memory_limit == 2 * web.memory_mb * MB


def test_a_crash_looping_app_is_down_once_then_recovered_once(running, web, redis_conn):
    settings = Settings.from_env()
    sample(settings, redis_conn)
    crash(running, oom=True)
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "down" and health.healthy == 0
    assert "Terminated: Exit Code: 137" in health.reason and "OOM Killed" in health.reason
    assert all(i["restarts"] == 1 and i["health"] == "unhealthy" for i in health.instances)
    crash(running, oom=False)
    sample(settings, redis_conn)  # still down: no second event
    assert subjects() == ["v1.app.down"]
    recover(running)
    sample(settings, redis_conn)
    assert AppHealth.get(AppHealth.app == web.id).state == "healthy"
    assert subjects() == ["v1.app.down", "v1.app.recovered"]


def test_an_app_nomad_does_not_run_is_not_running(deploy_env, nomad_double, web, redis_conn):
    sample(Settings.from_env(), redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert (health.state, health.wanted, health.instances) == ("not_running", 0, [])
    assert not AppMetric.select().exists()
    assert subjects() == []


def test_points_stay_bounded_over_a_simulated_week(web):
    start, step = 1_800_000_000, 50  # a sample every 50 s for a week: 12,096 samples
    for at in range(start, start + 7 * 86_400 + 1, step):
        record_usage([{"app_id": web.id, "cpu": 100.0, "memory": 64 * MB, "cpu_limit": 500.0,
                       "memory_limit": 512 * MB}], at=at)  # fmt: skip
        if at % 600 == 0:
            prune_metrics(at)
    prune_metrics(start + 7 * 86_400)
    counts = {
        resolution: AppMetric.select().where(AppMetric.resolution == resolution).count()
        for resolution, _kept in RESOLUTIONS
    }
    # 10 s points for an hour (one sample in 50 s fills one in five), 1 min for a day, 10 min
    # for a week: bounded by what each resolution keeps, whatever the week's length.
    assert counts[10] <= 3600 // 10 + 1 and counts[10] >= 3600 // 50
    assert 86_400 // 60 - 1 <= counts[60] <= 86_400 // 60 + 1
    assert 7 * 86_400 // 600 - 1 <= counts[600] <= 7 * 86_400 // 600 + 1
    assert sum(counts.values()) <= 2_808 + 3
    week = AppMetric.select().where(AppMetric.resolution == 600).order_by(AppMetric.bucket)
    assert all(p.cpu_sum / p.samples == 100.0 and p.samples == 12 for p in list(week)[1:-1])


def test_judging_health_from_allocations():
    def alloc(i, status="running", state="running", healthy=None, desired="run"):
        return {"ID": f"a{i}", "DesiredStatus": desired, "ClientStatus": status,
                "TaskStates": {"web": {"State": state, "Restarts": 0, "Events": []}},
                "DeploymentStatus": {"Healthy": healthy}}  # fmt: skip

    assert judge_health([])["state"] == "not_running"
    assert judge_health([alloc(1, desired="stop")])["state"] == "not_running"
    assert judge_health([alloc(1), alloc(2)])["state"] == "healthy"
    assert judge_health([alloc(1), alloc(2, state="pending")])["state"] == "degraded"
    assert judge_health([alloc(1, healthy=False)])["state"] == "down"
    assert judge_health([alloc(1, status="pending", state="pending")])["state"] == "down"
    assert judge_health([alloc(1, status="lost")])["instances"][0]["health"] == "unhealthy"


def test_the_pages_show_what_runs_and_follow_it_live(running, web, redis_conn, client, auth, app):
    from test_live_deployments import open_stream

    app.extensions["helios.settings"] = app.extensions["helios.settings"].replace(
        stream_lifetime=20
    )
    settings = Settings.from_env()
    sample(settings, redis_conn)
    auth.login("owner@example.com", PASSWORD)
    page = client.get("/apps/web").get_data(as_text=True)
    health = AppHealth.get(AppHealth.app == web.id)
    assert "Running now" in page and "2 of 2 instances healthy" in page
    assert all(i["alloc"] in page for i in health.instances)
    assert 'class="chart-line"' in page and 'class="chart-limit"' in page
    dashboard = client.get("/").get_data(as_text=True)
    assert '<span class="badge healthy"' in dashboard and 'class="spark"' in dashboard

    stream = open_stream(client, "/apps/web/live")
    assert stream.next() == {"retry": "2000"}
    first = stream.next()
    assert first["event"] == "health" and '"state": "healthy"' in first["data"]
    crash(running, oom=True)
    sample(settings, redis_conn)
    changed = stream.next()
    assert '"state": "down"' in changed["data"] and "OOM Killed" in changed["data"]
    stream.close()


def test_a_worker_samples_on_its_own_every_interval(running, web, start_worker, deploy_env):
    """The scheduled RQ job: a real worker queues a sampling pass each interval and runs it."""
    from conftest import wait_until

    start_worker(**{**deploy_env, "HELIOS_SAMPLE_INTERVAL": "1"})
    wait_until(lambda: AppHealth.get_or_none(AppHealth.app == web.id) is not None, timeout=30,
               what="the worker's first sampling pass")  # fmt: skip
    first = AppMetric.get(AppMetric.app == web.id, AppMetric.resolution == 600).samples
    wait_until(
        lambda: AppMetric.get(AppMetric.app == web.id, AppMetric.resolution == 600).samples
        >= first + 2,
        timeout=30, what="two more passes",
    )  # fmt: skip
    assert AppHealth.get(AppHealth.app == web.id).state == "healthy"


# -- Consul's checks -----------------------------------------------------------------------


def web_allocs(double) -> list[str]:
    """The ids of web's allocations Nomad wants running, in the order the app page lists them."""
    return sorted(a["ID"] for a in double.cluster.allocs.values()
                  if a["JobID"] == "web" and a["DesiredStatus"] == "run")  # fmt: skip


def test_judging_health_with_consul_checks():
    crashed = {"Type": "Terminated", "Time": 5, "DisplayMessage": "Exit Code: 1"}

    def alloc(i, state="running"):
        task = {"State": state, "Restarts": 0, "Events": [crashed]}
        return {"ID": f"{i:08d}-0000-4000-8000-000000000000", "DesiredStatus": "run",
                "ClientStatus": "running", "DeploymentStatus": {"Healthy": True},
                "TaskStates": {"web": task}}  # fmt: skip

    def check(i, status, output="", service="web"):
        return {"Node": "client-1", "CheckID": f"_nomad-check-{i}{status}", "Name": "alive",
                "Status": status, "Output": output, "ServiceName": service,
                "ServiceID": f"_nomad-task-{alloc(i)['ID']}-group-web-{service}-http"}  # fmt: skip

    failing = "HTTP GET http://10.0.0.10:20001/health: 500 Internal Server Error Output: "
    failing += "x" * 400
    serf = {"Node": "client-1", "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "critical", "ServiceID": ""}  # fmt: skip
    found = checks_by_alloc([serf, check(1, "passing", "ok"), check(2, "critical", failing)])
    assert set(found) == {alloc(1)["ID"], alloc(2)["ID"]}  # a node check is no instance's
    assert found[alloc(1)["ID"]] == [{"name": "alive", "status": "passing", "output": "ok"}]
    assert len(found[alloc(2)["ID"]][0]["output"]) == 300
    assert checks_by_alloc([check(1, "maintenance")])[alloc(1)["ID"]][0]["status"] == "warning"

    degraded = judge_health([alloc(1), alloc(2)], found)
    assert degraded["state"] == "degraded"
    assert degraded["reason"].startswith(
        "1 of 2 instances healthy: check 'alive' critical: HTTP GET http://10.0.0.10:20001/health"
    )
    assert [i["health"] for i in degraded["instances"]] == ["healthy", "unhealthy"]
    assert degraded["instances"][1]["checks"][0]["status"] == "critical"
    down = judge_health([alloc(2)], found)
    assert down["state"] == "down" and "check 'alive' critical: HTTP GET" in down["reason"]
    # A crashing task says more than the check that fails with it.
    crashing = judge_health([alloc(2, state="pending")], found)
    assert crashing["reason"] == "0 of 1 instances healthy: Terminated: Exit Code: 1"
    warned = judge_health([alloc(1)], checks_by_alloc([check(1, "warning", "slow")]))
    assert warned["state"] == "healthy" and warned["instances"][0]["checks"][0]["status"] == (
        "warning"
    )
    unknown = judge_health([alloc(1), alloc(2)], None)
    assert unknown["state"] == "healthy" and "Consul checks unknown" in unknown["reason"]
    assert [i["checks"] for i in unknown["instances"]] == [None, None]
    assert judge_health([alloc(1)])["instances"][0]["checks"] == []  # Consul not configured
    assert judge_health([], None)["reason"] == "no instance is wanted in Nomad"


def test_a_critical_check_makes_its_instance_unhealthy_until_it_passes(
    running, consul_double, web, redis_conn, client, auth
):
    settings = Settings.from_env(consul_addr=consul_double.url)
    report = sample(settings, redis_conn)
    assert report.requests == 4 and report.checks == 2  # one more request: every check at once
    assert [r.path for r in consul_double.requests] == ["/v1/health/state/any"]
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "healthy" and health.reason == "2 of 2 instances healthy"
    assert [[c["name"], c["status"]] for i in health.instances for c in i["checks"]] == [
        ["alive", "passing"], ["alive", "passing"]
    ]  # fmt: skip
    said = health.instances[0]["checks"][0]["output"]
    assert said.startswith("HTTP GET http://10.0.0.") and said.endswith(
        f"{web.health_path}: 200 OK Output: ok"
    )

    first, second = web_allocs(running)
    consul_double.set_check(first, "critical", "HTTP GET http://10.0.0.10:20001/health: 500 "
                            "Internal Server Error Output: database is gone")  # fmt: skip
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "degraded" and health.healthy == 1
    assert health.reason == (
        "1 of 2 instances healthy: check 'alive' critical: HTTP GET "
        "http://10.0.0.10:20001/health: 500 Internal Server Error Output: database is gone"
    )
    assert [i["health"] for i in health.instances] == ["unhealthy", "healthy"]
    auth.login("owner@example.com", PASSWORD)
    page = client.get("/apps/web").get_data(as_text=True)
    assert (
        '<span class="badge check-critical" title="HTTP GET http://10.0.0.10:20001/health: '
        '500 Internal Server Error Output: database is gone">alive: critical</span>' in page
    )
    assert '<span class="badge check-passing"' in page

    consul_double.set_check(second, "critical")
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "down" and "check 'alive' critical: HTTP GET" in health.reason
    assert subjects() == ["v1.app.down"]
    # Consul stops answering: the last known checks hold, the app does not look recovered.
    consul_double.stop()
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "down" and "check 'alive' critical: HTTP GET" in health.reason
    assert health.reason.endswith("(Consul unreachable: its last known check states)")
    assert subjects() == ["v1.app.down"]
    consul_double.start()
    consul_double.set_check(first, "warning")
    consul_double.set_check(second, "passing")
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert (health.state, health.reason) == ("healthy", "2 of 2 instances healthy")
    assert [i["checks"][0]["status"] for i in health.instances] == ["warning", "passing"]
    assert subjects() == ["v1.app.down", "v1.app.recovered"]


def test_an_unreachable_consul_leaves_checks_unknown_not_apps_down(
    running, consul_double, web, redis_conn, caplog, client, auth
):
    settings = Settings.from_env(consul_addr=consul_double.url)
    consul_double.stop()
    with caplog.at_level("WARNING", logger="panel.reconcile.observe"):
        report = sample(settings, redis_conn)
    assert report.checks is None and report.stats_read == 2
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.state == "healthy" and health.healthy == 2
    assert (
        health.reason == "2 of 2 instances healthy (Consul checks unknown: judged from Nomad alone)"
    )
    assert [i["checks"] for i in health.instances] == [None, None]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and f"Consul is not reachable at {consul_double.url}" in warned[0]
    assert "HELIOS_CONSUL_ADDR" in warned[0]
    auth.login("owner@example.com", PASSWORD)
    assert client.get("/apps/web").get_data(as_text=True).count(">checks unknown</span>") == 2
    consul_double.start()  # back: read again on the next pass
    sample(settings, redis_conn)
    health = AppHealth.get(AppHealth.app == web.id)
    assert health.reason == "2 of 2 instances healthy"
    assert all(i["checks"][0]["status"] == "passing" for i in health.instances)
    assert subjects() == []


def test_a_wrong_consul_token_is_refused_clearly(running, web, redis_conn, caplog):
    from consul_double import run_consul_double

    with run_consul_double(running, token="the-right-token") as consul:
        wrong = Settings.from_env(consul_addr=consul.url, consul_token="a-wrong-token")
        with pytest.raises(ConsulError) as caught:
            ConsulDriver.from_settings(wrong).service_checks()
        assert str(caught.value) == (
            f"Consul at {consul.url} refused the check states (ACL not found): set "
            "HELIOS_CONSUL_TOKEN to a token whose policy grants service:read and node:read"
        )
        with caplog.at_level("WARNING"):
            sample(wrong, redis_conn)
        assert "Consul checks unknown" in AppHealth.get(AppHealth.app == web.id).reason
        assert "a-wrong-token" not in caplog.text and "ACL not found" in caplog.text
        caplog.clear()

        # No token: Consul's anonymous token, whose reads its ACLs filter to nothing.
        with caplog.at_level("WARNING"):
            sample(Settings.from_env(consul_addr=consul.url), redis_conn)
        assert "Consul's ACLs hid some checks from HELIOS_CONSUL_TOKEN" in caplog.text
        assert [i["checks"] for i in AppHealth.get(AppHealth.app == web.id).instances] == [[], []]

        right = Settings.from_env(consul_addr=consul.url, consul_token="the-right-token")
        sample(right, redis_conn)
        assert consul.requests[-1].headers["X-Consul-Token"] == "the-right-token"
        assert "X-Consul-Token" not in consul.requests[-2].headers
        health = AppHealth.get(AppHealth.app == web.id)
        assert health.reason == "2 of 2 instances healthy"
        assert [len(i["checks"]) for i in health.instances] == [1, 1]
        assert consul.violations == []
