"""Pinned test inputs: found beside the project, in the cache, or downloaded and checked; never
silently missing. The download is tested against a loopback server (GitHub is out of reach)."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from nomad_double.reference import (
    NOMAD_SPEC,
    PINS,
    SHARED_DIR,
    Pin,
    ReferenceMissingError,
    default_cache,
    find_reference,
    reference_file,
)

SPEC_BYTES = reference_file(NOMAD_SPEC).read_bytes()
SPEC_SHA = hashlib.sha256(SPEC_BYTES).hexdigest()


class Upstream:
    """A loopback HTTP server standing in for raw.githubusercontent.com."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.hits.append(self.path)
                data = upstream.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream({"/v1/openapi.yaml": SPEC_BYTES})
    yield server
    server.stop()


@pytest.fixture
def nowhere() -> Iterator[str]:
    """An http:// address nothing answers at (its port bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def find(tmp_path: Path, pin: Pin, **environ: str) -> Path:
    """find_reference for the spec, with nothing beside the project and an empty cache."""
    return find_reference(
        NOMAD_SPEC,
        environ=environ,
        shared=tmp_path / "no-shared",
        vendored=tmp_path / "no-vendored",
        cache=tmp_path / "cache",
        pins={NOMAD_SPEC: pin},
    )


def test_every_pin_is_a_commit_url_or_kept_in_the_repository() -> None:
    for name, pin in PINS.items():
        assert len(pin.sha256) == 64, name
        if pin.url:
            assert pin.url.startswith("https://raw.githubusercontent.com/"), name
            commit = pin.url.split("/")[5]
            assert len(commit) == 40 and int(commit, 16) >= 0, (name, "pin a commit")
        else:
            kept = REPO_ROOT / "tests" / "reference" / name
            assert hashlib.sha256(kept.read_bytes()).hexdigest() == pin.sha256, name


def test_the_download_is_checked_then_kept_in_the_cache(tmp_path: Path, upstream: Upstream):
    pin = Pin(SPEC_SHA, f"{upstream.url}/v1/openapi.yaml")
    path = find(tmp_path, pin)
    assert path == tmp_path / "cache" / NOMAD_SPEC
    assert path.read_bytes() == SPEC_BYTES
    assert sorted(p.name for p in path.parent.iterdir()) == [NOMAD_SPEC]  # no partial file
    assert find(tmp_path, pin) == path
    assert upstream.hits == ["/v1/openapi.yaml"]  # the second time from the cache


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path: Path, upstream: Upstream):
    upstream.files["/v1/openapi.yaml"] = SPEC_BYTES + b"# altered\n"
    altered = hashlib.sha256(upstream.files["/v1/openapi.yaml"]).hexdigest()
    url = f"{upstream.url}/v1/openapi.yaml"
    with pytest.raises(ReferenceMissingError) as info:
        find(tmp_path, Pin(SPEC_SHA, url))
    assert str(info.value) == (
        f"refused {url}: its SHA-256 is {altered}, not the pinned {SPEC_SHA} (the file changed "
        f"upstream, or something altered the download); {NOMAD_SPEC} was not saved"
    )
    assert not (tmp_path / "cache" / NOMAD_SPEC).exists()


def test_a_stale_cached_copy_is_downloaded_again(tmp_path: Path, upstream: Upstream):
    stale = tmp_path / "cache" / NOMAD_SPEC
    stale.parent.mkdir()
    stale.write_text("openapi: an older pin\n")
    path = find(tmp_path, Pin(SPEC_SHA, f"{upstream.url}/v1/openapi.yaml"))
    assert path.read_bytes() == SPEC_BYTES


def test_processes_starting_at_once_download_safely(tmp_path: Path, upstream: Upstream):
    pin = Pin(SPEC_SHA, f"{upstream.url}/v1/openapi.yaml")
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(find(tmp_path, pin))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [tmp_path / "cache" / NOMAD_SPEC] * 8
    assert found[0].read_bytes() == SPEC_BYTES
    assert sorted(p.name for p in found[0].parent.iterdir()) == [NOMAD_SPEC]


def test_no_source_at_all_says_how_to_provide_it(tmp_path: Path, nowhere: str):
    url = f"{nowhere}/v1/openapi.yaml"
    with pytest.raises(ReferenceMissingError) as info:
        find(tmp_path, Pin(SPEC_SHA, url))
    cache = tmp_path / "cache" / NOMAD_SPEC
    message = str(info.value)
    assert message.startswith(
        f"the pinned test input {NOMAD_SPEC} (SHA-256 {SPEC_SHA}) is not available:\n"
        "  - HELIOS_NOMAD_SPEC is not set\n"
        f"  - {tmp_path / 'no-shared' / NOMAD_SPEC} does not exist\n"
        f"  - {cache} does not exist\n"
        f"  - downloading {url} failed: "
    )
    assert message.endswith(
        f"Provide it: set HELIOS_NOMAD_SPEC to a copy of {NOMAD_SPEC}; or put Helios's "
        f"reference folder at {SHARED_DIR}; or download it where GitHub answers: "
        f"curl -fsSL --create-dirs -o {cache} {url}."
    )


def test_helios_nomad_spec_is_used_and_checked(tmp_path: Path, nowhere: str):
    offline = Pin(SPEC_SHA, f"{nowhere}/v1/openapi.yaml")
    given = tmp_path / "spec.yaml"
    given.write_bytes(SPEC_BYTES)
    assert find(tmp_path, offline, HELIOS_NOMAD_SPEC=str(given)) == given
    given.write_bytes(SPEC_BYTES.replace(b"MemoryMB", b"MemoryMb"))
    with pytest.raises(ReferenceMissingError, match=rf"^{given} is not the pinned {NOMAD_SPEC}"):
        find(tmp_path, offline, HELIOS_NOMAD_SPEC=str(given))


def test_the_cache_folder() -> None:
    assert default_cache({"HELIOS_TEST_CACHE": "/srv/c"}) == Path("/srv/c/reference")
    assert default_cache({"XDG_CACHE_HOME": "/x"}) == Path("/x/helios/reference")
    assert default_cache({}) == Path.home() / ".cache" / "helios" / "reference"


# ---------------------------------------------------------------------------------------------
# The whole suite: a checkout without ../shared/reference runs every test or stops, loudly
# ---------------------------------------------------------------------------------------------


def collect_in_a_bare_checkout(
    tmp_path: Path, cache: Path, nowhere: str
) -> subprocess.CompletedProcess:
    """Collect test_nomad_schema.py in a copy of tests/ with nothing beside it and no network
    (every request goes to a proxy that is not there)."""
    checkout = tmp_path / "fork" / "helios"
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    shutil.copytree(REPO_ROOT / "tests", checkout / "tests", ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", checkout)
    env = {
        k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "helios_nomad_spec"}
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        HELIOS_TEST_CACHE=str(cache),
        HTTP_PROXY=nowhere, HTTPS_PROXY=nowhere, http_proxy=nowhere, https_proxy=nowhere,
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "tests/test_nomad_schema.py"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_checkout_without_the_reference_stops_and_says_how(tmp_path: Path, nowhere: str):
    result = collect_in_a_bare_checkout(tmp_path, tmp_path / "empty-cache", nowhere)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert f"ERROR: the pinned test input {NOMAD_SPEC}" in result.stderr
    assert "Provide it: set HELIOS_NOMAD_SPEC" in result.stderr
    assert "tests collected" not in result.stdout


def test_a_checkout_with_a_filled_cache_collects_every_test(tmp_path: Path, nowhere: str):
    cache = tmp_path / "cache"
    for name, pin in PINS.items():
        if pin.url:
            (cache / "reference" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(reference_file(name), cache / "reference" / name)
    result = collect_in_a_bare_checkout(tmp_path, cache, nowhere)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
    assert "tests collected" in result.stdout
    assert "skipped" not in result.stdout


# ---------------------------------------------------------------------------------------------
# The product stands alone: the reference is a test input, never read by panel/
# ---------------------------------------------------------------------------------------------


def test_the_panel_never_reads_the_reference() -> None:
    from panel.config import SETTINGS_DOC

    assert "HELIOS_NOMAD_SPEC" not in {spec[0] for spec in SETTINGS_DOC}
    readers = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "panel").rglob("*.py"))
        if any(word in path.read_text() for word in ("shared/reference", "nomad-openapi", "tests/"))
    ]
    assert readers == []
    assert not (REPO_ROOT / "panel" / "nomad_schema.py").exists()  # test code, in nomad_double/
