"""The kill campaign shared by tests/test_deploy_kill.py and benchmarks/kill_recovery.py.

A :class:`Stage` is a world of its own: a private redis-server (SIGKILLable, restarted empty on
the same port), the Nomad double with a clock, a fresh SQLite database, and real
`helios worker` / `helios follower` processes, each started as the leader of a session and
process group of its own. Every job is stopped at a kill point before anything is killed:

- deploy_app: the double holds one request of the app's job (``hold``), so its work horse
  waits exactly there; or, for ``waiting-for-lock``, the horse waits for the app's lock, held
  by the previous run of the app (itself held before its plan);
- plan/apply runs: a real ansible-playbook (connection local) whose tasks write a mark and
  then sleep, or a HELIOS_PROVISION_VARS that is a FIFO nobody writes, so the horse blocks in
  ``open()`` while reading it (workspace open, no key written yet).

Kill kinds: ``horse`` SIGKILLs the process that runs the job (RQ's work horse, found through
RQ's worker registry and checked in /proc); ``group`` SIGKILLs the worker's whole process
group, then starts fresh workers; ``redis`` SIGKILLs redis-server with deploys in flight and
queued and restarts it empty. Afterwards every deployment and run must end, each deployment
with exactly one Nomad job version carrying its ``helios.deployment`` meta, and no process of
a killed tree may survive. Recovery time is kill → terminal, per point.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from provision_harness import SSH_HOST_KEY, SSH_KEY
from rq import Worker

from conftest import REPO_ROOT, stop_child

RECOVERY_TIMEOUT = 45.0  # seconds from the kill for all to end (about 6 to 16 s are needed)
ARM_TIMEOUT = 60.0  # seconds for the jobs to reach their kill points
# Seconds the double holds a request at a kill point before letting it go by itself (a safety
# valve: the round releases every gate after its kill). It must outlast the whole arm phase:
# the deploys are held first, then the provisioning runs are armed (ansible-playbook starts),
# then each held deploy's horse is looked up. On a loaded machine that took over 120 s, the
# first deploy's gate let it go, it ran to its end, and the round waited for a horse that no
# longer existed ("timed out … waiting for the work horse of RQ job deploy-1", job finished).
HOLD_TIMEOUT = 600.0
GONE_TIMEOUT = 15.0  # seconds for every process of a killed tree to be gone
REDIS_OUTAGE = 1.0  # seconds redis-server stays down before it is restarted empty
STOPPED_RUN = "the worker running it stopped (crashed or killed) at "
# Each task writes its shell's pid (the sleep's, after exec) to a mark, then sleeps: long on
# the host whose helios_test_stop_at names it, not at all on the others.
PLAYBOOK = """---
- name: Kill points
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: First task
      ansible.builtin.shell: >-
        echo $$ > {{ helios_test_marks }}/{{ inventory_hostname }}-1 &&
        exec sleep {{ 600 if helios_test_stop_at == 1 else 0 }}
      check_mode: false
    - name: Second task
      ansible.builtin.shell: >-
        echo $$ > {{ helios_test_marks }}/{{ inventory_hostname }}-2 &&
        exec sleep {{ 600 if helios_test_stop_at == 2 else 0 }}
      check_mode: false
"""


class CampaignError(AssertionError):
    """The campaign could not set a kill point up, or a check failed."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; CampaignError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise CampaignError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Kill points
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """Where a job is stopped before the kill."""

    name: str
    job: str  # "deploy" or "provision"
    what: str
    gate: tuple[str, str, str] | None = None  # deploy: (method, path with {app}, when)


