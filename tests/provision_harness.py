"""Disposable Debian nodes for provisioning tests: real systemd, real SSH, a private network.

A :class:`Cluster` boots Debian bookworm nodes with ``systemd-nspawn --boot`` inside a network
namespace of its own. Each node's sshd listens on its own loopback address (127.0.0.2, …) with
host keys of its own, so Ansible reaches them over real SSH (its ssh runs ``ip netns exec`` as a
ProxyCommand) and a test can read, pin or change each node's keys. Inside the namespace:

- apt reaches the Debian mirror through a small caching HTTP proxy that this module serves on a
  UNIX socket in the host's namespace, bridged into the node namespace by ``socat`` (the cache
  of packages makes repeated runs fast). apt-cacher-ng, the usual choice, cannot bind its TCP
  port on machines whose only network interface is loopback (its address lookup fails);
- a loopback HTTP server publishes stand-in nomad/consul/traefik archives in the releases'
  layout with real SHA-256 checksums (``tests/provision/standin.py``), for each role's default
  version and the next patch release, so a test can bump a version.

The node root is debootstrapped once and cached as a tarball under ``HELIOS_TEST_CACHE``
(default ``/var/cache/helios-test``). Everything started is stopped by its pid and the namespace
deleted when the cluster is closed, whatever happened before.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import http.server
import io
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO_ROOT / "playbooks"
STANDIN = Path(__file__).resolve().parent / "provision" / "standin.py"
CACHE = Path(os.environ.get("HELIOS_TEST_CACHE", "/var/cache/helios-test"))
SUITE = "bookworm"
INCLUDE = "systemd-sysv,dbus,openssh-server,python3,python3-apt,sudo,iproute2,ca-certificates,unzip"
REQUIRED_TOOLS = ("mmdebstrap", "systemd-nspawn", "ip", "socat", "ssh", "ssh-keygen", "tar")
NETNS_PREFIX = "helios-t"  # + the pid of the test process that owns the namespace
MIRROR_PORT = 8099  # the stand-in releases server, inside the namespace
APT_PROXY_PORT = 3142  # the apt proxy as the nodes see it, inside the namespace
PROXY_TIMEOUT = 60  # seconds for one upstream request of the apt proxy
# A host's SSH key and pinned host key for tests that never reach the host with them.
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBtZXN0LWtleS1ieXRlcy1mb3ItaGVsaW9zLXRlc3RzLW9ubHktMDAwMAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SSH_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
BOOT_TIMEOUT = 60  # seconds for a node's sshd to answer
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
CLONE_NEWNET = 0x40000000  # setns(2): join a network namespace


def prerequisites_missing() -> str | None:
    """Why real nodes cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "booting systemd-nspawn nodes needs root"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (bash .ci/run installs them)"
    if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
        return "ansible-playbook is not installed in the virtualenv"
    return None


