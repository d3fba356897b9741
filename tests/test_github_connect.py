"""Connecting repo apps to GitHub, against the loopback GitHub double that checks each request.

The repository picker on the new app page, the webhook Helios creates when a repo app is
created (and the hand setup when GitHub refuses), the GitHub section of the settings page
(secret for admins only, rotate, check, the repository id by hand), Deploy building the head
of the branch (page and API), and the driver calls behind them.
"""

from __future__ import annotations

import html
import logging
import re
from types import SimpleNamespace

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app as create_app_row
from panel.actions.github import (
    connect_repository,
    describe_delivery,
    forget_github_token,
    store_github_token,
)
from panel.actions.tokens import create_token
from panel.crypto import SecretCipher
from panel.db import database
from panel.drivers.github import GitHubClient, GitHubError, HookDelivery
from panel.models import App, Build, Event, Role, Team, User
from panel.web import create_app

from github_double import GitHubDouble, Repo, fake_sha

TOKEN = "gho_owner_token_0123456789"
OTHER_TOKEN = "gho_admin_token_9876543210"
PASSWORD = "correct horse battery"
EXTERNAL = "https://helios.example.com"
PAYLOAD_URL = f"{EXTERNAL}/webhooks/github"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')
SHOP_HEAD = fake_sha("acme/shop", "trunk")
NEW_APP = {
    "team": "acme", "image": "", "branch": "main", "command": "", "port": "8080",
    "health_path": "/healthz", "count": "1", "cpu_mhz": "250", "memory_mb": "256",
    "memory_max_mb": "0", "dockerfile": "Dockerfile", "build_context": ".",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Fixtures: GitHub's double, the panel pointed at it, a team with each role
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def github():
    repos = [Repo(id=5000 + n, full_name=f"acme/service-{n:03d}") for n in range(45)]
    repos += [
        Repo(id=42, full_name="acme/shop", private=True, default_branch="trunk"),
        Repo(id=43, full_name="acme/readonly", admin=False),
        Repo(id=44, full_name="octo/public"),
    ]
    # GitHub pages of 20 (the driver asks for 100): 48 repositories take three requests.
    double = GitHubDouble(TOKEN, repos, per_page_cap=20, tokens=(OTHER_TOKEN,)).start()
    yield double
    double.stop()
    assert not double.problems, double.problems


@pytest.fixture
def gh_settings(settings, github):
    return settings.replace(
        github_api_url=github.url, external_url=EXTERNAL, registry="127.0.0.1:5000"
    )


@pytest.fixture
def cipher(gh_settings) -> SecretCipher:
    return SecretCipher.from_settings(gh_settings)


@pytest.fixture
def panel(gh_settings, db):
    flask_app = create_app(gh_settings)
    flask_app.config["TESTING"] = True
    yield flask_app
    database.initialize(db)


@pytest.fixture
def people(db, cipher):
    owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
    found = {"owner": owner}
    for role in (Role.ADMIN, Role.DEPLOYER, Role.VIEWER):
        found[role.value] = create_user(
            f"{role.value}@example.com", PASSWORD, team_slug="acme", role=role
        )
    store_github_token(user=owner, token=TOKEN, scopes="repo,admin:repo_hook", cipher=cipher)
    return SimpleNamespace(**found, team=Team.get(Team.slug == "acme"))


def browser(panel, user: User):
    """A test client signed in as ``user`` through the login form."""
    client = panel.test_client()
    page = client.get("/login").get_data(as_text=True)
    answer = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "csrf_token": CSRF_RE.search(page)[1]},
    )
    assert answer.status_code == 302
    return client


def post(client, path: str, data: dict | None = None):
    token = CSRF_RE.search(client.get("/account").get_data(as_text=True))[1]
    return client.post(path, data={**(data or {}), "csrf_token": token})


