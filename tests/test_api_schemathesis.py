"""Schemathesis against the served OpenAPI document: every operation, valid and invalid input.

Each operation runs with generated data (positive and negative) and, where it has path
parameters, once more aimed at objects that exist, so requests reach the actions and not only
the 404 branch. Checks: no 5xx, status codes, content types and bodies as documented, invalid
input refused, and no internals (traceback, file paths) in any answer. The figures are printed.
"""

from __future__ import annotations

import collections
import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from playhouse.shortcuts import model_to_dict
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from panel.actions.accounts import create_user
from panel.actions.apps import add_domain, create_app, request_deploy, set_env
from panel.actions.logs import append_app_log, append_log
from panel.actions.tokens import create_token
from panel.crypto import SecretCipher
from panel.models import ApiToken, Build, Deployment, Notifier, OneOffRun, Team

from conftest import REPO_ROOT

# Per operation, per generation mode, per path-parameter variant: 80 cases per operation in
# all; HELIOS_FUZZ_EXAMPLES=200 digs deeper (about ten times as long).
EXAMPLES_PER_RUN = int(os.environ.get("HELIOS_FUZZ_EXAMPLES", "20"))
EXAMPLE_REPEATS = 3  # the document's own examples hardly vary; a few runs each suffice
SECRET_VALUE = "s3cr3t-v4lue"
LEAKS = ("Traceback", 'File "', "/work/", str(REPO_ROOT), "site-packages", SECRET_VALUE)


def no_internals(ctx, response, case) -> None:
    """No answer may show a traceback, a source path, the repository's location or a secret."""
    text = response.text or ""
    for marker in LEAKS:
        assert marker not in text, f"the response shows {marker!r}: {text[:300]}"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    no_internals,
]


@pytest.fixture
def settings(settings):
    """The test's settings with a budget no fuzzing run exhausts (429 is tested elsewhere), and
    the documentation network of the notifiers' example allowed, as an operator would."""
    return settings.replace(
        api_rate_limit="1000000 per minute", notify_allow_networks=("203.0.113.0/24",)
    )


@pytest.fixture
def world(settings, app, redis_conn):
    """An owner with an admin token, and an app with variables, a domain and a deployment.

    The owner is a site admin too, so that setting a team's limits succeeds (their only power
    through the API)."""
    owner = create_user(
        "owner@example.com", "correct horse battery", team_slug="acme", is_operator=True
    )
    web = create_app(actor=owner, team=owner.memberships[0].team, slug="web", image="nginx:1.27")
    cipher = SecretCipher.from_settings(settings)
    set_env(actor=owner, app=web, key="PLAIN", value="1", secret=False, cipher=cipher)
    set_env(actor=owner, app=web, key="API_KEY", value=SECRET_VALUE, secret=True, cipher=cipher)
    add_domain(actor=owner, app=web, hostname="www.example.com", base_domain=settings.base_domain)
    live = request_deploy(actor=owner, app=web, settings=settings, redis_conn=redis_conn)
    # A live release, which POST /apps/{slug}/reapply deploys again.
    Deployment.update(status="succeeded").where(Deployment.id == live.deployment.id).execute()
    deployment = request_deploy(
        actor=owner, app=web, settings=settings, redis_conn=redis_conn
    ).deployment
    text = "listening on :8080\n"
    append_app_log(
        web.id, deployment.id, alloc="1a2b3c4d-0000-4000-8000-000000000001", process="web",
        task="web", stream="stdout", text=text, after=0, offset=len(text), max_bytes=10**6,
    )  # fmt: skip
    build = Build.create(app=web, number=1, git_sha="a" * 40, branch="main", status="failed")
    append_log(build.id, "fetch", "stderr", "fatal: no such ref\n", after=0, offset=19,
               max_bytes=10**6)  # fmt: skip
    create_user("other@example.com", "correct horse battery", team_slug="other")
    run = OneOffRun.create(
        app=web, release=live.deployment.release, command=["ls"], timeout_s=60,
        requested_by_name=owner.email,
    )  # fmt: skip
    token = create_token(owner, "schemathesis", ["admin"])
    notifier = Notifier.create(
        team=web.team, name="existing", url="https://203.0.113.9/hook",
        subjects=["v1.build.failed"], secret=cipher.encrypt("existing"),
    )  # fmt: skip
    return {
        "token": token,
        "notifier": model_to_dict(notifier, recurse=False),
        "known": {
            "team": "acme",
            "notifier_id": notifier.id,
            "slug": "web",
            "key": "PLAIN",
            "hostname": "www.example.com",
            "deployment_id": deployment.id,
            "number": 1,
            "run_id": run.id,
            "token_id": token.row.id + 1000,  # never the token in use: keep the run authenticated
        },
    }


def answers_at_once(case) -> bool:
    """False for a case asking for a live log (follow=true): an app's log stream stays open
    for lines to come, so the JSON form is what is fuzzed (tests/test_api_logs.py streams)."""
    return (case.query or {}).get("follow") not in (True, "true")


def reaches_the_server(case) -> bool:
    """False for a negative case whose fault vanishes on the way: a query parameter valued
    None or an empty list is not sent at all (the WSGI client drops it), so what arrives is a
    valid request, rightly answered 200 (seen once: an extra parameter "violating
    additionalProperties" that never reached the panel)."""
    return all(value is not None and value != [] for value in (case.query or {}).values())


def _aimed(case, known: dict):
    """``case`` with its path parameters set to existing objects."""
    case.path_parameters = {**(case.path_parameters or {}), **known}
    return case


