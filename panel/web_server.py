"""The panel under gunicorn, started from Python so it shares the process wrapper."""

from __future__ import annotations

import signal
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from panel.runtime import Process

__all__ = ["run_panel"]


class _GracefulArbiter(Arbiter):
    """Gunicorn's arbiter, with SIGINT as graceful as SIGTERM (Ctrl-C drains requests)."""

    def handle_int(self) -> None:
        self.handle_term()


def _ignore_sigint(_worker: Any) -> None:
    # Ctrl-C reaches the whole process group: workers leave it to the arbiter, which then
    # asks each of them to finish its requests (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _PanelServer(BaseApplication):
    def __init__(self, process: Process) -> None:
        self.process = process
        super().__init__()

    def load_config(self) -> None:
        settings = self.process.settings
        options = {
            "bind": [settings.bind],
            "workers": settings.web_workers,
            "worker_class": "gthread",  # one thread per live stream; sync workers cannot stream
            "threads": settings.web_threads,
            "graceful_timeout": settings.graceful_timeout,
            "timeout": 120,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": settings.log_level,
            "proc_name": "helios-panel",
            "post_worker_init": _ignore_sigint,
            "forwarded_allow_ips": "127.0.0.1",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from panel import create_app

        return create_app(self.process.settings)

    def run(self) -> None:
        _GracefulArbiter(self).run()


def run_panel(process: Process) -> int:
    """Serve the panel until SIGTERM or SIGINT, then drain requests in flight."""
    process.database.close()
    _PanelServer(process).run()
    return 0