POINTS = (
    Point("before-versions", "deploy", "claimed, app lock held, nothing asked of Nomad yet",
          ("GET", "/v1/job/{app}/versions", "before")),
    Point("after-plan", "deploy", "Nomad planned the job; nothing written",
          ("POST", "/v1/job/{app}/plan", "after")),
    Point("before-variable-write", "deploy", "secrets write in flight, applied after the kill",
          ("PUT", "/v1/var/nomad/jobs/{app}", "before")),
    Point("after-variable-write", "deploy", "secrets written; the register is never sent",
          ("PUT", "/v1/var/nomad/jobs/{app}", "after")),
    Point("before-register", "deploy", "register in flight: Nomad stores it after the kill",
          ("POST", "/v1/job/{app}", "before")),
    Point("after-register", "deploy", "Nomad stored the version; the job never recorded it",
          ("POST", "/v1/job/{app}", "after")),
    Point("waiting-for-lock", "deploy", "waiting for the app's lock, held by the previous run"),
    Point("provision-preparing", "provision", "workspace open, reading its vars; no key yet"),
    Point("provision-first-task", "provision", "ansible-playbook in its first task"),
    Point("provision-second-task", "provision", "first task's result stored; second running"),
)  # fmt: skip
POINT_NAMES = tuple(point.name for point in POINTS)
# Deploys in flight (held at these points) when Redis is killed; as many more wait queued.
REDIS_IN_FLIGHT = ("after-plan", "before-register", "after-register")
REDIS_QUEUED = 3
HOLDER_GATE = ("POST", "/v1/job/{app}/plan", "before")  # the lock holder of waiting-for-lock


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def settings_names() -> set[str]:
    from panel.config import SETTINGS_DOC

    return {spec[0] for spec in SETTINGS_DOC}


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (zombies count as gone: they run nothing)."""
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def describe(procs: list[psutil.Process]) -> str:
    parts = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            parts.append(f"{proc.pid} ({' '.join(proc.cmdline())[:80]})")
    return ", ".join(parts) or "none"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _parents(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).parents()
    return []


def wchan(pid: int) -> str:
    """Where in the kernel a process sleeps ('' when unknown)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return ""


class RedisServer:
    """A real redis-server on a free port, without persistence: a restart starts it empty."""

    def __init__(self, workdir: Path) -> None:
        from panel.run.redis_server import find_redis_server, stop_with_parent

        self._die_with_us = stop_with_parent

        self.binary = find_redis_server()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers; it holds nothing."""
        self.starts += 1
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir),
            "--logfile", str(self.workdir / f"redis-{self.starts}.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     preexec_fn=self._die_with_us)  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise CampaignError(f"redis-server exited with {self.proc.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 15, "redis-server to answer PING")
        if client.dbsize():
            raise CampaignError("a restarted redis-server was not empty")
        client.close()

    def kill(self) -> None:
        """SIGKILL it, as the OOM killer would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Helios:
    """A `helios worker` or `helios follower` this stage started."""

    role: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


@dataclass
class Subject:
    """One deployment or provisioning run of a kill point, and what is expected of it."""

    point: str
    kind: str  # "deployment" or "run"
    id: int
    killed: bool = True  # its job was killed: a deployment must have needed another attempt
    must_succeed: bool = True  # a deployment must succeed (else: end, however)
    ended_at: float | None = None


@dataclass
class PointResult:
    """What one kill point gave in one round."""

    point: str
    recovery: float | None = None  # seconds from the kill to its last subject's end
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and self.recovery is not None


