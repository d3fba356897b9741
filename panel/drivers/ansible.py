"""The only code that runs Ansible: ansible-runner behind one call, with a private workspace.

A run gets a fresh private directory (mode 0700) holding the inventory, the extra variables,
the SSH keys and the known_hosts of this run only; it is deleted when the run ends, whatever
happens. The process using a workspace holds an exclusive ``flock`` on it, so when that process
dies (SIGKILL, OOM) the lock goes with it and :meth:`AnsibleDriver.sweep_workspaces`, run when a
worker starts and at its maintenance passes, removes what it left. ssh trusts only the host keys
written for the run (``StrictHostKeyChecking=yes``), never a key seen for the first time.

Nothing secret is put in the environment (ansible-runner records the environment among its
artifacts), the environment is cut down to what Ansible needs, and the virtualenv's ``bin``
comes first on ``PATH`` so the ``ansible-playbook`` next to this Python is the one that runs.
Every event is handed to the caller already scrubbed of the run's secrets.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AnsibleDriver",
    "AnsibleError",
    "RunResult",
    "Scrubber",
    "Workspace",
    "summarise_event",
]

logger = logging.getLogger(__name__)

RUN_TIMEOUT = 3600  # seconds one playbook run may take before it is stopped
WORKSPACE_PREFIX = "run-"  # <work dir>/run-*: a workspace in use, or left by a dead process
PENDING_PREFIX = "new-"  # a workspace being created (no secret in it yet)
PENDING_GRACE = 3600  # seconds after which a workspace never finished creating is removed
LOCKLESS_GRACE = 60  # seconds after which a workspace without its lock file is removed
CONTROL_PREFIX = "hcp-"  # ssh ControlPersist sockets: <tmp>/hcp-*, short enough for 108 bytes
_LOCK_FILE = ".lock"
_TAG_FILE = "tag"
_CONTROL_RECORD = "control-dir"
EVENT_TEXT_LIMIT = 8000  # characters of output kept per event
MASK = "********"
_ENV_KEEP = {"HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME", "TMPDIR", "TZ", "USER"}
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RECAP_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


class AnsibleError(RuntimeError):
    """Ansible could not be run; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Scrubbing: no secret, raw or encoded, leaves a run
# ---------------------------------------------------------------------------------------------


def _encodings(secret: str) -> set[str]:
    raw = secret.encode()
    forms = {
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        binascii.hexlify(raw).decode(),
        json.dumps(secret)[1:-1],
    }
    # Multi-line secrets (SSH keys) are also masked line by line.
    forms.update(line for line in secret.splitlines() if len(line.strip()) >= 8)
    return {form for form in forms if len(form) >= 6}


