"""The GitHub driver against a loopback double that checks every request's shape."""

from __future__ import annotations

import pytest

from panel.drivers.github import GitHubClient, GitHubError

from github_double import GitHubDouble, Repo

TOKEN = "gho_test_token"
PAYLOAD_URL = "https://panel.example.com/webhooks/github"


@pytest.fixture
def github():
    repos = [Repo(id=1000 + n, full_name=f"acme/service-{n:03d}") for n in range(230)]
    repos.append(Repo(id=42, full_name="acme/Shop", default_branch="trunk", private=True))
    repos.append(Repo(id=43, full_name="other/readonly", admin=False))
    double = GitHubDouble(TOKEN, repos).start()
    yield double
    double.stop()
    assert not double.problems, double.problems


def test_repositories_follow_every_page(github):
    client = GitHubClient(github.url, TOKEN)
    found = client.repositories()
    assert len(found) == 232
    pages = [path for method, path in github.requests if path == "/user/repos"]
    assert len(pages) == 3  # 100 + 100 + 32: the Link header was followed to the end


def test_repositories_are_searchable_by_name(github):
    client = GitHubClient(github.url, TOKEN)
    shop = client.repositories("SHOP")
    assert [(r.id, r.full_name, r.private, r.admin) for r in shop] == [
        (42, "acme/Shop", True, True)
    ]
    assert client.repositories("no-such-thing") == []


def test_a_repository_is_read_with_its_numeric_id(github):
    shop = GitHubClient(github.url, TOKEN).repository("acme/shop")
    assert (shop.id, shop.default_branch) == (42, "trunk")


def test_a_push_hook_is_created_with_the_documented_body_and_listed(github):
    client = GitHubClient(github.url, TOKEN)
    hook_id = client.create_push_hook("acme/Shop", PAYLOAD_URL, "per-app-secret")
    hook = github.repos["acme/shop"].hooks[0]
    assert hook["id"] == hook_id
    assert hook["events"] == ["push"] and hook["active"] is True
    assert hook["config"] == {
        "url": PAYLOAD_URL, "content_type": "json", "secret": "per-app-secret",
        "insecure_ssl": "0",
    }  # fmt: skip
    assert client.last_delivery("acme/Shop", hook_id) is None
    hook["deliveries"].append(
        {"id": 7, "event": "ping", "status_code": 200, "status": "OK",
         "delivered_at": "2026-12-05T10:00:00Z"}
    )  # fmt: skip
    last = client.last_delivery("acme/Shop", hook_id)
    assert (last.event, last.status_code, last.status) == ("ping", 200, "OK")


def test_a_second_hook_for_the_same_url_is_refused_with_githubs_reason(github):
    client = GitHubClient(github.url, TOKEN)
    client.create_push_hook("acme/Shop", PAYLOAD_URL, "s")
    with pytest.raises(GitHubError) as info:
        client.create_push_hook("acme/Shop", PAYLOAD_URL, "s")
    assert info.value.status == 422
    assert "did not accept the request to create a webhook on acme/Shop" in str(info.value)


@pytest.mark.parametrize(
    ("setup", "call", "status", "says"),
    [
        ("bad token", "repositories", 401, "sign in with GitHub again"),
        ("rate limited", "repositories", 403, "rate limit is spent"),
        ("", "hook on readonly", 404, "lacks admin rights"),
        ("", "missing repository", 404, "does not exist"),
    ],
)
def test_refusals_say_what_to_do(github, setup, call, status, says):
    client = GitHubClient(github.url, "wrong" if setup == "bad token" else TOKEN)
    github.rate_limited = setup == "rate limited"
    with pytest.raises(GitHubError) as info:
        if call == "repositories":
            client.repositories()
        elif call == "hook on readonly":
            client.create_push_hook("other/readonly", PAYLOAD_URL, "s")
        else:
            client.repository("acme/nope")
    assert info.value.status == status
    assert says in str(info.value)
    assert TOKEN not in str(info.value)


def test_an_unreachable_github_is_a_clear_error():
    client = GitHubClient("http://127.0.0.1:9", TOKEN)  # discard port: nothing listens
    with pytest.raises(GitHubError) as info:
        client.repositories()
    assert info.value.status == 0
    assert "cannot be reached to list your repositories" in str(info.value)


@pytest.mark.parametrize("name", ["acme", "acme/shop/x", "../etc/passwd", "acme/sh op", ""])
def test_names_that_are_not_owner_repo_never_reach_github(github, name):
    with pytest.raises(GitHubError) as info:
        GitHubClient(github.url, TOKEN).repository(name)
    assert "is not a GitHub OWNER/REPO" in str(info.value)
    assert github.requests == []