def text_of(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return html.unescape(response.get_data(as_text=True))


def create_repo_app(client, slug: str, repo: str, branch: str = "main"):
    return post(client, "/apps/new", {**NEW_APP, "slug": slug, "repo": repo, "branch": branch})


def secret_of(app: App, cipher: SecretCipher) -> str:
    return cipher.decrypt(App.get_by_id(app.id).webhook_secret)


def repo_calls(github, path: str) -> list[tuple[str, str | None]]:
    return [(method, token) for method, called, token in github.calls if called == path]


@pytest.fixture
def shop(panel, people, github):
    """acme/shop connected by the owner: Helios made its webhook."""
    owner = browser(panel, people.owner)
    assert create_repo_app(owner, "shop", "acme/shop", "trunk").status_code == 302
    return App.get(App.slug == "shop")


@pytest.fixture
def by_hand(people, cipher, gh_settings):
    """acme/readonly created by an admin without a GitHub token: its webhook is added by hand."""
    app = create_app_row(actor=people.admin, team=people.team, slug="ro", repo="acme/readonly")
    connect_repository(actor=people.admin, app=app, settings=gh_settings, cipher=cipher)
    return App.get_by_id(app.id)


# ---------------------------------------------------------------------------------------------
# The repository picker
# ---------------------------------------------------------------------------------------------


def test_the_picker_lists_every_github_page_then_pages_here(panel, people, github):
    client = browser(panel, people.owner)
    first = text_of(client, "/apps/new")
    assert "48 repositories" in first
    assert repo_calls(github, "/user/repos") == [("GET", TOKEN)] * 3  # GitHub's Link followed
    assert "acme/shop" in first and "private" in first
    assert "acme/service-016" in first and "acme/service-017" not in first  # 20 a page
    assert 'rel="next"' in first
    last = text_of(client, "/apps/new?page=3")
    assert "acme/service-044" in last and "acme/service-016" not in last
    assert 'rel="next"' not in last and 'rel="prev"' in last
    assert len(repo_calls(github, "/user/repos")) == 3  # the list is reused a little while


def test_the_picker_searches_by_name(panel, people, github):
    client = browser(panel, people.owner)
    page = text_of(client, "/apps/new?q=SHOP")
    assert "1 repository matching “SHOP”" in page
    assert "acme/shop" in page and "acme/service-000" not in page
    hostile = text_of(client, "/apps/new?q=<script>alert(1)</script>")
    assert "<script>alert" not in hostile
    assert "None of your repositories matches" in text_of(client, "/apps/new?q=nothing-like-it")


def test_picking_a_repository_fills_repo_and_its_default_branch(panel, people, github):
    client = browser(panel, people.owner)
    page = client.get("/apps/new?repo=acme/shop&branch=trunk").get_data(as_text=True)
    assert re.search(r'name="repo"[^>]*value="acme/shop"', page)
    assert re.search(r'name="branch"[^>]*value="trunk"', page)
    ignored = client.get("/apps/new?repo=../../etc&branch=-x").get_data(as_text=True)
    assert "../../etc" not in ignored


def test_without_a_token_the_page_asks_for_owner_repo(panel, people, github):
    page = text_of(browser(panel, people.admin), "/apps/new")
    assert "Sign in with GitHub to pick from your repositories" in page
    assert github.calls == []


def test_a_refusal_to_list_is_said_on_the_page(panel, people, github):
    github.rate_limited = True
    page = text_of(browser(panel, people.owner), "/apps/new")
    assert "rate limit is spent" in page
    assert 'name="repo"' in page  # the field to type it in stays


# ---------------------------------------------------------------------------------------------
# Creating a repo app connects it
# ---------------------------------------------------------------------------------------------


def test_creating_a_repo_app_creates_its_webhook(panel, people, github, cipher, caplog):
    caplog.set_level(logging.DEBUG, logger="panel")
    client = browser(panel, people.owner)
    answer = create_repo_app(client, "shop", "acme/shop", "trunk")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/apps/shop")
    app = App.get(App.slug == "shop")
    (hook,) = github.repos["acme/shop"].hooks
    secret = secret_of(app, cipher)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert hook["events"] == ["push"] and hook["active"] is True and hook["name"] == "web"
    assert hook["config"] == {
        "url": PAYLOAD_URL, "content_type": "json", "secret": secret, "insecure_ssl": "0",
    }  # fmt: skip
    assert (app.github_repo_id, app.github_hook_id, app.connected_by_id) == (
        42, hook["id"], people.owner.id,
    )  # fmt: skip
    assert secret not in app.webhook_secret  # stored encrypted
    event = Event.get(Event.subject == "v1.app.repo_connected")
    assert event.data == {
        "app": "shop", "app_id": app.id, "repo": "acme/shop", "github_repo_id": 42,
        "hook_id": hook["id"], "method": "token",
    }  # fmt: skip
    assert "and the webhook on acme/shop" in text_of(client, "/apps/shop")
    assert secret not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("repo", "setup", "says"),
    [
        ("acme/readonly", "", "lacks admin rights"),  # GitHub: 404 without admin rights
        ("acme/shop", "hooked", "Hook already exists"),  # GitHub: 422
        ("acme/shop", "rate limited", "rate limit is spent"),  # GitHub: 403
    ],
)
def test_a_refused_webhook_leaves_the_app_with_hand_setup(
    panel, people, github, cipher, repo, setup, says
):
    if setup == "hooked":
        GitHubClient(github.url, TOKEN).create_push_hook(repo, PAYLOAD_URL, "someone's")
    github.rate_limited = setup == "rate limited"
    client = browser(panel, people.owner)
    answer = create_repo_app(client, "fresh", repo)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/apps/fresh/settings#github")
    app = App.get(App.slug == "fresh")
    assert app.github_hook_id is None and app.webhook_secret
    github.rate_limited = False
    page = text_of(client, "/apps/fresh/settings")
    assert "Helios did not create the webhook" in page and says in page
    assert "set up by hand" in page
    for shown in (PAYLOAD_URL, "application/json", secret_of(app, cipher)):
        assert shown in page


