"""What the benchmark scripts share: free ports, a throw-away Redis server, a real panel, and
``report``, which prints a key figure next to its floor and hands it to benchmarks/run_all.py."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import requests

if TYPE_CHECKING:
    from panel.config import Settings
    from panel.drivers.nomad import NomadDriver

__all__ = [
    "FIGURES_ENV",
    "free_port",
    "live_apps_in_double",
    "parse_sizes",
    "report",
    "require_tool",
    "start_panel",
    "start_redis",
]

FIGURES_ENV = "HELIOS_BENCH_FIGURES"  # a file: one JSON object per line is appended to it
BETTER = ("lower", "higher", "near 1")  # "near 1": value should match its floor


# ---------------------------------------------------------------------------------------------
# Figures: printed for people, appended as JSON for benchmarks/run_all.py
# ---------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    """Four significant digits at most, without an exponent for everyday sizes."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 3 - math.floor(math.log10(abs(value))))}f}"


def _append(record: dict[str, Any]) -> None:
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


def report(
    *, figure: str, value: float, unit: str, floor_name: str, floor: float, better: str = "lower"
) -> float | None:
    """Print one key figure next to its floor (measured in the same run) and, when
    HELIOS_BENCH_FIGURES names a file, append it there as one JSON object; the ratio."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, not {better!r}")
    value, floor = float(value), float(floor)
    ratio = value / floor if floor and math.isfinite(floor) and math.isfinite(value) else None
    shown = "-" if ratio is None else f"{_number(ratio)}x"
    print(f"= {figure}: {_number(value)} {unit}   floor, {floor_name}: {_number(floor)} {unit}"
          f"   ratio {shown} ({better} is better)", flush=True)  # fmt: skip
    _append({"figure": figure, "value": value, "unit": unit, "floor_name": floor_name,
             "floor": floor, "ratio": ratio, "better": better})  # fmt: skip
    return ratio


def parse_sizes(parser: argparse.ArgumentParser, quick: dict[str, Any]) -> argparse.Namespace:
    """The script's options, with ``--quick`` added: the sizes in ``quick`` replace the defaults
    (an option given explicitly still wins). The sizes used go to HELIOS_BENCH_FIGURES too."""
    shown = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())
    parser.add_argument(
        "--quick", action="store_true",
        help=f"the sizes `make bench` uses, to fit its 10 minutes: {shown or 'the defaults'}",
    )  # fmt: skip
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(**quick)
    args = parser.parse_args()
    sizes = {k: v for k, v in vars(args).items() if k != "quick" and type(v) in (int, float, str)}
    _append({"sizes": sizes, "quick": args.quick})
    return args


def require_tool(name: str, package: str) -> str:
    """The path of a command from Debian; exits saying how to install it when it is missing."""
    found = shutil.which(name)
    if not found:
        sys.exit(f"this benchmark needs `{name}` (Debian package {package}), which is not "
                 f"installed; install it with:\n  sudo apt-get install -y {package}")  # fmt: skip
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A real redis-server without persistence on a free port, answering PING; its URL."""
    from panel.run.redis_server import find_redis_server

    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(250):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        raise SystemExit(f"redis-server did not answer on port {port} within 5 s")
    return proc, f"redis://127.0.0.1:{port}/0"


def start_panel(
    data_dir: Path, database_url: str, redis_url: str, **settings: str
) -> tuple[subprocess.Popen, str]:
    """`helios panel` under gunicorn on a free port, on this database and Redis, with
    ``settings`` (HELIOS_* names) on top; its URL once /readyz answers (exits if it never does).
    """
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "NOMAD_"))},
        "HELIOS_DATA_DIR": str(data_dir),
        "HELIOS_DATABASE_URL": database_url,
        "HELIOS_REDIS_URL": redis_url,
        "HELIOS_BIND": f"127.0.0.1:{port}",
        "HELIOS_LOG_LEVEL": "warning",
        **settings,
    }
    log_path = data_dir / "panel.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "panel"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the panel exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"the panel did not become ready:\n{log_path.read_text()}")


def live_apps_in_double(
    count: int, data_dir: str, double: Any
) -> tuple[Settings, NomadDriver, dict[str, dict]]:
    """``count`` apps of one instance, each with a live release (a succeeded deployment) whose
    job, rendered as the deploy engine renders it, runs in the Nomad ``double``; Helios's
    settings point at ``data_dir`` (SQLite) and the double. (settings, a driver, the jobs.)"""
    os.environ.update(
        HELIOS_DATA_DIR=data_dir, HELIOS_DATABASE_URL=f"sqlite:///{data_dir}/helios.db",
        NOMAD_ADDR=double.url, HELIOS_LOG_LEVEL="warning",
    )  # fmt: skip
    from panel.actions.apps import create_app, snapshot_app
    from panel.config import Settings
    from panel.db import migrate_up, open_database
    from panel.drivers.nomad import NomadDriver
    from panel.models import Deployment, DeploymentStatus, Release, Team
    from panel.reconcile.jobs import render_deployment

    settings = Settings.from_env()
    open_database(settings.database_url)
    migrate_up()
    driver = NomadDriver.from_settings(settings)
    team = Team.create(slug="bench", name="Bench")
    bodies = {}
    for i in range(count):
        app = create_app(actor=None, team=team, slug=f"app-{i:04d}",
                         image="registry.local/app:1", count=1)  # fmt: skip
        release = Release.create(app=app, number=1, image=app.image, git_sha="",
                                 config=snapshot_app(app, app.image, ""))  # fmt: skip
        live = Deployment.create(app=app, release=release,
                                 status=DeploymentStatus.SUCCEEDED.value)  # fmt: skip
        bodies[app.slug] = render_deployment(live, settings)
        driver.register_job(app.slug, bodies[app.slug], modify_index=0)
    double.tick(3)
    return settings, driver, bodies
