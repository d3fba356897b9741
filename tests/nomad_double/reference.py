"""Pinned test inputs: HashiCorp's Nomad API description and real job documents by others.

Every file is pinned by its SHA-256; where it comes from is told in ``../shared/reference/
README.md`` and ``tests/reference/README.md``. :func:`reference_file` answers a verified copy,
looking in this order:

1. ``HELIOS_NOMAD_SPEC`` (Nomad's API description only): a copy given by hand;
2. ``../shared/reference/<name>`` beside the project;
3. ``tests/reference/<name>``: the examples re-serialised from Nomad's docs, kept here;
4. the cache, ``$HELIOS_TEST_CACHE/reference`` or ``~/.cache/helios/reference``;
5. the pinned upstream URL (a commit, never a branch), downloaded into the cache: to a
   temporary file first, checked, then renamed, so processes that start at once never read
   half a file or a wrong one.

When none answers, :class:`ReferenceMissingError` says how to provide the file: a test that
needs one never skips for want of it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NOMAD_SPEC",
    "PINS",
    "Pin",
    "ReferenceMissingError",
    "default_cache",
    "download",
    "ensure_references",
    "example_names",
    "find_reference",
    "reference_file",
]

TESTS_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = TESTS_DIR.parents[1] / "shared" / "reference"
VENDORED_DIR = TESTS_DIR / "reference"
NOMAD_SPEC = "nomad-openapi.yaml"
DOWNLOAD_TIMEOUT = 30  # seconds per file
MAX_BYTES = 2_000_000  # the largest pinned file is 258 kB

_NOMAD = (
    "https://raw.githubusercontent.com/hashicorp/nomad/a4cc76bd3e4c7d4f7e623721caa8a716b5a0151f"
)
_OCTOKIT = (
    "https://raw.githubusercontent.com/octokit/webhooks/3a58428aa5c399cf5aa12c8663aea1fb1f515254"
    "/payload-examples/api.github.com"
)
_TRAEFIK = (
    "https://raw.githubusercontent.com/traefik/traefik/fd5a576df2e8aeb0bfc8a96b6ef6e60a61f7ec0a"
    "/pkg/provider/nomad/fixtures"
)


class ReferenceMissingError(RuntimeError):
    """A pinned test input cannot be had (or a copy of it is not the pinned file)."""


@dataclass(frozen=True)
class Pin:
    """One test input: its SHA-256 and, unless it is kept in tests/reference, its source."""

    sha256: str
    url: str = ""


PINS: dict[str, Pin] = {
    NOMAD_SPEC: Pin(
        "3c401ef1f743a629d0ba1b393994049d754743ecadb59a256b5cd74619bb9ea9",
        "https://raw.githubusercontent.com/hashicorp/nomad-openapi/"
        "91c4cd105ec4a5347c633633361249fb63de6391/v1/openapi.yaml",
    ),
    "nomad-examples/cmd-testdata-example-short.json": Pin(
        "4249c7709d7394443d928e3a19ce9ddcfcd23123ce00622cfc484fe71f96a95d",
        f"{_NOMAD}/command/testdata/example-short.json",
    ),
    "nomad-examples/cmd-testdata-example-short-bad.json": Pin(
        "43c68a328d3fadae10ef833f3fdd557785a482ddca09b360884cc5c8fd2c5f9d",
        f"{_NOMAD}/command/testdata/example-short-bad.json",
    ),
    "nomad-examples/python-nomad-example-batch-parameterized.json": Pin(
        "f5bcfc7b9bbf2b0c1012fc0ea90d0b230bdfd8686cb1d070636c11e1a1b9166c",
        "https://raw.githubusercontent.com/jrxFive/python-nomad/"
        "db31eaadd02cc562c4f0fb55da06ab2ac800665b/example_batch_parameterized.json",
    ),
    "nomad-examples/traefik-nomad-provider-fixture-job1.json": Pin(
        "96129497d89ba1922760597d207075d49c13e04cc8b572f0ea60929f9ba9723e",
        f"{_TRAEFIK}/job_job1_WithGroupService_Scaling1.json",
    ),
    "nomad-examples/traefik-nomad-provider-fixture-job5.json": Pin(
        "e61f4bec6fcd2a5f09b53531788acbc54e36f82d7b491504a75c27bdf66c6a06",
        f"{_TRAEFIK}/job_job5_WithGroupTaskService_Scaling1.json",
    ),
    "github-webhooks/push.json": Pin(
        "909b4665b3d1ee7c6c0430f0d4d25167169954e57bfb0c80c9f70152b5fed288",
        f"{_OCTOKIT}/push/payload.json",
    ),
    "github-webhooks/push_with-new-branch.json": Pin(
        "c1cab5f4e9bc7d5c85665397a008a2a0410e9db8fb566d347c30f85fe5526292",
        f"{_OCTOKIT}/push/with-new-branch.payload.json",
    ),
    "github-webhooks/ping.json": Pin(
        "99c1656b2a959bedc162ec8881ececbd96b281059f43862dfde6a9939aa7decc",
        f"{_OCTOKIT}/ping/payload.json",
    ),
    "github-webhooks/delete.json": Pin(
        "eaf78309036920f68766818375a5af4e664431682a488d907f366cf2610441c1",
        f"{_OCTOKIT}/delete/payload.json",
    ),
    # JSON blocks of Nomad's docs, re-serialised: no upstream file has these bytes, so they
    # are kept in tests/reference (MPL-2.0, see its README).
    "nomad-examples/docs-jobs-create-job-payload.json": Pin(
        "419c6cdfaa84cd2e02691053f5b91a3805ff6a8d9d100f2d3534ebabd45b7e0d"
    ),
    "nomad-examples/docs-jobs-parse-job-response.json": Pin(
        "d354f374de870d631a4fb1d5a60e8708d0bab74433c7cec75a3ff32fbdfd44f7"
    ),
    "nomad-examples/docs-jobs-read-job-response.json": Pin(
        "e3c93088c82f4edf698d98f54216a6ffae998616eab634c418029315d6484505"
    ),
    "nomad-examples/docs-json-jobs-example-job.json": Pin(
        "a301977963a440fce5c32d5b73240468eee8079aca88d890b851149a4abd7af1"
    ),
    "nomad-examples/docs-json-jobs-update-block.json": Pin(
        "13b0501ed5732c918c08f0b1303b5f2b4b80be3d6659cfc3f4bb39359c50554e"
    ),
}


def default_cache(environ: Mapping[str, str] = os.environ) -> Path:
    """Where downloaded inputs are kept: $HELIOS_TEST_CACHE/reference, else the user's cache."""
    if environ.get("HELIOS_TEST_CACHE"):
        return Path(environ["HELIOS_TEST_CACHE"]) / "reference"
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "helios" / "reference"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(name: str, pin: Pin, cache: Path) -> Path:
    """Fetch a pinned file into the cache: checked before it gets its name, or not kept."""
    request = urllib.request.Request(pin.url, headers={"User-Agent": "helios-tests"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        data = response.read(MAX_BYTES + 1)
    digest = _sha256(data)
    if digest != pin.sha256:
        raise ReferenceMissingError(
            f"refused {pin.url}: its SHA-256 is {digest}, not the pinned {pin.sha256} (the file "
            f"changed upstream, or something altered the download); {name} was not saved"
        )
    target = cache / name
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _how_to(name: str, pin: Pin, cache: Path, tried: list[str]) -> str:
    """The message when a pinned input cannot be had: what was tried, and how to provide it."""
    ways = [f"put Helios's reference folder at {SHARED_DIR}"]
    if name == NOMAD_SPEC:
        ways.insert(0, f"set HELIOS_NOMAD_SPEC to a copy of {NOMAD_SPEC}")
    if pin.url:
        fetch = f"curl -fsSL --create-dirs -o {cache / name} {pin.url}"
        ways.append(f"download it where GitHub answers: {fetch}")
    else:
        ways.append(f"restore {VENDORED_DIR / name} from the repository (git checkout)")
    return (
        f"the pinned test input {name} (SHA-256 {pin.sha256}) is not available:\n"
        + "".join(f"  - {line}\n" for line in tried)
        + "Provide it: "
        + "; or ".join(ways)
        + "."
    )


def find_reference(
    name: str,
    *,
    environ: Mapping[str, str] = os.environ,
    shared: Path = SHARED_DIR,
    vendored: Path = VENDORED_DIR,
    cache: Path | None = None,
    pins: Mapping[str, Pin] = PINS,
) -> Path:
    """A verified copy of a pinned input (see the module's docstring for the order)."""
    pin = pins[name]
    cache = cache or default_cache(environ)
    tried: list[str] = []
    given = [shared / name] if pin.url else [shared / name, vendored / name]
    if name == NOMAD_SPEC and environ.get("HELIOS_NOMAD_SPEC"):
        given.insert(0, Path(environ["HELIOS_NOMAD_SPEC"]))
    elif name == NOMAD_SPEC:
        tried.append("HELIOS_NOMAD_SPEC is not set")
    for path in given:
        if path.is_file():
            return _checked(path, name, pin)
        tried.append(f"{path} does not exist")
    if not pin.url:
        raise ReferenceMissingError(_how_to(name, pin, cache, tried))
    cached = cache / name
    if cached.is_file() and _sha256(cached.read_bytes()) == pin.sha256:
        return cached
    tried.append(f"{cached} {'is stale' if cached.is_file() else 'does not exist'}")
    try:
        return download(name, pin, cache)
    except (OSError, urllib.error.URLError) as exc:
        tried.append(f"downloading {pin.url} failed: {getattr(exc, 'reason', exc)}")
    raise ReferenceMissingError(_how_to(name, pin, cache, tried))


def _checked(path: Path, name: str, pin: Pin) -> Path:
    """path, when it holds the pinned bytes: a copy put there on purpose is never passed over."""
    digest = _sha256(path.read_bytes())
    if digest != pin.sha256:
        raise ReferenceMissingError(
            f"{path} is not the pinned {name}: its SHA-256 is {digest}, not {pin.sha256}"
        )
    return path


@functools.cache
def reference_file(name: str) -> Path:
    """The verified local copy of the pinned test input ``name`` (e.g. NOMAD_SPEC)."""
    return find_reference(name)


def ensure_references() -> dict[str, Path]:
    """Every pinned input, found or downloaded (before test processes start, in pytest)."""
    return {name: reference_file(name) for name in PINS}


def example_names() -> list[str]:
    """File names of the real job documents under nomad-examples/."""
    prefix = "nomad-examples/"
    return sorted(name.removeprefix(prefix) for name in PINS if name.startswith(prefix))
