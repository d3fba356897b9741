"""The panel under gunicorn's gevent workers, started from Python so it shares the process wrapper.

A gevent worker serves each connection in a greenlet, so an open live stream costs a little
memory rather than a thread, and one worker holds hundreds (HELIOS_WEB_CONNECTIONS at once, of
which HELIOS_STREAM_MAX streams). Gunicorn's gevent worker monkey-patches the standard library
when it starts; code imported before that keeps what it captured unpatched: peewee defines its
per-connection state as a subclass of the real ``threading.local`` (every greenlet would share
one connection and its transactions), redis-py keeps the real ``time.sleep``, urllib3 the real
``ssl.SSLContext`` (HTTPS calls then fail with RecursionError). So ``helios panel`` replaces
itself with a fresh interpreter that has gevent patch it before anything else is imported
(panel.run.gevent_first); then its gunicorn master imports the panel once (``preload_app``) and
freezes what it loaded out of the garbage collector's reach (``gc.freeze``), so the workers it
forks share those pages rather than each holding a copy of the panel. The master opens no
database or Redis connection: each worker opens its own when it first serves a request.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from panel.config import Settings

if TYPE_CHECKING:
    from panel.run.runtime import Process

__all__ = ["run_panel", "serve"]

# Modules that must be imported after gevent patched the process (see the module docstring).
PATCH_FIRST = ("peewee", "redis", "rq", "requests", "urllib3", "flask", "werkzeug")
_MASTER = "import panel.run.gevent_first; from panel.run.web_server import serve; serve()"


class _GracefulArbiter(Arbiter):
    """Gunicorn's arbiter, with SIGINT as graceful as SIGTERM (Ctrl-C drains requests)."""

    def handle_int(self) -> None:
        self.handle_term()


def _prepare_worker(worker: Any) -> None:
    from panel.web.streams import stop_streams

    # Ctrl-C reaches the whole process group: workers leave it to the arbiter, which then
    # asks each of them to finish its requests (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # On SIGTERM live event streams end at once (browsers reconnect elsewhere or later), so
    # they do not hold the drain up until the graceful timeout. The handler may run in any
    # greenlet, even gevent's hub: both calls only set flags.
    handle_exit = worker.handle_exit

    def end_streams_then_exit(signum: int, frame: Any) -> None:
        stop_streams()
        handle_exit(signum, frame)

    signal.signal(signal.SIGTERM, end_streams_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: no interrupted requests


def _worker_exited(arbiter: Any, worker: Any) -> None:
    # In the master, the worker reaped: its in-flight requests and open streams no longer
    # count, its counters and histograms go into the archive, its files away (gunicorn may
    # replace workers for as long as it runs).
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from panel.metrics_files import archive_process

        try:
            archive_process(worker.pid, directory)
        except OSError as exc:  # never stop the master: the files stay, and still count
            arbiter.log.warning("metrics files of worker %d left in place: %s", worker.pid, exc)


class _PanelServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options = {
            "bind": [settings.bind],
            "workers": settings.web_workers,
            # Each connection, an open live stream too, is a greenlet: panel.web.streams keeps
            # HELIOS_STREAM_MAX streams at most per worker, so ordinary requests always find a
            # connection. Sync workers cannot stream at all.
            "worker_class": "gevent",
            "worker_connections": settings.web_connections,
            "graceful_timeout": settings.graceful_timeout,
            "timeout": 120,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": settings.log_level,
            "proc_name": "helios-panel",
            "preload_app": True,  # the panel imported once, in the master (module docstring)
            "post_worker_init": _prepare_worker,
            "child_exit": _worker_exited,
            "forwarded_allow_ips": "127.0.0.1",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        # In the master, patched, before it forks any worker.
        from panel.run.runtime import configure_logging
        from panel.web import create_app

        configure_logging(self.settings, "panel")
        app = create_app(self.settings)
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            from panel.metrics_files import archive_process

            # The master serves nothing: the empty sample files importing the panel made for
            # it go now (its workers write their own).
            archive_process(os.getpid(), directory)
        # What is loaded now lives as long as the workers: out of the collector's reach, its
        # objects are never written to by it, so their pages stay shared with the master.
        gc.collect()
        gc.freeze()
        return app

    def run(self) -> None:
        _GracefulArbiter(self).run()


def serve() -> None:
    """The gunicorn master: serve the panel until SIGTERM or SIGINT, then drain requests in
    flight (settings from the environment, as ``helios panel`` read them)."""
    patched = sys.modules.get("panel.run.gevent_first")
    imported = patched.IMPORTED_BEFORE if patched else sys.modules
    early = [name for name in PATCH_FIRST if name in imported]
    if patched is None or early:
        raise RuntimeError(
            f"the panel's gunicorn master imported {', '.join(early) or 'the panel'} before "
            "gevent patched it: start it with `helios panel`"
        )
    _PanelServer(Settings.from_env()).run()


def run_panel(process: Process) -> NoReturn:
    """Become the panel's gunicorn master: a fresh interpreter, same pid and environment
    (settings are read from it again)."""
    process.database.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # After the code, the command it was started as (e.g. -m panel panel): `ps` still says it.
    argv = [sys.executable, "-c", _MASTER, *sys.orig_argv[1:]]
    os.execv(sys.executable, argv)  # noqa: S606 (our interpreter, our code)
