"""Hostile input everywhere: the lines of tests/hostile_inputs.txt into every field.

The lines go into every field of every API operation (path, query and body, read from the
served OpenAPI document), every field of every form the pages show a visitor, an owner and an
operator (found by parsing the pages' HTML), every query and form parameter the page views read
(recorded while the pages are fetched), every path parameter of every URL rule, and every
argument and option of every `helios` command (walked from the click group); the other fields
stay valid. Routes, forms and commands added later are covered without editing this file; a
path parameter or a required CLI argument without a valid value here fails the test, as in the
authorization matrix, and so does a field whose valid request (the line left out) is refused,
unless REFUSED_ON_PURPOSE says why: its lines would test nothing. Expected: no 5xx, no
traceback, CLI exit codes within the documented 0..5.

Sampling, to stay near two minutes on two cores: the first line of each section of the
file goes into every single field; of the others, each field takes every ``STRIDE``-th line
(default 12), the starting line moving on from one field to the next, so every line reaches
several fields of each surface. A path parameter shares them with the parameters of its group
(its name, e.g. ``<slug>`` of some twenty rules; ``<int>`` for all integer ones, one converter),
so every line reaches every group. ``HELIOS_HOSTILE_STRIDE=1`` sends every line into every
field (about five times longer).

Whatever is accepted is then rendered as it would be deployed, and checked:

- every app's Nomad job still renders (``preview_spec`` → ``render_job``): a value accepted at
  the edge but refused at render is half-accepted input, and the app could no longer deploy;
- the accepted value changed only the job fields of the field it was sent in, and sits there as
  one whole JSON value (a command as its argv);
- template syntax (``{{``, ``{%``, ``${``, ``%{``, ``[[``) appears nowhere but in the app's own
  ``Env`` values and docker ``command``/``args``. Those are the app's own process environment
  and argv: Nomad interpolates ``${…}`` there at run time by design (that is how
  ``${NOMAD_PORT_http}`` works), with that task's own runtime values, and never runs Go or Jinja
  templates on them. Anywhere else — ``Meta``, service names and tags, check paths — Nomad
  interpolation would reach the platform's routing, so it must not occur; the one template Helios
  writes (secrets from Nomad Variables) must be exactly Helios's own text;
- the Traefik rule is exactly ``Host(`a`) || Host(`b`)`` over the app's domains;
- the Ansible inventory of every host renders, and every string value in it is ``!unsafe``;
- no HTML page shows an accepted or refused line with markup unescaped.

The figures (requests, fields, 5xx, accepted and rendered values) are printed.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import click
import pytest
import requests
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_authz_matrix import FORMS, PASSWORD, _seed  # the matrix's seeded world and bodies
from werkzeug.datastructures import ImmutableMultiDict

from panel.actions.apps import ActionError, preview_spec
from panel.config import Settings
from panel.db import database
from panel.models import App, Host
from panel.render.ansible import InventoryHost, render_inventory
from panel.render.nomad import render_job, render_secrets_template
from panel.validation import ValidationError, validate_command
from panel.web import create_app

from conftest import REPO_ROOT, helios_command, process_env

LINES_FILE = Path(__file__).with_name("hostile_inputs.txt")
STRIDE = int(os.environ.get("HELIOS_HOSTILE_STRIDE", "12"))
EXIT_CODES = range(6)  # the documented `helios` exit codes, 0 to 5
TEMPLATE_MARKERS = ("{{", "{%", "${", "%{", "[[")
RULE_RE = re.compile(r"Host\(`[a-z0-9.-]+`\)(?: \|\| Host\(`[a-z0-9.-]+`\))*")
PARAM_RE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
PLACEHOLDER = "\x00placeholder\x00"
PANEL_URL = "http://panel.test"
SETTINGS = {
    "log_level": "error",
    # Thousands of requests from one token and address, and hundreds of refused sign-ins.
    "api_rate_limit": "1000000 per minute",
    "login_limit": "1000000 per minute",
    "login_free_failures": 10**6,
    "login_address_failures": 10**6,
    "login_account_failures": 10**6,
    "stream_lifetime": 1,  # live pages' streams end after a second, not a minute
}
# Where a value of each field may change a job (substrings of the leaf's path). A field not
# listed may change nothing but the release number (a deploy cuts a release).
JOB_PATHS = {
    "image": ("Config.image",),
    "command": ("Config.command", "Config.args"),
    "command_": ("Config.command", "Config.args"),
    "value": ("Env.", "Templates"),
    "assignments": ("Env.",),
    "key": ("Env.", "Templates"),
    "keys": ("Env.", "Templates"),
    "secret": ("Env.", "Templates"),
    "hostname": ("Tags",),
    "health_path": ("Checks",),
    "port": ("DynamicPorts",),
    "count": ("Count", "Canary"),
    "cpu_mhz": ("Resources.CPU",),
    "memory_mb": ("Resources.MemoryMB", "Resources.MemoryMaxMB"),
    "memory_max_mb": ("Resources.MemoryMaxMB",),
}
RELEASE_PATHS = ("Meta.helios.release", "Env.HELIOS_RELEASE")
# Fields whose value the job holds as it was sent, at these paths.
WHOLE_VALUES = {"image": "Config.image", "value": ".Env.", "health_path": "Checks.0.Path"}
# Fields that exclude another: sending one, the other is left out to keep the rest valid.
EXCLUDES = {"repo": "image"}
# Valid values besides the OpenAPI examples and the matrix's form bodies.
VALID_BODIES = {
    # A token mints tokens that expire no later than itself (the seed's live 30 days).
    "POST /api/v1/tokens": {"days": 1},
    # The example's documentation address is internal; a public one given as such (no lookup).
    "POST /api/v1/teams/{team}/notifiers": {"url": "https://1.1.1.1/hook"},
}
VALID_FORMS = {"/hosts/new": {"ssh_host_keys": "{host_key}"}}  # pinned at once: no scan
# Targets whose valid request is refused on purpose; any other refusal fails the test, since
# the other fields would not be valid and the lines would test nothing.
REFUSED_ON_PURPOSE = {
    "form POST /login": "the matrix signs in with a wrong password (a right one signs in)",
    "helios plan": "it asks Nomad, and no cluster is configured here",
    "helios hosts plan": "provisioning refuses hosts whose SSH keys are not pinned, as node1",
    "helios hosts apply": "provisioning refuses hosts whose SSH keys are not pinned, as node1",
    "helios hosts maintain": "it drains through Nomad, and no cluster is configured here (and "
    "node1's SSH keys are not pinned)",
    "helios db ": "migrations change the schema, not values: there is nothing to render",
    "helios restore": "the world's installation is there: a restore refuses it without --force "
    "(tests/test_backup.py restores into empty ones)",
    "PUT /api/v1/teams/{team}/limits": "only site admins set limits and the world's token is "
    "the owner's: its body is checked first (422), then refused (403); tests/test_team_limits.py "
    "sets them",
    "POST /api/v1/apps/{slug}/reapply": "the seeded app has no live release to apply (409)",
    "POST /apps/<slug>/reapply": "the seeded app has no live release to apply (409)",
    # Scale, restart and stop act on a live release, start on a stopped app.
    "POST /api/v1/apps/{slug}/scale": "the seeded app has no live release to scale (409)",
    "POST /api/v1/apps/{slug}/restart": "the seeded app has no live release to restart (409)",
    "POST /api/v1/apps/{slug}/stop": "the seeded app has no live release to stop (409)",
    "POST /api/v1/apps/{slug}/start": "the seeded app is not stopped (409)",
    "helios apps scale": "the seeded app has no live release to scale (exit 2)",
    "helios apps restart": "the seeded app has no live release to restart (exit 2)",
    "helios apps stop": "the seeded app has no live release to stop (exit 2)",
    "helios apps start": "the seeded app is not stopped (exit 2)",
    # A one-off command runs in the live release (tests/test_runs.py runs them).
    "POST /api/v1/apps/{slug}/runs": "the seeded app has no live release to run in (409)",
    "helios run": "the seeded app has no live release to run in (exit 2)",
    "POST /apps/<slug>/runs": "the seeded app has no live release to run in (409)",
    "form POST /apps/<slug>/runs": "the seeded app has no live release to run in (409)",
    # Deleting the seeded app would leave every later target without it.
    "DELETE /api/v1/apps/{slug}": "the seeded app has a deployment under way (409)",
    "helios apps delete": "the seeded app has a deployment under way (exit 2)",
    # Deleting the seeded team would take its app and members from every later target.
    "DELETE /api/v1/teams/{team}": "the seeded team has an app (409)",
    "POST /teams/<slug>/delete": "the seeded team has an app (409)",
    "form POST /teams/<slug>/delete": "the seeded team has an app (409)",
    "helios teams delete": "the seeded team has an app (exit 2)",
    "helios teams move-namespace": "no Nomad cluster here to create its namespace in (exit 2)",
    "helios teams nomad-token": "the seeded team runs in the shared namespace (exit 2)",
}


# ---------------------------------------------------------------------------------------------
# The hostile lines, and which target gets which
# ---------------------------------------------------------------------------------------------


def load_lines(path: Path = LINES_FILE) -> tuple[list[str], list[str]]:
    """(first line of every section, the other lines): escapes decoded, @repeat expanded."""
    firsts: list[str] = []
    others: list[str] = []
    section_open = False
    for raw in path.read_text("ascii").splitlines():
        if raw.startswith("# ---"):
            section_open = True
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw.startswith("@repeat "):
            _, count, text = raw.split(" ", 2)
            line = _decode(text) * int(count)
        else:
            line = _decode(raw)
        (firsts if section_open else others).append(line)
        section_open = False
    return firsts, others


def _decode(text: str) -> str:
    return text.encode("ascii").decode("unicode_escape")


FIRSTS, OTHERS = load_lines()
LINES = FIRSTS + OTHERS


@dataclass
class Target:
    """One field to fill. ``send(line)`` makes the request with ``line`` in the field (None:
    the field's valid value) and returns the values the panel accepted (none if it refused).

    Path parameters of one ``group`` share the lines: the parameter's name, or ``<int>`` for
    every integer parameter (one converter reads them all).
    """

    kind: str
    name: str
    label: str
    send: Callable[[str | None], list[Any]]
    group: str = ""
    writes: bool = True  # its valid request must be accepted (else the harness is wrong)


def shares(targets: list[Target]) -> Iterator[tuple[Target, list[str]]]:
    """Each target with its lines (see the module docstring)."""
    groups = collections.Counter(t.group for t in targets if t.kind == "path")
    seen: collections.Counter = collections.Counter()
    for number, target in enumerate(targets):
        if target.kind == "path":
            stride, offset = min(STRIDE, groups[target.group]), seen[target.group]
            seen[target.group] += 1
        else:
            stride, offset = STRIDE, number
        yield target, FIRSTS + OTHERS[offset % stride :: stride]


def run_targets(world: World, targets: list[Target]) -> None:
    """Send each target its lines; check and undo whatever the panel accepts."""
    for target, lines in shares(targets):
        world.tally.fields.add(target.label)
        world.prime(target)
        for line in lines:
            for value in target.send(line):
                world.accepted(target.label, target.name, value)


def _wire(text: str) -> bytes:
    """The bytes a client sends for ``text``: UTF-8, a lone surrogate as an invalid sequence."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _received(line: str) -> str:
    """What the panel reads from a form that carried ``line``: Werkzeug keeps bytes that are
    not UTF-8 as %XX text."""
    return _wire(line).decode("utf-8", "werkzeug.url_quote")


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _shown(value: object, limit: int = 70) -> str:
    text = ascii(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(str(value))} chars)"


