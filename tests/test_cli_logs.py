"""`helios logs` as a real process against a real panel (gunicorn) on real SQLite and Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from datetime import timedelta

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import create_app, request_deploy
from panel.actions.logs import append_app_log, append_log, append_task_events, log_step
from panel.actions.tokens import create_token
from panel.cli.logs import format_line, read_events
from panel.models import AppLog, Build, Deployment, DeploymentStatus, utcnow

from conftest import REPO_ROOT, helios_command, process_env, stop_child, wait_until

PASSWORD = "correct horse battery"
ALLOC_WEB = "1a2b3c4d-0000-4000-8000-000000000001"
ALLOC_WORKER = "5e6f7a8b-0000-4000-8000-000000000002"
BIG = 10_000_000  # bytes a deployment may keep: nothing is pruned here
OPTIONS = ["--follow", "--process", "--stream", "--since", "--deployment", "--build", "--lines"]


class Helios:
    """Runs `helios` as a real process, pointed at a panel by HELIOS_URL and HELIOS_TOKEN."""

    def __init__(self, settings, home, url: str = "", token: str = "") -> None:
        self.env = process_env(settings, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                               HELIOS_URL=url, HELIOS_TOKEN=token)  # fmt: skip
        if not url:
            del self.env["HELIOS_URL"], self.env["HELIOS_TOKEN"]

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(helios_command(*args), capture_output=True, text=True,
                                env=self.env, cwd=REPO_ROOT, timeout=120)  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def start(self, *args: str) -> Following:
        return Following(helios_command(*args), self.env)


class Following:
    """A `helios logs -f` running in the background; its output lines are collected."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count: int, what: str) -> None:
        wait_until(lambda: len(self.lines) >= count or self.proc.poll() is not None,
                   timeout=60, what=what)  # fmt: skip
        assert len(self.lines) >= count, (self.lines, self.proc.stderr.read())


@pytest.fixture
def owner(db):
    return create_user("owner@example.com", PASSWORD, team_slug="acme")


@pytest.fixture
def helios(settings, tmp_path, live_panel, owner) -> Helios:
    home = tmp_path / "home"
    home.mkdir()
    return Helios(settings, home, live_panel, create_token(owner, "cli", ["read"]).secret)


@pytest.fixture
def web(owner, redis_conn):
    return create_app(actor=owner, team=owner.memberships[0].team, slug="web", image="web:1")


@pytest.fixture
def deployment(web, settings, redis_conn) -> Deployment:
    """A deployment whose log holds Helios's steps, task events and two processes' output."""
    deployment = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    deployment = deployment.deployment
    append_task_events(
        web.id, deployment.id, alloc=ALLOC_WEB, process="web", task="web",
        events=[(1, "Started: task started")], redis_conn=redis_conn,
    )  # fmt: skip
    output = [
        (ALLOC_WEB, "web", "stdout", "listening on :8080\nGET / 200\n"),
        (ALLOC_WORKER, "worker", "stderr", "job 1 failed\n"),
    ]
    for alloc, process, stream, text in output:
        append_app_log(
            web.id, deployment.id, alloc=alloc, process=process, task=process, stream=stream,
            text=text, after=0, offset=len(text), max_bytes=BIG, redis_conn=redis_conn,
        )  # fmt: skip
    return deployment


def printed(row: AppLog) -> list[str]:
    """How `helios logs` prints a stored row when piped, written out independently."""
    stamp = row.created_at.isoformat(timespec="seconds") + "Z"
    where = f" {row.process}/{row.alloc[:8]}" if row.alloc else ""
    return [f"{stamp}{where} {row.stream} | {text}" for text in row.text.splitlines()]


def stored(**where) -> list[str]:
    query = AppLog.select().where(AppLog.text != "").order_by(AppLog.seq)
    for name, value in where.items():
        query = query.where(getattr(AppLog, name) == value)
    return [line for row in query for line in printed(row)]


# ---------------------------------------------------------------------------------------------
# Printing stored lines
# ---------------------------------------------------------------------------------------------


def test_help_explains_each_option_with_an_example(settings, tmp_path):
    result = Helios(settings, tmp_path)("logs", "--help")
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout
    options = result.stdout.split("Options:")[1]
    for option in OPTIONS:
        described = options.split(option, 1)[1].split("\n  -", 1)[0]
        assert "Example:" in described, option


def test_prints_the_stored_lines_plainly_when_piped(helios, deployment):
    result = helios("logs", "web")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == stored()
    assert f"web/{ALLOC_WEB[:8]} stdout | GET / 200" in result.stdout
    assert "\x1b[" not in result.stdout
    as_json = [json.loads(line) for line in helios("logs", "web", "--json").stdout.splitlines()]
    assert [line["text"] for line in as_json][-1] == "job 1 failed\n"


def test_filters_and_the_newest_lines(helios, deployment):
    worker = helios("logs", "web", "--process", "worker", "--stream", "stderr")
    assert worker.stdout.splitlines() == stored(process="worker")
    nomad = helios("logs", "web", "--stream", "nomad", "--stream", "stdout", "--since", "1h")
    assert nomad.stdout.splitlines() == stored(stream="nomad") + stored(stream="stdout")
    assert helios("logs", "web", "-n", "1").stdout.splitlines() == stored()[-1:]
    AppLog.update(created_at=utcnow() - timedelta(hours=2)).execute()
    assert helios("logs", "web", "--since", "1h").stdout == ""


