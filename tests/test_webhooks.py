"""POST /webhooks/github through the Flask test client, and an app's deliveries page.

Real SQLite and Redis. Every delivery is signed the way GitHub signs it (HMAC-SHA256 of the
exact body bytes under the app's webhook secret); the bodies are the real ones of
../shared/reference/github-webhooks/ (pinned, see nomad_double/reference.py). Forgeries must be
refused with nothing recorded, queued or released; verified deliveries give the outcomes the
reference README lists. The concurrent and burst deliveries against gunicorn are in
test_webhook_burst.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid

import pytest
import rq

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.builds import BUILD_QUEUE, BuildEnd, finish_build, record_delivery
from panel.crypto import SecretCipher
from panel.models import (
    MODELS,
    App,
    Build,
    BuildStatus,
    Event,
    Membership,
    Release,
    Role,
    Team,
    User,
    WebhookDelivery,
)
from panel.schema.github import MAX_BODY_BYTES, sign

from nomad_double.reference import reference_file

PASSWORD = "correct horse battery"
SECRET = "It's a Secret to Everybody"  # GitHub's test vector's secret
VECTOR_HEADER = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
HELLO_WORLD_ID = 186853002  # Codertocat/Hello-World: push, push_with-new-branch, delete
OCTOCODERS_ID = 186853261  # Octocoders/Hello-World: ping
PUSHED = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
REGISTRY = "registry.test:5000"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


def body(name: str) -> bytes:
    return reference_file(f"github-webhooks/{name}").read_bytes()


def headers_for(
    raw: bytes, event: str, *, secret: str = SECRET, delivery: str | None = None
) -> dict[str, str]:
    """The headers GitHub sends with ``raw`` for a hook with ``secret``."""
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, raw),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }


def deliver(client, raw: bytes, event: str = "push", **kwargs):
    return client.post("/webhooks/github", data=raw, headers=headers_for(raw, event, **kwargs))


# ---------------------------------------------------------------------------------------------
# Fixtures: a team, a repo app connected to Codertocat/Hello-World tracking master
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings):
    """Builds need a registry; nothing is pushed to it here."""
    return settings.replace(registry=REGISTRY)


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def acme(owner) -> Team:
    return Team.get(Team.slug == "acme")


def member(team: Team, role: Role) -> User:
    user = create_user(f"{role.value}@example.com", PASSWORD, team_slug=f"home-{role.value}")
    Membership.create(user=user, team=team, role=role.value)
    return user


def connect(app: App, settings, repo_id: int | None, secret: str | None) -> App:
    """What connecting the repository leaves behind: its id and the hook's secret (encrypted).

    The action that connects a repository is someone else's work in progress: the columns are
    set here the way it sets them.
    """
    stored = SecretCipher.from_settings(settings).encrypt(secret) if secret is not None else None
    App.update(github_repo_id=repo_id, webhook_secret=stored).where(App.id == app.id).execute()
    return App.get_by_id(app.id)


def repo_app(team, settings, slug="hello", branch="master", repo_id=HELLO_WORLD_ID, secret=SECRET):
    app = create_app(actor=None, team=team, slug=slug, repo="Codertocat/Hello-World", branch=branch)
    return connect(app, settings, repo_id, secret)


@pytest.fixture
def hello(acme, settings) -> App:
    return repo_app(acme, settings)


def counts() -> dict[str, int]:
    return {
        "deliveries": WebhookDelivery.select().count(),
        "builds": Build.select().count(),
        "releases": Release.select().count(),
    }


def queued_jobs(redis_conn) -> int:
    return rq.Queue(BUILD_QUEUE, connection=redis_conn).count


NOTHING = {"deliveries": 0, "builds": 0, "releases": 0}


# ---------------------------------------------------------------------------------------------
# Signatures: GitHub's vector verifies, forgeries are refused with nothing written
# ---------------------------------------------------------------------------------------------


def test_githubs_vector_secret_verifies_a_real_push_and_builds_it(client, hello, redis_conn):
    assert sign(SECRET, b"Hello, World!") == VECTOR_HEADER  # the secret of GitHub's vector
    answer = deliver(client, body("push_with-new-branch.json"))
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert answer.json["message"] == "build #1 requested"
    assert answer.json["apps"] == [
        {"app": "hello", "outcome": "accepted", "message": "build #1 requested", "build": 1}
    ]
    build = Build.get()
    assert (build.git_sha, build.branch, build.reason, build.status) == (
        PUSHED, "master", "push", BuildStatus.QUEUED.value,
    )  # fmt: skip
    delivery = WebhookDelivery.get()
    assert (delivery.event, delivery.outcome, delivery.git_sha) == ("push", "accepted", PUSHED)
    assert build.delivery_id == delivery.id and delivery.reason == "build #1 requested"
    assert queued_jobs(redis_conn) == 1
    requested = Event.get(Event.subject == "v1.build.requested")
    assert requested.actor == "github" and requested.data["delivery"] == delivery.delivery


FORGERIES = {
    "tampered-body": lambda raw: (raw.replace(b"master", b"mastex"), sign(SECRET, raw)),
    "wrong-secret": lambda raw: (raw, sign("It's a secret to everybody", raw)),
    "missing-header": lambda raw: (raw, None),
    "truncated": lambda raw: (raw, sign(SECRET, raw)[:-2]),
    "uppercase-hex": lambda raw: (raw, "sha256=" + sign(SECRET, raw)[7:].upper()),
    "other-body": lambda raw: (raw, sign(SECRET, body("push.json"))),
    "empty-header": lambda raw: (raw, ""),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_deliveries_are_refused_and_change_nothing(client, hello, redis_conn, forgery):
    raw, signature = FORGERIES[forgery](body("push_with-new-branch.json"))
    headers = headers_for(raw, "push")
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature
    answer = client.post("/webhooks/github", data=raw, headers=headers)
    assert answer.status_code == 401
    assert answer.json["error"] == "unauthorized"
    assert "does not verify" in answer.json["message"]
    assert "WWW-Authenticate" not in answer.headers
    assert counts() == NOTHING and queued_jobs(redis_conn) == 0


def test_a_sha1_signature_alone_is_refused(client, hello, redis_conn):
    raw = body("push_with-new-branch.json")
    headers = headers_for(raw, "push")
    del headers["X-Hub-Signature-256"]
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET.encode(), raw, hashlib.sha1).hexdigest()
    answer = client.post("/webhooks/github", data=raw, headers=headers)
    assert answer.status_code == 401
    assert counts() == NOTHING and queued_jobs(redis_conn) == 0


def test_no_app_no_secret_and_a_bad_signature_answer_alike(client, acme, settings, caplog):
    raw = body("push_with-new-branch.json")
    unconnected = deliver(client, raw)  # no app of this repository yet
    app = repo_app(acme, settings, secret=None)  # connected, no secret configured
    no_secret = deliver(client, raw)
    signed_without_secret = client.post(
        "/webhooks/github", data=raw, headers=headers_for(raw, "push", secret="")
    )
    connect(app, settings, HELLO_WORLD_ID, SECRET)
    wrong = deliver(client, raw, secret="another secret")
    answers = [unconnected, no_secret, signed_without_secret, wrong]
    assert {a.status_code for a in answers} == {401}
    # Byte for byte the same answer, but for the request's own (random) id.
    bodies = {a.get_data().replace(a.headers["X-Request-Id"].encode(), b"") for a in answers}
    assert len(bodies) == 1
    assert counts() == NOTHING
    refusals = [r for r in caplog.records if r.name == "panel.web.webhooks"]
    assert len(refusals) == 4 and all(r.levelno == logging.WARNING for r in refusals)
    assert all(b"Codertocat" not in r.getMessage().encode() for r in refusals)  # no body logged


def test_repositories_match_by_numeric_id_not_by_name(client, acme, settings):
    # Same full_name as the push's repository, another GitHub id: a look-alike gets nothing.
    repo_app(acme, settings, slug="lookalike", repo_id=HELLO_WORLD_ID + 1)
    answer = deliver(client, body("push_with-new-branch.json"))
    assert answer.status_code == 401
    assert counts() == NOTHING


# ---------------------------------------------------------------------------------------------
# The reference bodies give the outcomes the README lists
# ---------------------------------------------------------------------------------------------


def test_push_to_another_branch_is_recorded_as_ignored(client, acme, settings, redis_conn):
    repo_app(acme, settings, slug="staging", branch="develop")
    answer = deliver(client, body("push_with-new-branch.json"))
    assert answer.status_code == 202
    assert answer.json["apps"][0]["outcome"] == "ignored"
    row = WebhookDelivery.get()
    assert row.outcome == "ignored" and "not to the tracked branch develop" in row.reason
    assert counts() == {"deliveries": 1, "builds": 0, "releases": 0}
    assert queued_jobs(redis_conn) == 0


@pytest.mark.parametrize(
    ("name", "event", "says"),
    [
        ("push.json", "push", "tags are not deployed"),
        ("delete.json", "delete", "change nothing"),
    ],
)
def test_tag_deletions_are_recorded_as_ignored(client, hello, redis_conn, name, event, says):
    answer = deliver(client, body(name), event)
    assert answer.status_code == 202
    assert says in answer.json["message"]
    row = WebhookDelivery.get()
    assert (row.event, row.outcome, row.git_sha) == (event, "ignored", "")
    assert says in row.reason
    assert counts() == {"deliveries": 1, "builds": 0, "releases": 0}
    assert queued_jobs(redis_conn) == 0


def test_ping_is_answered_200_and_recorded(client, acme, settings):
    repo_app(acme, settings, slug="octo", repo_id=OCTOCODERS_ID)
    answer = deliver(client, body("ping.json"), "ping")
    assert answer.status_code == 200
    assert "ping" in answer.json["message"]
    row = WebhookDelivery.get()
    assert (row.event, row.outcome) == ("ping", "accepted")
    assert counts() == {"deliveries": 1, "builds": 0, "releases": 0}


def test_a_copy_of_a_delivery_is_already_received(client, hello, redis_conn):
    raw = body("push_with-new-branch.json")
    guid = str(uuid.uuid4())
    first = deliver(client, raw, delivery=guid)
    again = deliver(client, raw, delivery=guid)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json["message"] == "already received"
    assert counts() == {"deliveries": 1, "builds": 1, "releases": 0}
    assert queued_jobs(redis_conn) == 1


def test_two_apps_of_one_repository_each_handle_the_delivery(client, acme, settings):
    repo_app(acme, settings, slug="prod", branch="master")
    repo_app(acme, settings, slug="staging", branch="develop")
    repo_app(acme, settings, slug="elsewhere", secret="another hook's secret")
    answer = deliver(client, body("push_with-new-branch.json"))
    assert answer.status_code == 202
    outcomes = {item["app"]: item["outcome"] for item in answer.json["apps"]}
    assert outcomes == {"prod": "accepted", "staging": "ignored"}
    assert counts() == {"deliveries": 2, "builds": 1, "releases": 0}


def test_a_build_that_cannot_be_requested_is_acknowledged_and_marked_failed(
    client, acme, settings, redis_conn
):
    # An image app connected to the repository: there is nothing to build.
    app = create_app(actor=None, team=acme, slug="imagey", image="nginx:1.27", branch="master")
    connect(app, settings, HELLO_WORLD_ID, SECRET)
    answer = deliver(client, body("push_with-new-branch.json"))
    assert answer.status_code == 202
    assert answer.json["apps"][0]["outcome"] == "failed"
    assert "runs an image" in answer.json["message"]
    row = WebhookDelivery.get()
    assert row.outcome == "failed" and "runs an image" in row.reason and row.git_sha == PUSHED
    assert counts() == {"deliveries": 1, "builds": 0, "releases": 0}
    assert queued_jobs(redis_conn) == 0


# ---------------------------------------------------------------------------------------------
# Requests refused before any app is asked, each with a reason
# ---------------------------------------------------------------------------------------------


def refused(answer, status: int, says: str) -> None:
    text = answer.get_data(as_text=True)
    assert answer.status_code == status, text
    assert answer.mimetype == "application/json"
    assert says in answer.json["message"], answer.json
    assert set(answer.json) == {"error", "message", "request_id"}
    assert "Traceback" not in text


def test_a_form_encoded_hook_is_told_to_use_json(client, hello):
    raw = b"payload=" + body("push_with-new-branch.json")
    headers = {**headers_for(raw, "push"), "Content-Type": "application/x-www-form-urlencoded"}
    refused(client.post("/webhooks/github", data=raw, headers=headers), 415, "application/json")
    headers["Content-Type"] = "text/plain"
    refused(client.post("/webhooks/github", data=raw, headers=headers), 415, "content type")
    assert counts() == NOTHING


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"repository": {"id": 186853002}', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"[1, 2]", "repository.id"),
        (b'{"zen": "no repository"}', "repository.id"),
        (b'{"repository": {"id": "186853002"}}', "repository.id"),
        (b'{"repository": {"id": true}}', "repository.id"),
        (b'{"repository": {"id": 1e3}}', "repository.id"),
        (b'{"repository": {"id": -1}}', "repository.id"),
        (b'{"repository": {"id": 99999999999999999999999}}', "repository.id"),
    ],
    ids=[
        "truncated", "not-utf8", "deeply-nested", "array", "no-repository", "string-id",
        "bool-id", "float-id", "negative-id", "huge-id",
    ],
)  # fmt: skip
def test_bodies_without_a_repository_id_are_refused(client, hello, raw, says):
    refused(deliver(client, raw), 400, says)
    assert counts() == NOTHING


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-GitHub-Event", None),
        ("X-GitHub-Event", ""),
        ("X-GitHub-Event", "Push"),
        ("X-GitHub-Event", "push\r\nX-Evil: 1"),
        ("X-GitHub-Event", "e" * 65),
        ("X-GitHub-Delivery", None),
        ("X-GitHub-Delivery", ""),
        ("X-GitHub-Delivery", "../../etc/passwd"),
        ("X-GitHub-Delivery", "<script>"),
        ("X-GitHub-Delivery", "a" * 65),
    ],
)
def test_missing_or_odd_github_headers_are_refused(client, hello, name, value):
    raw = body("push_with-new-branch.json")
    headers = headers_for(raw, "push")
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    try:
        answer = client.post("/webhooks/github", data=raw, headers=headers)
    except ValueError:  # Werkzeug itself refuses a header with a newline: as good as a 400
        assert "\n" in value
        return
    refused(answer, 400, name)
    assert counts() == NOTHING


def test_a_64_character_delivery_id_is_taken(client, hello):
    answer = deliver(client, body("push.json"), delivery="f" * 64)
    assert answer.status_code == 202
    assert WebhookDelivery.get().delivery == "f" * 64


def test_an_announced_body_over_25_mb_is_refused_before_it_is_read(client, hello):
    raw = body("push_with-new-branch.json")
    answer = client.post(
        "/webhooks/github", data=raw, headers=headers_for(raw, "push"),
        environ_overrides={"CONTENT_LENGTH": str(MAX_BODY_BYTES + 1)},
    )  # fmt: skip
    refused(answer, 413, "25 MB")
    assert counts() == NOTHING


def test_a_body_of_exactly_25_mb_is_read_and_one_more_byte_is_not(client, hello):
    # Valid JSON padded with spaces to the limit: read and verified (the panel's 1 MiB cap for
    # forms and the API does not apply here); one byte more is refused.
    raw = body("push.json")
    padded = raw + b" " * (MAX_BODY_BYTES - len(raw))
    answer = deliver(client, padded)
    assert answer.status_code == 202 and WebhookDelivery.select().count() == 1
    refused(deliver(client, padded + b" "), 413, "25 MB")


def test_only_post_is_allowed(client):
    assert client.get("/webhooks/github").status_code == 405


# ---------------------------------------------------------------------------------------------
# The deliveries page and Redeliver
# ---------------------------------------------------------------------------------------------


def sign_in(client, user: User) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = CSRF_RE.search(page).group(1)
    answer = client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token}
    )
    assert answer.status_code == 302


def csrf_token(client, slug: str) -> str:
    return CSRF_RE.search(client.get(f"/apps/{slug}/deliveries").get_data(as_text=True)).group(1)


def redeliver_path(row: WebhookDelivery) -> str:
    return f"/apps/{row.app.slug}/deliveries/{row.id}/redeliver"


def failed_build(client, settings, redis_conn) -> tuple[WebhookDelivery, Build]:
    """A push that was built, and whose build failed."""
    assert deliver(client, body("push_with-new-branch.json")).status_code == 202
    build = Build.get()
    end = BuildEnd(succeeded=False, message="the Dockerfile's RUN step exited 1", exit_code=1)
    assert finish_build(build.id, end, settings=settings, redis_conn=redis_conn)
    return WebhookDelivery.get(), Build.get_by_id(build.id)


def test_the_page_lists_deliveries_newest_first_with_their_builds(client, acme, hello):
    viewer = member(acme, Role.VIEWER)
    deliver(client, body("ping.json"), "ping")  # another repository: not this app's
    deliver(client, body("delete.json"), "delete", delivery="first-delivery")
    deliver(client, body("push_with-new-branch.json"), delivery="second-delivery")
    sign_in(client, viewer)
    page = client.get("/apps/hello/deliveries")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert text.index("second-delivery") < text.index("first-delivery")
    assert f"/Codertocat/Hello-World/commit/{PUSHED}" in text and PUSHED[:7] in text
    assert 'href="/apps/hello/builds/1"' in text and 'class="badge queued"' in text
    assert 'class="badge ignored"' in text and "change nothing" in text
    assert "Redeliver" not in text  # nothing failed, and a viewer may not anyway


def test_the_page_shows_the_last_100_deliveries(client, acme, hello, owner):
    for n in range(105):
        record_delivery(
            app=hello, delivery=f"d-{n:03d}", event="push", outcome="ignored", reason="test"
        )
    sign_in(client, owner)
    text = client.get("/apps/hello/deliveries").get_data(as_text=True)
    shown = re.findall(r"<code>(d-\d{3})</code>", text)
    assert len(shown) == 100 and shown[0] == "d-104" and "d-004" not in shown


def test_the_page_is_for_the_apps_team_only(client, hello, settings):
    assert client.get("/apps/hello/deliveries").status_code == 302  # to the sign-in page
    outsider = create_user("rival@example.com", PASSWORD, team_slug="rival")
    sign_in(client, outsider)
    assert client.get("/apps/hello/deliveries").status_code == 404
    assert client.get("/apps/nope/deliveries").status_code == 404


def test_redeliver_builds_a_failed_builds_commit_again(client, acme, hello, settings, redis_conn):
    deployer = member(acme, Role.DEPLOYER)
    row, failed = failed_build(client, settings, redis_conn)
    sign_in(client, deployer)
    page = client.get("/apps/hello/deliveries").get_data(as_text=True)
    assert page.count(">Redeliver</button>") == 1 and 'class="badge failed"' in page
    answer = client.post(redeliver_path(row), data={"csrf_token": csrf_token(client, "hello")})
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/apps/hello/deliveries")
    again = Build.select().order_by(Build.id.desc()).first()
    assert again.id != failed.id and again.number == 2
    assert (again.git_sha, again.reason, again.status) == (PUSHED, "redelivery", "queued")
    assert again.triggered_by_id == deployer.id and again.delivery_id == row.id
    assert WebhookDelivery.get_by_id(row.id).outcome == "accepted"
    followed = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Build #2 of 6113728f27ae requested" in followed
    assert ">Redeliver</button>" not in followed  # its newest build is under way
    # A second post of the stale form is refused with the reason; nothing more is built.
    stale = client.post(redeliver_path(row), data={"csrf_token": csrf_token(client, "hello")})
    assert stale.status_code == 302 and Build.select().count() == 2
    assert "needs no second try: build #2 is queued" in client.get("/apps/hello/deliveries").text


def test_redeliver_of_a_failed_delivery_says_why_it_fails_again(client, acme, settings, owner):
    app = create_app(actor=None, team=acme, slug="imagey", image="nginx:1.27", branch="master")
    connect(app, settings, HELLO_WORLD_ID, SECRET)
    deliver(client, body("push_with-new-branch.json"))
    row = WebhookDelivery.get()
    sign_in(client, owner)
    assert ">Redeliver</button>" in client.get("/apps/imagey/deliveries").text
    answer = client.post(redeliver_path(row), data={"csrf_token": csrf_token(client, "imagey")})
    assert answer.status_code == 302
    text = client.get("/apps/imagey/deliveries").get_data(as_text=True)
    assert "Not redelivered: imagey runs an image" in text
    assert Build.select().count() == 0 and WebhookDelivery.get().outcome == "failed"


def test_a_viewer_cannot_redeliver(client, acme, hello, settings, redis_conn):
    viewer = member(acme, Role.VIEWER)
    row, _failed = failed_build(client, settings, redis_conn)
    sign_in(client, viewer)
    assert ">Redeliver</button>" not in client.get("/apps/hello/deliveries").text
    answer = client.post(redeliver_path(row), data={"csrf_token": csrf_token(client, "hello")})
    assert answer.status_code == 403
    assert Build.select().count() == 1


def test_redeliver_needs_the_csrf_token_and_the_apps_own_delivery(
    client, acme, hello, settings, redis_conn, owner
):
    row, _failed = failed_build(client, settings, redis_conn)
    other = repo_app(acme, settings, slug="other", repo_id=42)
    sign_in(client, owner)
    answer = client.post(redeliver_path(row))
    assert answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)
    token = csrf_token(client, "hello")
    wrong_app = f"/apps/{other.slug}/deliveries/{row.id}/redeliver"
    assert client.post(wrong_app, data={"csrf_token": token}).status_code == 404
    missing = client.post("/apps/hello/deliveries/99999/redeliver", data={"csrf_token": token})
    assert missing.status_code == 404
    assert Build.select().count() == 1


def test_the_webhook_needs_no_csrf_token_nor_session(app, hello):
    assert app.config.get("WTF_CSRF_ENABLED", True)  # CSRF is on: the webhook is exempt
    answer = deliver(app.test_client(), body("push_with-new-branch.json"))
    assert answer.status_code == 202


def test_reading_the_page_writes_nothing(client, acme, hello, settings, redis_conn, owner, caplog):
    failed_build(client, settings, redis_conn)
    sign_in(client, owner)
    before = {model.__name__: model.select().count() for model in MODELS}
    caplog.set_level(logging.DEBUG, logger="peewee")
    caplog.clear()
    assert client.get("/apps/hello/deliveries").status_code == 200
    statements = [str(r.msg) for r in caplog.records if r.name == "peewee"]
    assert statements
    assert not [s for s in statements if re.search(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", s)]
    assert {model.__name__: model.select().count() for model in MODELS} == before


def test_event_and_delivery_of_json_answers_are_plain_json(client, hello):
    answer = deliver(client, body("push_with-new-branch.json"), delivery="abc-123")
    assert answer.json["delivery"] == "abc-123"
    assert json.loads(answer.get_data())["apps"][0]["build"] == 1
