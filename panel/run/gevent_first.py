"""Imported first of all by the panel's gunicorn master: gevent patches the standard library.

Code imported before the patch keeps what it captured unpatched (see panel.run.web_server), so
the master, which imports the panel once for all its workers, patches before anything else;
its workers inherit the patched modules with the panel. Importing this module patches: only
the master's command line imports it.
"""

from __future__ import annotations

import sys

__all__ = ["IMPORTED_BEFORE"]

# What was imported before the patch (the interpreter's own start-up modules, when started as
# `helios panel` starts it): panel.run.web_server checks that none of it needed patching.
IMPORTED_BEFORE = frozenset(sys.modules)

from gevent import monkey  # noqa: E402 (the whole point: first)

monkey.patch_all()
