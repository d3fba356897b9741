"""The Nomad double's event stream, blocking queries, clock, namespaces, ACL self and gates.

Everything goes through real HTTP (requests / python-nomad) as Helios's follower will.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
import requests
from nomad.api import exceptions as nomad_exc
from test_nomad_double import TOKEN, job_body

from nomad_double import NomadDouble, run_nomad_double
from nomad_double.blocking import MAX_WAIT, parse_duration, query_options

EOF = object()


class Stream:
    """An open /v1/event/stream read line by line on a thread of its own."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, **params: Any) -> None:
        """Open the stream with query params (lists repeat the parameter)."""
        self.response = requests.get(
            f"{url}/v1/event/stream", params=params, headers=headers, stream=True, timeout=(5, 30)
        )
        self.lines: queue.Queue[Any] = queue.Queue()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Queue each line, then EOF (or the exception that ended the stream)."""
        try:
            for line in self.response.iter_lines(chunk_size=None):
                self.lines.put(line)
        except Exception as exc:  # the test looks at how it ended
            self.lines.put(exc)
        else:
            self.lines.put(EOF)

    def next(self, timeout: float = 5.0) -> Any:
        """The next line (bytes), EOF, an exception, or None after timeout seconds."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def frames(self, until: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Event batches (heartbeats skipped) up to the first one for which until(frame) holds."""
        frames, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.next(deadline - time.monotonic())
            assert isinstance(line, bytes), f"stream ended: {line!r} after {frames}"
            if line == b"{}":
                continue
            frames.append(json.loads(line))
            if until(frames[-1]):
                return frames
        raise AssertionError(f"no matching batch within {timeout}s: {frames}")

    def close(self) -> None:
        """Close the connection (shut down first: the reader thread holds the buffer lock)."""
        connection = getattr(self.response.raw, "connection", None)
        if connection is not None and connection.sock is not None:
            connection.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


def events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All events of the batches, in order."""
    return [event for frame in frames for event in frame["Events"]]


def successful(frame: dict[str, Any], version: int | None = None) -> bool:
    """A batch reporting a successful deployment (of that job version)."""
    return any(
        e["Topic"] == "Deployment"
        and e["Payload"]["Deployment"]["Status"] == "successful"
        and version in (None, e["Payload"]["Deployment"]["JobVersion"])
        for e in frame["Events"]
    )


@pytest.fixture
def double() -> Iterator[NomadDouble]:
    """A double that only moves when the test ticks it."""
    with run_nomad_double(auto_advance=False, heartbeat_interval=0.2) as fake:
        yield fake
        fake.assert_no_violations()


@pytest.fixture
def client(double: NomadDouble) -> nomad.Nomad:
    """python-nomad pointed at the double."""
    return nomad.Nomad(address=double.url, verify=True, timeout=5)


# -- event stream ----------------------------------------------------------------------------------


def test_stream_follows_a_deployment_with_nomads_event_types(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """Register -> plan -> allocation updates -> success, as batches of Nomad's raft writes."""
    stream = Stream(double.url, topic=["Job", "Evaluation", "Allocation", "Deployment"])
    assert stream.next() == b"{}"  # the first heartbeat says the subscription is open
    registered = client.jobs.register_job(job_body(count=1))
    double.tick(3)
    frames = stream.frames(until=successful)
    stream.close()
    indexes = [f["Index"] for f in frames]
    assert indexes == sorted(set(indexes))
    assert all(e["Index"] == f["Index"] for f in frames for e in f["Events"])
    kinds = [(e["Topic"], e["Type"]) for e in events(frames)]
    assert kinds[:2] == [("Job", "JobRegistered"), ("Evaluation", "JobRegistered")]
    for kind in [
        ("Deployment", "PlanResult"),
        ("Allocation", "PlanResult"),
        ("Evaluation", "EvaluationUpdated"),
        ("Allocation", "AllocationUpdated"),
        ("Deployment", "AllocationUpdated"),
        ("Deployment", "DeploymentStatusUpdate"),
        ("Job", "DeploymentStatusUpdate"),
    ]:
        assert kind in kinds
    first = events(frames)[0]
    assert set(first) == {"Topic", "Type", "Key", "Namespace", "FilterKeys", "Index", "Payload"}
    assert first["Key"] == "web" and first["Namespace"] == "default"
    assert first["FilterKeys"] is None and first["Index"] == registered["JobModifyIndex"]
    assert first["Payload"]["Job"]["ModifyIndex"] == first["Index"]
    alloc = next(e for e in events(frames) if e["Topic"] == "Allocation")
    assert alloc["FilterKeys"] == ["web", alloc["Payload"]["Allocation"]["DeploymentID"]]
    assert "Job" not in alloc["Payload"]["Allocation"]
    done = next(e for e in events(frames)[::-1] if e["Topic"] == "Deployment")
    assert done["FilterKeys"] == ["web"]
    assert done["Payload"]["Deployment"]["TaskGroups"]["web"]["HealthyAllocs"] == 1
    stable = next(e for e in events(frames)[::-1] if e["Topic"] == "Job")
    assert stable["Payload"]["Job"]["Stable"] is True


