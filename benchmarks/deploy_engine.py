"""Deploy engine latency: API request → Nomad register → outcome, next to floors from the same run.

Starts a Redis server, the Nomad API double (tests/nomad_double, in this process, no delay,
time advancing only when a job is registered: then it rolls the new version out at once,
before it answers), a real `helios worker` and a real `helios follower` on a fresh SQLite
database, and drives the JSON API (POST /api/v1/apps/<slug>/deployments) through Flask's test
client, as signin_timing.py does. Times come from CLOCK_MONOTONIC, shared by every process here:

- API → register: from just before the POST to the double receiving ``POST /v1/job/<id>``;
  floor: an RQ job start (enqueue a no-op job on the deploy queue → it runs on the worker);
- register → terminal: from the double receiving the register to this script receiving the
  ``v1.deployment.succeeded`` event the follower publishes when it writes the outcome;
  floors: an event-stream round trip (a write in the double → the frame read by an HTTP client
  of the stream) and a Redis pub/sub round trip;
- 50 apps deployed at once on the one worker: from the first POST to the last outcome;
  floor: 50 no-op jobs enqueued at once on that worker → the last one ran (measured), and, for
  scale, 50 x the API → register p50 (the worker takes one job at a time).

Between two single deploys the script waits until the worker is idle (each outcome queues a
prune job), so every sample starts alike. Also prints where the API → register time goes
(the events Helios emits on the way, the double's own request handling) and checks every
deploy ended ``succeeded`` with one registered job version. ``--profile N`` adds cProfile
summaries of N API requests and N deploy jobs (run in the real work horse).

Prints figures only; asserts nothing.
Run: .venv/bin/python benchmarks/deploy_engine.py [--deploys 100] [--apps 50] [--profile 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the Nomad double is test code
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # also when a work horse imports this file

from support import free_port, parse_sizes, report, start_redis  # noqa: E402

from nomad_double import run_nomad_double  # noqa: E402

API = "/api/v1"
TARGET_P50_MS = 30.0
REGISTER = re.compile(r"/v1/job/([a-z0-9-]+)")  # POST: register (plan is /v1/job/<id>/plan)
WARMUP = 5


def now() -> float:
    return time.monotonic()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=100, help="single deploys (default 100)")
    parser.add_argument("--apps", type=int, default=50, help="apps deployed at once (default 50)")
    parser.add_argument(
        "--rotate", type=int, default=10, help="apps the single deploys rotate over (default 10)"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="also profile N API requests and N deploy jobs (in the work horse) and print "
        "where the time goes (default 0)",
    )  # fmt: skip
    return parse_sizes(parser, {"deploys": 40})


def ms(seconds: float) -> float:
    return seconds * 1000


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def profiled_deploy_app(deployment_id: int, out: str) -> str:
    """A deploy job run under cProfile (the worker imports it by name; --profile)."""
    import cProfile

    from panel.reconcile.jobs import deploy_app

    profile = cProfile.Profile()
    try:
        return profile.runcall(deploy_app, deployment_id)
    finally:
        profile.dump_stats(out)


# ---------------------------------------------------------------------------------------------
# The world: Redis, the double, the panel, a worker and a follower
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Wraps the double's request handler: when each request arrived and was answered; rolls a
    registered job version out at once (before answering the register)."""

    def __init__(self, double) -> None:
        self.double = double
        self.registers: dict[str, list[float]] = defaultdict(list)  # job id -> arrival times
        self.handled: list[tuple[str, str, float, float]] = []  # method, route, in, out
        self.rollout: list[float] = []  # seconds the double took to roll a version out
        original = double.handle

        def handle(method, raw_path, headers, raw_body):
            arrived = now()
            path = raw_path.split("?", 1)[0]
            register = method == "POST" and REGISTER.fullmatch(path)
            if register:
                self.registers[register.group(1)].append(arrived)
            answer = original(method, raw_path, headers, raw_body)
            if register and answer[0] == 200:
                started = now()
                self._roll_out(register.group(1))
                self.rollout.append(now() - started)
            if path != "/v1/event/stream":
                route = re.sub(r"/v1/(job|var)/[^/]+(/jobs/[^/]+)?", r"/v1/\1/:id", path)
                self.handled.append((method, route, arrived, now()))
            return answer

        double.handle = handle

    def _roll_out(self, job_id: str) -> None:
        cluster = self.double.cluster
        for _ in range(100):
            with cluster.lock:
                running = any(
                    d["JobID"] == job_id and d["Status"] == "running"
                    for d in cluster.deployments.values()
                )
            if not running:
                return
            cluster.step()


