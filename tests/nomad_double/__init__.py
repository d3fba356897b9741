"""A Nomad HTTP API test double (real HTTP server on 127.0.0.1) driven through python-nomad.

Every request is validated against HashiCorp's Nomad 1.4 OpenAPI spec made strict by
``panel.nomad_schema`` (``/client/*`` against a hand description); violations are answered
with HTTP 400 and recorded in ``double.violations``.

Time never passes on its own: each GET advances the simulation one step (``auto_advance``),
and ``double.tick(n)`` advances it explicitly. See ``state.py`` for what a step does.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
SPEC_PATH = REFERENCE_DIR / "nomad-openapi.yaml"

from .server import NomadDouble, RecordedRequest, run_nomad_double  # noqa: E402
from .state import ApiError  # noqa: E402

__all__ = [
    "REFERENCE_DIR",
    "REPO_ROOT",
    "SPEC_PATH",
    "ApiError",
    "NomadDouble",
    "RecordedRequest",
    "nomad_double_fixture",
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
