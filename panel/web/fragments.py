"""Rendered parts of pages, kept while what they show is unchanged.

The dashboard's list of apps costs ten milliseconds to query and render, and a person (or
thirty browsers on a wall) asks for the same page again and again between changes. Each
panel worker keeps the last renders, each under the database's change count at the time
(``panel.db.change_count``: moved by triggers in the same transaction as any change to what
the list shows, from any process) and the current minute (the sparklines' hour ends now).
A render is reused only while both are the same, so a change shows on the next request, as
without the cache. The count is read before the rows: a render never carries an older count
than the data it shows. HELIOS_PAGE_CACHE is how many renders a worker keeps (0: none).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from flask import current_app

from panel.db import change_count

__all__ = ["FragmentCache", "cached_render"]

T = TypeVar("T")
FRESH_FOR = 60  # seconds: the sparklines end at the current minute
RENDER_WAIT = 5.0  # seconds a request waits for another's render before rendering itself


class FragmentCache:
    """The newest renders by key, least recently used dropped past ``size``.

    One render per key and version at a time: requests that find one under way (thirty
    browsers when the minute turns) wait for it rather than each render the same page.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Hashable, object]] = OrderedDict()
        self._rendering: dict[Hashable, tuple[Hashable, threading.Event]] = {}

    def _kept(self, key: Hashable, version: Hashable) -> tuple[bool, object]:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            return False, None
        self._entries.move_to_end(key)
        self.hits += 1
        return True, entry[1]

    def fetch(self, key: Hashable, version: Hashable | None, render: Callable[[], T]) -> T:
        """The render kept under ``key`` if it was made at ``version``, else a new one."""
        if self.size <= 0 or version is None:
            return render()
        found, value = self._kept(key, version)
        if found:
            return value  # type: ignore[return-value]
        under_way = self._rendering.get(key)
        if under_way is not None and under_way[0] == version:
            under_way[1].wait(RENDER_WAIT)
            found, value = self._kept(key, version)
            if found:
                return value  # type: ignore[return-value]
        done = threading.Event()
        self._rendering[key] = (version, done)
        try:
            self.misses += 1
            value = render()
            self._entries[key] = (version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return value  # type: ignore[return-value]
        finally:
            done.set()
            if self._rendering.get(key, (None, None))[1] is done:
                del self._rendering[key]

    def __len__(self) -> int:
        return len(self._entries)


def cached_render(key: Hashable, render: Callable[[], T]) -> T:
    """``render()``, or its result kept under ``key`` since nothing it shows changed."""
    cache: FragmentCache = current_app.extensions["helios.fragments"]
    if cache.size <= 0:
        return render()
    count = change_count()  # first: the rows render reads are at least this new
    version = None if count is None else (count, int(time.time()) // FRESH_FOR)
    return cache.fetch(key, version, render)
