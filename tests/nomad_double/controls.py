"""Test controls of the Nomad double that involve threads: request gates and the clock."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

WHEN = ("before", "after")


class Gate:
    """Holds the first request matching method + path regex inside the double.

    ``when="before"``: before the double processes it; ``"after"``: processed (the change is
    made) but the response not yet sent. ``reached`` is set once a request is held;
    ``release()`` lets it continue (it continues by itself after ``timeout`` seconds).
    """

    def __init__(self, method: str, pattern: str, when: str, timeout: float) -> None:
        """Arm a gate; see NomadDouble.hold."""
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}, not {when!r}")
        self.method = method.upper()
        self.pattern = pattern
        self.when = when
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()
        self.request: Any = None
        self.armed = True

    def matches(self, method: str, path: str, when: str) -> bool:
        """Whether this armed gate catches the request at this point."""
        return (
            self.armed
            and self.when == when
            and self.method == method
            and re.fullmatch(self.pattern, path) is not None
        )

    def hold(self, request: Any) -> None:
        """Block the calling request thread until released (or the timeout)."""
        self.request = request
        self.reached.set()
        self.released.wait(self.timeout)

    def release(self) -> None:
        """Let the held request continue (also fine before it arrives: it will not wait)."""
        self.released.set()


class Ticker:
    """The double's own clock: calls step() every interval seconds from a daemon thread."""

    def __init__(self, interval: float, step: Callable[[], None]) -> None:
        """Prepare; start() runs it."""
        self.interval = interval
        self.step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nomad-double-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        """Step, then wait one interval (returns at once when stopped)."""
        while not self._stop.wait(self.interval):
            self.step()