# ---------------------------------------------------------------------------------------------
# Tally: what was sent, refused, accepted and checked; findings fail the test
# ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Figures of one surface (API, pages or CLI) and its findings."""

    surface: str
    requests: int = 0
    fields: set[str] = field(default_factory=set)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    server_errors: int = 0
    accepted: int = 0
    rendered: int = 0
    findings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        """The figures, two lines."""
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        unit = "invocations" if self.surface == "CLI" else "requests"
        return (
            f"hostile input, {self.surface}: {len(LINES)} lines into {len(self.fields)} fields "
            f"(stride {STRIDE}), {self.requests} {unit} in {time.monotonic() - self.started:.1f}"
            f" s; {self.server_errors} 5xx or tracebacks; {self.accepted} values accepted, "
            f"{self.rendered} rendered and checked; {len(self.findings)} findings\n"
            f"  {'exit codes' if self.surface == 'CLI' else 'statuses'}: {codes}"
        )

    def check(self, request) -> None:
        """Print the figures; fail with every finding."""
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\n" + self.summary())
        shown = "\n\n".join(self.findings[:25])
        more = f"\n\n... and {len(self.findings) - 25} more" if len(self.findings) > 25 else ""
        assert not self.findings, f"{len(self.findings)} findings:\n\n{shown}{more}"