def test_an_unreachable_github_leaves_the_app_with_hand_setup(settings, db, people, cipher):
    offline = create_app(settings.replace(github_api_url="http://127.0.0.1:9"))  # discard port
    client = browser(offline, people.owner)
    assert create_repo_app(client, "fresh", "acme/shop").status_code == 302
    app = App.get(App.slug == "fresh")
    assert (app.github_repo_id, app.github_hook_id) == (None, None)
    assert "cannot be reached" in text_of(client, "/apps/fresh/settings")
    database.initialize(db)


def test_without_a_token_hand_setup_and_the_repository_id_by_hand(panel, people, github):
    client = browser(panel, people.admin)
    assert create_repo_app(client, "fresh", "acme/readonly").status_code == 302
    assert github.calls == []
    page = text_of(client, "/apps/fresh/settings")
    assert "sign in with GitHub" in page and "not known yet" in page
    assert "Save repository id" in page
    post(client, "/apps/fresh/github/repo-id", {"repo_id": "43x"})
    assert App.get(App.slug == "fresh").github_repo_id is None
    assert "is not a GitHub repository id" in text_of(client, "/apps/fresh/settings")
    post(client, "/apps/fresh/github/repo-id", {"repo_id": " 43 "})
    assert App.get(App.slug == "fresh").github_repo_id == 43
    page = text_of(client, "/apps/fresh/settings")
    assert "now takes deliveries from GitHub repository #43" in page
    assert "Save repository id" not in page
    event = Event.select().where(Event.subject == "v1.app.repo_connected").order_by(Event.id)
    assert [e.data["method"] for e in event] == ["token", "hand"]
    post(client, "/apps/fresh/github/repo-id", {"repo_id": "44"})
    assert App.get(App.slug == "fresh").github_repo_id == 43
    assert "is connected to GitHub repository #43 already" in text_of(
        client, "/apps/fresh/settings"
    )


def test_connect_later_with_a_token(panel, people, github, by_hand, cipher):
    store_github_token(user=people.admin, token=OTHER_TOKEN, scopes="repo", cipher=cipher)
    github.repos["acme/readonly"].admin = True
    client = browser(panel, people.admin)
    assert "Connect with my GitHub token" in text_of(client, "/apps/ro/settings")
    post(client, "/apps/ro/github/connect")
    app = App.get_by_id(by_hand.id)
    (hook,) = github.repos["acme/readonly"].hooks
    assert (app.github_repo_id, app.github_hook_id, app.connected_by_id) == (
        43, hook["id"], people.admin.id,
    )  # fmt: skip
    assert hook["config"]["secret"] == secret_of(app, cipher)
    assert "created by Helios" in text_of(client, "/apps/ro/settings")


