"""The panel under gunicorn's gevent workers: each worker patches the standard library before it
imports the panel, so that its greenlets get a database connection each and its HTTPS calls work.

Imported before the patch, peewee would keep every greenlet's connection state in one real
``threading.local`` (one shared connection), and urllib3 would keep ssl's own ``SSLContext``
(RecursionError on every HTTPS request: GitHub sign-in, Nomad over TLS). `helios panel` therefore
execs a fresh gunicorn master that imports none of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from test_cluster import Pki, TlsFront, make_pki

from panel.actions.accounts import create_user
from panel.run.web_server import _MASTER, PATCH_FIRST, serve

from conftest import REPO_ROOT
from nomad_double import NomadDouble, run_nomad_double

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


def test_the_master_refuses_to_fork_workers_after_importing_what_gevent_must_patch_first():
    assert "peewee" in sys.modules and "peewee" in PATCH_FIRST  # this process opened a database
    with pytest.raises(RuntimeError, match=r"imported peewee, redis.* `helios panel`"):
        serve()


def test_the_master_patches_first_and_refuses_what_was_imported_before_the_patch():
    """The master's command line imports panel.run.gevent_first first of all; peewee imported
    before it would keep the real threading.local, so the master refuses to start."""
    command = "; ".join(_MASTER.split("; ")[1:])  # the master's code, after the patch
    assert _MASTER.startswith("import panel.run.gevent_first;")
    probe = f"import peewee; import panel.run.gevent_first; {command}"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode != 0
    assert "imported peewee before gevent patched it" in done.stderr


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    with run_nomad_double(token="management-secret") as double:
        yield double
        double.assert_no_violations()


@pytest.fixture
def pki(tmp_path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def tls_nomad(nomad: NomadDouble, pki: Pki) -> Iterator[TlsFront]:
    """The double behind mutual TLS, as a production Nomad is."""
    front = TlsFront(int(nomad.url.rsplit(":", 1)[1]), pki).start()
    yield front
    front.stop()


@pytest.fixture
def panel_env(nomad: NomadDouble, tls_nomad: TlsFront, pki: Pki) -> dict[str, str]:
    return {
        "NOMAD_ADDR": tls_nomad.url,
        "NOMAD_TOKEN": nomad.add_token(name="helios")["SecretID"],
        "NOMAD_CACERT": str(pki.ca),
        "NOMAD_CLIENT_CERT": str(pki.client_cert),
        "NOMAD_CLIENT_KEY": str(pki.client_key),
    }


def test_a_worker_reaches_nomad_over_mutual_tls(db, live_panel, tls_nomad: TlsFront):
    create_user("dev@example.com", PASSWORD, team_slug="acme")
    session = requests.Session()
    token = CSRF_RE.search(session.get(f"{live_panel}/login", timeout=10).text).group(1)
    session.post(f"{live_panel}/login", timeout=10, data={
        "email": "dev@example.com", "password": PASSWORD, "csrf_token": token,
    })  # fmt: skip
    dashboard = session.get(f"{live_panel}/", timeout=30)
    assert dashboard.status_code == 200
    assert f"Connected to Nomad at {tls_nomad.url} with token &#39;helios&#39;" in dashboard.text
    assert tls_nomad.handshake_errors == []