class ServerErrors(logging.Handler):
    """Keeps the tracebacks the panel logs for unexpected errors, to report them precisely."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def last(self) -> str:
        """The last logged traceback's final lines, or a note that none was logged."""
        for record in reversed(self.records):
            if record.exc_info:
                return _tail("".join(traceback.format_exception(*record.exc_info)))
        return "    (no traceback logged)"


# ---------------------------------------------------------------------------------------------
# The world: the authorization matrix's seed, one database copy, reset after anything accepted
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory, redis_server) -> tuple[Path, Settings, dict]:
    base = tmp_path_factory.mktemp("hostile")
    known = set(Settings.model_fields)
    settings = Settings.from_env(
        environ={}, data_dir=base / "var", redis_url=redis_server,
        **{name: value for name, value in SETTINGS.items() if name in known},
    )  # fmt: skip
    path = base / "template.db"
    return path, settings, _seed(f"sqlite:///{path}", settings)


class World:
    """The panel on a copy of the seed with signed-in owner and operator clients."""

    ADDRESSES = {"anon": "127.0.0.2", "owner": "127.0.0.3", "operator": "127.0.0.4"}

    def __init__(self, template, workdir: Path, tally: Tally, errors: ServerErrors) -> None:
        path, settings, seed = template
        self.tally, self.server_errors = tally, errors
        self.values = seed["values"]
        self.token = seed["tokens"]["tok_admin"]
        self.db_path = workdir / "hostile.db"
        self.snapshot = workdir / "snapshot.db"
        self.keeper: sqlite3.Connection | None = None
        shutil.copyfile(path, self.db_path)
        self.settings = settings.replace(database_url=f"sqlite:///{self.db_path}")
        self.app = create_app(self.settings)
        self.app.config.update(WTF_CSRF_ENABLED=False, TESTING=False)
        self.handle = self.app.extensions["helios.database"]
        self.clients = {who: self.client(who) for who in self.ADDRESSES}
        self.cookies: dict[str, dict[str, str]] = {}
        public = Ed25519PrivateKey.generate().public_key()
        self.host_key = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        for who in ("owner", "operator"):
            self.sign_in(who)
        self._close()
        with self.handle.connection_context():
            self.handle.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            self.baseline = self.base = self.jobs()
        shutil.copyfile(self.db_path, self.snapshot)  # sessions included, if kept server-side
        self.reset()

    def close(self) -> None:
        """Close this test's connections."""
        self._close()
        if self.keeper is not None:
            self.keeper.close()

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The job each app with an image would submit next, by slug."""
        return {
            app.slug: render_job(preview_spec(app, self.settings))
            for app in App.select().where(App.image.is_null(False) & (App.image != ""))
        }

    def prime(self, target: Target) -> None:
        """Compare what a target's lines change with what its valid request changes."""
        self.base = self.baseline
        if target.send(None):
            with self.handle.connection_context():
                self.base = self.jobs()
            self.reset()
        elif target.writes and not target.label.startswith(tuple(REFUSED_ON_PURPOSE)):
            self.tally.findings.append(
                f"{target.label}: its valid request is refused, so the lines test nothing: "
                "give valid values (VALID_BODIES, VALID_FORMS, VALID_ARGS)"
            )

    def _close(self) -> None:
        database.initialize(self.handle)
        if not self.handle.is_closed():
            self.handle.close()

    def reset(self) -> None:
        """Back to the seed (sign-ins included: a signed-out client signs in on its next use).

        SQLite's backup API writes the seed into the live file, so a connection some thread of
        the panel still holds sees the seed too (unlinking the file under it would corrupt it).
        """
        self._close()
        if self.keeper is None:
            # Held open, so that closing the panel's connection after each request is not the
            # last close: the last one checkpoints the WAL, doubling the cost of a request.
            self.keeper = sqlite3.connect(self.db_path, timeout=15)
        with closing(sqlite3.connect(self.snapshot)) as seed:
            seed.backup(self.keeper)

    def client(self, who: str):
        """A test client of its own address (sign-in limits count per address)."""
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = self.ADDRESSES[who]
        return client

    def sign_in(self, who: str) -> None:
        """Sign in through the form; keep the cookies it sets (they match the snapshot)."""
        self.clients[who] = self.client(who)
        answer = self.clients[who].post(
            "/login", data={"email": f"{who}@example.com", "password": PASSWORD}
        )
        assert answer.status_code == 302, f"{who} could not sign in: {answer.status_code}"
        cookies = SimpleCookie()
        for header in answer.headers.getlist("Set-Cookie"):
            cookies.load(header)
        self.cookies.setdefault(who, {m.key: m.value for m in cookies.values()})

    def signed_in_again(self, who: str) -> None:
        """The client's cookies of the first sign-in (the snapshot's sessions) on a new client."""
        self.clients[who] = self.client(who)
        for key, value in self.cookies[who].items():
            self.clients[who].set_cookie(key, value)

    # -- requests --------------------------------------------------------------------------

    def open(self, who: str, method: str, url: str, **kwargs):
        """A request as ``who``; a principal that was signed out (a sign-out or a password
        change accepted) gets its first sign-in back, or signs in anew."""
        response = self.clients[who].open(url, method=method, **kwargs)
        for again in (self.signed_in_again, self.sign_in):
            if who == "anon" or not _to_login(response):
                break
            again(who)
            response = self.clients[who].open(url, method=method, **kwargs)
        return response

    def send(self, who: str, method: str, url: str, label: str, line: str | None, **kwargs):
        """One request (``line`` None: all valid); a 5xx, a traceback or the line's markup
        shown unescaped is a finding."""
        response = self.open(who, method, url, **kwargs)
        if line is None:
            response.get_data()
            response.close()
            if response.status_code >= 500:
                self.tally.findings.append(f"{method} {url} as {who}: {response.status_code}")
            return response
        self.tally.requests += 1
        self.tally.statuses[response.status_code] += 1
        problem = self._problem(response, line)
        if problem:
            self.tally.findings.append(
                f"{method} {_shown(url, 120)} as {who}, {label} = {_shown(line)}: {problem}"
            )
        return response

    def _problem(self, response, line: str) -> str | None:
        """What is wrong with an answer to a hostile request, if anything."""
        try:
            body = response.get_data()
        except Exception:  # a streamed body that fails half-way: the client sees it cut off
            self.tally.server_errors += 1
            return "the streamed answer failed:\n" + _tail(traceback.format_exc())
        finally:
            response.close()  # as a WSGI server does, even when the body failed
        if response.status_code >= 500 or b"Traceback" in body:
            self.tally.server_errors += 1
            return f"{response.status_code}:\n{self.server_errors.last()}"
        if response.mimetype == "text/html" and "<" in line and _wire(line) in body:
            return "the page shows the line's markup unescaped"
        return None

    def accepted(self, label: str, name: str, value: Any) -> None:
        """``value`` was accepted into field ``name``: check what it renders to, then reset."""
        self.tally.accepted += 1
        try:
            with self.handle.connection_context():
                problems = self.check_apps(name, value) + check_inventory(list(Host.select()))
        finally:
            self.reset()
        self.tally.rendered += 1
        self.tally.findings += [f"{label} = {_shown(value)}: {p}" for p in problems]

    def check_apps(self, name: str, value: Any) -> list[str]:
        """Every app with an image renders; its job passes the checks (see the docstring)."""
        problems = []
        for app in App.select().where(App.image.is_null(False) & (App.image != "")):
            try:
                spec = preview_spec(app, self.settings)
            except ActionError as exc:
                problems.append(f"accepted, but app {app.slug} no longer renders: {exc}")
                continue
            job = render_job(spec)
            problems += check_job(job, spec)
            if app.slug in self.base:
                problems += check_confined(self.base[app.slug], job, name, value)
        return problems