class Scrubber:
    """Replaces every known secret (and its usual encodings) with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _encodings(secret)
        # Longest first, so a secret containing another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        return value

    def data(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = _ANSI_RE.sub("", text)
    if len(text) > EVENT_TEXT_LIMIT:
        return text[:EVENT_TEXT_LIMIT] + f"\n… ({len(text) - EVENT_TEXT_LIMIT} characters cut)"
    return text


def _kind(event: str, result: Mapping[str, Any]) -> str:
    if event == "runner_on_ok":
        return "changed" if result.get("changed") else "ok"
    return {
        "runner_on_failed": "failed",
        "runner_on_unreachable": "unreachable",
        "runner_on_skipped": "skipped",
        "playbook_on_play_start": "play",
        "playbook_on_task_start": "task",
        "playbook_on_stats": "recap",
        "playbook_on_start": "start",
        "runner_on_start": "host_start",
        "runner_item_on_ok": "item",
        "runner_item_on_failed": "item_failed",
        "runner_on_async_failed": "failed",
        "warning": "warning",
        "error": "error",
        "verbose": "output",
    }.get(event, event)


def recap_from_stats(stats: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """Per-host counts (ok, changed, failed, unreachable, skipped, rescued, ignored)."""
    recap: dict[str, dict[str, int]] = {}
    for source, name in _RECAP_KEYS.items():
        for host, count in ((stats or {}).get(source) or {}).items():
            recap.setdefault(host, dict.fromkeys(_RECAP_KEYS.values(), 0))[name] = int(count)
    return recap


def summarise_event(raw: Mapping[str, Any], scrubber: Scrubber) -> dict[str, Any] | None:
    """The part of an ansible-runner event Helios keeps and streams; None to drop it."""
    event = str(raw.get("event", ""))
    data = raw.get("event_data") or {}
    result = data.get("res") or {}
    kind = _kind(event, result)
    if kind in {"host_start", "item", "start"}:
        return None
    summary: dict[str, Any] = {
        "seq": int(raw.get("counter") or 0),
        "kind": kind,
        "time": str(raw.get("created") or ""),
    }
    for key in ("play", "task", "host", "role"):
        if data.get(key):
            summary[key] = str(data[key])
    if kind in {"ok", "changed", "failed", "unreachable", "skipped", "item_failed"}:
        summary["changed"] = bool(result.get("changed"))
        if result.get("msg"):
            summary["msg"] = _clip(str(result["msg"]))
    if kind == "recap":
        summary["recap"] = recap_from_stats(data)
    text = _clip(str(raw.get("stdout") or "")).strip()
    if text:
        summary["text"] = text
    return scrubber.data(summary)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """How a playbook run ended: ansible-runner's status, exit code and per-host recap."""

    status: str
    rc: int | None
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    # What the playbook handed the caller with set_stats (ansible-runner's artifact_data): it
    # may hold secrets, so it never goes to the events and is not shown (repr=False).
    handed_over: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when the run finished and no host failed or was unreachable."""
        return self.status == "successful" and not any(
            counts["failed"] or counts["unreachable"] for counts in self.recap.values()
        )

    @property
    def changed(self) -> int:
        """Changed tasks summed over every host."""
        return sum(counts["changed"] for counts in self.recap.values())


class Workspace:
    """A private directory for one run: secret files live here and vanish with it."""

    def __init__(self, root: Path, control_dir: Path) -> None:
        self.root = root
        self.control_dir = control_dir
        self._secrets: list[str] = []

    def _write_private(self, path: Path, content: str) -> str:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content if content.endswith("\n") or not content else content + "\n")
        return str(path)

    def write_secret(self, name: str, content: str) -> str:
        """Write a secret file (mode 0600); return its path. Its content is scrubbed from events."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) or name.startswith("."):
            raise AnsibleError(f"not a safe file name for a secret: {name!r}")
        path = self._write_private(self.root / "secrets" / name, content)
        self._secrets.append(content.strip())
        return path

    @property
    def known_hosts(self) -> Path:
        """The run's known_hosts: the only host keys ssh trusts during the run."""
        return self.root / "known_hosts"

    def write_known_hosts(self, text: str) -> None:
        """Set the host keys this run trusts (known_hosts lines)."""
        self._write_private(self.known_hosts, text)

    @property
    def secrets(self) -> list[str]:
        """Every secret written to this workspace."""
        return list(self._secrets)