def test_a_name_now_pointing_elsewhere_is_never_hooked(panel, people, github, by_hand, cipher):
    store_github_token(user=people.admin, token=OTHER_TOKEN, scopes="repo", cipher=cipher)
    client = browser(panel, people.admin)
    post(client, "/apps/ro/github/repo-id", {"repo_id": "777"})
    github.repos["acme/readonly"].admin = True
    post(client, "/apps/ro/github/connect")
    assert github.repos["acme/readonly"].hooks == []
    assert App.get_by_id(by_hand.id).github_repo_id == 777
    assert "is now GitHub repository #43, not #777" in text_of(client, "/apps/ro/settings")


# ---------------------------------------------------------------------------------------------
# The settings page: the secret is for admins only, and never in the API
# ---------------------------------------------------------------------------------------------


def test_the_secret_is_shown_to_admins_only_and_never_by_the_api(panel, people, by_hand, cipher):
    secret = secret_of(by_hand, cipher)
    for person in (people.owner, people.admin):
        response = browser(panel, person).get("/apps/ro/settings")
        assert secret in response.get_data(as_text=True)
        assert response.headers["Cache-Control"] == "no-store"
    for person in (people.deployer, people.viewer):
        page = text_of(browser(panel, person), "/apps/ro/settings")
        assert secret not in page and secret.upper() not in page
        assert "shown to the team's admins only" in page
        assert PAYLOAD_URL in page and "application/json" in page
    token = create_token(people.owner, "api", ["admin"], days=1).secret
    api = panel.test_client()
    for path in ("/api/v1/apps/ro", "/api/v1/apps"):
        body = api.get(path, headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
        assert "acme/readonly" in body
        assert secret not in body and "webhook_secret" not in body
        assert by_hand.webhook_secret not in body


def test_a_webhook_helios_made_needs_no_secret_on_the_page(panel, people, shop, cipher):
    page = text_of(browser(panel, people.owner), "/apps/shop/settings")
    assert f"created by Helios (hook #{shop.github_hook_id})" in page
    assert "42" in page and "/apps/shop/deliveries" in page
    assert secret_of(shop, cipher) not in page


def test_an_image_app_has_no_github_section(panel, people):
    create_app_row(actor=people.owner, team=people.team, slug="img", image="nginx:1.27")
    page = text_of(browser(panel, people.owner), "/apps/img/settings")
    assert 'id="github"' not in page


# ---------------------------------------------------------------------------------------------
# Rotate and check
# ---------------------------------------------------------------------------------------------


def test_rotating_a_hand_set_secret(panel, people, by_hand, cipher, caplog):
    caplog.set_level(logging.DEBUG, logger="panel")
    before = secret_of(by_hand, cipher)
    assert post(browser(panel, people.deployer), "/apps/ro/github/rotate").status_code == 403
    client = browser(panel, people.admin)
    assert post(client, "/apps/ro/github/rotate").status_code == 302
    after = secret_of(by_hand, cipher)
    assert after != before and re.fullmatch(r"[0-9a-f]{64}", after)
    page = text_of(client, "/apps/ro/settings")
    assert after in page and "paste it into the webhook on GitHub now" in page
    event = Event.get(Event.subject == "v1.app.webhook_secret_rotated")
    assert event.data == {"app": "ro", "app_id": by_hand.id, "hook_updated": False}
    assert after not in caplog.text and before not in caplog.text


def test_rotating_a_secret_helios_made_gives_github_the_new_one(
    panel, people, shop, cipher, github
):
    client = browser(panel, people.owner)
    post(client, "/apps/shop/github/rotate")
    (hook,) = github.repos["acme/shop"].hooks
    assert hook["config"]["secret"] == secret_of(shop, cipher)
    assert hook["config"]["url"] == PAYLOAD_URL
    assert ("PATCH", TOKEN) in repo_calls(github, f"/repos/acme/shop/hooks/{hook['id']}/config")
    assert "GitHub's webhook has it already" in text_of(client, "/apps/shop/settings")
    kept = secret_of(shop, cipher)
    forget_github_token(user=people.owner)
    post(client, "/apps/shop/github/rotate")
    assert secret_of(shop, cipher) == kept == hook["config"]["secret"]
    assert "the secret was not changed" in text_of(client, "/apps/shop/settings")


def test_check_reports_the_last_delivery_in_plain_words(panel, people, shop, github):
    client = browser(panel, people.deployer)  # no token: the one of who connected it is used
    post(client, "/apps/shop/github/check")
    assert "has not delivered anything to this webhook yet" in text_of(client, "/apps/shop")
    (hook,) = github.repos["acme/shop"].hooks
    assert repo_calls(github, f"/repos/acme/shop/hooks/{hook['id']}/deliveries") == [("GET", TOKEN)]
    hook["deliveries"].append(
        {"id": 7, "event": "push", "status_code": 401, "status": "Invalid HTTP Response: 401",
         "delivered_at": "2026-12-05T10:00:00Z"}
    )  # fmt: skip
    post(client, "/apps/shop/github/check")
    assert "the secret on GitHub is not the app's" in text_of(client, "/apps/shop")
    assert post(browser(panel, people.viewer), "/apps/shop/github/check").status_code == 403


def test_check_explains_what_it_needs(panel, people, by_hand, shop):
    client = browser(panel, people.admin)
    post(client, "/apps/ro/github/check")
    assert "Helios did not make this app's webhook" in text_of(client, "/apps/ro")
    forget_github_token(user=people.owner)
    post(client, "/apps/shop/github/check")
    assert "sign in with GitHub first" in text_of(client, "/apps/shop")


@pytest.mark.parametrize(
    ("code", "says"),
    [(200, "accepted it (200)"), (0, "did not reach Helios"), (404, "found nothing"),
     (500, "got the answer 500")],
)  # fmt: skip
def test_deliveries_in_plain_words(code, says):
    last = HookDelivery(1, "push", code, "status text", "2026-12-05T10:00:00Z")
    assert says in describe_delivery(last, "main")


# ---------------------------------------------------------------------------------------------
# Deploy builds the head of the branch
# ---------------------------------------------------------------------------------------------


def test_deploy_builds_the_head_of_the_branch(panel, people, shop, github):
    client = browser(panel, people.owner)
    answer = post(client, "/apps/shop/deploy", {"image": ""})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/apps/shop")
    build = Build.get(Build.app == shop.id)
    assert (build.number, build.git_sha, build.branch, build.triggered_by_id) == (
        1, SHOP_HEAD, "trunk", people.owner.id,
    )  # fmt: skip
    assert repo_calls(github, "/repos/acme/shop/branches/trunk") == [("GET", TOKEN)]
    assert f"Build #1 of {SHOP_HEAD[:7]} started" in text_of(client, "/apps/shop")
    post(client, "/apps/shop/deploy", {"image": ""})
    assert Build.select().where(Build.app == shop.id).count() == 1
    assert f"Build #1 of {SHOP_HEAD[:7]} is under way already" in text_of(client, "/apps/shop")


def test_a_deployer_without_a_token_builds_with_the_connecting_persons(panel, people, shop, github):
    post(browser(panel, people.deployer), "/apps/shop/deploy", {"image": ""})
    assert Build.get(Build.app == shop.id).triggered_by_id == people.deployer.id
    assert repo_calls(github, "/repos/acme/shop/branches/trunk") == [("GET", TOKEN)]


def test_a_public_repository_builds_without_any_token(panel, people, github):
    client = browser(panel, people.admin)
    assert create_repo_app(client, "pub", "octo/public").status_code == 302
    post(client, "/apps/pub/deploy", {"image": ""})
    assert Build.get().git_sha == fake_sha("octo/public", "main")
    assert repo_calls(github, "/repos/octo/public/branches/main") == [("GET", None)]


@pytest.mark.parametrize(
    ("setup", "status", "says"),
    [
        ("no token", 422, "does not show you the repository"),
        ("no branch", 422, "GitHub has no branch 'gone'"),
        ("no registry", 422, "builds need a registry"),
        ("offline", 502, "cannot be reached"),
    ],
)
def test_deploy_failures_are_clear(
    settings, db, people, github, cipher, gh_settings, setup, status, says
):
    app = create_app_row(actor=people.owner, team=people.team, slug="shop", repo="acme/shop",
                         branch="gone" if setup == "no branch" else "trunk")  # fmt: skip
    if setup == "no token":
        forget_github_token(user=people.owner)
    changes = {"registry": ""} if setup == "no registry" else {}
    if setup == "offline":
        changes["github_api_url"] = "http://127.0.0.1:9"
    flask_app = create_app(gh_settings.replace(**changes))
    client = browser(flask_app, people.owner)
    answer = post(client, "/apps/shop/deploy", {"image": ""})
    page = html.unescape(answer.get_data(as_text=True))
    assert answer.status_code == status
    assert says in page and "Traceback" not in page
    assert not Build.select().where(Build.app == app.id).exists()
    database.initialize(db)


def test_the_api_deploy_of_a_repo_app_builds(panel, people, shop, github):
    token = create_token(people.deployer, "ci", ["deploy"], days=1).secret
    headers = {"Authorization": f"Bearer {token}"}
    api = panel.test_client()
    answer = api.post("/api/v1/apps/shop/deployments", json={}, headers=headers)
    assert answer.status_code == 202
    assert answer.json == {
        "build": 1, "git_sha": SHOP_HEAD, "branch": "trunk", "status": "queued",
        "created": True, "message": f"build #1 of {SHOP_HEAD[:7]} started",
        "url": f"{EXTERNAL}/apps/shop/builds/1",
    }  # fmt: skip
    assert answer.headers["Location"].endswith("/api/v1/apps/shop/builds/1")
    build = api.get(answer.headers["Location"], headers=headers)
    assert build.status_code == 200 and build.json["git_sha"] == SHOP_HEAD
    assert build.json["status"] == "queued" and build.json["deployment_id"] is None
    older = fake_sha("acme/shop", "older")
    github.repos["acme/shop"].branches["older"] = older
    answer = api.post("/api/v1/apps/shop/deployments", json={"git_sha": older[:9]}, headers=headers)
    assert answer.status_code == 202 and answer.json["git_sha"] == older
    listed = api.get("/api/v1/apps/shop/builds?page=1&per_page=1", headers=headers)
    assert listed.status_code == 200, listed.json  # paged like every list
    assert [b["number"] for b in listed.json["items"]] == [2]
    missing = api.post("/api/v1/apps/shop/deployments", json={"git_sha": "abc1234"},
                       headers=headers)  # fmt: skip
    assert missing.status_code == 422
    assert missing.json["field"] == "git_sha"
    assert "GitHub knows no commit abc1234 in acme/shop" in missing.json["message"]


def test_the_api_describes_both_answers_of_a_deploy(panel, people):
    document = panel.test_client().get("/api/v1/openapi.json").json
    answer = document["paths"]["/apps/{slug}/deployments"]["post"]["responses"]["202"]
    schema = document["components"]["schemas"][answer["content"]["application/json"]["schema"]
                                               ["$ref"].rsplit("/", 1)[-1]]  # fmt: skip
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in schema["anyOf"]} == {
        "DeploymentOut", "BuildAccepted",
    }  # fmt: skip
    assert panel.test_client().get("/api/v1/docs").status_code == 200


