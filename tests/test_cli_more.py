"""`helios releases`, `helios domains`, `helios open` and the pending block of `helios status`
as real processes against a real panel (gunicorn), through its API."""

from __future__ import annotations

import json
import re

import pytest
from test_cli_client import Helios

from panel.actions.accounts import create_user
from panel.actions.apps import (
    add_domain,
    create_app,
    request_deploy,
    request_rollback,
    update_app,
)
from panel.actions.deployments import claim_deployment, finish_deployment, record_submitted
from panel.actions.domain_checks import record_domain_states
from panel.actions.tokens import create_token
from panel.cli.client import ClientError
from panel.cli.domains import checked_url
from panel.models import Deployment, DeploymentStatus, Domain
from panel.reconcile.follow import Outcome

COMMANDS = [
    ["releases"], ["domains"], ["domains", "list"], ["domains", "add"], ["domains", "remove"],
    ["open"], ["run"],
]  # fmt: skip
SHA = "0123456789abcdef0123456789abcdef01234567"
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d"  # how a table shows a time
DEFAULT_URL = "https://web.apps.localhost/"  # web.<HELIOS_BASE_DOMAIN's default>


@pytest.fixture
def helios(settings, tmp_path) -> Helios:
    home = tmp_path / "home"
    home.mkdir()
    return Helios(settings, home)


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", "correct horse battery", team_slug="acme")


@pytest.fixture
def web(owner):
    return create_app(actor=None, team=owner.memberships[0].team, slug="web", image="web:1")


@pytest.fixture
def logged_in(helios, live_panel, owner) -> Helios:
    token = create_token(owner, "laptop", ["admin"])
    result = helios("login", live_panel, stdin=token.secret + "\n")
    assert result.returncode == 0, result.stderr
    return helios


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself(helios, command):
    result = helios(*command, "--help")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command}: help says too little: {summary!r}"


def _finish(requested, status: DeploymentStatus, redis_conn) -> None:
    """The deployment's way through a worker and Nomad, as the actions record it."""
    deployment_id = requested.deployment.id
    assert claim_deployment(deployment_id, redis_conn)
    record_submitted(Deployment.get_by_id(deployment_id), version=deployment_id, eval_id=None,
                     redis_conn=redis_conn)  # fmt: skip
    outcome = Outcome(status, "All healthy." if status == DeploymentStatus.SUCCEEDED else "No.")
    assert finish_deployment(deployment_id, outcome, redis_conn)


def test_releases_mark_the_live_one(logged_in, settings, redis_conn, web):
    helios = logged_in
    empty = helios("releases", "web")
    assert empty.returncode == 0, empty.stderr
    assert "web has no releases yet: `helios deploy web` makes the first." in empty.stdout
    assert json.loads(helios("releases", "web", "--json").stdout) == []

    first = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    _finish(first, DeploymentStatus.SUCCEEDED, redis_conn)
    second = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn,
                            image="registry.local/web:2", git_sha=SHA)  # fmt: skip
    _finish(second, DeploymentStatus.FAILED, redis_conn)  # a later failure: 1 stays live
    back = request_rollback(actor=None, app=web, release_number=1, settings=settings,
                            redis_conn=redis_conn)  # fmt: skip

    answer = helios("releases", "web", "--json")
    assert answer.returncode == 0, answer.stderr
    items = json.loads(answer.stdout)
    shown = [(r["number"], r["live"], r["rollback_of"], r["image"], r["git_sha"]) for r in items]
    assert shown == [
        (3, False, 1, "web:1", ""),
        (2, False, None, "registry.local/web:2", SHA),
        (1, True, None, "web:1", ""),
    ]
    assert items[0]["created_at"].endswith("Z") and "config" in items[0]  # the API's own items

    table = helios("releases", "web", COLUMNS="40").stdout.splitlines()
    assert table[0] == "release\tlive\timage\tgit sha\tcreated\tby"
    assert re.fullmatch(rf"3 \(rollback to 1\)\t\tweb:1\t-\t{WHEN}\tsystem", table[1]), table[1]
    assert re.fullmatch(rf"2\t\tregistry.local/web:2\t{SHA[:12]}\t{WHEN}\tsystem", table[2])
    assert re.fullmatch(rf"1\tlive\tweb:1\t-\t{WHEN}\tsystem", table[3]), table[3]

    _finish(back, DeploymentStatus.SUCCEEDED, redis_conn)  # the rollback is live now
    items = json.loads(helios("releases", "web", "--json").stdout)
    assert [r["number"] for r in items if r["live"]] == [3]
    code, shown = helios.on_terminal("releases", "web", columns=100)
    assert code == 0, shown
    [row] = [line for line in shown.splitlines() if line.startswith("3 (rollback to 1)")]
    assert "live" in row and "web:1" in row