def test_bad_options_fail_with_what_to_write(helios, deployment):
    bogus = helios("logs", "web", "--since", "bogus")
    assert bogus.returncode == 2
    assert "since must be a number and a unit: 30s, 10m, 2h or 7d" in bogus.stderr
    stream = helios("logs", "web", "--stream", "stdin")
    assert stream.returncode == 2
    assert "stream must be one of helios, nomad, stdout, stderr" in stream.stderr
    both = helios("logs", "web", "--deployment", "1", "--build", "1")
    assert both.returncode == 2 and "not both" in both.stderr
    missing = helios("logs", "web", "--deployment", str(deployment.id + 1))
    assert missing.returncode == 4
    assert f"web has no deployment #{deployment.id + 1}" in missing.stderr


def test_another_teams_app_is_not_found(settings, tmp_path, live_panel, deployment):
    other = create_user("other@example.com", PASSWORD, team_slug="rival")
    stranger = Helios(settings, tmp_path, live_panel, create_token(other, "x", ["read"]).secret)
    for follow in ([], ["-f"]):
        result = stranger("logs", "web", *follow)
        assert result.returncode == 4
        assert "no app named 'web' in your teams" in result.stderr
        assert "job 1 failed" not in result.stdout


# ---------------------------------------------------------------------------------------------
# Following
# ---------------------------------------------------------------------------------------------


def test_following_a_finished_deployment_exits_0_at_its_end(helios, web, deployment, settings,
                                                            redis_conn):  # fmt: skip
    later = request_deploy(actor=None, app=web, settings=settings, redis_conn=redis_conn)
    log_step(later.deployment, "a worker started the deployment", redis_conn)
    status = DeploymentStatus.SUPERSEDED.value
    Deployment.update(status=status).where(Deployment.id == deployment.id).execute()
    result = helios("logs", "web", "--deployment", str(deployment.id), "-f")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == stored(deployment=deployment.id)
    assert "a worker started" not in result.stdout


def test_a_builds_log_prints_as_it_is(helios, web):
    finished = utcnow() - timedelta(hours=1)  # long enough ago: its log is complete
    build = Build.create(app=web, number=1, git_sha="a" * 40, branch="main", status="failed",
                         finished_at=finished)  # fmt: skip
    output = [("fetch", "stdout", "Cloning into '.'...\n"),
              ("fetch", "stderr", "fatal: no such ref\nhint: push it\n")]  # fmt: skip
    for task, stream, text in output:
        append_log(build.id, task, stream, text, after=0, offset=len(text), max_bytes=BIG)
    expected = ["Cloning into '.'...", "fatal: no such ref", "hint: push it"]
    for follow in ([], ["-f"]):
        result = helios("logs", "web", "--build", "1", *follow)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == expected
    filtered = helios("logs", "web", "--build", "1", "--stream", "stderr")
    assert filtered.returncode == 2 and "not a build's" in filtered.stderr


@pytest.mark.parametrize("panel_env", [{"HELIOS_STREAM_LIFETIME": "1"}])
def test_following_reconnects_without_losing_or_repeating_a_line(helios, deployment, redis_conn):
    """The panel closes each stream after a second: a line stored without being published
    reaches the command only through a reconnection, which must resume after the last line."""
    follower = helios.start("logs", "web", "-f")
    try:
        follower.wait_for(len(stored()), "the stored lines")
        log_step(deployment, "published: live", redis_conn)
        follower.wait_for(len(stored()), "the published line")
        log_step(deployment, "not published: read after reconnecting", None)
        follower.wait_for(len(stored()), "the line read after reconnecting")
        log_step(deployment, "published again", redis_conn)
        follower.wait_for(len(stored()), "the last line")
        follower.proc.send_signal(signal.SIGINT)
        assert follower.proc.wait(timeout=30) == 130
        follower.reader.join(timeout=10)
        assert follower.lines == stored()
        assert "Traceback" not in follower.proc.stderr.read()
    finally:
        stop_child(follower.proc)


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------


def test_read_events_takes_events_however_the_bytes_are_cut():
    wire = (b"retry: 2000\n\n: keep-alive\n\nid: 7\nevent: log\ndata: {\"text\": \"a\"}\n\n"
            b"event: end\r\ndata: {}\r\n\r\n")  # fmt: skip
    for size in (1, 2, 5, len(wire)):
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        events = list(read_events(chunks))
        assert [(e.event, e.id, e.retry) for e in events] == [
            ("message", None, 2000), ("log", "7", None), ("end", None, None),
        ]  # fmt: skip
        assert events[1].json() == {"text": "a"}


def test_format_line_prefixes_each_line_of_a_row():
    row = {"time": "2026-12-06T05:00:01Z", "process": "web", "alloc": ALLOC_WEB,
           "stream": "stderr", "text": "one\ntwo\n"}  # fmt: skip
    assert format_line(row, build=False) == [
        "2026-12-06T05:00:01Z web/1a2b3c4d stderr | one",
        "2026-12-06T05:00:01Z web/1a2b3c4d stderr | two",
    ]
    step = {**row, "process": "", "alloc": "", "stream": "helios", "text": "queued\n"}
    assert format_line(step, build=False) == ["2026-12-06T05:00:01Z helios | queued"]
    assert format_line({"text": "STEP 1/2\n"}, build=True) == ["STEP 1/2"]
    colored = format_line(row, build=False, color=True)[0]
    assert "\x1b[" in colored and colored.endswith("| one")