# ---------------------------------------------------------------------------------------------
# The driver's reads for builds: a branch's head, a commit, a file at a commit
# ---------------------------------------------------------------------------------------------


def test_branch_head_and_commit_sha(github):
    client = GitHubClient(github.url, TOKEN)
    assert client.branch_head("acme/shop", "trunk") == SHOP_HEAD
    github.repos["acme/shop"].branches["release/1.2"] = fake_sha("r12")
    assert client.branch_head("acme/shop", "release/1.2") == fake_sha("r12")
    assert client.commit_sha("acme/shop", SHOP_HEAD[:7]) == SHOP_HEAD
    with pytest.raises(GitHubError, match="no branch 'nope'"):
        client.branch_head("acme/shop", "nope")
    with pytest.raises(GitHubError, match="knows no commit"):
        client.commit_sha("acme/shop", "abcdef0")
    for bad in ("../x", "-rf", "a..b"):
        with pytest.raises(GitHubError, match="is not allowed"):
            client.branch_head("acme/shop", bad)
    with pytest.raises(GitHubError, match="is not a commit id"):
        client.commit_sha("acme/shop", "HEAD~1")


def test_public_repositories_read_without_a_token_private_ones_do_not(github):
    anonymous = GitHubClient(github.url, None)
    assert anonymous.branch_head("octo/public", "main") == fake_sha("octo/public", "main")
    with pytest.raises(GitHubError) as info:
        anonymous.branch_head("acme/shop", "trunk")
    assert info.value.status == 404
    assert [token for _m, _p, token in github.calls] == [None, None]


