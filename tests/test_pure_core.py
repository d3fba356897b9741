"""The pure core — app specs, validation, the schema, settings, rendering, reading Nomad's
answers, states — loads no web framework, database, queue or HTTP client: it can be used and
tested without them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "panel",
    "panel.spec",
    "panel.validation",
    "panel.render",
    "panel.render.nomad",
    "panel.render.build",
    "panel.render.run",
    "panel.logs.scrub",
    "panel.live",
    "panel.reconcile.follow",
    "panel.states",
    "panel.config",
    "panel.schema",
    "panel.schema.base",
    "panel.schema.apps",
    "panel.schema.accounts",
    "panel.schema.manifest",
    "panel.schema.hosts",
    "panel.schema.github",
    "panel.schema.drift",
    "panel.schema.pending",
    "panel.schema.notifiers",
    "panel.schema.limits",
    "panel.domains_state",
    "panel.schema.domains",
    "panel.backup_manifest",
]
IO = ["flask", "peewee", "playhouse", "redis", "rq", "requests", "urllib3", "nomad", "psycopg2"]


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_nothing_of_io(module: str):
    """Imported in a fresh interpreter, so no other test's imports can hide one."""
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert not loaded & set(IO), f"{module} loads {sorted(loaded & set(IO))}"


def test_the_probe_sees_io_where_there_is_some():
    """The same probe on a module that does I/O finds it (the test above can fail)."""
    probe = "import json, sys, panel.models\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "peewee" in json.loads(done.stdout)