def test_canary_promotion_stop_and_manual_health_events(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """DeploymentPromotion on auto-promote, DeploymentAllocHealth, JobDeregistered on stop."""
    client.jobs.register_job(job_body(count=1))
    double.tick(3)
    stream = Stream(double.url, topic="Deployment:web", index=double.cluster.index + 1)
    client.job.register_job("web", job_body("web:2", count=1))
    double.tick(6)
    promoted = stream.frames(until=lambda f: successful(f, version=1))
    # An index past the newest batch re-delivers that batch first (StartAtClosest).
    assert successful(promoted[0], version=0)
    assert "DeploymentPromotion" in [e["Type"] for e in events(promoted)]
    manual = job_body("web:3", count=1, canary=0, HealthCheck="manual")
    client.job.register_job("web", manual)
    double.tick(4)
    deployment = client.job.get_deployment("web")
    alloc = next(a for a in client.job.get_allocations("web") if a["JobVersion"] == 2)
    assert alloc["DeploymentStatus"]["Healthy"] is None  # nobody but the operator decides
    # python-nomad sends "UnHealthyAllocationIDs", a key the spec does not know: send it raw.
    requests.post(
        f"{double.url}/v1/deployment/allocation-health/{deployment['ID']}",
        json={"DeploymentID": deployment["ID"], "HealthyAllocationIDs": [alloc["ID"]]},
        timeout=5,
    ).raise_for_status()
    healthy = stream.frames(until=lambda f: f["Events"][0]["Type"] == "DeploymentAllocHealth")
    assert (
        healthy[-1]["Events"][0]["Payload"]["Deployment"]["TaskGroups"]["web"]["HealthyAllocs"] == 1
    )
    stream.close()
    jobs = Stream(double.url, topic="Job:web", index=double.cluster.index + 1)
    client.job.deregister_job("web")
    stopped = jobs.frames(until=lambda f: f["Events"][0]["Type"] == "JobDeregistered")
    assert stopped[-1]["Events"][0]["Payload"]["Job"]["Stop"] is True
    jobs.close()


def test_topic_keys_and_namespaces_filter_events(double: NomadDouble, client: nomad.Nomad) -> None:
    """Job:web sees only web; other namespaces only with namespace=*."""
    client.namespace.create_namespace({"Name": "prod"})
    web = Stream(double.url, topic="Job:web")
    every = Stream(double.url, topic="Job:*", namespace="*")
    other = job_body(count=1)
    other["Job"].update(ID="api", Name="api")
    client.jobs.register_job(other)
    nomad.Nomad(address=double.url, namespace="prod", verify=True, timeout=5).jobs.register_job(
        job_body(count=1)
    )
    client.jobs.register_job(job_body(count=1))
    seen = events(web.frames(until=lambda f: f["Events"][0]["Namespace"] == "default"))
    assert {(e["Key"], e["Namespace"]) for e in seen} == {("web", "default")}
    everything = events(
        every.frames(until=lambda f: len(f["Events"]) and f["Index"] >= seen[0]["Index"])
    )
    assert {(e["Key"], e["Namespace"]) for e in everything} == {
        ("api", "default"),
        ("web", "prod"),
        ("web", "default"),
    }
    web.close()
    every.close()


def test_index_resumes_and_silently_skips_what_the_buffer_lost() -> None:
    """index=N starts at batch N; an index older than the buffer starts at the oldest kept."""
    with run_nomad_double(auto_advance=False, event_buffer_size=3) as double:
        client = nomad.Nomad(address=double.url, verify=True, timeout=5)
        client.jobs.register_job(job_body(count=1))
        double.tick(3)  # 6 writes with events: JobRegistered ... DeploymentStatusUpdate
        head = Stream(double.url, index=1)
        frames = head.frames(until=successful)
        head.close()
        # event_buffer.go keeps size + 1 batches once it has overflowed.
        assert len(frames) == 4 and frames[0]["Index"] > 2
        middle = Stream(double.url, index=frames[1]["Index"])
        assert [f["Index"] for f in middle.frames(until=successful)] == [
            f["Index"] for f in frames[1:]
        ]
        middle.close()
        beyond = Stream(double.url, index=frames[-1]["Index"] + 100)
        assert beyond.frames(until=lambda f: True)[0]["Index"] == frames[-1]["Index"]
        beyond.close()
        double.assert_no_violations()


def test_heartbeats_drop_and_stall(double: NomadDouble, client: nomad.Nomad) -> None:
    """{} every heartbeat_interval; drop_streams cuts connections; stall_streams silences them."""
    stream = Stream(double.url, topic="Job")
    assert [stream.next(1.0) for _ in range(3)] == [b"{}"] * 3
    assert double.open_streams == 1 and double.streams_opened == 1
    assert double.drop_streams() == 1
    end = stream.next()
    assert end is EOF or isinstance(end, Exception)
    deadline = time.monotonic() + 5
    while double.open_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert double.open_streams == 0

    quiet = Stream(double.url, topic="Job")
    assert quiet.next() == b"{}"
    double.stall_streams(1.0)
    started = time.monotonic()
    client.jobs.register_job(job_body(count=1))
    line = quiet.next(3.0)
    while line == b"{}":  # a heartbeat written just before the stall began may still arrive
        line = quiet.next(3.0)
    assert json.loads(line)["Events"][0]["Type"] == "JobRegistered"
    assert time.monotonic() - started >= 0.8  # the event waited out the stall
    quiet.close()


def test_a_stalled_reader_that_falls_out_of_the_buffer_is_cut_off() -> None:
    """Its last batch evicted, the stream ends with 'event dropped from buffer'."""
    with run_nomad_double(auto_advance=False, event_buffer_size=2) as double:
        client = nomad.Nomad(address=double.url, verify=True, timeout=5)
        stream = Stream(double.url, topic="Job")
        assert stream.next() == b"{}"
        client.jobs.register_job(job_body(count=1))
        assert json.loads(stream.next())["Events"][0]["Type"] == "JobRegistered"
        double.stall_streams(0.5)
        double.tick(4)
        rest = [stream.next(3.0) for _ in range(2)]
        assert rest[0] == b"event dropped from buffer"
        assert rest[1] is EOF
        double.assert_no_violations()


def test_stream_query_and_acl_checks() -> None:
    """Nomad's 400s for index/topic; unknown params are violations; 403 without a good token."""
    with run_nomad_double(token=TOKEN) as double:
        auth = {"X-Nomad-Token": TOKEN}
        url = f"{double.url}/v1/event/stream"
        bad_index = requests.get(url, params={"index": "x"}, headers=auth, timeout=5)
        assert (bad_index.status_code, bad_index.text) == (
            400,
            'Unable to parse index: strconv.Atoi: parsing "x": invalid syntax',
        )
        bad_topic = requests.get(url, params={"topic": "Job:a:b"}, headers=auth, timeout=5)
        assert bad_topic.text == (
            "Invalid topic query: error parsing topics: Invalid key value pair for topic, "
            "topic: Job:a:b"
        )
        unknown = requests.get(url, params={"topics": "Job"}, headers=auth, timeout=5)
        assert unknown.status_code == 400
        assert double.violations[-1] == "GET /v1/event/stream: unknown query parameter 'topics'"
        double.violations.clear()
        for headers in ({}, {"X-Nomad-Token": "nope"}):
            denied = requests.get(url, headers=headers, timeout=5)
            assert (denied.status_code, denied.text) == (403, "Permission denied")
        reader = double.add_token(name="follower")
        mine = {"X-Nomad-Token": reader["SecretID"]}
        assert requests.get(url, headers=mine, timeout=5).status_code == 403  # all topics
        stream = Stream(double.url, headers=mine, topic="Deployment")
        assert stream.response.status_code == 200 and stream.next() == b"{}"
        stream.close()
        muted = double.add_token(deny=[("GET", r"/v1/event/stream")])
        blocked = requests.get(
            url, params={"topic": "Job"}, headers={"X-Nomad-Token": muted["SecretID"]}, timeout=5
        )
        assert blocked.status_code == 403
        double.assert_no_violations()


# -- blocking queries ------------------------------------------------------------------------------


def test_blocking_query_returns_on_change_or_after_wait(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """index + wait hangs until the data's index passes index, or for wait (+ jitter)."""
    client.jobs.register_job(job_body(count=1))
    first = requests.get(f"{double.url}/v1/job/web", timeout=5)
    index = int(first.headers["X-Nomad-Index"])
    assert index == first.json()["ModifyIndex"]
    assert first.headers["X-Nomad-KnownLeader"] == "true"
    assert first.headers["X-Nomad-LastContact"] == "0"

    started = time.monotonic()
    idle = requests.get(
        f"{double.url}/v1/job/web", params={"index": index, "wait": "400ms"}, timeout=5
    )
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 0.4 * 17 / 16 + 0.5
    assert int(idle.headers["X-Nomad-Index"]) == index

    threading.Timer(0.3, double.tick, args=(1,)).start()  # the allocation starts: job running
    started = time.monotonic()
    changed = requests.get(
        f"{double.url}/v1/job/web", params={"index": index, "wait": "10s"}, timeout=15
    )
    assert time.monotonic() - started < 5
    assert int(changed.headers["X-Nomad-Index"]) > index
    assert changed.json()["Status"] == "running"


def test_blocking_on_a_missing_object_and_through_python_nomad(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """A 404 carries X-Nomad-Index and can block until the object appears; bad waits are 400."""
    missing = requests.get(f"{double.url}/v1/job/web", timeout=5)
    assert missing.status_code == 404 and "X-Nomad-Index" in missing.headers
    threading.Timer(0.3, client.jobs.register_job, args=(job_body(count=1),)).start()
    found = client.job.request(
        "web", method="get", params={"index": missing.headers["X-Nomad-Index"], "wait": "10s"}
    )
    assert found.json()["ID"] == "web"
    assert client.job.request("web", method="get", params={"index": "0", "wait": "5m"}).ok
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        client.job.request("web", method="get", params={"index": 1, "wait": "10x"})
    assert info.value.nomad_resp.text == "Invalid wait time"
    assert double.requests_to("GET", "/v1/job/web")[-1].query["wait"] == ["10x"]


def test_wait_parsing_and_cap() -> None:
    """Go durations; no index -> no blocking; waits past 300 s are capped (plus <= 1/16 jitter)."""
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("0") == 0.0
    for bad in ("", "10", "5x", "s", "1.2.3s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert query_options({"wait": ["30s"]}) == (0, 0.0)
    index, wait = query_options({"index": ["7"], "wait": ["20m"]})
    assert index == 7 and MAX_WAIT <= wait <= MAX_WAIT * 17 / 16
    _, default = query_options({"index": ["7"]})
    assert 300 <= default <= 300 * 17 / 16


def test_every_read_endpoint_reports_a_monotonic_index(
    double: NomadDouble, client: nomad.Nomad
) -> None:
    """X-Nomad-Index on each endpoint the follower may read, never going backwards."""
    client.jobs.register_job(job_body(count=2))
    deployment_id = client.job.get_deployment("web")["ID"]
    eval_id = client.job.get_evaluations("web")[0]["ID"]
    alloc_id = client.job.get_allocations("web")[0]["ID"]
    paths = [
        "/v1/jobs",
        "/v1/job/web",
        "/v1/job/web/versions",
        "/v1/job/web/deployments",
        "/v1/job/web/deployment",
        "/v1/job/web/allocations",
        "/v1/job/web/evaluations",
        "/v1/deployments",
        f"/v1/deployment/{deployment_id}",
        "/v1/allocations",
        f"/v1/allocation/{alloc_id}",
        f"/v1/evaluation/{eval_id}",
        "/v1/evaluations",
        "/v1/nodes",
    ]
    seen: dict[str, int] = {}
    for _ in range(4):
        for path in paths:
            response = requests.get(double.url + path, timeout=5)
            assert response.status_code == 200, path
            index = int(response.headers["X-Nomad-Index"])
            assert index >= seen.get(path, 1), path
            seen[path] = index
        double.tick()
    assert seen["/v1/job/web/deployment"] == client.job.get_deployment("web")["ModifyIndex"]
    assert seen["/v1/nodes"] == 1  # nothing wrote to the nodes table


# -- clock and timing ------------------------------------------------------------------------------


def test_own_clock_moves_a_deployment_that_nobody_polls() -> None:
    """tick_interval advances from a thread: an event follower sees success quickly."""
    with run_nomad_double(auto_advance=False, tick_interval=0.01) as double:
        client = nomad.Nomad(address=double.url, verify=True, timeout=5)
        stream = Stream(double.url, topic="Deployment")
        assert stream.next() == b"{}"
        started = time.monotonic()
        client.jobs.register_job(job_body(count=2))
        stream.frames(until=successful, timeout=5)
        assert time.monotonic() - started < 1.0
        stream.close()
        double.assert_no_violations()
    steps = double.cluster.steps
    time.sleep(0.05)
    assert double.cluster.steps == steps  # stop() stopped the clock


# -- namespaces ------------------------------------------------------------------------------------


def test_namespaces_isolate_jobs_and_variables(double: NomadDouble, client: nomad.Nomad) -> None:
    """A job or variable written in one namespace is invisible from another."""
    assert [n["Name"] for n in client.namespaces.get_namespaces()] == ["default"]
    client.namespace.create_namespace({"Name": "prod", "Description": "Production"})
    prod = nomad.Nomad(address=double.url, namespace="prod", verify=True, timeout=5)
    assert client.namespace.get_namespace("prod")["Description"] == "Production"
    with pytest.raises(nomad_exc.URLNotFoundNomadException) as info:
        client.namespace.get_namespace("staging")
    assert info.value.nomad_resp.text == "Namespace not found"

    path = "nomad/jobs/web"
    client.variable.create_variable(path, {"Items": {"DB": "default-db"}})
    with pytest.raises(nomad_exc.URLNotFoundNomadException):
        client.variable.get_variable(path, namespace="prod")
    assert client.variables.get_variables(namespace="prod") == []
    client.variable.create_variable(path, {"Items": {"DB": "prod-db"}}, namespace="prod")
    assert client.variable.get_variable(path)["Items"] == {"DB": "default-db"}
    assert client.variable.get_variable(path, namespace="prod")["Items"] == {"DB": "prod-db"}
    assert len(client.variables.get_variables(namespace="*")) == 2
    # python-nomad 2.1.0 does not add its own namespace to /v1/var(s) (its list says
    # "variable(s)"): a client made for prod reads default's variable unless told namespace=.
    assert prod.variable.get_variable(path)["Items"] == {"DB": "default-db"}

    prod.jobs.register_job(job_body(count=1))
    assert client.jobs.get_jobs() == []
    assert [(j["ID"], j["Namespace"]) for j in prod.jobs.get_jobs()] == [("web", "prod")]
    with pytest.raises(nomad_exc.URLNotFoundNomadException):
        client.job.get_job("web")
    assert prod.job.get_allocations("web")[0]["Namespace"] == "prod"
    assert client.deployments.get_deployments() == []
    assert len(client.deployments.get_deployments(namespace="*")) == 1

    staging = nomad.Nomad(address=double.url, namespace="staging", verify=True, timeout=5)
    with pytest.raises(nomad_exc.BaseNomadException) as info:
        staging.jobs.register_job(job_body(count=1))
    assert info.value.nomad_resp.status_code == 500
    assert info.value.nomad_resp.text == (
        '1 error occurred:\n\t* job "web" is in nonexistent namespace "staging"\n\n'
    )


# -- ACL -------------------------------------------------------------------------------------------


def test_acl_token_self_in_its_three_cases() -> None:
    """ACLs off: 400; a known token: the token; an unknown token: 404 'ACL token not found'."""
    with run_nomad_double() as open_double:
        off = nomad.Nomad(address=open_double.url, verify=True, timeout=5)
        with pytest.raises(nomad_exc.BadRequestNomadException) as info:
            off.acl.get_self_token()
        assert info.value.nomad_resp.text == "ACL support disabled"
    with run_nomad_double(token=TOKEN) as double:
        me = nomad.Nomad(
            address=double.url, token=TOKEN, verify=True, timeout=5
        ).acl.get_self_token()
        assert me["Type"] == "management" and me["Policies"] is None and me["Global"] is True
        assert me["SecretID"] == TOKEN  # Nomad returns the caller's own token whole
        assert {"AccessorID", "Name", "CreateTime", "CreateIndex", "ModifyIndex"} <= set(me)
        stranger = nomad.Nomad(address=double.url, token="nope", verify=True, timeout=5)
        with pytest.raises(nomad_exc.URLNotFoundNomadException) as info:
            stranger.acl.get_self_token()
        assert info.value.nomad_resp.text == "ACL token not found"
        double.assert_no_violations()


def test_a_token_denied_one_call(double: NomadDouble) -> None:
    """deny=[(method, regex)]: that call is 403 'Permission denied', the others work."""
    token = double.add_token(name="deployer", deny=[("POST", r"/v1/job/.*")])
    client = nomad.Nomad(address=double.url, token=token["SecretID"], verify=True, timeout=5)
    assert client.acl.get_self_token()["Type"] == "client"
    client.jobs.register_job(job_body(count=1))  # POST /v1/jobs is allowed
    with pytest.raises(nomad_exc.URLNotAuthorizedNomadException) as info:
        client.job.register_job("web", job_body("web:2", count=1))
    assert info.value.nomad_resp.text == "Permission denied"
    with pytest.raises(nomad_exc.URLNotAuthorizedNomadException):
        client.namespace.create_namespace({"Name": "prod"})  # management only
    assert client.job.get_job("web")["Version"] == 0


# -- validate --------------------------------------------------------------------------------------


def test_validate_job_answers_like_nomad(double: NomadDouble, client: nomad.Nomad) -> None:
    """ValidationErrors, Error (multierror text), DriverConfigValidated, Warnings."""
    good = client.validate.validate_job(job_body()).json()
    assert good == {
        "DriverConfigValidated": True,
        "ValidationErrors": None,
        "Error": "",
        "Warnings": "",
    }
    body = job_body()
    body["Job"].update(Namespace="nowhere", Datacenters=[])
    bad = client.validate.validate_job(body).json()
    assert bad["ValidationErrors"] == [
        'job "web" is in nonexistent namespace "nowhere"',
        "Missing job datacenters",
    ]
    assert bad["Error"].startswith("2 errors occurred:\n\t* job")
    missing = requests.post(f"{double.url}/v1/validate/job", json={}, timeout=5)
    assert missing.status_code == 400
    double.violations.clear()  # {} also breaks the schema; Nomad's own answer is the point


# -- gates -----------------------------------------------------------------------------------------


def test_hold_before_and_after_processing(double: NomadDouble, client: nomad.Nomad) -> None:
    """before: nothing happened yet; after: the change is made but no answer was sent."""
    answers: list[Any] = []
    gate = double.hold("POST", r"/v1/jobs")
    worker = threading.Thread(target=lambda: answers.append(client.jobs.register_job(job_body())))
    worker.start()
    assert gate.reached.wait(5)
    assert ("default", "web") not in double.cluster.jobs
    gate.release()
    worker.join(5)
    assert answers and answers[0]["EvalID"]

    after = double.hold("POST", r"/v1/job/web", when="after")
    worker = threading.Thread(
        target=lambda: answers.append(client.job.register_job("web", job_body("web:2")))
    )
    worker.start()
    assert after.reached.wait(5)
    assert len(double.cluster.versions("default", "web")) == 2
    assert worker.is_alive() and len(answers) == 1
    assert after.request.body["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "web:2"
    after.release()
    worker.join(5)
    assert len(answers) == 2
    assert client.job.get_job("web")["Version"] == 1  # gates are one-shot
