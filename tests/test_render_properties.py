"""Property tests: hostile input is refused, or each value lands only in its own job field.

Confinement is checked by difference: for an input value ``v`` we also render the same spec with
``v`` swapped for a sentinel (the *context*). If ``v`` still occurs in the context, fixed words or
other inputs explain it and the check is skipped; otherwise every occurrence of ``v`` in the real
job was put there by that input, so each must sit at one of the input's own paths. A renderer that
copied env values into ``Meta`` would place ``v`` at ``Job.Meta.…``, absent from the context and
not an allowed path, and fail (``test_confinement_check_catches_a_leak`` proves it).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from panel.render.nomad import render_job, render_secret_items
from panel.render.traefik import render_router_rule
from panel.spec import AppSpec, ProcessSpec, build_app_spec
from panel.validation import ValidationError, validate_domain

from nomad_double import NOMAD_SPEC, reference_file
from nomad_double.schema import load_strict_spec, validate_body

STRICT_SPEC = load_strict_spec(reference_file(NOMAD_SPEC))
RULE_RE = re.compile(r"^Host\(`[a-z0-9.-]+`\)( \|\| Host\(`[a-z0-9.-]+`\))*$")
HOST_RE = re.compile(r"Host\(`([^`]*)`\)")
BASE_DOMAIN = "apps.example.net"
SECRET_PREFIX = "s3cr3t:"  # never produced by the other strategies, so a hit is a real leak

Path_ = tuple[Any, ...]
ANY = object()  # wildcard element in an allowed path
KEY = "<dict key>"  # last path element when the needle occurs in a dict key

G = ("Job", "TaskGroups", ANY)
WEB = ("Job", "TaskGroups", 0)
WEB_SERVICE = (*WEB, "Services", 0)
TASK = (*G, "Tasks", 0)


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

FRAGMENTS = [
    '"',
    "'",
    "`",
    "\\",
    "\n",
    "\r\n",
    "\t",
    "{{",
    "}}",
    "{{ .V }}",
    '{{ env "NOMAD_TOKEN" }}',
    "${NOMAD_TOKEN}",
    "${",
    "$",
    "}",
    "%",
    "%2F",
    "☃",
    "é",
    "\u202e",
    "Host(`evil.example`)",
    " || ",
    "traefik.enable=true",
    "nomad/jobs/",
    "web",
    "http",
    "alive",
    "=",
    "&",
    "?",
    "/",
]
nasty_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=6).map("".join),
)


def mostly(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid-looking values about 19 times in 20, hostile text otherwise.

    Each app draws ~15 such values, so about half the apps still build and get rendered.
    """
    choices = [valid] * 19 + [nasty_text]
    return st.sampled_from(range(len(choices))).flatmap(choices.__getitem__)


slugs = mostly(st.from_regex(r"[a-z][a-z0-9]{0,5}(?:-[a-z0-9]{1,5}){0,2}", fullmatch=True))
images = mostly(
    st.from_regex(
        r"(?:[a-z0-9]{1,6}\.[a-z]{2,4}(?::[0-9]{2,4})?/)?[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,5}){0,2}"
        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,8})?",
        fullmatch=True,
    )
)
domains = mostly(
    st.from_regex(r"(?:[a-z0-9]{1,3}(?:-[a-z0-9]{1,4})?\.){1,3}[a-z]{2,5}", fullmatch=True).map(
        lambda host: host.upper() if len(host) % 3 == 0 else host
    )
)
health_paths = mostly(
    st.from_regex(r"/[A-Za-z0-9._~/-]{0,16}(?:\?[A-Za-z0-9=&]{0,8})?", fullmatch=True)
)
env_keys = mostly(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True))
commands = st.lists(nasty_text, max_size=4)


@st.composite
def raw_apps(draw: st.DrawFn) -> dict[str, Any]:
    """Raw builder input with hostile strings in every user field."""
    env_names = draw(st.lists(env_keys, max_size=4, unique=True))
    secret_names = draw(
        st.lists(env_keys.filter(lambda key: key not in env_names), max_size=3, unique=True)
    )
    return {
        "slug": draw(slugs),
        "team": "acme",
        "image": draw(images),
        "release": 3,
        "base_domain": BASE_DOMAIN,
        "health_path": draw(health_paths),
        "env": {name: draw(nasty_text) for name in env_names},
        "secret_keys": secret_names,
        "domains": draw(st.lists(domains, max_size=3)),
        "processes": [
            {"name": "web"},
            {"name": "worker", "command": draw(st.one_of(commands, nasty_text))},
        ],
    }


# ---------------------------------------------------------------------------------------------
# The confinement check
# ---------------------------------------------------------------------------------------------