def _to_login(response) -> bool:
    """A page sent the client to sign in (a 401 is an answer: e.g. a wrong current password)."""
    location = urlsplit(response.headers.get("Location", "")).path
    return response.status_code in {301, 302, 303} and location.startswith("/login")


@pytest.fixture
def world(template, tmp_path, redis_url, monkeypatch, request) -> Iterator[World]:
    """A fresh world; the panel's logged tracebacks are kept to report 5xx precisely. No
    program is on PATH, so nothing reaches the network (ssh-keyscan of a host answers at once
    that it is not installed)."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    tally = Tally(request.node.name.removeprefix("test_hostile_input_in_the_"))
    errors = ServerErrors()
    logging.getLogger("panel").addHandler(errors)
    built = None
    try:
        built = World(template, tmp_path, tally, errors)
        yield built
    finally:
        logging.getLogger("panel").removeHandler(errors)
        if built is not None:
            built.close()


# ---------------------------------------------------------------------------------------------
# Checks of what accepted values render to
# ---------------------------------------------------------------------------------------------


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf) of every scalar in a JSON-like value; dict keys count as leaves."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield ".".join(map(str, (*path, key, "<key>"))), key
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield ".".join(map(str, path)), value


def _user_zone(path: str) -> bool:
    """Env values and docker argv: the app's own, where Nomad's ${…} is documented."""
    return bool(re.search(r"\.Env\.[A-Z0-9_]+$|\.Config\.(command|args)(\.\d+)?$", path))


def check_job(job: dict[str, Any], spec) -> list[str]:
    """Template syntax only in the app's own zone; Helios's template intact; the rule's form."""
    problems, rules = [], []
    for path, leaf in _leaves(job):
        if not isinstance(leaf, str) or _user_zone(path):
            continue
        if leaf.startswith("traefik.http.routers.") and ".rule=" in leaf:
            rules.append(leaf.split(".rule=", 1)[1])
        if path.endswith(".EmbeddedTmpl"):
            if leaf != render_secrets_template(spec):
                problems.append(f"the secrets template was changed: {_shown(leaf)}")
        elif any(marker in leaf for marker in TEMPLATE_MARKERS):
            problems.append(f"template syntax reaches {path}: {_shown(leaf)}")
    expected = " || ".join(f"Host(`{host}`)" for host in spec.all_domains)
    if len(rules) != 1 or not RULE_RE.fullmatch(rules[0]) or rules[0] != expected:
        problems.append(f"the Traefik rule is {_shown(rules, 200)}, expected {expected!r}")
    return problems


def check_confined(before: dict, after: dict, name: str, value: Any) -> list[str]:
    """Only the field's own job paths changed, and they hold the value whole."""
    old, new = dict(_leaves(before)), dict(_leaves(after))
    changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
    changed = [p for p in changed if not p.endswith(RELEASE_PATHS)]
    allowed = JOB_PATHS.get(name, ())
    problems = [
        f"field {name} changed {p} of the job ({_shown(new.get(p))})"
        for p in changed
        if not any(piece in p for piece in allowed)
    ]
    if name in WHOLE_VALUES and isinstance(value, str):
        problems += [
            f"{p} holds {_shown(new[p])}, not the value as sent"
            for p in changed
            if p in new
            and WHOLE_VALUES[name] in p
            and not p.endswith("<key>")
            and new[p] not in (value, value.strip())
        ]
    if name in {"command", "command_"} and changed:
        sent = [value, value.strip()] if isinstance(value, str) else [value]  # forms strip
        argvs = [_argv_of(each) for each in sent]
        for group in after["Job"]["TaskGroups"]:
            config = group["Tasks"][0]["Config"]
            got = [config["command"], *config.get("args", [])] if "command" in config else []
            if got not in argvs:
                problems.append(f"group {group['Name']} runs {_shown(got)}, not {_shown(argvs)}")
    return problems


