"""One sampling pass over 1,000 allocations: time, Nomad and Consul requests and SQL statements.

1,000 apps of one instance each run in the Nomad double (which validates every request
against Nomad's OpenAPI description, a few ms each), each with its check in the Consul double
that follows it; the sampler lists every allocation once, reads each one's stats on 16
threads, reads every check in Consul once, then records health and one sample per app in
SQLite. Floors measured in the same run: the same requests alone (the list, the 1,000 stats
reads on 16 threads and the checks, nothing recorded), and a second pass (nothing changed:
health is not written again). The interval a pass must fit in is HELIOS_SAMPLE_INTERVAL (10 s).

Usage: python benchmarks/sample_pass.py [--apps N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the doubles are test code

from consul_double import run_consul_double  # noqa: E402

from nomad_double import run_nomad_double  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from support import live_apps_in_double, parse_sizes, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    apps_wanted = parse_sizes(parser, {"apps": 300}).apps
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_nomad_double(nodes=[(1_000_000, 1_000_000)], auto_advance=False) as double,
        run_consul_double(double) as consul,
    ):
        started = time.monotonic()
        settings, driver, _jobs = live_apps_in_double(apps_wanted, tmp, double)
        settings = settings.replace(consul_addr=consul.url)
        from panel.db import database
        from panel.drivers.consul import ConsulDriver
        from panel.drivers.nomad import NomadDriver
        from panel.models import App
        from panel.reconcile.observe import SAMPLE_THREADS, sample

        running = [a for a in driver.all_allocations() if a["ClientStatus"] == "running"]
        print(f"{apps_wanted} apps registered, {len(running)} allocations running "
              f"(setup {time.monotonic() - started:.0f} s)\n")  # fmt: skip

        def floor() -> float:
            begin = time.monotonic()
            ids = [a["ID"] for a in NomadDriver.from_settings(settings).all_allocations()]
            local = threading.local()  # a driver per thread, as the sampler's

            def read(alloc_id: str) -> None:
                if not hasattr(local, "driver"):
                    local.driver = NomadDriver.from_settings(settings)
                local.driver.allocation_stats(alloc_id)

            with ThreadPoolExecutor(SAMPLE_THREADS) as pool:
                list(pool.map(read, ids))
            ConsulDriver.from_settings(settings).service_checks()
            return time.monotonic() - begin

        statements = []
        connection = database.connection()
        connection.set_trace_callback(statements.append)
        rows = []
        for name in ("first pass (health written)", "second pass (nothing changed)"):
            statements.clear()
            done = sample(settings, None)
            rows.append((name, done.seconds, done.requests, len(statements)))
        connection.set_trace_callback(None)
        requests_only = min(floor() for _ in range(2))
        print(f"{'one pass over ' + format(len(running), ',') + ' allocations':44} "
              f"{'seconds':>8} {'HTTP requests':>15} {'SQL statements':>15}")  # fmt: skip
        print(f"{'floor: the same requests alone':44} {requests_only:8.2f} "
              f"{2 + len(running):15,} {0:15,}")  # fmt: skip
        for name, seconds, requests, sql in rows:
            print(f"{name:44} {seconds:8.2f} {requests:15,} {sql:15,}")
        print(f"\ninterval it must fit in (HELIOS_SAMPLE_INTERVAL): {settings.sample_interval} s; "
              f"apps {App.select().count():,}")  # fmt: skip
        for name, seconds, _requests, _sql in rows:
            report(figure=f"sampling {name}, {len(running):,} allocations", value=seconds,
                   unit="s", floor_name="the same requests alone", floor=requests_only)  # fmt: skip


if __name__ == "__main__":
    main()