def occurrences(node: Any, needle: str, path: Path_ = ()) -> list[Path_]:
    """Paths of every string value and dict key of a JSON document containing needle."""
    if isinstance(node, dict):
        found = [(*path, key, KEY) for key in node if needle in key]
        for key, value in node.items():
            found += occurrences(value, needle, (*path, key))
        return found
    if isinstance(node, list):
        return [
            hit for i, value in enumerate(node) for hit in occurrences(value, needle, (*path, i))
        ]
    return [path] if isinstance(node, str) and needle in node else []


def matches(pattern: Path_, path: Path_) -> bool:
    """Whether a path fits a pattern whose ANY elements match anything."""
    return len(pattern) == len(path) and all(
        p is ANY or p == x for p, x in zip(pattern, path, strict=True)
    )


def note_event(text: str) -> None:
    """Record a Hypothesis statistics event (ignored outside @given tests)."""
    if currently_in_test_context():
        event(text)


def assert_confined(
    job: dict[str, Any],
    context: dict[str, Any] | None,
    needle: str,
    allowed: list[Path_],
    label: str,
) -> None:
    """Fail if needle occurs outside allowed paths where the context cannot explain it."""
    if not needle or context is None or occurrences(context, needle):
        note_event(f"{label}: explained by context, skipped")
        return
    note_event(f"{label}: checked")
    leaks = [p for p in occurrences(job, needle) if not any(matches(a, p) for a in allowed)]
    assert not leaks, f"{needle!r} leaked into {leaks}"


def context_of(spec: AppSpec, **changes: Any) -> dict[str, Any] | None:
    """Render spec with some fields changed (None if the change itself is refused)."""
    try:
        return render_job(dataclasses.replace(spec, **changes))
    except ValidationError:
        return None


def sentinel(taken: Any, make: Callable[[int], str]) -> str:
    """A sentinel value not among taken."""
    return next(make(i) for i in range(100) if make(i) not in taken)


def check_identity(spec: AppSpec, job: dict[str, Any]) -> None:
    """Slug, image and health path stay in their own fields."""
    slug_paths = [
        ("Job", "ID"),
        ("Job", "Name"),
        ("Job", "Meta", "helios.app"),
        (*WEB_SERVICE, "Name"),
        (*WEB_SERVICE, "Tags", ANY),
        (*TASK, "Env", "HELIOS_APP"),
        (*TASK, "Templates", 0, "EmbeddedTmpl"),
    ]
    other_slug = sentinel({spec.slug}, lambda i: f"zzsentinel{i}")
    assert_confined(job, context_of(spec, slug=other_slug), spec.slug, slug_paths, "slug")
    image = sentinel({spec.image}, lambda i: f"zzsentinel/img:{i}")
    assert_confined(
        job, context_of(spec, image=image), spec.image, [(*TASK, "Config", "image")], "image"
    )
    path = sentinel({spec.health_path}, lambda i: f"/zzsentinel{i}")
    check_path = [(*WEB_SERVICE, "Checks", 0, "Path")]
    assert_confined(job, context_of(spec, health_path=path), spec.health_path, check_path, "path")


def check_domains(spec: AppSpec, job: dict[str, Any]) -> None:
    """Custom domains appear only in the router rule tag."""
    for domain in spec.domains:
        other = sentinel(spec.domains, lambda i: f"zzsentinel{i}.invalid")
        changed = tuple(other if d == domain else d for d in spec.domains)
        context = context_of(spec, domains=changed)
        assert_confined(job, context, domain, [(*WEB_SERVICE, "Tags", 1)], "domain")


def check_env(spec: AppSpec, job: dict[str, Any]) -> None:
    """Env keys and values appear only as Env entries; secret names appear nowhere."""
    env = dict(spec.env)
    names = {*env, *spec.secret_keys}
    for key, value in env.items():
        new_key = sentinel(names, lambda i: f"ZZSENTINEL{i}")
        renamed = tuple(
            sorted({**{k: v for k, v in env.items() if k != key}, new_key: value}.items())
        )
        assert_confined(
            job, context_of(spec, env=renamed), key, [(*TASK, "Env", key, KEY)], "env key"
        )
        new_value = sentinel({value}, lambda i: f"zz-sentinel-{i}")
        replaced = tuple(sorted({**env, key: new_value}.items()))
        assert_confined(
            job, context_of(spec, env=replaced), value, [(*TASK, "Env", key)], "env value"
        )
    for key in spec.secret_keys:
        new_key = sentinel(names, lambda i: f"ZZSENTINEL{i}")
        others = (*(k for k in spec.secret_keys if k != key), new_key)
        assert_confined(job, context_of(spec, secret_keys=others), key, [], "secret key")