def _argv_of(command: Any) -> list[str] | None:
    """The argv a command value stands for (None when it is not a valid command)."""
    try:
        return list(validate_command(command))
    except ValidationError:
        return None


PLAIN_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"}


def check_inventory(hosts: list[Host]) -> list[str]:
    """Every host renders into the inventory, every string value tagged !unsafe."""
    rendered = [
        InventoryHost(
            name=host.name,
            address=host.address,
            ssh_user=host.ssh_user,
            ssh_port=host.ssh_port,
            groups=tuple(host.groups),
            key_file=f"/run/helios/host-{host.id}.key" if host.ssh_private_key else None,
        )
        for host in hosts
    ]
    try:
        text = render_inventory(rendered)
    except Exception as exc:  # any refusal at render is the finding
        return [f"accepted, but the inventory no longer renders: {exc}"]
    problems = []
    stack = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack += [value for _key, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
        elif node.tag != "!unsafe" and node.tag not in PLAIN_TAGS:
            problems.append(f"inventory value {_shown(node.value)} is {node.tag}, not !unsafe")
    return problems


# ---------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------


def _path_values(world: World, rule: str) -> dict[str, Any]:
    values = dict(world.values)
    if rule.startswith("/teams/"):
        values["slug"] = "acme"  # <slug> names a team there, not an app
    return values


def fill(rule: str, values: dict[str, Any], hostile: tuple[str, str] | None = None) -> str:
    """The URL of a rule (``<name>`` or ``{name}``) with valid values, one of them hostile."""

    def one(match: re.Match) -> str:
        name = match.groups()[-1]
        if hostile is not None and name == hostile[0]:
            return quote(_wire(hostile[1]), safe="")
        assert name in values, f"{rule}: add a valid value for <{name}> to the seed"
        return quote(str(values[name]), safe="")

    return re.sub(r"\{(\w+)\}", one, PARAM_RE.sub(one, rule))


def _query(name: str, line: str) -> str:
    return urlencode([(name, _wire(line))])


# ---------------------------------------------------------------------------------------------
# The API: every operation of the served OpenAPI document
# ---------------------------------------------------------------------------------------------


def _schema(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _raw_literal(line: str) -> Any:
    """The line parsed when it is a JSON value (numbers, NaN, null, lists…), else PLACEHOLDER."""
    try:
        return json.loads(line, parse_constant=lambda name: name)
    except ValueError:
        return PLACEHOLDER


def _api_param(world: World, method: str, rule: str, param: dict, body: bytes | None, line):
    values = _path_values(world, rule)
    if param["in"] == "path":
        url = fill(rule, values, (param["name"], line) if line is not None else None)
    else:
        url = fill(rule, values) + (f"?{_query(param['name'], line)}" if line is not None else "")
    label = f"{method} {rule} {param['in']} {param['name']}"
    headers = {"Authorization": f"Bearer {world.token}"}
    answer = world.send(
        "anon", method, url, label, line, headers=headers, data=body,
        content_type="application/json",
    )  # fmt: skip
    return [line] if method != "GET" and answer.status_code < 300 else []


def _api_body(world: World, method: str, rule: str, base: dict, name: str, raw: bool, line):
    """The line in field ``name``: as a JSON string, or (``raw``) as the JSON it is, when it is
    JSON (a number, NaN, a list…; other lines are not sent)."""
    body = {k: v for k, v in base.items() if k != EXCLUDES.get(name)}
    sent: Any = line
    if line is None:
        data = json.dumps(base).encode()
    elif not raw:
        data = json.dumps({**body, name: line}).encode()
    else:
        sent = _raw_literal(line)
        if sent is PLACEHOLDER:
            return []
        data = _wire(json.dumps({**body, name: PLACEHOLDER}).replace(json.dumps(PLACEHOLDER), line))
    label = f"{method} {rule} body {name}{' (raw JSON)' if raw else ''}"
    answer = world.send(
        "anon", method, fill(rule, _path_values(world, rule)), label, line,
        headers={"Authorization": f"Bearer {world.token}"}, data=data,
        content_type="application/json",
    )  # fmt: skip
    return [sent] if answer.status_code < 300 else []


def api_targets(world: World) -> list[Target]:
    """A target per path, query and body field of every operation of the OpenAPI document."""
    doc = world.clients["anon"].get("/api/v1/openapi.json").get_json()
    targets = []
    for path, operations in doc["paths"].items():
        rule = "/api/v1" + path
        for method, op in operations.items():
            if path == "/openapi.json":
                continue
            method = method.upper()
            content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            example = content and {**content["example"], **VALID_BODIES.get(f"{method} {rule}", {})}
            body = json.dumps(example).encode() if content else None
            for param in op.get("parameters", []):
                label = f"{method} {rule} {param['in']} {param['name']}"
                send = partial(_api_param, world, method, rule, param, body)
                integer = param.get("schema", {}).get("type") == "integer"
                group = "<int>" if integer and param["in"] == "path" else param["name"]
                writes = method != "GET"
                targets.append(Target(param["in"], param["name"], label, send, group, writes))
            properties = _schema(doc, content["schema"])["properties"] if content else {}
            for name, schema in properties.items():
                label = f"{method} {rule} body {name}"
                send = partial(_api_body, world, method, rule, example, name, False)
                targets.append(Target("body", name, label, send))
                if _schema(doc, schema).get("type") != "string":  # numbers, lists, NaN…
                    send = partial(_api_body, world, method, rule, example, name, True)
                    targets.append(Target("body", name, f"{label} (raw JSON)", send))
    return targets


def test_hostile_input_in_the_API(world, request):
    targets = api_targets(world)
    assert len(targets) >= 40, f"only {len(targets)} API fields: is the OpenAPI document read?"
    run_targets(world, targets)
    world.tally.check(request)


# ---------------------------------------------------------------------------------------------
# The pages: every form of every page, every parameter the views read, every path parameter
# ---------------------------------------------------------------------------------------------


@dataclass
class Form:
    """A form as a browser would submit it: action, method and its fields' current values."""

    action: str
    method: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=dict)


class FormParser(HTMLParser):
    """Every <form> of a page with its input, select and textarea fields."""

    SKIP_TYPES = {"submit", "button", "image", "reset", "file"}

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), (a.get("method") or "get").lower()))
        elif not self.forms or (not a.get("name") and tag != "option"):
            return
        elif tag == "input" and a.get("type", "text").lower() not in self.SKIP_TYPES:
            values = self.forms[-1].fields.setdefault(a["name"], [])
            if a.get("type", "").lower() not in {"checkbox", "radio"}:
                values.append(a.get("value", ""))
            elif "checked" in a:
                values.append(a.get("value") or "on")
        elif tag == "select":
            self._select = a["name"]
            self.forms[-1].fields.setdefault(self._select, [])
            self.forms[-1].options.setdefault(self._select, [])
        elif tag == "option" and self._select:
            self.forms[-1].options[self._select].append(a.get("value", ""))
            if "selected" in a:
                self.forms[-1].fields[self._select].append(a.get("value", ""))
        elif tag == "textarea":
            self._textarea = a["name"]
            self.forms[-1].fields[self._textarea] = [""]

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.forms[-1].fields[self._textarea][0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select:
            form = self.forms[-1]
            if not form.fields[self._select] and form.options[self._select]:
                form.fields[self._select] = form.options[self._select][:1]
            self._select = None
        elif tag == "textarea" and self._textarea:
            text = self.forms[-1].fields[self._textarea][0]
            # Browsers drop the newline that directly follows <textarea> (HTML's parsing rules).
            self.forms[-1].fields[self._textarea][0] = re.sub(r"\A\r?\n", "", text)
            self._textarea = None


class _ReadArgs(ImmutableMultiDict):
    """Query and form data that remember which names a view asked for."""

    asked: set[str] = set()

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key, *args, **kwargs):
        self.asked.add(key)
        return super().get(key, *args, **kwargs)

    def getlist(self, key, *args, **kwargs):
        self.asked.add(key)
        return super().getlist(key, *args, **kwargs)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def _page_rules(world: World) -> list:
    return [
        rule
        for rule in world.app.url_map.iter_rules()
        if not rule.rule.startswith(("/api/", "/static/"))
    ]


