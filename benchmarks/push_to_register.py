"""Push to build: a signed GitHub webhook arriving → the build job's register request, next to
floors from the same run.

Starts a Redis server, the Nomad API double and the GitHub API double (both from tests/, in
this process, no delay), the real panel under gunicorn (one worker) and a real `helios worker`
on a fresh SQLite database, with one repo app connected to the GitHub double's repository.
Then sends signed ``push`` deliveries over HTTP, one at a time, each of a new commit, and
times with CLOCK_MONOTONIC (shared by every process here):

- webhook → register: from just before the POST to the Nomad double receiving
  ``POST /v1/job/<app>-build-<n>`` (the worker read helios.toml through GitHub, rendered,
  validated and registered the build job);
- webhook → 202: the delivery recorded and the build queued (GitHub waits for this answer);
- floors: a GET /healthz round trip on the same gunicorn (HTTP), and an RQ job start (a no-op
  job enqueued on the deploy queue → it ran on the worker).

Before each push the script waits until the worker is idle (each push stops the previous
build's Nomad job with a job of its own), so every sample starts alike. The double's clock
stands still: builds stay running, which is all this measures.

Prints figures only; asserts nothing.
Run: .venv/bin/python benchmarks/push_to_register.py [--pushes 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the doubles are test code
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from support import free_port, parse_sizes, report, start_redis  # noqa: E402

from github_double import GitHubDouble, Repo  # noqa: E402
from nomad_double import run_nomad_double  # noqa: E402

WARMUP = 5
TOKEN = "gho_" + "f" * 36
REPO_ID = 777
SECRET = "bench-hook-secret-" + "0" * 16
REGISTER = re.compile(r"/v1/job/shop-build-(\d+)")


def now() -> float:
    return time.monotonic()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def line(name: str, values: list[float], floor: list[float] | None = None) -> str:
    text = f"{name:<28} p50 {pct(values, 50) * 1000:8.2f} ms  p99 {pct(values, 99) * 1000:8.2f} ms"
    if floor:
        text += f"   (floor p50 {pct(floor, 50) * 1000:.2f} ms, p99 {pct(floor, 99) * 1000:.2f} ms)"
    return text


def wait_for(predicate, what: str, timeout: float = 60.0, interval: float = 0.002):
    deadline = now() + timeout
    while now() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=100, help="pushes timed (default 100)")
    args = parse_sizes(parser, {"pushes": 30})
    with tempfile.TemporaryDirectory() as tmp, run_nomad_double() as double:
        work = Path(tmp)
        redis_proc, redis_url = start_redis(work)
        github = GitHubDouble(TOKEN, [Repo(id=REPO_ID, full_name="acme/shop")]).start()
        double.add_node("build")
        registers: dict[int, float] = {}
        in_double: list[tuple[float, float]] = []  # every request the Nomad double handled
        original = double.handle

        def handle(method, raw_path, headers, raw_body):
            arrived = now()
            found = REGISTER.fullmatch(raw_path.split("?", 1)[0])
            if method == "POST" and found:
                registers.setdefault(int(found.group(1)), arrived)
            answer = original(method, raw_path, headers, raw_body)
            in_double.append((arrived, now()))
            return answer

        double.handle = handle
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "NOMAD_"))},
            "HELIOS_DATA_DIR": str(work / "data"),
            "HELIOS_REDIS_URL": redis_url,
            "NOMAD_ADDR": double.url,
            "HELIOS_REGISTRY": "registry.bench:5000",
            "HELIOS_GITHUB_API_URL": github.url,
            "HELIOS_BIND": f"127.0.0.1:{port}",
            "HELIOS_WEB_WORKERS": "1",
            "HELIOS_LOG_LEVEL": "warning",
            "PYTHONPATH": str(REPO_ROOT),
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith(("HELIOS_", "NOMAD_"))})
        procs: list[subprocess.Popen] = []
        try:
            from panel.actions.accounts import create_user
            from panel.actions.apps import create_app
            from panel.config import Settings
            from panel.crypto import SecretCipher
            from panel.db import migrate_up, open_database
            from panel.models import App, Team, User

            settings = Settings.from_env()
            open_database(settings.effective_database_url)
            migrate_up()
            cipher = SecretCipher.from_settings(settings)
            owner = create_user("bench@example.com", "Copper Walrus Umbrella 42", team_slug="acme")
            User.update(github_token=cipher.encrypt(TOKEN)).where(User.id == owner.id).execute()
            app = create_app(
                actor=None, team=Team.get(Team.slug == "acme"), slug="shop", repo="acme/shop"
            )
            App.update(
                github_repo_id=REPO_ID, webhook_secret=cipher.encrypt(SECRET), connected_by=owner
            ).where(App.id == app.id).execute()
            for role in ("panel", "worker"):
                log = (work / f"{role}.log").open("w")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "panel", role],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=REPO_ROOT,
                    )
                )
            url = f"http://127.0.0.1:{port}"
            session = requests.Session()
            try:
                wait_for(lambda: _ready(session, url), "the panel", interval=0.05)
            except SystemExit:
                print((work / "panel.log").read_text()[-3000:], file=sys.stderr)
                raise
            run(args, session, url, registers, redis_url, in_double)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=20)
            github.stop()
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def _ready(session: requests.Session, url: str) -> bool:
    try:
        return session.get(f"{url}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def run(
    args,
    session: requests.Session,
    url: str,
    registers: dict[int, float],
    redis_url: str,
    in_double: list[tuple[float, float]],
):
    import redis
    from rq import Queue
    from rq.registry import StartedJobRegistry

    from panel.schema.github import sign

    conn = redis.Redis.from_url(redis_url)
    queue = Queue("deploys", connection=conn)
    started_jobs = StartedJobRegistry(queue=queue)

    def idle() -> None:
        wait_for(lambda: queue.count == 0 and started_jobs.count == 0, "the worker to be idle")

    to_register, to_ack, double_time = [], [], []
    for n in range(1, WARMUP + args.pushes + 1):
        idle()
        body = json.dumps(
            {
                "ref": "refs/heads/main",
                "after": f"{n:040x}",
                "deleted": False,
                "repository": {"id": REPO_ID, "full_name": "acme/shop"},
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(SECRET, body),
        }
        began = now()
        answer = session.post(f"{url}/webhooks/github", data=body, headers=headers, timeout=10)
        acked = now()
        if answer.status_code != 202:
            raise SystemExit(f"push {n}: {answer.status_code} {answer.text[:300]}")
        registered = wait_for(lambda n=n: registers.get(n), f"the register of build {n}")
        if n > WARMUP:
            to_register.append(registered - began)
            to_ack.append(acked - began)
            double_time.append(sum(b - a for a, b in in_double if began <= a < registered))
    http_floor = []
    for _ in range(WARMUP + args.pushes):
        began = now()
        session.get(f"{url}/healthz", timeout=5)
        http_floor.append(now() - began)
    rq_floor = []
    for n in range(WARMUP + args.pushes):
        idle()
        began = now()
        job = queue.enqueue("time.monotonic")
        ran = wait_for(lambda j=job: j.latest_result(), "a no-op job")
        if n >= WARMUP:
            rq_floor.append(ran.return_value - began)
    print(f"push to build, {args.pushes} signed pushes (after {WARMUP} warm-up), one at a time")
    print(line("webhook -> 202", to_ack, http_floor[WARMUP:]))
    print(line("webhook -> register", to_register, rq_floor))
    print(line("  of which in the Nomad double", double_time))
    print(
        f"{'mean webhook -> register':<28} {statistics.mean(to_register) * 1000:8.2f} ms "
        f"(floors above: HTTP round trip for the 202, RQ job start for the register)"
    )
    for q in (50, 99):
        report(
            figure=f"push webhook -> build register p{q}",
            value=pct(to_register, q) * 1000,
            unit="ms",
            floor_name=f"RQ job start p{q}",
            floor=pct(rq_floor, q) * 1000,
        )
    for q in (50, 99):
        report(
            figure=f"push webhook -> 202 p{q}",
            value=pct(to_ack, q) * 1000,
            unit="ms",
            floor_name=f"GET /healthz p{q}",
            floor=pct(http_floor[WARMUP:], q) * 1000,
        )


if __name__ == "__main__":
    main()
