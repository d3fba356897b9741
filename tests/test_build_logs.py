"""Build logs against the Nomad double: a build's output is collected while it runs, scrubbed of
the registry password and the git token before it is stored, and served (SSE, resumable by
Last-Event-ID; text download; the build page); the cap truncates; a follower restarted
mid-build resumes without losing or repeating a line."""

from __future__ import annotations

import base64
import json

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app
from panel.actions.builds import request_build
from panel.actions.logs import append_log, split_text
from panel.config import Settings
from panel.crypto import SecretCipher
from panel.models import App, Build, BuildStatus, LogChunk, Team, User

from conftest import wait_until
from github_double import GitHubDouble, Repo
from nomad_double.batch import TaskScript, build_digest

PASSWORD = "registry-password-123"
TOKEN = "gho_" + "t" * 36
USER_PASSWORD = "correct horse battery"
REPO_ID = 4343
SHA = "a" * 40
JOB = "shop-build-1"
DIGEST_LINE = f"helios-build-digest {build_digest(JOB, SHA)}"
SECRETS = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), TOKEN]
PASSWORD_LABEL = "[secret HELIOS_REGISTRY_PASSWORD]"
TOKEN_LABEL = "[secret GIT_TOKEN]"


@pytest.fixture
def github():
    files = {(SHA, "Dockerfile"): "FROM scratch\n"}
    double = GitHubDouble(TOKEN, [Repo(id=REPO_ID, full_name="acme/shop", private=True,
                                       files=files)]).start()  # fmt: skip
    yield double
    double.stop()
    assert not double.problems, double.problems