class Stage:
    """Redis, the Nomad double, a database and Helios processes for one round."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.helios: list[Helios] = []
        self._stack = contextlib.ExitStack()
        self._environ: dict[str, str | None] = {}

    # -- setting up and tearing down ---------------------------------------------------------

    def __enter__(self) -> Stage:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        from panel.config import Settings
        from panel.crypto import SecretCipher
        from panel.db import migrate_up, open_database
        from panel.models import Team

        from nomad_double import run_nomad_double
        from nomad_double.controls import Ticker

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.workdir / "redis")
        self._stack.callback(self.redis.stop)
        self.redis.start()
        self.double = self._stack.enter_context(run_nomad_double())
        self.double.heartbeat_interval = 0.2  # event stream heartbeats (Nomad: 30 s)
        clock = Ticker(0.05, self.double.cluster.step)
        clock.start()
        self._stack.callback(clock.stop)
        data_dir = self.workdir / "var"
        self.env = {
            "HELIOS_DATA_DIR": str(data_dir),
            "HELIOS_DATABASE_URL": f"sqlite:///{data_dir / 'helios.db'}",
            "HELIOS_REDIS_URL": self.redis.url,
            "NOMAD_ADDR": self.double.url,
            "HELIOS_DEPLOY_LOCK_TTL": "2",  # the least allowed: a dead holder's lock goes in 2 s
            "HELIOS_DEPLOY_TIMEOUT": "60",
            "HELIOS_DEPLOY_RETRY_DELAYS": "1,1,1,1,1",
            "HELIOS_FOLLOW_STALL_TIMEOUT": "2",
            "HELIOS_LOG_LEVEL": "info",
            "HELIOS_DOMAIN_CHECK_INTERVAL": "0",  # no domain checks beside the kills
        }
        for name in [n for n in os.environ if n.startswith("NOMAD_") or n in settings_names()]:
            self._environ.setdefault(name, os.environ.pop(name))
        for name, value in self.env.items():
            self._environ.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        self.settings = Settings.from_env()
        self.cipher = SecretCipher.from_settings(self.settings)
        self.db = open_database(self.settings.effective_database_url)
        migrate_up()
        self.db.connect(reuse_if_open=True)
        self.conn = redis.Redis.from_url(self.redis.url)
        self.team = Team.create(slug="kill", name="Kill campaign")

    def close(self) -> list[str]:
        """Stop everything; what was wrong at the end (survivors, Nomad API violations)."""
        problems = []
        procs = [proc for helios in self.helios for proc in tree(helios.pid)]
        for helios in self.helios:  # all at once: an idle worker takes up to 5 s to stop
            if helios.proc.poll() is None:
                helios.proc.terminate()
        for helios in self.helios:
            stop_child(helios.proc)
        survivors = alive(procs)
        if survivors:
            _, still = psutil.wait_procs(survivors, timeout=10)
            if still:
                problems.append(f"outlived their stopped parents: {describe(still)}")
                for proc in still:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            if not self.db.is_closed():
                self.db.close()
        self._stack.close()
        if getattr(self, "double", None) is not None and self.double.violations:
            problems.append("Nomad API violations:\n" + "\n".join(self.double.violations))
        for name, value in self._environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._environ.clear()
        return problems

    # -- processes ----------------------------------------------------------------------------

    def start(self, role: str, **extra: str) -> Helios:
        """Start `helios <role>` as the leader of a new session (and process group); it gets
        SIGTERM if this process dies, so an interrupted test leaves nothing running."""
        from panel.run.redis_server import stop_with_parent

        names = settings_names()
        env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("NOMAD_")}
        env.update(self.env, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", **extra)
        log = self.workdir / f"{role}-{len(self.helios)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "panel", role], env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                start_new_session=True, preexec_fn=stop_with_parent,
            )  # fmt: skip
        helios = Helios(role, proc, log, extra)
        self.helios.append(helios)
        return helios

    def start_workers(self, count: int, **extra: str) -> list[Helios]:
        """Start workers and wait until RQ lists each (it then takes jobs)."""
        workers = [self.start("worker", **extra) for _ in range(count)]
        self.wait_registered(workers)
        return workers

    def wait_registered(self, workers: list[Helios]) -> None:
        def registered() -> bool:
            for worker in workers:
                if worker.proc.poll() is not None:
                    raise CampaignError(
                        f"worker {worker.pid} exited with {worker.proc.returncode}:\n"
                        f"{worker.log_tail()}"
                    )
            pids = {w.pid for w in Worker.all(connection=self.conn)}
            return all(worker.pid in pids for worker in workers)

        wait_for(registered, ARM_TIMEOUT, f"{len(workers)} worker(s) to register", 0.1)

    def running(self) -> dict[str, int]:
        """RQ job id → pid of the worker running it, from RQ's worker registry."""
        found = {}
        for worker in Worker.all(connection=self.conn):
            job_id = worker.get_current_job_id()
            if job_id and worker.pid:
                found[job_id] = worker.pid
        return found

    def worker(self, pid: int) -> Helios:
        return next(h for h in self.helios if h.pid == pid)

    def horse_of(self, job_id: str) -> tuple[Helios, int]:
        """The worker running an RQ job and its work horse (the child running the job)."""

        def find() -> tuple[Helios, int] | None:
            pid = self.running().get(job_id)
            if pid is None:
                return None
            for child in psutil.Process(pid).children():
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    # RQ forks the horse into a process group of its own; the scheduler stays
                    # in the worker's.
                    if os.getpgid(child.pid) == child.pid and child.ppid() == pid:
                        return self.worker(pid), child.pid
            return None

        try:
            return wait_for(find, ARM_TIMEOUT, f"the work horse of RQ job {job_id}")
        except CampaignError as exc:
            raise CampaignError(f"{exc}\n{self._whereabouts(job_id)}") from None

    def _whereabouts(self, job_id: str) -> str:
        """What RQ and the process table say about a job a wait could not find running."""
        from rq.job import Job

        lines = [f"RQ workers' current jobs: {self.running()}"]
        try:
            job = Job.fetch(job_id, connection=self.conn)
            lines.append(f"job {job_id}: {job.get_status()}, worker {job.worker_name!r}")
        except Exception as exc:  # a report: say what failed and go on
            lines.append(f"job {job_id}: {exc!r}")
        for helios in self.helios:
            with contextlib.suppress(psutil.Error):
                children = [
                    (c.pid, os.getpgid(c.pid), c.status())
                    for c in psutil.Process(helios.pid).children()
                ]
                lines.append(f"{helios.role} {helios.pid}: children (pid, pgid, state) {children}")
        return "\n".join(lines)

    def nomad_connected(self, pid: int) -> bool:
        """Whether a process has a TCP connection open to the Nomad double."""
        port = int(self.double.url.rsplit(":", 1)[1])
        with contextlib.suppress(psutil.Error):
            return any(
                c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                for c in psutil.Process(pid).net_connections(kind="tcp")
            )
        return False

    # -- rows ----------------------------------------------------------------------------------

    def create_app(self, slug: str):
        from panel.actions.apps import create_app, set_env

        app = create_app(actor=None, team=self.team, slug=slug, image=f"registry.local/{slug}:1")
        # A secret, so every deploy writes the app's Nomad variable.
        set_env(actor=None, app=app, key="TOKEN", value=f"token-of-{slug}", secret=True,
                cipher=self.cipher)  # fmt: skip
        return app

    def deploy(self, app) -> int:
        from panel.actions.apps import request_deploy

        requested = request_deploy(
            actor=None, app=app, settings=self.settings, redis_conn=self.conn
        )
        if not requested.enqueued:
            raise CampaignError(f"deployment #{requested.deployment.id} was not queued")
        return requested.deployment.id

    def status(self, subject: Subject) -> str:
        from panel.models import Deployment, ProvisionRun

        model = Deployment if subject.kind == "deployment" else ProvisionRun
        return model.get_by_id(subject.id).status

    def provision_site(self) -> None:
        """A playbooks dir whose site.yml stops where told, its vars (and a FIFO in their
        place), hosts n1 (stops in task 1), n2 (task 2), n3 (never), keys pinned."""
        from panel.actions.hosts import add_host

        self.playbooks = self.workdir / "playbooks"
        self.playbooks.mkdir()
        (self.playbooks / "site.yml").write_text(PLAYBOOK)
        self.marks = self.workdir / "marks"
        self.marks.mkdir()
        self.vars = self.workdir / "provision.yml"
        self.vars.write_text(json.dumps({
            "vars": {"ansible_python_interpreter": sys.executable,
                     "helios_test_marks": str(self.marks)},
            "hosts": {"n1": {"helios_test_stop_at": 1}, "n2": {"helios_test_stop_at": 2},
                      "n3": {"helios_test_stop_at": 0}},
        }))  # fmt: skip
        self.fifo = self.workdir / "fifo-vars.yml"
        os.mkfifo(self.fifo)
        self.hosts = {
            name: add_host(actor=None, name=name, address="127.0.0.1", groups=["nomad_clients"],
                           ssh_private_key=SSH_KEY, ssh_host_keys=SSH_HOST_KEY, cipher=self.cipher)
            for name in ("n1", "n2", "n3")
        }  # fmt: skip

    def request_run(self, host: str) -> int:
        """Request an apply over one host; the run's id."""
        from panel.actions.hosts import request_provision

        return request_provision(
            actor=None, kind="apply", settings=self.settings, redis_conn=self.conn,
            host_ids=[self.hosts[host].id],
        ).id  # fmt: skip

    def versions_of(self, deployment_id: int, slug: str) -> int:
        """How many Nomad job versions carry this deployment's meta."""
        with self.double.cluster.lock:
            versions = self.double.cluster.jobs.get(("default", slug)) or []
            metas = [(v.get("Meta") or {}).get("helios.deployment") for v in versions]
        return metas.count(str(deployment_id))


