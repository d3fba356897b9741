"""Jobs the worker tests enqueue (the worker imports them by name)."""

from __future__ import annotations

import time
from pathlib import Path


def slow_job(marker: str, seconds: float) -> str:
    """Write 'started', sleep, then write 'finished' to ``marker``."""
    path = Path(marker)
    path.write_text("started\n")
    time.sleep(seconds)
    path.write_text("started\nfinished\n")
    return "done"
