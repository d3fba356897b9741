"""GitHub deliveries: the signature check and what each real delivery body asks of an app.

GitHub's own test vector must verify; every forgery must not; the real bodies of
../shared/reference/github-webhooks/ (pinned, see nomad_double/reference.py) give the outcomes
its README lists.
"""

from __future__ import annotations

import json

import pytest

from panel.schema.github import Intent, decide, sign, signature_matches

from nomad_double.reference import reference_file

VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_HEADER = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
HELLO_WORLD_ID = 186853002  # Codertocat/Hello-World, the repository of the push bodies
PUSHED = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


def body(name: str) -> bytes:
    return reference_file(f"github-webhooks/{name}").read_bytes()


def test_githubs_published_vector_verifies():
    assert sign(VECTOR_SECRET, VECTOR_BODY) == VECTOR_HEADER
    assert signature_matches(VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER)


@pytest.mark.parametrize(
    ("secret", "payload", "header"),
    [
        (VECTOR_SECRET, b"Hello, World?", VECTOR_HEADER),  # tampered body
        ("It's a secret to everybody", VECTOR_BODY, VECTOR_HEADER),  # wrong secret
        (VECTOR_SECRET, VECTOR_BODY, "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"),  # sha1 only
        (VECTOR_SECRET, VECTOR_BODY, None),  # no header
        (VECTOR_SECRET, VECTOR_BODY, ""),  # empty header
        (VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER[:-2]),  # truncated
        (VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER.upper().replace("SHA256", "sha256")),
        (VECTOR_SECRET, VECTOR_BODY, sign(VECTOR_SECRET, b"another body")),
        (VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER + "\n"),  # trailing newline
        (VECTOR_SECRET, VECTOR_BODY, " " + VECTOR_HEADER),
        ("", VECTOR_BODY, sign("", VECTOR_BODY)),  # no secret configured: never trusted
    ],
    ids=[
        "tampered-body", "wrong-secret", "sha1-only", "missing-header", "empty-header",
        "truncated", "uppercase-hex", "other-body", "trailing-newline", "leading-space",
        "no-secret",
    ],
)  # fmt: skip
def test_forged_deliveries_do_not_verify(secret, payload, header):
    assert not signature_matches(secret, payload, header)


def test_real_bodies_verify_under_their_own_signature():
    for name in ("push.json", "push_with-new-branch.json", "ping.json", "delete.json"):
        raw = body(name)
        assert signature_matches("hook secret", raw, sign("hook secret", raw))
        # One byte changed anywhere (here: the last) and the signature no longer holds.
        assert not signature_matches("hook secret", raw[:-1] + b" ", sign("hook secret", raw))


@pytest.mark.parametrize(
    ("event", "name", "branch", "intent", "says"),
    [
        ("push", "push_with-new-branch.json", "master", Intent.BUILD, "a push to master"),
        ("push", "push_with-new-branch.json", "main", Intent.NOTHING, "not to the tracked"),
        ("push", "push.json", "master", Intent.NOTHING, "tags are not deployed"),
        ("ping", "ping.json", "master", Intent.PONG, "ping"),
        ("delete", "delete.json", "master", Intent.NOTHING, "change nothing"),
        ("create", "push_with-new-branch.json", "master", Intent.NOTHING, "change nothing"),
    ],
)  # fmt: skip
def test_real_bodies_give_the_outcomes_github_documents(event, name, branch, intent, says):
    decision = decide(event, json.loads(body(name)), repo_id=HELLO_WORLD_ID, branch=branch)
    assert decision.intent == intent
    assert says in decision.reason
    if intent == Intent.BUILD:
        assert (decision.git_sha, decision.branch) == (PUSHED, "master")
    else:
        assert decision.git_sha == ""


def test_a_push_is_matched_by_the_repository_id_not_its_name():
    payload = json.loads(body("push_with-new-branch.json"))
    other = decide("push", payload, repo_id=HELLO_WORLD_ID + 1, branch="master")
    assert other.intent == Intent.NOTHING and "another repository" in other.reason
    payload["repository"]["full_name"] = "someone-else/Hello-World"  # a rename keeps the id
    assert decide("push", payload, repo_id=HELLO_WORLD_ID, branch="master").intent == Intent.BUILD


@pytest.mark.parametrize(
    "change",
    [
        {"deleted": True, "after": "0" * 40},  # the tracked branch deleted
        {"after": "0" * 40},
        {"after": "6113728F27AE82C7B1A177C8D03F9E96E0ADF246"},  # not how GitHub writes ids
        {"after": "6113728"},
        {"ref": "refs/tags/master"},
        {"ref": "master"},
        {"ref": None},
        {"repository": {"id": "186853002"}},  # an id as text is not GitHub's payload
        {"repository": None},
    ],
)
def test_pushes_that_must_not_build(change):
    payload = {**json.loads(body("push_with-new-branch.json")), **change}
    decision = decide("push", payload, repo_id=HELLO_WORLD_ID, branch="master")
    assert decision.intent == Intent.NOTHING
    assert decision.reason
