"""Render throughput: AppSpec → Nomad job body, with and without strict schema validation.

Builds N varied AppSpecs (slugs, 0-50 env vars, 0-5 custom domains, 0-8 secret names, some with a
worker process), then measures in the same run, each as the median of several repeats:

- render: ``render_job`` alone;
- render + validate: ``render_job`` then ``validate_body(body, "JobRegisterRequest", spec)``,
  the strict check the tests' Nomad double applies to every job it receives;
- validate: the strict validation alone, on the pre-rendered bodies;
- floor: ``json.dumps`` of the same pre-rendered bodies (the least any submission costs: the
  body has to be serialised to be sent).

Prints apps/s and µs/app for each and how many times the floor's time each one takes.
Asserts nothing. Run: .venv/bin/python benchmarks/render_throughput.py [--apps N]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import parse_sizes, report

from panel.render.nomad import render_job
from panel.spec import AppSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
# The strict validator and the pinned spec are test code (tests/nomad_double).
sys.path.insert(0, str(REPO_ROOT / "tests"))

from nomad_double.reference import NOMAD_SPEC, reference_file  # noqa: E402
from nomad_double.schema import load_strict_spec, validate_body  # noqa: E402

WORDS = ("shop", "api", "blog", "auth", "search", "media", "billing", "chat", "docs", "cron")
TEAMS = ("default", "acme", "platform", "growth")
SCHEMA = "JobRegisterRequest"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=2000, help="number of apps (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--spec", type=Path, help="Nomad OpenAPI yaml (default: the pinned one)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the app mix")
    return parse_sizes(parser, {"apps": 1000, "repeats": 3})


def random_text(rng: random.Random, low: int, high: int) -> str:
    alphabet = string.ascii_letters + string.digits + "-_./:=@ "
    return "".join(rng.choices(alphabet, k=rng.randint(low, high)))


def build_spec(i: int, rng: random.Random) -> AppSpec:
    """One app: sizes drawn uniformly, so the mix covers small and large jobs alike."""
    slug = f"{rng.choice(WORDS)}-{i}"
    env = {f"VAR_{k}": random_text(rng, 0, 80) for k in range(rng.randint(0, 50))}
    secrets = [f"SECRET_{k}" for k in range(rng.randint(0, 8))]
    domains = [f"d{k}.{slug}.example.com" for k in range(rng.randint(0, 5))]
    web_command: Any = rng.choice(
        ["", "gunicorn app:app --workers 4", ["node", "server.js", "--port", "8080"]]
    )
    processes = [{"name": "web", "command": web_command, "count": rng.randint(1, 5)}]
    if rng.random() < 0.25:
        processes.append({"name": "worker", "command": "rq worker default", "count": 1})
    memory = rng.choice((128, 256, 512, 1024))
    return AppSpec(
        slug=slug,
        team=rng.choice(TEAMS),
        image=f"registry.example.com/{rng.choice(TEAMS)}/{slug}:{rng.randint(1, 999)}",
        git_sha=f"{rng.getrandbits(160):040x}"[: rng.choice((7, 12, 40))],
        release=rng.randint(1, 500),
        deployment=rng.choice((0, rng.randint(1, 10_000))),
        base_domain="apps.example.com",
        port=rng.choice((3000, 5000, 8000, 8080)),
        health_path=rng.choice(("/", "/healthz", "/health?full=1")),
        cpu_mhz=rng.choice((100, 250, 500, 1000)),
        memory_mb=memory,
        memory_max_mb=rng.choice((0, memory * 2)),
        processes=tuple(processes),
        env=env,
        secret_keys=tuple(secrets),
        domains=tuple(domains),
    )


def timed(work: Callable[[], None]) -> float:
    """Seconds one call of work takes (garbage collected beforehand, not during)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    finally:
        gc.enable()


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    run_started = started = time.perf_counter()
    specs = [build_spec(i, rng) for i in range(args.apps)]
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    args.spec = args.spec or reference_file(NOMAD_SPEC)
    schema = load_strict_spec(args.spec)
    load_s = time.perf_counter() - started
    bodies = [render_job(spec) for spec in specs]
    started = time.perf_counter()
    violations = sum(bool(validate_body(body, SCHEMA, schema)) for body in bodies[:1])
    first_s = time.perf_counter() - started
    violations += sum(bool(validate_body(body, SCHEMA, schema)) for body in bodies[1:])

    def render() -> None:
        for spec in specs:
            render_job(spec)

    def render_validate() -> None:
        for spec in specs:
            validate_body(render_job(spec), SCHEMA, schema)

    def validate() -> None:
        for body in bodies:
            validate_body(body, SCHEMA, schema)

    def floor() -> None:
        for body in bodies:
            json.dumps(body)

    cases = {
        "render_job": render,
        "render + validate": render_validate,
        "validate alone": validate,
        "floor: json.dumps": floor,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for name, work in cases.items():
            samples[name].append(timed(work))

    sizes = sorted(len(json.dumps(body)) for body in bodies)
    env_sizes = [len(spec.env) for spec in specs]
    print(f"apps: {args.apps} (built in {build_s:.2f} s), repeats: {args.repeats}, median shown")
    print(
        f"env vars per app: {min(env_sizes)}-{max(env_sizes)}, "
        f"job JSON: median {sizes[len(sizes) // 2]} B, max {sizes[-1]} B"
    )
    print(f"spec: {args.spec} (loaded + made strict in {load_s:.2f} s)")
    print(f"first validation (builds the validator): {first_s * 1000:.1f} ms")
    print(f"bodies with schema violations: {violations}")
    print()
    floor_s = statistics.median(samples["floor: json.dumps"])
    print(f"{'':20} {'apps/s':>10} {'µs/app':>9} {'x floor':>8}   (min-max apps/s)")
    for name, times in samples.items():
        median = statistics.median(times)
        spread = f"{args.apps / max(times):,.0f}-{args.apps / min(times):,.0f}"
        print(
            f"{name:20} {args.apps / median:>10,.0f} {median / args.apps * 1e6:>9.1f} "
            f"{median / floor_s:>8.1f}   ({spread})"
        )
    print(f"\ntotal {time.perf_counter() - run_started:.1f} s")
    for name in ("render_job", "render + validate", "validate alone"):
        report(figure=f"render throughput, {name}",
               value=args.apps / statistics.median(samples[name]), unit="apps/s",
               floor_name="json.dumps of the same jobs", floor=args.apps / floor_s,
               better="higher")  # fmt: skip


if __name__ == "__main__":
    main()
