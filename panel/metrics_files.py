"""The metrics directory: a process that ended has its samples folded into one archive file.

prometheus-client's multiprocess mode gives each process files of its own in
``PROMETHEUS_MULTIPROC_DIR`` (``counter_<pid>.db``, ``histogram_<pid>.db``,
``gauge_livesum_<pid>.db``), and every /metrics scrape reads every file: with 1,000 files a
scrape took about a second at p99 instead of ~30 ms. Processes come and go while Helios runs:
gunicorn replaces a worker that died, and an RQ worker forks a work horse for each job (a horse
that records a deployment's or a build's end writes its own files). So whoever reaped such a child
(the gunicorn master, the RQ worker) calls :func:`archive_process` with its pid: its live
gauges are dropped (``mark_process_dead``), its counters and histograms are added, key by key,
into ``counter_archive.db`` and ``histogram_archive.db``, and its files are removed. The
directory then holds the live processes' files and one archive per kind, and no count is lost.

Why not have work horses write nothing at all: the master of gunicorn's workers needs the same
folding, and one mechanism for both is less code than a second channel from horse to worker.

No scrape may see a count go down or twice: the archive is rewritten beside itself and renamed
over, then the dead files removed, under an exclusive ``flock`` of ``<dir>/.lock``, while
:func:`reading` holds the shared lock around a scrape's glob and reads (a scrape waits at most
one folding, a few ms; in a gevent worker that wait blocks the worker). Only a reaped process's
files are folded: it wrote its last sample before it ended and nothing writes its files again,
and no live process ever writes an archive. (A pid is reused only after the kernel's pid
counter wraps around; a compactor killed between the rename and the removal would count that
process twice until the next `helios up` empties the directory.)

Imports only the standard library and prometheus-client: the gunicorn master calls it, and must
not import redis or rq (see ``panel.run.web_server``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import mark_process_dead

__all__ = ["ARCHIVE", "FOLDED_KINDS", "archive_process", "reading"]

ARCHIVE = "archive"  # in place of a pid in the archive files' names: counter_archive.db
FOLDED_KINDS = ("counter", "histogram", "summary")  # additive: a dead process's values still count
LOCK_FILE = ".lock"  # not *.db: prometheus-client reads only those


@contextlib.contextmanager
def _locked(directory: Path, operation: int) -> Iterator[None]:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def reading(directory: str | Path) -> Iterator[None]:
    """Hold while reading the directory's files: no folding happens meanwhile."""
    with _locked(Path(directory), fcntl.LOCK_SH):
        yield


def _fold(dead: Path, archive: Path) -> None:
    """Rewrite ``archive`` as itself plus ``dead``, key by key (a new file, renamed over)."""
    totals: dict[str, float] = {}
    for source in (archive, dead):
        if source.exists():
            for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(source)):
                totals[key] = totals.get(key, 0.0) + value
    partial = archive.with_suffix(".partial")  # not *.db: no scrape reads it
    partial.unlink(missing_ok=True)  # a compactor killed while writing left it
    merged = MmapedDict(str(partial))
    try:
        for key, total in totals.items():
            merged.write_value(key, total, 0.0)
    finally:
        merged.close()
    os.replace(partial, archive)


def archive_process(pid: int, directory: str | Path) -> int:
    """Fold the samples of ``pid``, a process that ended and was reaped, into the archive and
    remove its files; how many files of it there were."""
    directory = Path(directory)
    with _locked(directory, fcntl.LOCK_EX):
        removed = len(list(directory.glob(f"gauge_live*_{pid}.db")))
        mark_process_dead(pid, str(directory))
        for kind in FOLDED_KINDS:
            dead = directory / f"{kind}_{pid}.db"
            if dead.exists():
                _fold(dead, directory / f"{kind}_{ARCHIVE}.db")
                dead.unlink()
                removed += 1
    return removed
