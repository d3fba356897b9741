"""The panel under gunicorn, started from Python so it shares the process wrapper."""

from __future__ import annotations

import signal
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from panel.run.runtime import Process
from panel.web.streams import stop_streams

__all__ = ["run_panel"]


class _GracefulArbiter(Arbiter):
    """Gunicorn's arbiter, with SIGINT as graceful as SIGTERM (Ctrl-C drains requests)."""

    def handle_int(self) -> None:
        self.handle_term()


def _prepare_worker(worker: Any) -> None:
    # Ctrl-C reaches the whole process group: workers leave it to the arbiter, which then
    # asks each of them to finish its requests (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # On SIGTERM live event streams end at once (browsers reconnect elsewhere or later), so
    # they do not hold the drain up until the graceful timeout.
    handle_exit = worker.handle_exit

    def end_streams_then_exit(signum: int, frame: Any) -> None:
        stop_streams()
        handle_exit(signum, frame)

    signal.signal(signal.SIGTERM, end_streams_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: no interrupted requests


class _PanelServer(BaseApplication):
    def __init__(self, process: Process) -> None:
        self.process = process
        super().__init__()

    def load_config(self) -> None:
        settings = self.process.settings
        options = {
            "bind": [settings.bind],
            "workers": settings.web_workers,
            # Each live stream holds a thread; panel.web.streams keeps HELIOS_STREAM_MAX of them
            # at most per worker, so ordinary requests always find one. Sync workers cannot
            # stream at all.
            "worker_class": "gthread",
            "threads": settings.web_threads,
            "graceful_timeout": settings.graceful_timeout,
            "timeout": 120,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": settings.log_level,
            "proc_name": "helios-panel",
            "post_worker_init": _prepare_worker,
            "forwarded_allow_ips": "127.0.0.1",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from panel.web import create_app

        return create_app(self.process.settings)

    def run(self) -> None:
        _GracefulArbiter(self).run()


def run_panel(process: Process) -> int:
    """Serve the panel until SIGTERM or SIGINT, then drain requests in flight."""
    process.database.close()
    _PanelServer(process).run()
    return 0