def test_file_at_reads_the_raw_file_at_a_commit(github):
    repo = github.repos["acme/shop"]
    repo.files[(SHOP_HEAD, "helios.toml")] = 'port = 9000\nname = "café"\n'
    repo.files[(SHOP_HEAD, "deploy/helios.toml")] = "count = 2\n"
    client = GitHubClient(github.url, TOKEN)
    assert client.file_at("acme/shop", "helios.toml", SHOP_HEAD) == 'port = 9000\nname = "café"\n'
    assert client.file_at("acme/shop", "deploy/helios.toml", "trunk") == "count = 2\n"
    assert client.file_at("acme/shop", "missing.toml", SHOP_HEAD) is None
    assert ("GET", "/repos/acme/shop/contents/helios.toml") in github.requests
    for path in ("../secrets", "/etc/passwd", "a//b", ""):
        with pytest.raises(GitHubError, match="is not a file path"):
            client.file_at("acme/shop", path, SHOP_HEAD)
    with pytest.raises(GitHubError, match="is not a commit id or branch name"):
        client.file_at("acme/shop", "helios.toml", "a b")
    repo.files[(SHOP_HEAD, "big.toml")] = "x" * (1024 * 1024 + 1)
    with pytest.raises(GitHubError, match="larger than 1 MiB"):
        client.file_at("acme/shop", "big.toml", SHOP_HEAD)