def check_command(spec: AppSpec, job: dict[str, Any]) -> None:
    """Command arguments appear only in the worker's docker command/args."""
    worker = spec.processes[1]
    allowed = [
        ("Job", "TaskGroups", 1, "Tasks", 0, "Config", "command"),
        ("Job", "TaskGroups", 1, "Tasks", 0, "Config", "args", ANY),
    ]
    for index, arg in enumerate(worker.command):
        argv = list(worker.command)
        argv[index] = sentinel(set(argv), lambda i: f"zz-sentinel-{i}")
        processes = (spec.web, ProcessSpec(name="worker", command=tuple(argv)))
        assert_confined(job, context_of(spec, processes=processes), arg, allowed, "arg")


def check_router_rule(spec: AppSpec, job: dict[str, Any]) -> None:
    """The rule tag is well formed and routes exactly the spec's valid domains."""
    tags = job["Job"]["TaskGroups"][0]["Services"][0]["Tags"]
    rules = [tag.split("=", 1)[1] for tag in tags if ".rule=" in tag]
    assert len(rules) == 1
    assert RULE_RE.match(rules[0]), rules[0]
    hosts = HOST_RE.findall(rules[0])
    assert all(validate_domain(host) == host for host in hosts)
    assert tuple(hosts) == spec.all_domains


def check_document(job: dict[str, Any]) -> None:
    """Strictly spec-valid, JSON-clean and null-free."""
    text = json.dumps(job, allow_nan=False)
    assert json.loads(text) == job
    assert not occurrences_of_none(job)
    assert validate_body(job, "JobRegisterRequest", STRICT_SPEC) == []


def occurrences_of_none(node: Any) -> bool:
    """Whether a None sits anywhere in a JSON-like document."""
    if isinstance(node, dict):
        return any(occurrences_of_none(value) for value in node.values())
    if isinstance(node, list):
        return any(occurrences_of_none(value) for value in node)
    return node is None


def build_or_none(raw: dict[str, Any]) -> AppSpec | None:
    """Build a spec, or None when the builder refuses the input."""
    try:
        spec = build_app_spec(**raw)
    except ValidationError as error:
        note_event(f"refused: {error.field}")
        return None
    note_event("built")
    return spec


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(raw=raw_apps())
def test_input_is_refused_or_confined_to_its_field(raw: dict[str, Any]) -> None:
    spec = build_or_none(raw)
    if spec is None:
        return
    job = render_job(spec)
    assert render_job(spec) == job
    check_document(job)
    check_router_rule(spec, job)
    check_identity(spec, job)
    check_domains(spec, job)
    check_env(spec, job)
    check_command(spec, job)
    for task in (group["Tasks"][0] for group in job["Job"]["TaskGroups"]):
        assert task["Env"] == {**dict(spec.env), "HELIOS_APP": spec.slug, "HELIOS_RELEASE": "3"}
        assert task["Config"]["image"] == spec.image


@settings(max_examples=200, deadline=None)
@given(
    slug=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
    secrets=st.dictionaries(env_keys, nasty_text.map(SECRET_PREFIX.__add__), max_size=4),
)
def test_secret_values_never_reach_the_spec_or_the_job(slug: str, secrets: dict[str, str]) -> None:
    try:
        spec = build_app_spec(
            slug=slug,
            team="acme",
            image="nginx",
            release=1,
            base_domain=BASE_DOMAIN,
            secret_keys=list(secrets),
        )
        items = render_secret_items(1, secrets)
    except ValidationError:
        note_event("refused")
        return
    job = render_job(spec)
    check_document(job)
    assert items == {f"r1.{key}": value for key, value in sorted(secrets.items())}
    for value in secrets.values():
        assert not occurrences(job, value)
        assert value not in repr(spec)
    task = job["Job"]["TaskGroups"][0]["Tasks"][0]
    assert ("Templates" in task) == bool(secrets)  # a release without secrets renders none


@settings(max_examples=200, deadline=None)
@given(hosts=st.lists(st.one_of(domains, nasty_text), max_size=4))
def test_router_rule_is_well_formed_or_refused(hosts: list[str]) -> None:
    try:
        rule = render_router_rule(hosts)
    except ValidationError:
        note_event("refused")
        return
    assert RULE_RE.match(rule), rule
    assert HOST_RE.findall(rule) == [validate_domain(host) for host in hosts]


def test_confinement_check_catches_a_leak() -> None:
    spec = build_app_spec(
        slug="shop",
        team="acme",
        image="nginx",
        release=1,
        base_domain=BASE_DOMAIN,
        env={"GREETING": "hello {{ world }}"},
        domains=["shop.example"],
    )
    job = render_job(spec)
    check_env(spec, job)
    check_domains(spec, job)
    job["Job"]["Meta"]["leak"] = "prefix hello {{ world }} suffix"
    job["Job"]["TaskGroups"][0]["Services"][0]["Checks"][0]["Path"] = "/shop.example"
    for check in (check_env, check_domains):
        try:
            check(spec, job)
        except AssertionError as error:
            assert "leaked into" in str(error)
        else:
            raise AssertionError(f"{check.__name__} missed a leak")
