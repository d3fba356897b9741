"""Every route of the panel and the API, with each kind of failure on Helios's side forced
while it is served: a bug in the database layer, the database locked past its wait, Redis not
answering. No answer may carry a traceback, a file path, SQL or a secret; every 5xx names a
request id that the log has beside what went wrong; Redis down never makes a 500.

The routes, the seeded installation and the request bodies are the authorization matrix's
(tests/test_authz_matrix.py): the owner signed in for pages, the owner's admin token for the API.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import peewee as pw
import pytest
import redis
from test_authz_matrix import JSON, Caller, _rules, _url, world  # noqa: F401 - world: fixture

SECRET = "s3cr3t-in-an-error-7f1c"
LEAKS = ("Traceback", 'File "', "/work/", "site-packages", "SELECT ", SECRET)
FAULTS = {
    "bug": lambda: RuntimeError(f"/work/panel/models.py: SELECT value FROM env_var -- {SECRET}"),  # noqa: S608 - a fake message
    "locked": lambda: pw.OperationalError("database is locked"),
    "redis": lambda: redis.ConnectionError(f"Error 111 connecting to 10.9.9.9:6379 {SECRET}"),
}


class Fault:
    """Raise the chosen failure from every database statement (or Redis command) while armed;
    the callers' own set-up (copying the seed, signing in) runs disarmed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.armed = False

    def __call__(self, original):
        fault = self

        def failing(self, *args, **kwargs):
            if fault.armed:
                raise FAULTS[fault.kind]()
            return original(self, *args, **kwargs)

        return failing


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_each_failure_on_every_route_answers_without_internals(
    world,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
    caplog,
    kind,
):
    fault = Fault(kind)
    if kind == "redis":
        monkeypatch.setattr(redis.Redis, "execute_command",
                            fault(redis.Redis.execute_command))  # fmt: skip
        monkeypatch.setattr(redis.client.PubSub, "execute_command",
                            fault(redis.client.PubSub.execute_command))  # fmt: skip
    else:
        monkeypatch.setattr(pw.Database, "execute_sql", fault(pw.Database.execute_sql))
    pages, api = Caller(world, tmp_path, "owner"), Caller(world, tmp_path, "tok_admin")
    caplog.set_level(logging.WARNING)
    statuses: Counter = Counter()
    problems = []
    for method, rule in _rules(pages.app):
        caller = api if rule.startswith("/api/") else pages
        caller.reset()
        caller.sign_in()
        kwargs: dict = {"headers": caller.headers}
        if (method, rule) in JSON:
            kwargs["json"] = JSON[(method, rule)]
        fault.armed = True
        try:
            response = caller.client.open(_url(rule, caller.seed), method=method, **kwargs)
            body = response.get_data(as_text=True) if response.mimetype != "text/event-stream" \
                else next(response.response, b"").decode()  # fmt: skip
            response.close()
        finally:
            fault.armed = False
        statuses[response.status_code] += 1
        where = f"{kind}: {method} {rule} → {response.status_code}"
        shown = [leak for leak in LEAKS if leak in body]
        if shown:
            problems.append(f"{where} shows {shown}: {body[:200]!r}")
        if response.status_code < 500:
            continue
        request_id = response.headers.get("X-Request-Id", "")
        if not request_id or request_id not in body:
            problems.append(f"{where}: the body does not name its request id")
        if response.is_json and json.loads(body).get("request_id") != request_id:
            problems.append(f"{where}: request_id in the body is not the header's")
        if not any(getattr(r, "request_id", None) == request_id for r in caplog.records):
            problems.append(f"{where}: no log line carries request id {request_id}")
        if kind == "redis" and response.status_code == 500:
            problems.append(f"{where}: Redis down must not be a 500")
    assert not problems, "\n".join(problems)
    failed = sum(n for status, n in statuses.items() if status >= 500)
    print(f"\n{kind}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    if kind != "redis":  # nearly every route reads the database: the fault was really met
        assert failed >= 0.8 * sum(statuses.values()), dict(statuses)