def _rule_of(world: World, path: str, method: str) -> str | None:
    adapter = world.app.url_map.bind("localhost")
    try:
        rule, _args = adapter.match(path, method=method.upper(), return_rule=True)
    except Exception:  # a form to nowhere: no valid values
        return None
    return rule.rule


@dataclass
class Discovered:
    """What the GET pages showed: forms, and the query names each view read."""

    forms: list[tuple[str, str, str, Form]] = field(default_factory=list)  # who, rule, url, form
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # who, rule, name


def discover(world: World, monkeypatch) -> Discovered:
    """Fetch every GET page as each principal; keep each distinct form and query name."""
    found, seen = Discovered(), set()
    with monkeypatch.context() as patch:
        patch.setattr(world.app.request_class, "parameter_storage_class", _ReadArgs)
        _discover(world, found, seen)
    return found


def _discover(world: World, found: Discovered, seen: set) -> None:
    for who in ("anon", "owner", "operator"):
        for rule in _page_rules(world):
            if "GET" not in rule.methods or not rule.rule.startswith("/"):
                continue
            url = fill(rule.rule, _path_values(world, rule.rule))
            _ReadArgs.asked = set()
            page = world.open(who, "GET", url)
            if page.status_code != 200:
                continue
            for name in sorted(_ReadArgs.asked - {"csrf_token"}):
                if ("query", rule.rule, name) not in seen:
                    seen.add(("query", rule.rule, name))
                    found.queries.append((who, rule.rule, name))
            if page.mimetype != "text/html":
                continue
            parser = FormParser()
            parser.feed(page.get_data(as_text=True))
            for form in parser.forms:
                action = urlsplit(form.action or url).path
                form_rule = _rule_of(world, action, form.method) or action
                key = (form.method, form_rule, tuple(sorted(form.fields)))
                if key not in seen:
                    seen.add(key)
                    found.forms.append((who, form_rule, form.action or url, form))


def _page_accepted(answer) -> bool:
    """Done: a page, or a redirect after the change (307/308 only point at another URL)."""
    return (200 <= answer.status_code < 300 or answer.status_code in {302, 303}) and not (
        _to_login(answer)
    )