# ---------------------------------------------------------------------------------------------
# In a real browser: pick a repository, create the app, read its GitHub section
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def panel_env(github) -> dict[str, str]:
    """The live panel (gunicorn) asks the GitHub double and builds into a registry."""
    return {
        "HELIOS_GITHUB_API_URL": github.url,
        "HELIOS_EXTERNAL_URL": EXTERNAL,
        "HELIOS_REGISTRY": "127.0.0.1:5000",
    }


def test_picking_and_connecting_in_a_browser(
    live_panel, page, artifacts, people, github, by_hand, cipher
):
    from playwright.sync_api import expect

    url = live_panel
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill(people.owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/apps/new")
    page.get_by_label("Search your repositories").fill("shop")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("1 repository matching")).to_be_visible()
    page.screenshot(path=str(artifacts / "github-picker.png"), full_page=True)
    page.get_by_role("link", name="Use acme/shop").click()
    expect(page.locator("input[name=repo]")).to_have_value("acme/shop")
    expect(page.locator("input[name=branch]")).to_have_value("trunk")
    page.get_by_label("Name", exact=True).fill("shop")
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url(re.compile(rf"{re.escape(url)}/apps/shop(#.*)?$"))
    expect(page.get_by_text("and the webhook on acme/shop")).to_be_visible()
    page.goto(f"{url}/apps/shop/settings")
    section = page.locator("#github")
    expect(section).to_contain_text("created by Helios")
    expect(section.get_by_role("link", name="Deliveries")).to_have_attribute(
        "href", "/apps/shop/deliveries"
    )
    section.screenshot(path=str(artifacts / "github-settings.png"))
    assert len(github.repos["acme/shop"].hooks) == 1
    page.goto(f"{url}/apps/ro/settings")  # added by hand: what to paste on GitHub
    section = page.locator("#github")
    expect(section).to_contain_text("set up by hand")
    expect(section.get_by_label("Webhook secret")).to_have_value(secret_of(by_hand, cipher))
    section.screenshot(path=str(artifacts / "github-settings-by-hand.png"))
