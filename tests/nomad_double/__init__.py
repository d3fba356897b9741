"""A Nomad HTTP API test double (real HTTP server on 127.0.0.1) driven through python-nomad.

Every request is validated against HashiCorp's Nomad 1.4 OpenAPI spec made strict by
``schema.py`` (``/client/*`` against a hand description); violations are answered
with HTTP 400 and recorded in ``double.violations``. The spec and the real job documents the
tests read are pinned inputs: ``reference_file(name)`` (``reference.py``) answers a verified copy.

Time: each GET advances the simulation one step (``auto_advance``, on by default),
``double.tick(n)`` advances it explicitly, and ``tick_interval=seconds`` gives the double a
clock of its own (for clients that only follow ``/v1/event/stream`` or blocking queries).
See ``watcher.py`` for what a step does, ``txn.py`` for indexes and events.

Test controls: ``fail_next``, ``hold(method, path_regex, when=...)`` gates, ``add_token`` (ACL
tokens with denied calls), ``drop_streams()``, ``stall_streams(seconds)``, ``open_streams``,
``add_node(pool=...)`` (node pools), ``set_batch_script(...)`` (what batch tasks do, see
``batch.py``).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

from .batch import TaskScript, build_digest  # noqa: E402
from .controls import Gate  # noqa: E402
from .reference import NOMAD_SPEC, reference_file  # noqa: E402
from .server import NomadDouble, RecordedRequest, run_nomad_double  # noqa: E402
from .state import ApiError  # noqa: E402

__all__ = [
    "NOMAD_SPEC",
    "REPO_ROOT",
    "ApiError",
    "Gate",
    "NomadDouble",
    "RecordedRequest",
    "TaskScript",
    "build_digest",
    "nomad_double_fixture",
    "reference_file",
    "run_nomad_double",
]


def nomad_double_fixture(**options):  # type: ignore[no-untyped-def]
    """Build a pytest fixture yielding a started NomadDouble (import it into conftest.py)."""
    import pytest

    @pytest.fixture
    def nomad_double():  # type: ignore[no-untyped-def]
        """A running Nomad double; fails the test if any request violated the spec."""
        with run_nomad_double(**options) as double:
            yield double
            double.assert_no_violations()

    return nomad_double