class Events:
    """Every event Helios publishes on Redis, with the time it arrived here."""

    def __init__(self, redis_url: str) -> None:
        self.lock = threading.Condition()
        self.seen: dict[tuple[str, int], float] = {}
        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("helios:events")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(redis.ConnectionError):  # Redis stopped: the run is over
            self._listen()

    def _listen(self) -> None:
        for message in self.pubsub.listen():
            arrived = now()
            document = json.loads(message["data"])
            deployment = (document.get("data") or {}).get("deployment_id")
            if deployment is None:
                continue
            with self.lock:
                self.seen[(document["subject"], deployment)] = arrived
                self.lock.notify_all()

    def wait(self, subject: str, deployment_id: int, timeout: float = 60) -> float:
        deadline = now() + timeout
        with self.lock:
            while (subject, deployment_id) not in self.seen:
                left = deadline - now()
                if left <= 0:
                    raise SystemExit(f"no {subject} for deployment #{deployment_id} in {timeout} s")
                self.lock.wait(left)
            return self.seen[(subject, deployment_id)]


def start_role(role: str, env: dict[str, str], data_dir: Path) -> subprocess.Popen:
    log = (data_dir / f"{role}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "panel", role], env=env, stdout=log, stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )  # fmt: skip


def wait_for(predicate, what: str, timeout: float = 60.0, interval: float = 0.01) -> Any:
    deadline = now() + timeout
    while now() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, settings, redis_url: str, double, recorder, events) -> None:
        from panel.actions.accounts import create_user
        from panel.actions.apps import create_app as create_helios_app
        from panel.actions.tokens import create_token
        from panel.models import Team
        from panel.web import create_app

        self.args = args
        self.redis = redis.Redis.from_url(redis_url)
        self.double, self.recorder, self.events = double, recorder, events
        user = create_user("bench@example.com", "Copper Walrus Umbrella 42", team_slug="bench")
        team = Team.get(Team.slug == "bench")
        secret = create_token(user, "bench", ["deploy"]).secret
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.client = create_app(settings).test_client()
        total = args.rotate + args.apps
        self.slugs = [f"app-{n:03d}" for n in range(total)]
        for slug in self.slugs:
            create_helios_app(
                actor=None, team=team, slug=slug, image=f"registry.local/{slug}:1", count=1,
                cpu_mhz=100, memory_mb=64,
            )  # fmt: skip

    def post(self, slug: str) -> int:
        answer = self.client.post(f"{API}/apps/{slug}/deployments", headers=self.headers, json={})
        if answer.status_code != 202:
            raise SystemExit(f"POST deployments of {slug}: {answer.status_code} {answer.json}")
        return answer.json["id"]

    def finished_jobs(self) -> int:
        from rq import Queue
        from rq.registry import FinishedJobRegistry

        return FinishedJobRegistry(queue=Queue("deploys", connection=self.redis)).count

    def idle(self, finished: int = 0) -> None:
        """Wait until the worker has nothing queued or running, and at least ``finished`` jobs
        of the deploy queue have finished (an outcome queues a prune job a moment later)."""
        from rq import Queue
        from rq.registry import StartedJobRegistry

        queue = Queue("deploys", connection=self.redis)
        started = StartedJobRegistry(queue=queue)
        wait_for(
            lambda: self.finished_jobs() >= finished and queue.count == 0 and started.count == 0,
            "the worker to be idle",
        )

    # -- single deploys ------------------------------------------------------------------------

    def single(self) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = defaultdict(list)
        rotate = self.slugs[: self.args.rotate]
        finished = 0
        for n in range(WARMUP + self.args.deploys):
            slug = rotate[n % len(rotate)]
            self.idle(finished)
            finished = self.finished_jobs() + 2  # this deploy job, then the prune it causes
            registers = len(self.recorder.registers[slug])
            handled = len(self.recorder.handled)
            started = now()
            deployment = self.post(slug)
            answered = now()
            done = self.events.wait("v1.deployment.succeeded", deployment)
            register = self.recorder.registers[slug][registers]
            if n < WARMUP:
                continue
            claimed = self.events.wait("v1.deployment.started", deployment)
            submitted = self.events.wait("v1.deployment.submitted", deployment)
            requested = self.events.wait("v1.deployment.requested", deployment)
            samples["api_to_register"].append(register - started)
            samples["register_to_terminal"].append(done - register)
            samples["api_request"].append(answered - started)
            samples["requested_event"].append(requested - started)
            samples["answered_to_claimed"].append(claimed - answered)
            samples["claimed_to_register"].append(register - claimed)
            samples["register_to_submitted"].append(submitted - register)
            samples["submitted_to_terminal"].append(done - submitted)
            calls = sorted(
                (c for c in self.recorder.handled[handled:] if claimed <= c[2] < register),
                key=lambda c: c[2],
            )
            samples["double_before_register"].append(sum(out - at for _m, _p, at, out in calls))
            if calls:
                samples["claimed_to_first_call"].append(calls[0][2] - claimed)
                answers = [c[3] for c in calls]
                arrivals = [c[2] for c in calls[1:]] + [register]
                samples["helios_between_calls"].append(
                    sum(a - b for a, b in zip(arrivals, answers, strict=True))
                )
            samples["calls_before_register"].append(len(calls))
            samples["rollout_in_double"].append(self.recorder.rollout[-1])
        return samples

    # -- floors --------------------------------------------------------------------------------

    def rq_job_start(self, count: int) -> list[float]:
        """Enqueue a no-op job (time.monotonic, which returns when it ran) → it runs."""
        from rq import Queue

        queue = Queue("deploys", connection=self.redis)
        samples = []
        for n in range(WARMUP + count):
            self.idle()
            started = now()
            job = queue.enqueue("time.monotonic")
            ran = wait_for(lambda j=job: j.latest_result(), "a no-op job", interval=0.002)
            if n >= WARMUP:
                samples.append(ran.return_value - started)
        return samples

    def rq_burst(self, count: int) -> float:
        """Enqueue count no-op jobs at once → the last one ran, on the one worker."""
        from rq import Queue

        queue = Queue("deploys", connection=self.redis)
        self.idle()
        started = now()
        jobs = [queue.enqueue("time.monotonic") for _ in range(count)]
        results = [wait_for(lambda j=j: j.latest_result(), "no-op jobs") for j in jobs]
        return max(r.return_value for r in results) - started

    def pubsub_round_trip(self, count: int) -> list[float]:
        listener = self.redis.pubsub(ignore_subscribe_messages=True)
        listener.subscribe("bench:ping")
        listener.get_message(timeout=1)
        samples = []
        for _ in range(WARMUP + count):
            started = now()
            self.redis.publish("bench:ping", "x")
            while listener.get_message(timeout=5) is None:
                pass
            samples.append(now() - started)
        listener.close()
        return samples[WARMUP:]

    def stream_round_trip(self, count: int) -> list[float]:
        """A write in the double's event broker → the frame read by an HTTP stream client."""
        import requests

        response = requests.get(
            f"{self.double.url}/v1/event/stream", params={"topic": "Deployment:bench-probe"},
            stream=True, timeout=(5, 30),
        )  # fmt: skip
        lines = response.iter_lines(chunk_size=None)
        next(lines)  # the first heartbeat: connected
        broker, samples = self.double.broker, []
        probe = {"ID": "bench-probe", "JobID": "bench-probe", "Namespace": "default"}
        for _ in range(WARMUP + count):
            with self.double.cluster.lock:  # a write of nothing else, with an index of its own
                index = self.double.cluster.index = self.double.cluster.index + 1
            started = now()
            broker.publish(index, "DeploymentStatusUpdate", [("deployment", probe)])
            while True:
                line = next(lines)
                if line and json.loads(line).get("Index") == index:
                    break
            samples.append(now() - started)
        response.close()
        return samples[WARMUP:]

    # -- where the time goes -------------------------------------------------------------------

    def profile_api(self, count: int, out_dir: Path) -> list[Path]:
        """count API deploy requests under cProfile, here (each deploy then runs as usual)."""
        import cProfile

        dumps, finished = [], 0
        for n in range(count):
            slug = self.slugs[n % self.args.rotate]
            self.idle(finished)
            finished = self.finished_jobs() + 2
            profile = cProfile.Profile()
            deployment = profile.runcall(self.post, slug)
            dumps.append(out_dir / f"api-{deployment}.prof")
            profile.dump_stats(str(dumps[-1]))
            self.events.wait("v1.deployment.succeeded", deployment)
        self.idle(finished)
        return dumps

    def profile(self, count: int, out_dir: Path) -> list[Path]:
        """Run count deploy jobs through profiled_deploy_app; their cProfile dumps.

        The rows are recorded with a Redis client that cannot connect, so the request's own job
        is not queued (that failure is logged, as Helios does when Redis is away); the profiled
        job is queued instead, at once (the sweep would queue the real one after 10 s).
        """
        from rq import Queue

        from panel.actions.apps import request_deploy
        from panel.config import Settings
        from panel.models import App
        from panel.queue import connect_redis

        settings = Settings.from_env()
        nowhere = connect_redis(
            Settings.from_env(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        )  # Helios's own client, as when its Redis is away: refused at once
        queue = Queue("deploys", connection=self.redis)
        dumps, finished = [], 0
        logging.getLogger("panel").setLevel(logging.ERROR)  # "recorded but not queued": meant
        for n in range(count):
            app = App.get(App.slug == self.slugs[n % self.args.rotate])
            self.idle(finished)
            finished = self.finished_jobs() + 2
            deployment = request_deploy(
                actor=None, app=app, settings=settings, redis_conn=nowhere
            ).deployment
            dumps.append(out_dir / f"deploy-{deployment.id}.prof")
            queue.enqueue(
                "benchmarks.deploy_engine.profiled_deploy_app", deployment.id, str(dumps[-1])
            )
            self.events.wait("v1.deployment.succeeded", deployment.id)
        self.idle(finished)
        return dumps

    # -- many at once ----------------------------------------------------------------------------

    def burst(self) -> tuple[float, list[int]]:
        slugs = self.slugs[self.args.rotate :]
        self.idle()
        started = now()
        ids = [self.post(slug) for slug in slugs]
        ends = [self.events.wait("v1.deployment.succeeded", i, timeout=300) for i in ids]
        return max(ends) - started, ids


def check(double, bench: Bench) -> list[str]:
    """Every deployment succeeded and registered exactly one job version."""
    from panel.models import Deployment

    problems = []
    for deployment in Deployment.select():
        if deployment.status != "succeeded":
            problems.append(f"#{deployment.id} {deployment.status}: {deployment.status_message}")
    for slug in bench.slugs:
        marks = [v["Meta"]["helios.deployment"] for v in double.cluster.versions("default", slug)]
        if len(marks) != len(set(marks)):
            problems.append(f"{slug}: a deployment registered two versions ({marks})")
    return problems


def _bucket(path: str, name: str) -> str:
    """What a profiled function belongs to, for the time-by-part table."""
    if any(word in name for word in ("recv", "readinto", "sendall", "<method 'read'")):
        return "sockets: sending, waiting for answers (Nomad, Redis)"
    if "sqlite3" in name:
        return "SQLite (sqlite3 calls)"
    if "poll" in name or "select" in name or "acquire" in name:
        return "waiting (locks, poll)"
    if path.startswith(str(REPO_ROOT / "panel")):
        return "panel's own code"
    found = re.search(r"site-packages/([A-Za-z0-9_]+)", path)
    if found:
        return found.group(1)
    return "Python stdlib and builtins"


def summarize(title: str, dumps: list[Path], top: int = 14) -> str:
    """Per call: own time by part (package), then panel's functions by cumulative time."""
    import pstats

    stats = pstats.Stats(*map(str, dumps))
    n = len(dumps)
    parts: dict[str, float] = defaultdict(float)
    ours = []
    for (path, line, name), (_cc, _nc, own, cumulative, _callers) in stats.stats.items():
        parts[_bucket(path, name.replace("{", "<").replace("}", ">"))] += own
        if path.startswith(str(REPO_ROOT / "panel")):
            where = f"{Path(path).relative_to(REPO_ROOT)}:{line}({name})"
            ours.append((cumulative, where))
    total = sum(parts.values())
    out = [f"\n{title}: {ms(total / n):.1f} ms per call under cProfile (which slows Python code)"]
    out.append("  own time by part:")
    for part, own in sorted(parts.items(), key=lambda kv: -kv[1])[:8]:
        out.append(f"    {ms(own / n):>7.1f} ms  {part}")
    out.append("  panel's functions, cumulative:")
    for cumulative, where in sorted(ours, reverse=True)[:top]:
        out.append(f"    {ms(cumulative / n):>7.1f} ms  {where}")
    return "\n".join(out)


def row(name: str, values: list[float], floor: list[float] | None, note: str = "") -> str:
    p50, p99 = ms(pct(values, 50)), ms(pct(values, 99))
    ratio = f"{p50 / ms(pct(floor, 50)):.1f}x" if floor else ""
    return f"{name:<38}{p50:>9.1f}{p99:>9.1f}{ratio:>9}  {note}"


def main() -> None:
    args = parse_args()
    run_started = now()
    with tempfile.TemporaryDirectory(prefix="helios-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir(mode=0o700)
        redis_proc, redis_url = start_redis(data_dir)
        children: list[subprocess.Popen] = []
        try:
            with run_nomad_double(auto_advance=False) as double:
                recorder = Recorder(double)
                from panel.config import Settings
                from panel.db import migrate_up, open_database

                settings = Settings.from_env(
                    environ={}, data_dir=data_dir, redis_url=redis_url, log_level="warning",
                    nomad_addr=double.url,
                )  # fmt: skip
                open_database(settings.effective_database_url)
                migrate_up()
                env = {
                    **{k: v for k, v in os.environ.items()
                       if not k.startswith(("HELIOS_", "NOMAD_"))},
                    "HELIOS_DATA_DIR": str(data_dir),
                    "HELIOS_DATABASE_URL": settings.effective_database_url,
                    "HELIOS_REDIS_URL": redis_url,
                    "NOMAD_ADDR": double.url,
                    "HELIOS_LOG_LEVEL": "warning",
                    "PYTHONPATH": str(REPO_ROOT),
                }  # fmt: skip
                events = Events(redis_url)
                bench = Bench(args, settings, redis_url, double, recorder, events)
                children.append(start_role("worker", env, data_dir))
                children.append(start_role("follower", env, data_dir))
                wait_for(
                    lambda: double.open_streams >= 1, "the follower's event stream", timeout=30
                )
                phases: dict[str, float] = {}

                def phase(name: str, work, *a):
                    started = now()
                    try:
                        return work(*a)
                    finally:
                        phases[name] = now() - started

                job_start = phase("RQ job start", bench.rq_job_start, args.deploys)
                single = phase("single deploys", bench.single)
                pubsub = phase("pub/sub", bench.pubsub_round_trip, args.deploys)
                stream = phase("event stream", bench.stream_round_trip, args.deploys)
                burst_floor = phase("no-op burst", bench.rq_burst, args.apps)
                burst_s, _ids = phase("burst", bench.burst)
                profile_text = ""
                if args.profile:
                    api = phase("profile API", bench.profile_api, args.profile, Path(tmp))
                    jobs = phase("profile jobs", bench.profile, args.profile, Path(tmp))
                    profile_text = summarize(
                        f"cProfile of {len(api)} API deploy requests (Flask test client)", api
                    ) + summarize(f"cProfile of {len(jobs)} deploy jobs in the work horse", jobs)
                problems = check(double, bench)
                handled = list(recorder.handled)
        finally:
            for proc in children:
                proc.terminate()
            for proc in children:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    print(
        f"{args.deploys} single deploys ({args.rotate} apps in turn, after {WARMUP} warm-up), "
        f"then {args.apps} apps at once; real worker, follower, Redis, SQLite; Nomad double "
        "in-process, rolling out at once"
    )
    print(f"{'':38}{'p50 ms':>9}{'p99 ms':>9}{'/ floor':>9}")
    print(row("API → register", single["api_to_register"], job_start,
              f"(target p50 ≤ {TARGET_P50_MS:.0f} ms)"))  # fmt: skip
    print(row("  floor: RQ job start", job_start, None, "(enqueue no-op → it runs)"))
    print(row("register → terminal", single["register_to_terminal"], stream))
    print(row("  floor: event-stream round trip", stream, None, "(double write → frame read)"))
    print(row("  floor: Redis pub/sub round trip", pubsub, None))
    serial = args.apps * pct(single["api_to_register"], 50)
    print(
        f"{args.apps} apps at once, one worker: all terminal in {ms(burst_s):.0f} ms"
        f" ({burst_s / burst_floor:.1f}x floor)"
    )
    print(f"  floor: {args.apps} no-op RQ jobs at once → last ran: {ms(burst_floor):.0f} ms")
    print(f"  for scale: {args.apps} x API → register p50 = {ms(serial):.0f} ms")
    print()
    print("where API → register goes (p50 / p99 ms of each part, single deploys):")
    parts = [
        ("POST answered (request, release, enqueue)", "api_request"),
        ("  of which until v1.deployment.requested", "requested_event"),
        ("answered → claimed (queue + fork + claim)", "answered_to_claimed"),
        ("claimed → register arrives", "claimed_to_register"),
        ("  claimed → first Nomad request arrives", "claimed_to_first_call"),
        ("  the double answering requests", "double_before_register"),
        ("  Helios between an answer and its next request", "helios_between_calls"),
        ("register → v1.deployment.submitted", "register_to_submitted"),
        ("submitted → terminal (follower)", "submitted_to_terminal"),
        ("  of which the double rolling out", "rollout_in_double"),
    ]
    for label, key in parts:
        values = single[key]
        print(f"  {label:<48}{ms(pct(values, 50)):>8.1f}{ms(pct(values, 99)):>8.1f}")
    calls = single["calls_before_register"]
    print(f"  (Nomad requests before the register: {min(calls):.0f}-{max(calls):.0f})")
    per_route: dict[str, list[float]] = defaultdict(list)
    for method, route, arrived, answered in handled:
        per_route[f"{method} {route}"].append(answered - arrived)
    print("the double's own time per request (p50 ms, count):")
    for route, values in sorted(per_route.items(), key=lambda kv: -len(kv[1]))[:8]:
        print(f"  {route:<44}{ms(statistics.median(values)):>8.2f}{len(values):>8}")
    verdict = "every deployment succeeded, one job version each" if not problems else "FAILED"
    print(f"checks: {verdict}")
    for problem in problems[:10]:
        print(f"  PROBLEM {problem}")
    if profile_text:
        print(profile_text)
    spent = ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
    print(f"\ntotal {now() - run_started:.1f} s (s per phase: {spent})")
    to_register = single["api_to_register"]
    for q in (50, 99):
        report(figure=f"API -> Nomad register p{q}", value=ms(pct(to_register, q)), unit="ms",
               floor_name=f"RQ job start p{q}", floor=ms(pct(job_start, q)))  # fmt: skip
    report(figure="register -> outcome recorded p50",
           value=ms(pct(single["register_to_terminal"], 50)), unit="ms",
           floor_name="event-stream round trip p50", floor=ms(pct(stream, 50)))  # fmt: skip
    report(figure=f"{args.apps} apps deployed at once, all terminal", value=ms(burst_s),
           unit="ms", floor_name=f"{args.apps} no-op RQ jobs at once",
           floor=ms(burst_floor))  # fmt: skip
    if problems:
        sys.exit(f"{len(problems)} deployments did not end as they should")


if __name__ == "__main__":
    main()