def _send_form(world: World, who: str, rule: str, action: str, form: Form, name: str, line):
    values = {key: list(items) for key, items in form.fields.items()}
    valid = {**FORMS.get(rule, {}), **VALID_FORMS.get(rule, {})}
    values.update({key: [value.format(host_key=world.host_key)] for key, value in valid.items()})
    if "<" in rule:  # the seed's objects, as the matrix's bodies expect (not the page's first)
        action = fill(rule, _path_values(world, rule))
    if line is not None:
        if name in EXCLUDES and EXCLUDES[name] in values:
            values[EXCLUDES[name]] = [""]
        values[name] = [line]
    data = urlencode([(k, _wire(v)) for k, items in values.items() for v in items])
    label = f"form {form.method.upper()} {rule} field {name}"
    if form.method == "get":
        world.send(who, "GET", f"{urlsplit(action).path}?{data}", label, line)
        return []
    answer = world.send(
        who, "POST", action, label, line, data=data.encode(),
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    return [_received(line) if line is not None else None] if _page_accepted(answer) else []


def _send_query(world: World, who: str, rule: str, name: str, line: str | None) -> list[Any]:
    url = fill(rule, _path_values(world, rule))
    if line is not None:
        world.send(who, "GET", f"{url}?{_query(name, line)}", f"GET {rule} query {name}", line)
    return []


def _principal_for(world: World, method: str, rule: str) -> str:
    """The signed-in principal for whom the rule works with valid values."""
    url, data = fill(rule, _path_values(world, rule)), FORMS.get(rule, {})
    try:
        for who in ("owner", "operator"):
            if _page_accepted(world.open(who, method, url, data=data)):
                return who
        return "owner"
    finally:
        world.reset()


def _send_path(world: World, who: str, method: str, rule: str, name: str, line) -> list[Any]:
    url = fill(rule, _path_values(world, rule), (name, line) if line is not None else None)
    label = f"{method} {rule} path {name}"
    data = FORMS.get(rule, {}) if method == "POST" else None
    answer = world.send(who, method, url, label, line, data=data)
    accepted = method == "POST" and _page_accepted(answer)
    return [_received(line) if line is not None else None] if accepted else []


def page_targets(world: World, found: Discovered) -> list[Target]:
    """Every form field, every query name a view read, every path parameter of every rule."""
    targets = []
    for who, rule, action, form in found.forms:
        for name in sorted(set(form.fields) - {"csrf_token"}):  # CSRF is off: its own tests
            label = f"form {form.method.upper()} {rule} field {name}"
            send = partial(_send_form, world, who, rule, action, form, name)
            targets.append(Target("form", name, label, send, writes=form.method == "post"))
    for who, rule, name in found.queries:
        send = partial(_send_query, world, who, rule, name)
        targets.append(Target("query", name, f"GET {rule} query {name}", send, writes=False))
    for rule in _page_rules(world):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            params = PARAM_RE.findall(rule.rule)
            who = _principal_for(world, method, rule.rule) if params else "owner"
            for converter, name in params:
                label = f"{method} {rule.rule} path {name}"
                send = partial(_send_path, world, who, method, rule.rule, name)
                group = f"<{converter}>" if converter == "int" else name
                targets.append(Target("path", name, label, send, group, method == "POST"))
    return targets


def test_hostile_input_in_the_pages(world, monkeypatch, request):
    found = discover(world, monkeypatch)
    assert len(found.forms) >= 10, f"{len(found.forms)} forms found: are the pages parsed?"
    run_targets(world, page_targets(world, found))
    world.tally.check(request)


# ---------------------------------------------------------------------------------------------
# The CLI: every argument and option of every `helios` command
# ---------------------------------------------------------------------------------------------

# Valid values for arguments and options, by "command param" or by param name.
VALID_ARGS = {
    "app": "web",
    "release": "1",
    "deployment": "1",  # the seed's queued deployment (`helios cancel APP DEPLOYMENT`)
    "url": PANEL_URL,
    "assignments": "PLAIN=x",
    "keys": "EXISTING",
    "email": "newcomer@example.com",
    "address": "10.0.0.9",
    "groups": "nomad_clients",
    "db new name": "hostile_probe",
    "backup path": "{backup_file}",
    "restore path": "{backup_file}",
    "apps create name": "fresh",
    "apps set name": "web",
    "apps delete name": "web",
    "run command": "ls",
    "apps scale count": "2",
    "hosts add name": "node9",
    "hosts pin host": "node1",
    "hosts remove host": "node1",  # no Nomad here: nothing runs on it, it goes at once
    "hosts maintain names": "node1",
    "hosts maintain group": "nomad_clients",
    "hosts maintain deadline": "600",
    "admin reset-password email": "viewer@example.com",
    "repo": "octo-org/web",
    "manifest": "{manifest_file}",
    "domains add hostname": "shop.example.com",
    "domains remove hostname": "web.example.com",  # the seed's domain of web
    "notifier": "existing",
    "notifiers add name": "fresh-hook",
    "notifiers add url": "https://1.1.1.1/hook",
    "teams create slug": "fresh-team",
    "teams delete slug": "acme",
    "teams limits slug": "acme",
    "teams move-namespace slug": "acme",
    "teams nomad-token slug": "acme",
    "events": "v1.build.failed",
}
# Options given even when not the target: what keeps a command valid, quick and offline.
ALWAYS = {
    "apps create": {"image": "nginx:1.27"},
    "apps set": {"count": "2"},
    "apps delete": {"yes": True},  # never a prompt: NAME confirms
    "apps stop": {"yes": True},  # never a prompt
    "teams delete": {"yes": True},  # never a prompt: SLUG confirms
    "hosts add": {"host_key_file": "{host_key_file}"},
    "hosts pin": {"host_key_file": "{host_key_file}"},
    "hosts remove": {"yes": True},  # never a prompt: HOST confirms
    "hosts plan": {"wait": False},
    "hosts apply": {"wait": False},
    "hosts maintain": {"yes": True, "wait": False},
}
# More forms a line takes in one argument: KEY=VALUE pairs get it as the key and as the value.
DERIVED = {"assignments": {"as key": "{line}=x", "as value": "PLAIN={line}"}}
STDIN = {
    "login": "{token}\n",
    "admin create": "a hostile-proof password 123\n",
    "admin reset-password": "a hostile-proof password 123\n",
}


class WsgiAdapter(requests.adapters.BaseAdapter):
    """Sends the CLI's HTTP requests to the panel app in this process (no network at all)."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def send(self, request, **_kwargs):
        """The panel's answer to ``request`` as a requests.Response; a 5xx is a finding."""
        parts = urlsplit(request.url)
        headers = {k: v for k, v in request.headers.items() if k not in {"Content-Length", "Host"}}
        answer = self.world.clients["anon"].open(
            parts.path, query_string=parts.query, method=request.method, headers=headers,
            data=request.body,
        )  # fmt: skip
        if answer.status_code >= 500:
            self.world.tally.findings.append(
                f"{answer.status_code} on {request.method} {request.url} from the CLI:\n"
                f"{self.world.server_errors.last()}"
            )
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.get_data()
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        """Nothing to close."""


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        yield " ".join((*path, name)), command


def _takes_value(param: click.Parameter) -> bool:
    flag = isinstance(param, click.Option) and (param.is_flag or param.count)
    return not flag and param.name != "help"


def _argv(
    path: str, command: click.Command, target: str, value: str | None, files: dict[str, str]
) -> list[str]:
    """Valid arguments for ``command`` with ``value`` as the target parameter (None: valid)."""
    always = ALWAYS.get(path, {}).items()
    chosen = {
        name: v.format(**files) if isinstance(v, str) else v
        for name, v in always
        if name != EXCLUDES.get(target)
    }
    for param in command.params:
        if param.required and param.name not in chosen:
            key = f"{path} {param.name}"
            assert key in VALID_ARGS or param.name in VALID_ARGS, f"add a valid value for {key}"
            chosen[param.name] = VALID_ARGS.get(key, VALID_ARGS.get(param.name)).format(**files)
    if value is None:  # the target's valid value, where it needs one
        valid = VALID_ARGS.get(f"{path} {target}", VALID_ARGS.get(target))
        value = valid.format(**files) if valid is not None else None
    if value is not None:
        chosen[target] = value
    args, options = [], []
    for param in command.params:
        given = chosen.get(param.name)
        if given is None:
            continue
        if isinstance(param, click.Argument):
            args.append(given)
        elif isinstance(given, bool):
            options.append(param.opts[0] if given else param.secondary_opts[0])
        else:
            options += [param.opts[0], given]
    return [*path.split(), *options, "--", *args] if args else [*path.split(), *options]


class Cli:
    """Runs `helios` commands in this process, against the world's database and panel."""

    def __init__(self, world: World, tmp_path: Path, monkeypatch) -> None:
        from panel.cli.commands import cli

        self.world, self.group, self.monkeypatch = world, cli, monkeypatch
        self.runner = CliRunner()
        self.migrations = tmp_path / "migrations"
        self.migrations.mkdir()
        host_key = tmp_path / "ssh_host_ed25519_key.pub"
        host_key.write_text(world.host_key + "\n")
        manifest = tmp_path / "app.toml"
        manifest.write_text('slug = "shop"\nimage = "nginx:1.27"\n')
        self.files = {"host_key_file": str(host_key), "manifest_file": str(manifest),
                      "backup_file": str(tmp_path / "valid-backup.tar")}  # fmt: skip
        self.tmp_path = tmp_path
        self.env = {
            "HELIOS_DATA_DIR": str(world.settings.data_dir),
            "HELIOS_DATABASE_URL": world.settings.effective_database_url,
            "HELIOS_REDIS_URL": world.settings.effective_redis_url,
            "HELIOS_LOG_LEVEL": "error",
            "HELIOS_URL": PANEL_URL,
            "HELIOS_TOKEN": world.token,
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        }
        adapter, session = WsgiAdapter(world), requests.Session

        def session_to_the_panel() -> requests.Session:
            made = session()
            made.mount("http://", adapter)
            made.mount("https://", adapter)
            return made

        monkeypatch.setattr(requests, "Session", session_to_the_panel)

    def targets(self) -> list[Target]:
        """A target per argument and option of every command (and per derived form)."""
        targets, self.without = [], []
        for path, command in _commands(self.group):
            params = [param for param in command.params if _takes_value(param)]
            if not params:
                self.without.append(path)
            for param in params:
                shown = param.opts[0] if isinstance(param, click.Option) else param.name.upper()
                forms = {"": "{line}", **DERIVED.get(param.name, {})}
                for note, form in forms.items():
                    label = f"helios {path} {shown} {note}".rstrip()
                    send = partial(self.run, path, command, param.name, form, label)
                    targets.append(Target("cli", param.name, label, send))
        return targets

    def run(self, path: str, command, name: str, form: str, label: str, line) -> list[Any]:
        """One invocation; a traceback or an undocumented exit code is a finding."""
        value = form.replace("{line}", line) if line is not None else None
        argv = _argv(path, command, name, value, self.files)
        result = self.invoke(path, argv)
        if result.exit_code == 0 and path.startswith("db "):
            self.world.reset()  # migrations change the schema, not values: nothing to render
            return []
        if line is None:
            return [None] if result.exit_code == 0 else []
        tally = self.world.tally
        tally.requests += 1
        tally.statuses[result.exit_code] += 1
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or "Traceback" in result.output or result.exit_code not in EXIT_CODES:
            tally.server_errors += 1
            trace = "".join(traceback.format_exception(*result.exc_info)) if crashed else ""
            tally.findings.append(
                f"helios {_shown(argv, 160)} ({label}) exited {result.exit_code}:\n"
                f"{result.output[-600:]}{trace[-1500:]}"
            )
        return [value] if result.exit_code == 0 else []

    def invoke(self, path: str, argv: list[str]):
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        stdin = STDIN.get(path, "").format(token=self.world.token)
        try:
            with self.monkeypatch.context() as scratch:
                if path == "db new":  # it writes a file into the migrations folder
                    scratch.setattr("panel.db.MIGRATIONS_DIR", self.migrations)
                if path in ("backup", "restore"):  # a line as a relative path lands here
                    scratch.chdir(self.tmp_path)
                return self.runner.invoke(self.group, argv, input=stdin, env=self.env)
        finally:
            root.handlers[:], root.level = handlers, level
            if database.obj is not self.world.handle and not database.obj.is_closed():
                database.obj.close()
            database.initialize(self.world.handle)


def test_hostile_input_in_the_CLI(world, tmp_path, monkeypatch, request):
    cli = Cli(world, tmp_path, monkeypatch)
    targets = cli.targets()
    assert len(targets) >= 30, f"only {len(targets)} CLI arguments: is the group walked?"
    run_targets(world, targets)
    world.tally.check(request)


# Real processes for a sample (CliRunner cannot pass bytes): argv bytes that are not UTF-8 (a
# client and an operator command; the check is the group's, before any command parses), and
# such bytes on standard input.
PROCESS_SAMPLES = [
    ([b"apps", b"create", b"web\xff", b"--image", b"nginx:1.27"], None),
    ([b"render", b"\xed\xa0\x80"], None),
    ([b"env", b"set", b"web", b"KEY=-"], b"\xff\xfe not UTF-8\n"),
    ([b"login", b"http://127.0.0.1:9"], b"hel_\xff\n"),
]


@pytest.mark.parametrize(("argv", "stdin"), PROCESS_SAMPLES, ids=lambda v: repr(v)[:40])
def test_bytes_that_are_not_utf8_end_in_one_line_and_exit_2(settings, tmp_path, argv, stdin):
    env = process_env(settings, HOME=str(tmp_path), HELIOS_URL="http://127.0.0.1:9",
                      HELIOS_TOKEN="hel_x", LC_ALL="C.UTF-8")  # fmt: skip
    result = subprocess.run(
        [*map(str.encode, helios_command()), *argv], input=stdin or b"", capture_output=True,
        env=env, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