# ---------------------------------------------------------------------------------------------
# Rounds: set the points up, kill, wait for the recovery, check
# ---------------------------------------------------------------------------------------------


def slug_of(point: str) -> str:
    return f"k-{point}"


@dataclass
class Armed:
    """A job stopped at its kill point: what to kill, and what to let go after the kill."""

    point: str
    subjects: list[Subject]
    job_id: str | None = None
    worker: Helios | None = None
    horse: int | None = None
    gates: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # seen while setting the point up


class Round:
    """One round on a fresh stage: ``arm()``, ``kill()``, ``wait()``, ``results()``."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.armed: dict[str, Armed] = {}
        self.killed_at = 0.0
        self.victims: set[int] = set()  # pids of Helios processes the round killed itself
        self.notes: list[str] = []  # problems of the round as a whole

    def subjects(self) -> list[Subject]:
        return [s for armed in self.armed.values() for s in armed.subjects]

    def wait(self) -> None:
        """Poll until every subject ended (or RECOVERY_TIMEOUT after the kill)."""
        from panel.models import DeploymentStatus, ProvisionStatus

        deadline = self.killed_at + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            pending = [s for s in self.subjects() if s.ended_at is None]
            if not pending:
                return
            for subject in pending:
                status = self.stage.status(subject)
                kind = DeploymentStatus if subject.kind == "deployment" else ProvisionStatus
                if kind(status).is_terminal:
                    subject.ended_at = time.monotonic()
            time.sleep(0.1)

    def results(self) -> dict[str, PointResult]:
        """Per point: its subjects ended as they should, one version per deployment."""
        from panel.models import App, Deployment, DeploymentStatus, ProvisionRun

        stage = self.stage
        for helios in stage.helios:  # only those a group kill killed may have stopped
            if helios.proc.poll() is not None and helios.pid not in self.victims:
                self.notes.append(
                    f"{helios.role} {helios.pid} exited ({helios.proc.returncode}) before the "
                    f"end of the round:\n{helios.log_tail(5)}"
                )
        results = {}
        for name, armed in self.armed.items():
            result = PointResult(name, problems=list(armed.problems))
            for subject in armed.subjects:
                if subject.ended_at is None:
                    result.problems.append(
                        f"{subject.kind} #{subject.id} still {stage.status(subject)} "
                        f"{RECOVERY_TIMEOUT:.0f} s after the kill"
                    )
                elif subject.kind == "deployment":
                    row = Deployment.get_by_id(subject.id)
                    count = stage.versions_of(subject.id, App.get_by_id(row.app_id).slug)
                    if count != 1:
                        result.problems.append(
                            f"deployment #{subject.id}: {count} Nomad job versions carry its meta"
                        )
                    if subject.must_succeed and row.status != DeploymentStatus.SUCCEEDED:
                        result.problems.append(
                            f"deployment #{subject.id} ended {row.status}: {row.status_message}"
                        )
                    if subject.killed and row.attempts < 1:
                        result.problems.append(
                            f"deployment #{subject.id} counts no attempt: the kill did not stop "
                            "its job"
                        )
                else:
                    row = ProvisionRun.get_by_id(subject.id)
                    if row.status != "failed" or not (row.message or "").startswith(STOPPED_RUN):
                        result.problems.append(
                            f"run #{subject.id} ended {row.status}: {row.message}"
                        )
            ends = [s.ended_at for s in armed.subjects]
            if all(end is not None for end in ends):
                result.recovery = max(ends) - self.killed_at
            results[name] = result
        work = stage.settings.data_dir / "ansible"
        left = sorted(p.name for p in work.iterdir()) if work.exists() else []
        for name, result in results.items():
            result.problems += self.notes
            if left and any(s.kind == "run" for s in self.armed[name].subjects):
                result.problems.append(f"workspaces left in {work}: {left}")
        return results


class KillRound(Round):
    """Every point at once, one job each, then SIGKILL its work horse (``horse``) or its
    worker's whole process group (``group``, then two fresh workers start)."""

    def __init__(self, stage: Stage, kind: str, points: tuple[str, ...] = POINT_NAMES) -> None:
        super().__init__(stage)
        if kind not in {"horse", "group"}:
            raise ValueError(f"kind is horse or group, not {kind!r}")
        self.kind = kind
        self.points = [p for p in POINTS if p.name in points]
        self.schedulers = 0  # schedulers among the processes a group kill killed
        self.trees: dict[str, list[psutil.Process]] = {}  # per point: what the kill should end

    # -- arming ---------------------------------------------------------------------------------

    def arm(self) -> None:
        stage = self.stage
        deploy = [p for p in self.points if p.job == "deploy"]
        names = {p.name for p in self.points}
        stage.start("follower")
        if any(p.job == "provision" for p in self.points):
            stage.provision_site()
        # One worker per job to stop (two for waiting-for-lock: the holder and the waiter).
        horses = len(deploy) + ("waiting-for-lock" in names)
        first = [stage.start("worker", HELIOS_QUEUES="deploys") for _ in range(horses)]
        if "provision-preparing" in names:
            # Alone on the default queue: it takes the run whose vars are a FIFO.
            first.append(stage.start("worker", HELIOS_QUEUES="default",
                                     HELIOS_PLAYBOOKS_DIR=str(self.stage.playbooks),
                                     HELIOS_PROVISION_VARS=str(self.stage.fifo)))  # fmt: skip
        apps = {p.name: stage.create_app(slug_of(p.name)) for p in deploy}
        stage.wait_registered(first)
        for point in deploy:
            self._arm_deploy(point, apps[point.name])
        if "provision-preparing" in names:
            self._arm_fifo()
        playbook = [p.name for p in self.points if p.name.endswith("-task")]
        if playbook:
            self._arm_playbooks(playbook)
        for point in deploy:
            self._wait_deploy(self.armed[point.name])

    def _arm_deploy(self, point: Point, app) -> None:
        stage = self.stage
        if point.name == "waiting-for-lock":
            method, path, when = HOLDER_GATE
            gate = stage.double.hold(method, path.format(app=app.slug), when, timeout=HOLD_TIMEOUT)
            holder = stage.deploy(app)
            wait_for(gate.reached.is_set, ARM_TIMEOUT, "the lock holder to reach its plan")
            waiter = stage.deploy(app)
            subjects = [
                Subject(point.name, "deployment", waiter),
                # Not killed; it may be cancelled by the waiter's newer version: it must end.
                Subject(point.name, "deployment", holder, killed=False, must_succeed=False),
            ]
            self.armed[point.name] = Armed(point.name, subjects, f"deploy-{waiter}", gates=[gate])
            return
        method, path, when = point.gate
        gate = stage.double.hold(method, path.format(app=app.slug), when, timeout=HOLD_TIMEOUT)
        deployment = stage.deploy(app)
        self.armed[point.name] = Armed(
            point.name, [Subject(point.name, "deployment", deployment)], f"deploy-{deployment}",
            gates=[gate],
        )  # fmt: skip

    def _wait_deploy(self, armed: Armed) -> None:
        from panel.models import Deployment
        from panel.reconcile.jobs import WAITING_NOTE

        stage = self.stage
        if armed.point == "waiting-for-lock":
            waiter = armed.subjects[0].id
            try:
                wait_for(
                    lambda: Deployment.get_by_id(waiter).status_message == WAITING_NOTE,
                    ARM_TIMEOUT, f"deployment #{waiter} to say {WAITING_NOTE!r}",
                )  # fmt: skip
            except CampaignError as exc:
                armed.problems.append(str(exc))
            armed.worker, armed.horse = stage.horse_of(armed.job_id)
            return
        wait_for(armed.gates[0].reached.is_set, ARM_TIMEOUT, f"{armed.point}: the held request")
        armed.worker, armed.horse = stage.horse_of(armed.job_id)
        if not stage.nomad_connected(armed.horse):
            armed.problems.append(
                f"the horse {armed.horse} of {armed.job_id} has no connection to Nomad while "
                "its request is held: it is not the process that sent it"
            )

    def _arm_fifo(self) -> None:
        name = "provision-preparing"
        run = self.stage.request_run("n3")
        armed = Armed(name, [Subject(name, "run", run)], f"provision-{run}")
        armed.worker, armed.horse = self.stage.horse_of(armed.job_id)
        wait_for(lambda: wchan(armed.horse) == "wait_for_partner", ARM_TIMEOUT,
                 "the horse to block opening HELIOS_PROVISION_VARS (a FIFO)")  # fmt: skip
        work = self.stage.settings.data_dir / "ansible"
        if len(list(work.glob("run-*"))) != 1:
            armed.problems.append(f"the run's workspace is not open: {list(work.iterdir())}")
        self.armed[name] = armed

    def _arm_playbooks(self, names: list[str]) -> None:
        from panel.models import ProvisionEvent

        stage = self.stage
        stage.start_workers(len(names), HELIOS_QUEUES="default",
                            HELIOS_PLAYBOOKS_DIR=str(self.stage.playbooks),
                            HELIOS_PROVISION_VARS=str(self.stage.vars))  # fmt: skip
        where = {"provision-first-task": ("n1", 1), "provision-second-task": ("n2", 2)}
        for name in names:
            run = self.stage.request_run(where[name][0])
            self.armed[name] = Armed(name, [Subject(name, "run", run)], f"provision-{run}")
        for name in names:
            armed = self.armed[name]
            host, task = where[name]
            mark = self.stage.marks / f"{host}-{task}"
            wait_for(lambda m=mark: m.exists() and m.read_text().strip(), ARM_TIMEOUT,
                     f"{name}: the task's mark")  # fmt: skip
            if task == 2:
                run = armed.subjects[0].id

                def first_result(run: int = run) -> bool:
                    events = ProvisionEvent.select().where(ProvisionEvent.run == run)
                    return any(e.data.get("kind") == "changed" for e in events)

                wait_for(first_result, ARM_TIMEOUT, f"{name}: the first task's result stored")
            armed.worker, armed.horse = stage.horse_of(armed.job_id)
            task_pid = int(mark.read_text())
            if armed.horse not in {p.pid for p in _parents(task_pid)}:
                armed.problems.append(
                    f"the task's process {task_pid} does not descend from the horse {armed.horse}"
                )

    # -- the kill -----------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL every point's victim at once; release the held requests once the processes
        that ran the jobs are gone; start fresh workers after a group kill."""
        direct: dict[str, list[psutil.Process]] = {}
        for name, armed in self.armed.items():
            horse = psutil.Process(armed.horse)
            if self.kind == "horse":
                self.trees[name] = tree(armed.horse)
                direct[name] = [horse]
                continue
            worker = armed.worker.pid
            self.victims.add(worker)
            if _pgid(worker) != worker:
                raise CampaignError(f"worker {worker} does not lead its process group")
            self.trees[name] = tree(worker)
            children = psutil.Process(worker).children()
            # RQ's scheduler: the worker's child left in the worker's group (the horse has a
            # group of its own, out of reach of killpg: it must die with its parent).
            schedulers = [c for c in children if _pgid(c.pid) == worker]
            self.schedulers += len(schedulers)
            direct[name] = [psutil.Process(worker), horse, *schedulers]
        self.killed_at = time.monotonic()
        for armed in self.armed.values():
            if self.kind == "horse":
                os.kill(armed.horse, signal.SIGKILL)
            else:
                os.killpg(armed.worker.pid, signal.SIGKILL)
        if self.kind == "group":
            for armed in self.armed.values():
                armed.worker.proc.wait(timeout=10)  # reaped: gone from /proc
        everyone = [proc for procs in direct.values() for proc in procs]
        psutil.wait_procs(alive(everyone), timeout=GONE_TIMEOUT)
        for name, procs in direct.items():
            still = alive(procs)
            if still:
                self.armed[name].problems.append(
                    f"{GONE_TIMEOUT:.0f} s after the kill, still running: {describe(still)}"
                )
        for armed in self.armed.values():
            for gate in armed.gates:
                gate.release()  # a request held "before" reaches Nomad only now
        if self.kind == "group":
            self.stage.start("worker")
            self.stage.start("worker")

    def wait(self) -> None:
        super().wait()
        # Whatever the killed processes had started must be gone too (given GONE_TIMEOUT).
        procs = [proc for procs in self.trees.values() for proc in procs]
        left = max(0.0, self.killed_at + GONE_TIMEOUT - time.monotonic())
        psutil.wait_procs(alive(procs), timeout=left)
        for name, procs in self.trees.items():
            still = alive(procs)
            if still:
                self.armed[name].problems.append(
                    f"outlived the kill of the {self.kind} by {GONE_TIMEOUT:.0f} s and more: "
                    f"{describe(still)}"
                )
        self.reap()

    def reap(self) -> None:
        """SIGKILL whatever of the killed trees still runs: no round leaves it behind."""
        for procs in self.trees.values():
            for proc in alive(procs):
                with contextlib.suppress(psutil.Error):
                    proc.kill()

    def results(self) -> dict[str, PointResult]:
        if self.kind == "group" and not self.schedulers:
            self.notes.append("no killed worker had a scheduler: nothing showed it dies too")
        return super().results()


class RedisRound(Round):
    """Deploys held in flight and more queued behind them, then redis-server SIGKILLed and
    restarted empty on the same port after REDIS_OUTAGE seconds."""

    def arm(self) -> None:
        stage = self.stage
        stage.start("follower")
        workers = [stage.start("worker") for _ in REDIS_IN_FLIGHT]
        apps = {name: stage.create_app(slug_of(name)) for name in REDIS_IN_FLIGHT}
        queued = [stage.create_app(f"k-queued-{n}") for n in range(REDIS_QUEUED)]
        stage.wait_registered(workers)
        points = {p.name: p for p in POINTS}
        for name in REDIS_IN_FLIGHT:
            method, path, when = points[name].gate
            path = path.format(app=apps[name].slug)
            gate = stage.double.hold(method, path, when, timeout=HOLD_TIMEOUT)
            deployment = stage.deploy(apps[name])
            subject = Subject(f"in-flight {name}", "deployment", deployment, killed=False)
            self.armed[subject.point] = Armed(subject.point, [subject], f"deploy-{deployment}",
                                              gates=[gate])  # fmt: skip
        for armed in self.armed.values():
            wait_for(armed.gates[0].reached.is_set, ARM_TIMEOUT, f"{armed.point}: held request")
            armed.worker, armed.horse = stage.horse_of(armed.job_id)
        subjects = [Subject("queued", "deployment", stage.deploy(app), killed=False)
                    for app in queued]  # fmt: skip
        self.armed["queued"] = Armed("queued", subjects)
        waiting = set(get_queue_ids(stage.conn))
        missing = [s.id for s in subjects if f"deploy-{s.id}" not in waiting]
        if missing:
            self.armed["queued"].problems.append(f"deployments {missing} were not left queued")

    def kill(self) -> None:
        self.killed_at = time.monotonic()
        self.stage.redis.kill()
        time.sleep(REDIS_OUTAGE)
        self.stage.redis.start()
        for armed in self.armed.values():
            for gate in armed.gates:
                gate.release()


def get_queue_ids(conn: redis.Redis) -> list[str]:
    from panel.queue import get_queue

    return get_queue(conn, "deploys").job_ids


def run_round(
    workdir: Path, kind: str, points: tuple[str, ...] = POINT_NAMES,
    timings: dict[str, float] | None = None,
) -> dict[str, PointResult]:  # fmt: skip
    """One round of a kill kind (horse, group or redis) on a fresh stage; results per point.

    ``timings`` (if given) receives the seconds each phase took.
    """
    timings = {} if timings is None else timings
    started = time.monotonic()

    def lap(phase: str) -> None:
        timings[phase] = time.monotonic() - started - sum(timings.values())

    stage = Stage(workdir)
    round_: Round | None = None
    try:
        with stage:
            lap("open")
            round_ = RedisRound(stage) if kind == "redis" else KillRound(stage, kind, points)
            round_.arm()
            lap("arm")
            round_.kill()
            lap("kill")
            round_.wait()
            lap("recover")
            results = round_.results()
            trailing = stage.close()
            lap("close")
    finally:
        if isinstance(round_, KillRound):
            round_.reap()
    for result in results.values():
        result.problems += trailing
    return results
