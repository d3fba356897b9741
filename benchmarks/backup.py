"""Backup and restore of a seeded installation, next to a plain copy of its database file.

Seeds a fresh SQLite database (one user, one team, ``--apps`` apps each with
``--deployments-per-app`` releases and deployments, bulk-inserted as in dashboard.py), then
times `panel.backup.write_backup` (SQLite's online backup, checksums, the tar file written 0600
and fsynced) and `panel.backup.restore_backup` into an empty data dir (checks, extraction,
integrity check, migrations, keys), each next to the floor: copying the database file and
fsyncing the copy. Prints the archive's size next to the database file's. Asserts nothing.

Usage: python benchmarks/backup.py [--apps N] [--deployments-per-app N] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dashboard import seed
from support import parse_sizes, report

APPS = 1_000
DEPLOYMENTS_PER_APP = 10
ROUNDS = 5


def copy_file(source: Path, target: Path) -> float:
    """Seconds to copy ``source`` and fsync the copy (the floor)."""
    started = time.perf_counter()
    shutil.copyfile(source, target)
    with target.open("rb+") as handle:
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=APPS)
    parser.add_argument("--deployments-per-app", type=int, default=DEPLOYMENTS_PER_APP)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parse_sizes(parser, {"apps": 200, "rounds": 3})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from panel.backup import restore_backup, write_backup
    from panel.config import Settings

    with tempfile.TemporaryDirectory(prefix="helios-bench-backup-") as work:
        root = Path(work)
        settings = Settings.from_env(environ={}, data_dir=root / "var", log_level="warning")
        seeded = seed(settings.effective_database_url, args.apps, args.deployments_per_app)
        db_file = root / "var" / "helios.db"
        print(f"seeded {args.apps} apps, {args.apps * args.deployments_per_app} deployments in "
              f"{seeded:.1f} s; database {db_file.stat().st_size / 1e6:.1f} MB")  # fmt: skip
        backups, restores, floors, size = [], [], [], 0
        for n in range(args.rounds):
            floors.append(copy_file(db_file, root / f"copy-{n}.db"))
            result = write_backup(settings, root / f"backup-{n}.tar")
            backups.append(result.seconds)
            size = result.size
            target = settings.replace(data_dir=root / f"restored-{n}")
            restores.append(restore_backup(target, result.path).seconds)
        floor = statistics.median(floors) * 1000
        report(figure="backup", value=statistics.median(backups) * 1000, unit="ms",
               floor_name="copy the database file and fsync", floor=floor)  # fmt: skip
        report(figure="restore", value=statistics.median(restores) * 1000, unit="ms",
               floor_name="copy the database file and fsync", floor=floor)  # fmt: skip
        report(figure="archive size", value=size / 1e6, unit="MB",
               floor_name="the database file", floor=db_file.stat().st_size / 1e6)  # fmt: skip


if __name__ == "__main__":
    main()