def test_status_shows_the_changes_the_next_deploy_applies(
    logged_in, settings, redis_conn, owner, web
):
    helios = logged_in
    first = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    _finish(first, DeploymentStatus.SUCCEEDED, redis_conn)
    calm = helios("status", "web")
    assert calm.returncode == 0, calm.stderr
    assert "not deployed yet" not in calm.stdout
    assert json.loads(helios("status", "web", "--json").stdout)["pending"]["changes"] == []

    update_app(actor=owner, app=web, count=3)
    answer = helios("status", "web")
    assert answer.returncode == 0, answer.stderr
    assert (
        "  pending  changed since release 1 (live), not deployed yet:\n"
        "           count: 1 → 3\n"
        "           `helios deploy web` applies them\n"
    ) in answer.stdout
    state = json.loads(helios("status", "web", "--json").stdout)
    assert state["pending"] == {"live_release": 1, "changes": ["count: 1 → 3"]}


def test_domains_add_list_and_remove(logged_in, live_panel, owner, web):
    helios = logged_in
    listed = helios("domains", "web")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "url\tdefault\tstate\tsummary\tchecked",
        f"{DEFAULT_URL}\tdefault\tnot checked\t-\t-",
    ]

    added = helios("domains", "add", "web", "Shop.Example.com")
    assert added.returncode == 0, added.stderr
    assert "Added shop.example.com to web: it is routed from the next deploy" in added.stdout
    as_json = helios("domains", "add", "web", "a.example.com", "--json")
    assert json.loads(as_json.stdout)["hostname"] == "a.example.com"
    assert sorted(Domain.select(Domain.hostname).tuples()) == [("a.example.com",),
                                                               ("shop.example.com",)]  # fmt: skip

    taken = helios("domains", "add", "web", "shop.example.com")
    assert taken.returncode == 2
    assert "shop.example.com is already routed to an app" in taken.stderr
    platform = helios("domains", "add", "web", "other.apps.localhost")  # refused by the panel
    assert platform.returncode == 2
    assert "is under the platform domain 'apps.localhost'" in platform.stderr
    not_a_host = helios("domains", "add", "web", "not a host")  # refused before any request
    assert not_a_host.returncode == 2
    assert "use a hostname such as 'app.example.com'" in not_a_host.stderr

    record_domain_states({web.id: [
        {"hostname": "web.apps.localhost", "is_default": True, "state": "ok", "summary": "",
         "dns": {}, "routing": {}, "tls": {}},
        {"hostname": "shop.example.com", "is_default": False, "state": "error",
         "summary": "DNS: shop.example.com does not resolve", "dns": {}, "routing": {},
         "tls": {}},
    ]})  # fmt: skip
    items = json.loads(helios("domains", "--json", "web").stdout)
    assert [(a["url"], a["default"], a["state"]) for a in items] == [
        (DEFAULT_URL, True, "ok"),
        ("https://a.example.com/", False, None),
        ("https://shop.example.com/", False, "error"),
    ]
    assert items[2]["summary"] == "DNS: shop.example.com does not resolve"
    assert items[0]["checked_at"].endswith("Z") and items[1]["checked_at"] is None
    table = helios("domains", "list", "web").stdout.splitlines()
    assert re.fullmatch(rf"{DEFAULT_URL}\tdefault\tok\t-\t{WHEN}", table[1]), table[1]
    assert table[2] == "https://a.example.com/\t\tnot checked\t-\t-"
    assert re.fullmatch(
        rf"https://shop.example.com/\t\terror\tDNS: shop.example.com does not resolve\t{WHEN}",
        table[3],
    ), table[3]

    reader = create_token(owner, "reader", ["read"]).secret  # reads, but may not change
    api = {"HELIOS_URL": live_panel, "HELIOS_TOKEN": reader}
    assert helios("domains", "web", "--json", **api).returncode == 0
    assert helios("domains", "remove", "web", "shop.example.com", **api).returncode == 3

    removed = helios("domains", "remove", "web", "SHOP.example.com")
    assert removed.returncode == 0, removed.stderr
    assert "Removed shop.example.com from web: its route goes with the next deploy" in (
        removed.stdout
    )
    again = helios("domains", "remove", "web", "shop.example.com")
    assert again.returncode == 4
    assert "shop.example.com is not a domain of web" in again.stderr
    assert [a["url"] for a in json.loads(helios("domains", "web", "--json").stdout)] == [
        DEFAULT_URL, "https://a.example.com/",
    ]  # fmt: skip