def require_converge() -> None:
    """Skip (with the reason) when nodes cannot boot; fail instead under HELIOS_REQUIRE_CONVERGE."""
    reason = prerequisites_missing()
    if reason is None:
        return
    if os.environ.get("HELIOS_REQUIRE_CONVERGE") == "1":
        pytest.fail(f"HELIOS_REQUIRE_CONVERGE=1 but the converge tests cannot run: {reason}")
    pytest.skip(reason)


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# The Debian mirror and the cached node root
# ---------------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (never a hard-coded host name)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text())
    for text in texts:
        for match in re.finditer(r"(?m)^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text):
            uri = match.group(1).rstrip("/")
            if uri.startswith("http") and uri.endswith("/debian"):
                return uri
    raise RuntimeError("no Debian archive (…/debian) found in /etc/apt/sources.list*")


def node_sources(mirror: str) -> str:
    """The nodes' /etc/apt/sources.list."""
    return f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"


def base_tarball() -> Path:
    """The node root as a tarball, built once with mmdebstrap (~20 s) and then reused.

    mmdebstrap installs the same minbase system as debootstrap in one apt run with parallel
    downloads and writes the tarball itself: about a quarter of debootstrap's ~70 s here.
    """
    sources = node_sources(debian_mirror())
    key = hashlib.sha256(f"mmdebstrap {INCLUDE} {sources}".encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        partial = tarball.with_suffix(".partial.tar")
        try:
            # The package lists stay, as on an installed host: apt can install at once.
            _run("mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
                 f"--include={INCLUDE}", "--skip=cleanup/apt/lists", SUITE, str(partial),
                 *sources.splitlines())  # fmt: skip
            partial.rename(tarball)
        finally:
            partial.unlink(missing_ok=True)
    return tarball


# ---------------------------------------------------------------------------------------------
# Stand-in releases
# ---------------------------------------------------------------------------------------------


def role_default(role: str, name: str) -> str:
    """A scalar default of a role, e.g. role_default('nomad', 'nomad_version')."""
    text = (PLAYBOOKS / "roles" / role / "defaults" / "main.yml").read_text()
    match = re.search(rf'(?m)^{name}:\s*"?([^"\s]+)"?\s*$', text)
    if not match:
        raise RuntimeError(f"{role}/defaults/main.yml has no {name}")
    return match.group(1)


def _standin(name: str, version: str) -> bytes:
    return STANDIN.read_text().replace("@VERSION@", version).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bumped_version(version: str) -> str:
    """The next patch release of ``version`` (1.20.1 → 1.20.2): what a version bump installs."""
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def build_release_mirror(root: Path) -> dict[str, str]:
    """Write stand-in archives in HashiCorp's and Traefik's release layouts, for each role's
    default version and the next patch release (a version bump); return the default versions."""
    versions = {}
    for product in ("consul", "nomad"):
        versions[product] = role_default(product, f"{product}_version")
        for version in (versions[product], bumped_version(versions[product])):
            _hashicorp_release(root, product, version)
    versions["traefik"] = role_default("traefik", "traefik_version")
    for version in (versions["traefik"], bumped_version(versions["traefik"])):
        _traefik_release(root, version)
    return versions


def _hashicorp_release(root: Path, product: str, version: str) -> None:
    folder = root / product / version
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(product, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = (0o100755 & 0xFFFF) << 16
        archive.writestr(info, _standin(product, version))
    data = buffer.getvalue()
    name = f"{product}_{version}_linux_amd64.zip"
    (folder / name).write_bytes(data)
    decoy = f"{product}_{version}_linux_arm64.zip"
    (folder / f"{product}_{version}_SHA256SUMS").write_text(
        f"{_sha256(b'other')}  {decoy}\n{_sha256(data)}  {name}\n"
    )


def _traefik_release(root: Path, version: str) -> None:
    folder = root / "traefik" / f"v{version}"
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        payload = _standin("traefik", version)
        info = tarfile.TarInfo("traefik")
        info.size, info.mode, info.mtime = len(payload), 0o755, 1_700_000_000
        archive.addfile(info, io.BytesIO(payload))
    data = buffer.getvalue()
    name = f"traefik_v{version}_linux_amd64.tar.gz"
    (folder / name).write_bytes(data)
    (folder / f"traefik_v{version}_checksums.txt").write_text(f"{_sha256(data)}  {name}\n")


# ---------------------------------------------------------------------------------------------
# apt's way out: a caching HTTP proxy on a UNIX socket
# ---------------------------------------------------------------------------------------------


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Forwards apt's GET requests to the archive; immutable files are cached on disk."""

    protocol_version = "HTTP/1.1"
    cache_dir: Path

    def address_string(self) -> str:
        return "node"

    def log_message(self, format: str, *args) -> None:
        return

    def _cache_path(self, url: urllib.parse.SplitResult) -> Path | None:
        # Packages and by-hash indexes never change under the same path; the rest may.
        if "/pool/" not in url.path and "/by-hash/" not in url.path:
            return None
        clean = re.sub(r"[^A-Za-z0-9._+~/-]", "_", url.netloc + url.path).replace("..", "_")
        return self.cache_dir / clean

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.netloc:
            self.send_error(400, "only absolute http:// URLs are proxied")
            return
        cached = self._cache_path(url)
        if cached is not None and cached.is_file():
            self._send(200, cached.read_bytes(), "application/octet-stream")
            return
        request = urllib.request.Request(self.path, headers={"User-Agent": "helios-test-apt"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=PROXY_TIMEOUT) as upstream:
                body = upstream.read()
                kind = upstream.headers.get("Content-Type", "application/octet-stream")
        except urllib.error.HTTPError as exc:
            self._send(exc.code, b"", "text/plain")
            return
        except OSError as exc:
            self.send_error(502, f"upstream: {exc}")
            return
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            draft = cached.with_name(f".{cached.name}.{threading.get_ident()}")
            draft.write_bytes(body)
            draft.replace(cached)
        self._send(200, body, kind)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class AptProxy:
    """A caching forward proxy for apt, listening on a UNIX socket in the host's namespace."""

    def __init__(self, socket_path: Path, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_ProxyHandler,), {"cache_dir": cache_dir})
        self.server = socketserver.ThreadingUnixStreamServer(str(socket_path), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM a process by pid, SIGKILL it if it lingers, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def namespace_pids(netns: str) -> list[int]:
    """Pids of the processes living in a network namespace."""
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                            check=False)  # fmt: skip
    return [int(pid) for pid in result.stdout.split()]


def kill_namespace(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL, by pid, whatever still runs in the namespace, then delete it.

    A node's systemd outlives a systemd-nspawn that was killed, and ssh's ProxyCommand leaves
    socat behind; SIGKILL to a node's PID 1 ends its whole PID namespace.
    """
    deadline = time.monotonic() + timeout
    while (pids := namespace_pids(netns)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has already died


def sweep_stale_namespaces() -> list[str]:
    """Clean up after test processes that died without closing their cluster (SIGKILL)."""
    swept = []
    for path in Path("/run/netns").glob(f"{NETNS_PREFIX}*"):
        owner = path.name.removeprefix(NETNS_PREFIX)
        if owner.isdigit() and not _alive(int(owner)):
            kill_namespace(path.name)
            swept.append(path.name)
    return swept


def processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), cmdline)
    return found


def ansible_pids(work_dir: Path, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    """Pids of the ansible-playbook processes running on an inventory under ``work_dir`` (in
    ``table``, one reading of the process table, when given)."""
    table = processes() if table is None else table
    return [pid for pid, (_, cmd) in table.items()
            if "ansible-playbook" in cmd and str(work_dir) in cmd]  # fmt: skip


def crash_worker(worker: subprocess.Popen, work_dir: Path, timeout: float = 30) -> None:
    """SIGKILL a `helios worker` in the middle of a provisioning run, as a crash would.

    The work horse (the worker's child that runs the job, parent of ansible-playbook) first,
    then the worker and its other children (RQ's scheduler), each by pid. ansible-playbook
    loses its terminal with the horse and ends; this waits for it.
    """
    # One reading of the process table: a short-lived ansible-playbook child seen in one
    # reading may be gone from the next.
    table = processes()
    running = ansible_pids(work_dir, table)
    if not running:
        raise RuntimeError(f"no ansible-playbook runs under {work_dir}")
    horse = table[running[0]][0]
    while table[horse][0] != worker.pid:
        horse = table[horse][0]
    others = [pid for pid, (ppid, _) in table.items() if ppid == worker.pid and pid != horse]
    os.kill(horse, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    for pid in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while ansible_pids(work_dir):
        if time.monotonic() > deadline:
            raise RuntimeError("ansible-playbook outlived the worker that ran it")
        time.sleep(0.2)


class _TerminatedError(KeyboardInterrupt):
    """SIGTERM while nodes run: unwinds like Ctrl-C, so pytest's teardown stops them."""


def _raise_terminated(signum, frame) -> None:
    raise _TerminatedError(f"signal {signum}")


@dataclass
class Node:
    """One booted Debian node."""

    name: str
    address: str
    root: Path
    groups: tuple[str, ...]
    log: Path
    proc: subprocess.Popen | None = None
    boots: int = 0
    stopping: bool = False
    supervisor: threading.Thread | None = field(default=None, repr=False)
    # Held while a boot starts or the node is told to stop, so a reboot never races close().
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Cluster:
    """Debian nodes under systemd-nspawn in a network namespace of their own."""

    def __init__(self, layout: list[tuple[str, tuple[str, ...]]], workdir: Path) -> None:
        self.workdir = workdir
        self.netns = f"{NETNS_PREFIX}{os.getpid()}"
        self.key = workdir / "id_ed25519"
        self.processes: list[subprocess.Popen] = []
        self.nodes = [
            Node(
                name=name,
                address=f"127.0.0.{index + 2}",
                root=workdir / "nodes" / name,
                groups=groups,
                log=workdir / f"{name}.console.log",
            )
            for index, (name, groups) in enumerate(layout)
        ]
        self.versions: dict[str, str] = {}
        self.netns_created = False
        self.apt_proxy: AptProxy | None = None
        self._previous_sigterm = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Prepare roots, namespace, apt bridge and release mirror; boot every node."""
        sweep_stale_namespaces()
        tarball = base_tarball()
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        unpackers = [self._unpack(node, tarball) for node in self.nodes]
        self.processes.extend(unpackers)
        _run("ip", "netns", "add", self.netns)
        self.netns_created = True
        _run("ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up")
        # Each node's address is one of the loopback's own (not only routed to it), so the
        # network facts show which interface holds it, as a host's would.
        for node in self.nodes:
            _run("ip", "netns", "exec", self.netns, "ip", "address", "add",
                 f"{node.address}/8", "dev", "lo")  # fmt: skip
        self._start_apt_bridge()
        mirror = self.workdir / "mirror"
        self.versions = build_release_mirror(mirror)
        self._spawn("mirror", ["ip", "netns", "exec", self.netns, sys.executable, "-m",
                               "http.server", "--bind", "127.0.0.1", "--directory", str(mirror),
                               str(MIRROR_PORT)])  # fmt: skip
        for node, unpacker in zip(self.nodes, unpackers, strict=True):
            if unpacker.wait() != 0:
                raise RuntimeError(f"unpacking {tarball} for {node.name} failed")
            self._customise(node)
        for node in self.nodes:
            self._boot(node)
        for node in self.nodes:
            self.wait_for_ssh(node)

    def close(self) -> None:
        """Stop every node and process by pid; delete the namespace and the node roots."""
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        for node in self.nodes:  # all at once: each shuts down in ~1 s, in parallel
            with node.lock:
                node.stopping = True
                if node.proc is not None and node.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(node.proc.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc, timeout=20)
            if node.supervisor is not None:
                node.supervisor.join(timeout=5)
        for proc in reversed(self.processes):
            stop_process(proc)
        if self.apt_proxy is not None:
            self.apt_proxy.stop()
            self.apt_proxy = None
        if self.netns_created:
            kill_namespace(self.netns)
            self.netns_created = False
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        for node in self.nodes:
            if node.root.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(node.root)], check=False)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        log.close()
        self.processes.append(proc)
        return proc

    # -- apt through a caching proxy ----------------------------------------------------------

    def _start_apt_bridge(self) -> None:
        socket_path = self.workdir / "apt.sock"
        self.apt_proxy = AptProxy(socket_path, CACHE / "apt-proxy")
        self.apt_proxy.start()
        self._spawn("socat-netns", [
            "ip", "netns", "exec", self.netns, "socat",
            f"TCP-LISTEN:{APT_PROXY_PORT},bind=127.0.0.1,fork,reuseaddr",
            f"UNIX-CONNECT:{socket_path}",
        ])  # fmt: skip

    # -- nodes ----------------------------------------------------------------------------------

    def _unpack(self, node: Node, tarball: Path) -> subprocess.Popen:
        node.root.mkdir(parents=True)
        return subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(node.root), "-xf", str(tarball)]
        )

    def _customise(self, node: Node) -> None:
        root = node.root
        (root / "etc/hostname").write_text(f"{node.name}\n")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{n.address} {n.name}\n" for n in self.nodes)
        (root / "etc/hosts").write_text(hosts)
        # The nodes share one network namespace: each sshd keeps to its own address.
        (root / "etc/ssh/sshd_config.d/05-test-node.conf").write_text(
            f"ListenAddress {node.address}\n"
        )
        self.new_host_keys(node)
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        (root / "etc/apt/apt.conf.d/01proxy").write_text(
            f'Acquire::http::Proxy "http://127.0.0.1:{APT_PROXY_PORT}";\n'
        )
        (root / "etc/apt/sources.list").write_text(node_sources(debian_mirror()))
        # apt's own timers would race the playbook for the dpkg lock at random moments.
        for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer"):
            link = root / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        (root / "etc/machine-id").write_text("")

    def new_host_keys(self, node: Node) -> None:
        """Give the node SSH host keys of its own (the cached root holds one set for all).

        sshd reads them for each new connection, so a running node offers them at once.
        """
        for old in (node.root / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        _run("ssh-keygen", "-A", "-f", str(node.root))

    def host_keys(self, node: Node) -> str:
        """The node's public host keys, as its /etc/ssh/ssh_host_*_key.pub files hold them."""
        return "".join(p.read_text() for p in sorted((node.root / "etc/ssh").glob("*.pub")))

    def known_hosts(self) -> str:
        """known_hosts lines for every node, read from the nodes' own files (not the network)."""
        return "".join(
            f"{node.address} {' '.join(line.split()[:2])}\n"
            for node in self.nodes
            for line in self.host_keys(node).splitlines()
        )

    def in_namespace(self, function, *args, **kwargs):
        """Call ``function`` in a thread that lives in the nodes' network namespace.

        What it starts (e.g. ssh-keyscan) reaches the nodes as a machine on their network
        would; sockets it opens elsewhere keep working. The calling thread is never moved.
        """
        outcome: dict[str, object] = {}

        def target() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the nodes' namespace failed")
                outcome["value"] = function(*args, **kwargs)
            except BaseException as exc:  # handed to the caller below
                outcome["error"] = exc
            finally:
                os.close(fd)

        thread = threading.Thread(target=target, name=f"in-{self.netns}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _boot(self, node: Node) -> None:
        argv = [
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
            f"--network-namespace-path=/run/netns/{self.netns}",
            f"--directory={node.root}", f"--machine={self.netns}-{node.name}",
            f"--hostname={node.name}", "--console=read-only", "--link-journal=no",
            "--capability=CAP_NET_ADMIN", "--resolv-conf=off", "--timezone=off",
        ]  # fmt: skip
        started = threading.Event()

        def supervise() -> None:
            # systemd-nspawn exits with 133 when the node reboots: boot it again, like
            # systemd-nspawn@.service does with RestartForceExitStatus=133.
            while True:
                with node.lock, open(node.log, "ab") as log:
                    if node.stopping:
                        return
                    node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)  # fmt: skip
                    node.boots += 1
                started.set()
                if node.proc.wait() != REBOOT_EXIT:
                    return

        node.supervisor = threading.Thread(target=supervise, name=f"nspawn-{node.name}",
                                           daemon=True)  # fmt: skip
        node.supervisor.start()
        started.wait(10)

    def ssh(self, node: Node, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command on a node over SSH as root; return the completed process."""
        argv = ["ip", "netns", "exec", self.netns, "ssh", *self.ssh_options(), "-i",
                str(self.key), f"root@{node.address}", *command]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def ssh_options(self) -> list[str]:
        """Options of the test's own ssh calls (host keys are the throw-away nodes')."""
        return ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR"]  # fmt: skip

    def wait_for_ssh(self, node: Node, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until the node's sshd lets root in."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() not in (None, REBOOT_EXIT):
                raise RuntimeError(f"{node.name} exited: {node.log.read_text()[-2000:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.ssh(node, "true", timeout=10).returncode == 0:
                    return
            time.sleep(0.3)
        console = node.log.read_text()[-2000:]
        raise RuntimeError(f"{node.name}: no SSH after {timeout:.0f} s: {console}")

    # -- what Ansible needs ---------------------------------------------------------------------

    @property
    def proxy_command(self) -> str:
        """ssh's ProxyCommand that reaches a node from outside the namespace."""
        return f"ip netns exec {self.netns} socat STDIO TCP:%h:%p"

    @property
    def mirror_url(self) -> str:
        """Base URL of the stand-in releases, as the nodes see it."""
        return f"http://127.0.0.1:{MIRROR_PORT}"


@contextlib.contextmanager
def booted_cluster(workdir: Path, layout: list[tuple[str, tuple[str, ...]]]) -> Iterator[Cluster]:
    """Boot a cluster for the duration of a ``with`` block."""
    with Cluster(layout, workdir) as cluster:
        yield cluster