def _strategies(schema, operation, known: dict) -> list[tuple[str, object]]:
    """(label, strategy): the document's examples, then generated data, positive and negative,
    with path parameters generated and, where there are any, aimed at existing objects."""
    names = [p.name for p in operation.path_parameters]
    variants = [None, {name: known[name] for name in names}] if names else [None]
    examples = schema.get_strategies_from_examples(operation)
    strategies = [("examples", s) for s in examples]
    if names:  # the document's examples again, aimed at existing objects: they must succeed
        strategies += [
            ("examples on existing objects", s.map(lambda case: _aimed(case, variants[1])))
            for s in examples
        ]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for fixed in variants:
            label = mode.value + (" on existing objects" if fixed else "")
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            strategy = strategy.filter(answers_at_once)
            if mode is GenerationMode.NEGATIVE:
                strategy = strategy.filter(reaches_the_server)
            strategies.append((label, strategy))
    return strategies


def _run(strategy, max_examples: int, call) -> None:
    """Run ``call(case)`` on up to ``max_examples`` cases, reproducibly."""

    @hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        call(case)

    run()


def test_api_conforms_to_its_openapi_document(app, world, request):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {world['token'].secret}"}
    token_id = world["token"].row.id
    counts: collections.Counter = collections.Counter()
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: list[str] = []
    answers: dict[str, str] = {}  # per operation, its first answer (the document's example)
    # The description itself (the document and its page) takes no input to fuzz.
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.label not in {"GET /docs", "GET /openapi.json"}
    ]

    def call(case) -> None:
        counts["examples"] += 1
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses[case.operation.label][response.status_code] += 1
            answers.setdefault(
                case.operation.label, f"{response.status_code} {response.text[:300]}"
            )
        finally:
            # A generated DELETE /tokens/{id} may hit the run's own token, and a DELETE of the
            # existing notifier would leave its other operations nothing to act on.
            ApiToken.update(revoked_at=None).where(ApiToken.id == token_id).execute()
            if not Notifier.select().where(Notifier.id == world["notifier"]["id"]).exists():
                Notifier.insert(world["notifier"]).execute()
            # Notifiers a POST created go again: the example's name stays free to create, and
            # the team's limit of notifiers is never what answers.
            Notifier.delete().where(Notifier.id != world["notifier"]["id"]).execute()
            # Teams a POST created go again, so the example's slug stays free to create.
            Team.delete().where(Team.slug.not_in(["acme", "other"])).execute()
            # Limits a PUT set go again, so that no limit is what refuses another operation.
            Team.update(
                limit_apps=None, limit_instances=None, limit_cpu_mhz=None, limit_memory_mb=None
            ).execute()
            # Deploys supersede the world's queued deployment and a cancel ends it: queued
            # again, so a cancel aimed at it may succeed whatever ran before.
            Deployment.update(status="queued", finished_at=None).where(
                Deployment.id == world["known"]["deployment_id"]
            ).execute()

    started = time.monotonic()
    for operation in operations:
        for label, strategy in _strategies(schema, operation, world["known"]):
            repeats = EXAMPLE_REPEATS if label == "examples" else EXAMPLES_PER_RUN
            try:
                _run(strategy, repeats, call)
            except FailureGroup as group:
                for failure in group.exceptions:
                    counts[type(failure).__name__] += 1
                failures.append(f"{operation.label} [{label}]: {group}")
            counts["runs"] += 1
    elapsed = time.monotonic() - started

    server_errors = counts["ServerError"]
    schema_violations = counts["JsonSchemaError"] + counts["MalformedJson"]
    summary = (
        f"schemathesis: {len(operations)} operations, {counts['runs']} runs, "
        f"{counts['examples']} examples in {elapsed:.1f} s; {server_errors} server errors, "
        f"{schema_violations} schema violations, {len(failures)} failing runs"
    )
    lines = [summary] + [
        f"  {label}: " + ", ".join(f"{code}: {n}" for code, n in sorted(seen.items()))
        for label, seen in statuses.items()
    ]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))
    assert not failures, summary + "\n\n" + "\n\n".join(failures)
    # Every operation but the description's two (GET /openapi.json, GET /docs) is fuzzed.
    # 34 + GET /apps/{slug}/urls + DELETE /apps/{slug}, with
    # POST /apps/{slug}/deployments/{deployment_id}/cancel among the 34; + POST /teams and
    # DELETE /teams/{team}; + POST /apps/{slug}/scale, /restart, /stop and /start; + POST
    # /apps/{slug}/runs, GET /apps/{slug}/runs/{run_id} and its /log; + GET /apps/{slug}/pending;
    # + GET and PUT /teams/{team}/limits
    assert len(operations) == 48
    # Aimed at real objects, every operation must also succeed, not only refuse; except deleting
    # the app every other operation acts on: it answers 409 here (the world's app has a
    # deployment under way), and tests/test_app_deletion.py deletes apps through the API; and
    # deleting the team of that app: 409 too (it has an app), tests/test_teams.py deletes teams.
    assert statuses["DELETE /apps/{slug}"][409] > 0
    assert statuses["DELETE /teams/{team}"][409] > 0
    # Scaling, restarting and stopping the app refuse while its deployment is under way (409),
    # and starting it while it is not stopped; tests/test_app_lifecycle.py does each for real.
    lifecycle = {f"POST /apps/{{slug}}/{verb}" for verb in ("scale", "restart", "stop", "start")}
    for label in lifecycle:
        assert statuses[label][409] > 0, (label, dict(statuses[label]))
    succeeded = {label for label, seen in statuses.items() if any(200 <= s < 300 for s in seen)}
    refused = {"DELETE /apps/{slug}", "DELETE /teams/{team}", *lifecycle}
    never = {op.label for op in operations} - refused - succeeded
    assert not never, "never succeeded: " + "; ".join(
        f"{label} ({dict(statuses[label])}; first answer: {answers.get(label)})"
        for label in sorted(never)
    )