def _remove_workspace(root: Path) -> None:
    """Delete a workspace and its ssh control directory (kept outside it: paths are short)."""
    with contextlib.suppress(OSError):
        control = Path((root / _CONTROL_RECORD).read_text().strip())
        if control.name.startswith(CONTROL_PREFIX) and control.is_dir():
            shutil.rmtree(control, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _lock(path: Path, *, wait: bool) -> int | None:
    """An exclusive flock on ``path`` (its fd), or None when a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _take_abandoned(path: Path, settle: Callable[[str], None]) -> str | None:
    """Remove ``path`` if it is a workspace whose process died; return its tag (else None).

    ``settle(tag)`` runs first, while the workspace still exists: if it raises (the run's
    failure could not be recorded), the workspace stays for the next sweep to find again.
    """
    if path.is_symlink() or not path.is_dir():
        return None
    age = time.time() - path.stat().st_mtime
    if path.name.startswith(PENDING_PREFIX):
        if age > PENDING_GRACE:
            _remove_workspace(path)
        return None
    if not path.name.startswith(WORKSPACE_PREFIX):
        return None
    try:
        # Never created here: a lock file created by the sweep would be a lock nobody holds.
        fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        # Being removed by its owner (just touched), or left by a version without locks.
        if age <= LOCKLESS_GRACE:
            return None
        settle("")
        _remove_workspace(path)
        return ""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None  # its process is alive
    else:
        try:
            tag = (path / _TAG_FILE).read_text().strip()
        except FileNotFoundError:  # its process died while removing it
            tag = ""
        settle(tag)
        _remove_workspace(path)
        return tag
    finally:
        os.close(fd)


def _clean_env(env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """Only what Ansible needs: locale and home, ANSIBLE_*/RUNNER_* and what runner added."""
    kept: dict[str, str] = {}
    for key, value in env.items():
        wanted = key in _ENV_KEEP or key == "PATH" or key.startswith(("ANSIBLE_", "RUNNER_"))
        added = key not in base or base[key] != value
        if wanted or (added and not key.startswith(("HELIOS_", "NOMAD_", "CONSUL_"))):
            kept[key] = value
    return kept


class AnsibleDriver:
    """Runs playbooks from ``playbooks_dir`` with ansible-runner."""

    def __init__(
        self,
        playbooks_dir: Path,
        *,
        work_dir: Path,
        forks: int = 10,
        timeout: int = RUN_TIMEOUT,
    ) -> None:
        self.playbooks_dir = Path(playbooks_dir)
        self.work_dir = Path(work_dir)
        self.forks = forks
        self.timeout = timeout

    def _prepare_work_dir(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.work_dir.chmod(0o700)

    @contextlib.contextmanager
    def workspace(self, tag: str = "") -> Iterator[Workspace]:
        """A private directory for one run, removed afterwards whatever happens.

        ``tag`` is written in it, so a sweep can tell which run a dead process left behind.
        It is created as ``new-*``, locked, then renamed ``run-*``: a sweep never sees a
        workspace whose lock is not held yet.
        """
        self._prepare_work_dir()
        pending = Path(tempfile.mkdtemp(prefix=PENDING_PREFIX, dir=self.work_dir))
        root = pending.with_name(WORKSPACE_PREFIX + pending.name.removeprefix(PENDING_PREFIX))
        lock = _lock(pending / _LOCK_FILE, wait=True)
        try:
            (pending / _TAG_FILE).write_text(tag)
            control_dir = Path(tempfile.mkdtemp(prefix=CONTROL_PREFIX))
            (pending / _CONTROL_RECORD).write_text(str(control_dir))
            pending.rename(root)
            try:
                yield Workspace(root, control_dir)
            finally:
                _remove_workspace(root)
        finally:
            _remove_workspace(pending)  # only if the rename never happened
            os.close(lock)

    def sweep_workspaces(self, settle: Callable[[str], None] = lambda _tag: None) -> list[str]:
        """Remove the workspaces of processes that died; return their tags ("" if unknown).

        ``settle(tag)`` is called for each before it is removed (and an exception it raises
        keeps that workspace and stops the sweep). A workspace whose lock is held belongs to a
        live run (in this or another worker on this machine) and is left alone, and so is one
        being removed by its owner right now.
        """
        if not self.work_dir.is_dir():
            return []
        tags = []
        for path in sorted(self.work_dir.iterdir()):
            try:
                tag = _take_abandoned(path, settle)
            except FileNotFoundError:  # its owner removed it meanwhile
                continue
            if tag is not None:
                tags.append(tag)
                logger.warning("removed %s, left behind by a process that died", path)
        return tags

    def _playbook(self, name: str) -> Path:
        path = (self.playbooks_dir / name).resolve()
        if path.parent != self.playbooks_dir.resolve() or not path.is_file():
            raise AnsibleError(
                f"playbook {name!r} not found in {self.playbooks_dir}: set HELIOS_PLAYBOOKS_DIR "
                "to the folder holding site.yml"
            )
        return path

    def _environment(self, workspace: Workspace) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])
        options = [
            "ControlMaster=auto",
            "ControlPersist=60s",
            # Only the keys pinned for this run's hosts: never the user's or the system's
            # known_hosts, never a key seen for the first time.
            f'UserKnownHostsFile="{workspace.known_hosts}"',
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "UpdateHostKeys=no",
            "CheckHostIP=no",
            "ConnectTimeout=20",
        ]
        return {
            "PATH": path,
            "ANSIBLE_CONFIG": str(workspace.root / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(self.playbooks_dir / "roles"),
            "ANSIBLE_SSH_ARGS": shlex.join(arg for option in options for arg in ("-o", option)),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workspace.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(workspace.root / "tmp"),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
            # Facts are gathered by the first play and reused by the next ones.
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_SYSTEM_WARNINGS": "False",
            "ANSIBLE_FORKS": str(self.forks),
            "ANSIBLE_TIMEOUT": "30",
            "ANSIBLE_GATHER_TIMEOUT": "60",
        }

    def run(
        self,
        workspace: Workspace,
        *,
        playbook: str,
        inventory: str,
        extravars: str | None = None,
        check: bool = False,
        diff: bool = False,
        limit: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        secrets: Iterable[str] = (),
        known_hosts: str = "",
    ) -> RunResult:
        """Run ``playbook`` against ``inventory`` (YAML text); events go to ``on_event``.

        ``known_hosts`` holds the only host keys ssh accepts during the run.
        """
        import ansible_runner
        from ansible_runner.exceptions import AnsibleRunnerException

        playbook_path = self._playbook(playbook)
        if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
            raise AnsibleError(
                f"ansible-playbook is not installed next to {sys.executable}: "
                "pip install ansible (see pyproject.toml)"
            )
        root = workspace.root
        (root / "inventory").mkdir(mode=0o700, exist_ok=True)
        (root / "env").mkdir(mode=0o700, exist_ok=True)
        (root / "tmp").mkdir(mode=0o700, exist_ok=True)
        (root / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\n")
        inventory_path = root / "inventory" / "hosts.yml"
        inventory_path.write_text(inventory)
        workspace.write_known_hosts(known_hosts)
        if extravars:
            (root / "env" / "extravars").write_text(extravars)
        args = ["--check"] if check else []
        if diff:
            args.append("--diff")
        scrubber = Scrubber([*workspace.secrets, *secrets])
        stats: dict[str, Any] = {}
        handed_over: dict[str, Any] = {}

        def handle(event: dict[str, Any]) -> bool:
            if event.get("event") == "playbook_on_stats":
                data = dict(event.get("event_data") or {})
                handed_over.update(data.pop("artifact_data", None) or {})
                stats.update(data)
            if on_event is not None:
                summary = summarise_event(event, scrubber)
                if summary is not None:
                    on_event(summary)
            return False  # nothing of the run is kept on disk beyond the workspace

        try:
            config = ansible_runner.RunnerConfig(
                private_data_dir=str(root),
                project_dir=str(self.playbooks_dir),
                playbook=str(playbook_path),
                inventory=str(inventory_path),
                limit=limit,
                cmdline=shlex.join(args) if args else None,
                envvars=self._environment(workspace),
                suppress_env_files=True,
                quiet=True,
                timeout=self.timeout,
            )
            config.prepare()
            config.env = _clean_env(config.env, os.environ)
            # ansible-playbook and its tasks die with this process, even when it is SIGKILLed.
            config.command = [
                sys.executable,
                "-m",
                "panel.drivers.tether",
                str(os.getpid()),
                *config.command,
            ]
            runner = ansible_runner.Runner(config=config, event_handler=handle)
            runner.run()
        except (AnsibleRunnerException, OSError) as exc:
            raise AnsibleError(
                f"could not run {playbook}: {scrubber.text(str(exc))} — check that ansible is "
                "installed in the virtualenv and the work directory is writable"
            ) from exc
        recap = recap_from_stats(stats)
        logger.info("playbook %s %s (rc %s): %s", playbook, runner.status, runner.rc, recap)
        return RunResult(
            status=str(runner.status), rc=runner.rc, recap=recap, handed_over=handed_over
        )