@pytest.fixture
def build_env(deploy_env, github, monkeypatch, nomad_build_node):
    monkeypatch.setenv("HELIOS_REGISTRY", "registry.test:5000")
    monkeypatch.setenv("HELIOS_REGISTRY_USERNAME", "builder")
    monkeypatch.setenv("HELIOS_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("HELIOS_GITHUB_API_URL", github.url)
    monkeypatch.setenv("HELIOS_BUILD_TIMEOUT", "60")


@pytest.fixture
def shop(build_env, db, redis_conn) -> App:
    owner = create_user("owner@example.com", USER_PASSWORD, team_slug="acme")
    cipher = SecretCipher.from_settings(Settings.from_env())
    User.update(github_token=cipher.encrypt(TOKEN)).where(User.id == owner.id).execute()
    app = create_app(
        actor=owner, team=Team.get(Team.slug == "acme"), slug="shop", repo="acme/shop",
        branch="main", redis_conn=redis_conn,
    )  # fmt: skip
    App.update(github_repo_id=REPO_ID, connected_by=owner).where(App.id == app.id).execute()
    return App.get_by_id(app.id)


def run_build(app: App, redis_conn) -> Build:
    from panel.reconcile.builds import build_app

    build = request_build(
        actor=None, app=app, settings=Settings.from_env(), redis_conn=redis_conn, git_sha=SHA,
        reason="push", by="github",
    ).build  # fmt: skip
    assert build_app(build.id) == "registered"
    return build


def log_complete(build_id: int, timeout: float = 30.0) -> list[LogChunk]:
    """The build's rows once it ended and every stream of it ended (4 final rows), in order."""
    wait_until(
        lambda: BuildStatus(Build.get_by_id(build_id).status).is_terminal,
        timeout=timeout, what=f"build #{build_id} to end",
    )  # fmt: skip
    wait_until(
        lambda: LogChunk.select().where((LogChunk.build == build_id) & LogChunk.final).count()
        == 4,
        timeout=timeout, what="the build's four log streams to end",
    )  # fmt: skip
    return list(LogChunk.select().where(LogChunk.build == build_id).order_by(LogChunk.seq))


def lines_of(rows: list[LogChunk], task: str, stream: str) -> list[str]:
    text = "".join(r.text for r in rows if (r.task, r.stream) == (task, stream))
    return text.splitlines()


def frames(body: str) -> list[tuple[str | None, str, dict]]:
    """(id, event, data) of each SSE frame with data."""
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            found.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return found


SCRIPT = {
    "fetch": TaskScript(
        stdout=["Cloning into '.'...", f"remote: https://x-access-token:{TOKEN}@github.com/acme"],
        stderr=["warning: detached HEAD"],
        steps=2,
    ),
    "build": TaskScript(
        stdout=[
            "STEP 1/2: FROM scratch",
            f"login builder {PASSWORD}",
            f"auth {SECRETS[1]}",
            "STEP 2/2: COPY . /app",
            "COMMIT",
            DIGEST_LINE,
        ],
        stderr=[f"token={TOKEN} in the environment", "done"],
        steps=4,
    ),
}
EXPECTED = {
    ("fetch", "stdout"): [
        "Cloning into '.'...",
        f"remote: https://x-access-token:{TOKEN_LABEL}@github.com/acme",
    ],
    ("fetch", "stderr"): ["warning: detached HEAD"],
    ("build", "stdout"): [
        "STEP 1/2: FROM scratch",
        f"login builder {PASSWORD_LABEL}",
        f"auth {PASSWORD_LABEL}",
        "STEP 2/2: COPY . /app",
        "COMMIT",
        DIGEST_LINE,
    ],
    ("build", "stderr"): [f"token={TOKEN_LABEL} in the environment", "done"],
}


def test_a_build_log_is_stored_scrubbed_in_order_and_served_without_a_secret(
    shop, redis_conn, nomad_double, nomad_clock, run_follower, client, auth
):
    nomad_double.set_batch_script(SCRIPT, kind="build")
    run_follower()
    build = run_build(shop, redis_conn)
    rows = log_complete(build.id)
    assert Build.get_by_id(build.id).status == "succeeded"
    for (task, stream), expected in EXPECTED.items():
        assert lines_of(rows, task, stream) == expected, (task, stream)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    stored = "".join(r.text for r in rows)
    assert all(stored.count(secret) == 0 for secret in SECRETS)

    auth.login("owner@example.com", USER_PASSWORD)
    text = client.get("/apps/shop/builds/1/log.txt")
    assert text.status_code == 200 and text.mimetype == "text/plain"
    assert text.get_data(as_text=True) == stored
    page = client.get("/apps/shop/builds/1").get_data(as_text=True)
    assert "login builder [secret HELIOS_REGISTRY_PASSWORD]" in page
    assert 'href="/apps/shop/builds/1/log.txt"' in page
    body = client.get("/apps/shop/builds/1/log").get_data(as_text=True)
    sent = frames(body)
    assert sent[-1][1] == "end"
    logs = [(int(i), data) for i, event, data in sent if event == "log"]
    assert [i for i, _ in logs] == [r.seq for r in rows if r.text]
    assert "".join(data["text"] for _, data in logs) == stored
    for where in (text.get_data(as_text=True), page, body):
        assert all(where.count(secret) == 0 for secret in SECRETS)


def test_the_log_stream_resumes_exactly_after_last_event_id(
    shop, redis_conn, nomad_double, nomad_clock, run_follower, client, auth
):
    nomad_double.set_batch_script(SCRIPT, kind="build")
    run_follower()
    build = run_build(shop, redis_conn)
    rows = [r for r in log_complete(build.id) if r.text]
    auth.login("owner@example.com", USER_PASSWORD)
    for cut in range(len(rows) + 1):
        after = rows[cut - 1].seq if cut else 0
        header = client.get("/apps/shop/builds/1/log", headers={"Last-Event-ID": str(after)})
        query = client.get(f"/apps/shop/builds/1/log?after={after}")
        for response in (header, query):
            sent = frames(response.get_data(as_text=True))
            seqs = [int(i) for i, event, _ in sent if event == "log"]
            assert seqs == [r.seq for r in rows[cut:]]
            assert sent[-1][1] == "end"
    assert client.get("/apps/shop/builds/1/log?after=x").status_code == 400


def test_the_cap_truncates_the_log_and_nothing_follows(
    shop, redis_conn, nomad_double, nomad_clock, run_follower, monkeypatch
):
    monkeypatch.setenv("HELIOS_LOG_MAX_BYTES", "16384")
    many = [f"line {i:05d} " + "x" * 90 for i in range(400)]  # 40 KB
    nomad_double.set_batch_script(
        {"fetch": TaskScript(), "build": TaskScript(stdout=[*many, DIGEST_LINE], steps=4)},
        kind="build",
    )
    run_follower()
    build = run_build(shop, redis_conn)
    rows = log_complete(build.id)
    text = "".join(r.text for r in rows)
    assert text.endswith("log truncated at 16384 bytes\n")
    assert text.count("log truncated") == 1
    kept = text.splitlines()[:-1]
    assert kept == many[: len(kept)] and kept  # a prefix, in order
    assert len(text.encode()) <= 16384 + len("log truncated at 16384 bytes\n")


def test_a_follower_restarted_mid_build_resumes_without_duplicates(
    shop, redis_conn, nomad_double, nomad_clock, run_follower
):
    lines = [f"step {i:03d}" for i in range(80)]
    nomad_double.set_batch_script(
        {"fetch": TaskScript(), "build": TaskScript(stdout=[*lines, DIGEST_LINE], steps=80)},
        kind="build",
    )
    nomad_double.auto_advance = False
    nomad_clock(0.2)  # 5 lines a second
    first = run_follower()
    build = run_build(shop, redis_conn)

    def stored_lines() -> list[str]:
        rows = LogChunk.select().where(LogChunk.build == build.id).order_by(LogChunk.seq)
        return lines_of(list(rows), "build", "stdout")

    wait_until(lambda: len(stored_lines()) >= 10, what="some lines stored")
    first.stop()
    first.follower.builds.logs.join(timeout=10)
    before = stored_lines()
    assert len(before) < len(lines)  # stopped mid-build
    more = min(len(before) + 10, len(lines) + 1)
    wait_until(lambda: written(nomad_double) >= more, what="the build to write on")
    run_follower()
    rows = log_complete(build.id, timeout=60)
    assert lines_of(rows, "build", "stdout") == [*lines, DIGEST_LINE]
    assert lines_of(rows, "build", "stdout")[: len(before)] == before


def test_broken_log_connections_resume_from_the_stored_offset(
    shop, redis_conn, nomad_double, nomad_clock, run_follower
):
    """Each open log connection is cut several times mid-build: every line is stored once, in
    order."""
    lines = [f"line {i:03d}" for i in range(60)]
    nomad_double.set_batch_script(
        {"fetch": TaskScript(), "build": TaskScript(stdout=[*lines, DIGEST_LINE], steps=60)},
        kind="build",
    )
    nomad_double.auto_advance = False
    nomad_clock(0.1)
    follower = run_follower()
    build = run_build(shop, redis_conn)
    collectors = follower.follower.builds.logs
    for cut in (5, 20, 35):
        wait_until(lambda n=cut: written(nomad_double) >= n, what=f"{cut} lines written")
        wait_until(lambda: collectors.open, what="an open log connection")
        with collectors.lock:
            open_now = list(collectors.open)
        for stream in open_now:
            stream.close()
    rows = log_complete(build.id, timeout=60)
    assert lines_of(rows, "build", "stdout") == [*lines, DIGEST_LINE]
    opened = nomad_double.requests_to("GET", r"/v1/client/fs/logs/.+")
    assert len(opened) >= 4 + 3  # each stream once, and again after each cut at least


def written(double) -> int:
    """Lines the build task wrote to stdout so far (read under the double's lock)."""
    with double.cluster.lock:
        runs = [a.get("_run") for a in double.cluster.allocs.values() if a.get("_run")]
        return max((run.written.get("build", {}).get("stdout", 0) for run in runs), default=0)


def test_two_collectors_never_store_a_stretch_twice(db):
    """Check-and-set on the stream's offset: the second writer of bytes 0..10 stores nothing."""
    team = Team.create(slug="acme", name="Acme")
    app = App.create(team=team, slug="shop", repo="acme/shop")
    build = Build.create(app=app, number=1, git_sha=SHA, branch="main")
    first = append_log(build.id, "build", "stdout", "one\n", after=0, offset=10,
                       max_bytes=1_000_000)  # fmt: skip
    second = append_log(build.id, "build", "stdout", "one\n", after=0, offset=10,
                        max_bytes=1_000_000)  # fmt: skip
    assert first.seqs == (1,) and second.conflict and not second.seqs
    assert LogChunk.select().count() == 1


def test_split_text_keeps_characters_and_lines_whole():
    text = "é" * 5_000 + "\n" + "a" * 20_000 + "é" * 10_000
    pieces = split_text(text, limit=16_384)
    assert "".join(pieces) == text
    assert all(len(piece.encode()) <= 16_384 for piece in pieces)
    assert pieces[0].endswith("\n")


@pytest.mark.browser
def test_the_build_page_shows_log_lines_as_they_arrive(
    shop, redis_conn, nomad_double, run_follower, live_panel, page, artifacts
):
    """Headless Chromium: the clock stands still until the page loaded, so every line the page
    shows afterwards came over its live log stream (without a reload)."""
    from playwright.sync_api import expect

    from nomad_double.controls import Ticker

    nomad_double.set_batch_script(SCRIPT, kind="build")
    nomad_double.auto_advance = False  # the clock moves with the ticker below only
    run_follower()
    build = run_build(shop, redis_conn)
    page.goto(f"{live_panel}/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(USER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_panel}/")
    page.goto(f"{live_panel}/apps/shop/builds/{build.number}")
    log = page.locator(".build-log pre")
    expect(log).to_have_text("")
    page.evaluate("window.helios_loaded_once = true")  # gone if the page reloads
    ticker = Ticker(0.05, nomad_double.cluster.step)
    ticker.start()
    try:
        expect(log).to_contain_text("Cloning into '.'...", timeout=30_000)
        expect(log).to_contain_text(f"login builder {PASSWORD_LABEL}", timeout=30_000)
        expect(log).to_contain_text(DIGEST_LINE, timeout=30_000)
        expect(log).to_contain_text(f"token={TOKEN_LABEL} in the environment", timeout=30_000)
        log_complete(build.id)
    finally:
        ticker.stop()
    page.screenshot(path=str(artifacts / "build-log.png"), full_page=True)
    assert page.evaluate("window.helios_loaded_once") is True
    shown = log.inner_text()
    for expected in EXPECTED.values():
        assert all(shown.count(line) == 1 for line in expected)  # each line once
    html = page.content()
    assert all(html.count(secret) == 0 for secret in SECRETS)