def test_open_prints_the_urls_and_opens_the_first_when_asked(logged_in, web, tmp_path, monkeypatch):
    helios = logged_in
    for hostname in ("shop.example.com", "a.example.com"):
        add_domain(actor=None, app=web, hostname=hostname, base_domain="apps.localhost")
    # A browser command as webbrowser runs one from $BROWSER: it writes down the URL it got.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "record-url"
    browser.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{opened}'\n")
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))

    printed = helios("open", "web")
    assert printed.returncode == 0, printed.stderr
    urls = [DEFAULT_URL, "https://a.example.com/", "https://shop.example.com/"]
    assert printed.stdout.splitlines() == urls
    code, shown = helios.on_terminal("open", "web", columns=80)  # a terminal opens nothing
    assert code == 0, shown
    assert shown.splitlines() == urls
    assert not opened.exists()

    launched = helios("open", "web", "--browser")
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout.splitlines() == urls
    assert f"Opened {DEFAULT_URL} in a web browser." in launched.stderr
    assert opened.read_text() == DEFAULT_URL + "\n"


@pytest.mark.parametrize(
    "args",
    [["releases", "nope"], ["domains", "nope"], ["domains", "add", "nope", "shop.example.com"],
     ["domains", "remove", "nope", "shop.example.com"], ["open", "nope"]],
    ids=" ".join,
)  # fmt: skip
def test_an_unknown_app_is_exit_4(logged_in, args):
    result = logged_in(*args)
    assert result.returncode == 4, result.stderr
    assert "nope" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["releases", "web"], ["domains", "web"], ["domains", "add", "web", "shop.example.com"],
     ["domains", "remove", "web", "shop.example.com"], ["open", "web", "--browser"]],
    ids=" ".join,
)  # fmt: skip
def test_not_logged_in_is_exit_3(helios, args):
    result = helios(*args)
    assert result.returncode == 3, result.stderr
    assert "not logged in: run `helios login URL`" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["releases", "Not An App"], ["domains", "Not An App"], ["open", "web/../x"],
     ["domains", "add", "web", "*.example.com"], ["domains", "remove", "web", "https://x.io/"]],
    ids=" ".join,
)  # fmt: skip
def test_an_invalid_argument_is_exit_2_before_any_request(helios, args):
    result = helios(*args)  # not logged in either: the argument is refused first
    assert result.returncode == 2, result.stderr
    assert "Invalid value" in result.stderr


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "http://web.apps.localhost/", "https://web.apps.localhost/x",
     "https://user@evil.example/", "https://-web.example.com/", "https://a b.example.com/",
     "https://WEB.example.com/", "--new-window", 7, None],
)  # fmt: skip
def test_only_an_https_address_of_a_valid_hostname_is_printed_or_opened(url):
    with pytest.raises(ClientError) as refused:
        checked_url(url)
    assert refused.value.exit_code == 5
    assert checked_url(DEFAULT_URL) == DEFAULT_URL
