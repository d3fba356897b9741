"""The build job's own commands, run for real: fetch a commit, build it with buildah, push it to
a real registry, and build it again from an empty store out of the registry's layer cache.

Each task's command is taken from the rendered job as Nomad would run it (the docker config's
``entrypoint`` + ``args``, with the task's ``Env``); the only values filled in are those Nomad
provides (``${NOMAD_ALLOC_DIR}``, ``${NOMAD_TASK_DIR}``, ``${NOMAD_SECRETS_DIR}``) and the
credentials, which come from rendering the task's own template with its Nomad Variable. The
registry is Debian's ``docker-registry`` (distribution 2.8) on a free loopback port with its own
config, data directory and htpasswd account, so buildah logs in, reads and writes the cache
and pushes over plain HTTP (the spec marks it insecure). The app is a local git repository,
fetched by file:// URL, whose Dockerfile is ``FROM scratch`` plus a static BusyBox, so no image
is pulled from anywhere.

Needs root: buildah's ``--isolation chroot`` (how the builder runs ``RUN`` steps) makes mount
namespaces and chroots, which an unprivileged user can only do with rootless buildah set up
(subordinate ids). What this does not run: the two images and the docker driver's settings on a
real Nomad client (Docker cannot run here); the job itself is checked against the Nomad API
description in tests/test_render_build.py.

Tools (Debian): ``apt-get install -y buildah docker-registry busybox-static git`` (listed in
.ci/apt-packages). A missing one fails the tests with that line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import tarfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from gotemplate import render_template

from panel.render.build import BuildSpec, render_build_job, render_build_variables

from conftest import free_port, stop_child, wait_until

pytestmark = pytest.mark.slow

INSTALL = "apt-get install -y buildah docker-registry busybox-static git"
BUSYBOX = Path("/usr/bin/busybox")
REPOSITORY = "acme/shop"
USERNAME = "pusher"
# A build-arg value made to break any shell it were pasted into; it must arrive as data.
HOSTILE_ARG = '$(touch {pwned}) `touch {pwned}` \'"; touch {pwned}; " \\ * ? ~ # & | < >'
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DIGEST_RE = re.compile(r"^helios-build-digest (sha256:[0-9a-f]{64})$", re.MULTILINE)
NOMAD_DIR_RE = re.compile(r"\$\{(NOMAD_ALLOC_DIR|NOMAD_TASK_DIR|NOMAD_SECRETS_DIR)\}")
TASK_TIMEOUT_S = 240
FIGURES: dict[str, float] = {}


def is_static_elf(path: Path) -> bool:
    """True when path is a 64-bit ELF executable without a program interpreter (static)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", data, phoff + i * entry_size)[0] != pt_interp for i in range(count)
    )


@pytest.fixture(scope="module")
def tools() -> None:
    """Root, buildah, docker-registry, git and a static BusyBox, or a failure saying how."""
    missing = [name for name in ("buildah", "docker-registry", "git") if not shutil.which(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install with `{INSTALL}`")
    if not BUSYBOX.exists() or not is_static_elf(BUSYBOX):
        pytest.fail(
            f"{BUSYBOX} is missing or not statically linked (a FROM scratch image needs the "
            "static one): `apt-get install -y busybox-static` (it replaces the busybox package)"
        )
    if os.geteuid() != 0:
        reason = (
            "the real build needs root: buildah's --isolation chroot makes mount namespaces "
            "and chroots (run the tests as root, as .ci/run does)"
        )
        # Like the converge tests: .ci/run (HELIOS_REQUIRE_CONVERGE=1) must run them; a fork's
        # unprivileged runner skips them here, with this reason, and runs them under sudo.
        if os.environ.get("HELIOS_REQUIRE_CONVERGE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for the registry's htpasswd file (glibc's crypt(3) makes it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Python 3.11's binding of crypt(3); the registry accepts bcrypt only

    # The lowest cost (2^4 rounds): the registry checks the hash on every request.
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)  # noqa: S324 (bcrypt, not weak)
    hashed = crypt.crypt(password, salt)
    if not hashed or not hashed.startswith("$2"):
        pytest.fail("crypt(3) here cannot make bcrypt hashes (libcrypt1 with bcrypt needed)")
    return hashed


@dataclass
class Registry:
    """A running docker-registry on loopback with one account (TLS when ``ca`` is set)."""

    address: str
    password: str
    ca: Path | None = None  # the CA file that signed its certificate

    def get(self, path: str, **headers: str) -> requests.Response:
        """GET /v2/<path> as the account."""
        scheme = "https" if self.ca else "http"
        return requests.get(
            f"{scheme}://{self.address}/v2/{path}",
            headers=headers,
            auth=(USERNAME, self.password),
            timeout=10,
            verify=str(self.ca) if self.ca else True,
        )

    def cache_tags(self) -> set[str]:
        """The tags of the app's layer cache repository (none yet: empty)."""
        answer = self.get(f"{REPOSITORY}/cache/tags/list")
        if answer.status_code == 404:
            return set()
        answer.raise_for_status()
        return set(answer.json().get("tags") or ())


def make_ca_and_certificate(home: Path) -> tuple[Path, Path, Path]:
    """A CA (like provisioning's cluster CA) and a certificate it signs for 127.0.0.1:
    (CA file, certificate file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Helios test cluster CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    files = (home / "ca.pem", home / "registry.crt", home / "registry.key")
    files[0].write_bytes(ca.public_bytes(pem))
    files[1].write_bytes(cert.public_bytes(pem))
    files[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def serve_registry(home: Path, *, tls: bool) -> Iterator[Registry]:
    """docker-registry with its own config, data directory and htpasswd account."""
    password = secrets.token_urlsafe(16)
    (home / "htpasswd").write_text(f"{USERNAME}:{bcrypt_hash(password)}\n")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(home / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "auth": {"htpasswd": {"realm": "helios-test", "path": str(home / "htpasswd")}},
    }
    ca = None
    if tls:
        ca, certificate, key = make_ca_and_certificate(home)
        config["http"]["tls"] = {"certificate": str(certificate), "key": str(key)}
    (home / "config.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    log = (home / "registry.log").open("wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(home / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        registry = Registry(f"127.0.0.1:{port}", password, ca)

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(home / 'registry.log').read_text()}")
            try:
                scheme = "https" if tls else "http"
                return (
                    requests.get(
                        f"{scheme}://{registry.address}/v2/", timeout=1,
                        verify=str(ca) if ca else True,
                    ).status_code == 401
                )  # fmt: skip
            except requests.ConnectionError:
                return False

        wait_until(answers, timeout=20, what="docker-registry to answer")
        yield registry
    finally:
        stop_child(proc)
        log.close()


@pytest.fixture(scope="module")
def registry(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry on plain HTTP (the spec marks it insecure)."""
    yield from serve_registry(tmp_path_factory.mktemp("registry"), tls=False)


@pytest.fixture(scope="module")
def tls_registry(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry over TLS, its certificate signed by a CA of its own (the cluster CA)."""
    yield from serve_registry(tmp_path_factory.mktemp("tls-registry"), tls=True)


def git(repo: Path, *args: str) -> str:
    """Run git in repo (no user or system config) and return its output."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Helios Test",
        "GIT_AUTHOR_EMAIL": "test@helios.invalid",
        "GIT_COMMITTER_NAME": "Helios Test",
        "GIT_COMMITTER_EMAIL": "test@helios.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def dockerfile(*steps: str) -> str:
    """FROM scratch with a static BusyBox, then the given steps."""
    return "\n".join(["FROM scratch", "COPY busybox /bin/busybox", *steps]) + "\n"


def run(*argv: str) -> str:
    """An exec-form RUN step (no shell needed in the image)."""
    return f"RUN {json.dumps(list(argv))}"


BUILT = run("/bin/busybox", "sh", "-c", "echo built > /built")
GREET = run("/bin/busybox", "sh", "-c", 'printf %s "$GREETING" > /greeting')


@dataclass
class AppRepo:
    """The app's repository: one commit per branch."""

    path: Path
    commits: dict[str, str]

    @property
    def url(self) -> str:
        return f"file://{self.path}"


@pytest.fixture(scope="module")
def app_repo(tools: None, tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    """main builds; feature adds a step; args prints a build arg into the image; slow sleeps
    5 s; escape's context leaves the repository."""
    repo = tmp_path_factory.mktemp("app") / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copy2(BUSYBOX, repo / "busybox")
    (repo / "Dockerfile").write_text(dockerfile(BUILT))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "shop")
    commits = {"main": git(repo, "rev-parse", "HEAD")}
    branches = {
        "feature": lambda: (repo / "Dockerfile").write_text(
            dockerfile(BUILT, run("/bin/busybox", "touch", "/feature"))
        ),
        "args": lambda: (repo / "Dockerfile").write_text(dockerfile("ARG GREETING", GREET)),
        "slow": lambda: (repo / "Dockerfile").write_text(
            dockerfile(run("/bin/busybox", "sleep", "5"))
        ),
        "escape": lambda: (repo / "outside").symlink_to("/etc"),
    }
    for branch, change in branches.items():
        git(repo, "checkout", "-q", "-b", branch, "main")
        change()
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", branch)
        commits[branch] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return AppRepo(repo, commits)


def make_spec(app: AppRepo, registry: Registry, branch: str, **changes: Any) -> BuildSpec:
    """The build of one branch's commit of the app (main is the tracked branch)."""
    fields: dict[str, Any] = {
        "slug": "shop",
        "team": "acme",
        "release": 1,
        "git_url": app.url,
        "git_sha": app.commits[branch],
        "branch": branch,
        "tracked_branch": "main",
        "registry": registry.address,
        "registry_insecure": True,
        "registry_auth": True,
        "repository": REPOSITORY,
        "time_limit_s": 180,
    }
    return BuildSpec(**{**fields, **changes})


@dataclass
class TaskRun:
    """What one task did."""

    returncode: int
    output: str
    seconds: float


@dataclass
class BuildRun:
    """The fetch and build tasks of one allocation."""

    fetch: TaskRun
    build: TaskRun
    alloc_dir: Path


def run_task(
    job: dict[str, Any], spec: BuildSpec, name: str, alloc_dir: Path, registry: Registry
) -> TaskRun:
    """Run one task's command as Nomad would: entrypoint + args, the task's Env with Nomad's
    directories filled in, and the env its template renders from the task's variable."""
    task = next(t for t in job["Job"]["TaskGroups"][0]["Tasks"] if t["Name"] == name)
    argv = [*task["Config"]["entrypoint"], *task["Config"]["args"]]
    nomad = {
        "NOMAD_ALLOC_DIR": alloc_dir,
        "NOMAD_TASK_DIR": alloc_dir.parent / name / "local",
        "NOMAD_SECRETS_DIR": alloc_dir.parent / name / "secrets",
    }
    for path in nomad.values():
        path.mkdir(parents=True, exist_ok=True)
    filled = {key: str(path) for key, path in nomad.items()}
    env = {
        key: NOMAD_DIR_RE.sub(lambda m: filled[m[1]], value) for key, value in task["Env"].items()
    }
    assert not any("${" in value for value in env.values()), env
    variables = render_build_variables(spec, registry_credential=(USERNAME, registry.password))
    for template in task.get("Templates", []):
        text = render_template(template["EmbeddedTmpl"], variables)
        if not template.get("Envvars"):  # a file in the task's directory (the registry's CA)
            target = alloc_dir.parent / name / template["DestPath"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            env[key] = json.loads(value)
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": filled["NOMAD_TASK_DIR"],
    }
    started = time.monotonic()
    done = subprocess.run(
        argv,
        env={**base, **filled, **env},
        cwd=filled["NOMAD_TASK_DIR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TASK_TIMEOUT_S,
        check=False,
    )
    return TaskRun(done.returncode, done.stdout, time.monotonic() - started)


def run_build(spec: BuildSpec, root: Path, registry: Registry) -> BuildRun:
    """One allocation: fresh directories (so an empty image store), fetch, then build."""
    job = render_build_job(spec)
    assert registry.password not in json.dumps(job)
    alloc_dir = root / "alloc"
    (alloc_dir / "data").mkdir(parents=True)  # Nomad makes alloc/data for its tasks
    fetch = run_task(job, spec, "fetch", alloc_dir, registry)
    assert fetch.returncode == 0, fetch.output
    build = run_task(job, spec, "build", alloc_dir, registry)
    assert registry.password not in fetch.output + build.output
    return BuildRun(fetch, build, alloc_dir)


@pytest.fixture(scope="module")
def first_build(
    app_repo: AppRepo, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> BuildRun:
    """The tracked branch's first build: cold, an empty cache."""
    assert registry.cache_tags() == set()
    run = run_build(
        make_spec(app_repo, registry, "main"), tmp_path_factory.mktemp("alloc-cold"), registry
    )
    FIGURES["cold"] = run.build.seconds
    return run


def pushed_digest(registry: Registry, sha: str) -> str:
    """The registry's Docker-Content-Digest of <repository>:<sha>."""
    answer = registry.get(f"{REPOSITORY}/manifests/{sha}", Accept=MANIFEST_TYPES)
    assert answer.status_code == 200, answer.text
    return answer.headers["Docker-Content-Digest"]


def file_in_image(registry: Registry, sha: str, name: str) -> bytes:
    """A file's content from the last layer of the pushed image."""
    manifest = registry.get(f"{REPOSITORY}/manifests/{sha}", Accept=MANIFEST_TYPES).json()
    blob = registry.get(f"{REPOSITORY}/blobs/{manifest['layers'][-1]['digest']}").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as layer:
        member = layer.extractfile(name)
        assert member is not None
        return member.read()


def test_build_pushes_and_prints_the_registry_digest(
    first_build: BuildRun, app_repo: AppRepo, registry: Registry
) -> None:
    run = first_build
    sha = app_repo.commits["main"]
    assert f"checked out {sha} (branch main)" in run.fetch.output
    assert run.build.returncode == 0, run.build.output
    digests = DIGEST_RE.findall(run.build.output)
    assert len(digests) == 1, run.build.output
    assert digests[0] == pushed_digest(registry, sha)
    assert (run.alloc_dir / "data" / "image-digest").read_text().strip() == digests[0]
    assert file_in_image(registry, sha, "built") == b"built\n"
    # The tracked branch wrote the layer cache: one entry per step that makes a layer.
    assert run.build.output.count("--> Pushing cache") == 2, run.build.output
    assert len(registry.cache_tags()) == 2


def test_a_build_from_an_empty_store_uses_the_registry_cache(
    first_build: BuildRun,
    app_repo: AppRepo,
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = make_spec(app_repo, registry, "main")
    warm = run_build(spec, tmp_path, registry)  # new task dir: an empty --root and --runroot
    assert warm.build.returncode == 0, warm.build.output
    assert (tmp_path / "build" / "local" / "containers" / "storage").is_dir()
    # Both steps after FROM (COPY and RUN) came from the registry's cache.
    assert warm.build.output.count("--> Cache pulled from remote") == 2, warm.build.output
    assert warm.build.output.count("--> Using cache") == 2, warm.build.output
    assert "Pushing cache" not in warm.build.output
    assert DIGEST_RE.search(warm.build.output)
    FIGURES["warm"] = warm.build.seconds
    with capsys.disabled():
        print(
            f"\nbuild task seconds (fetch excluded): cold {FIGURES['cold']:.2f}, "
            f"warm from the registry cache into an empty store {FIGURES['warm']:.2f}"
        )


def test_build_args_reach_the_build_as_data(
    app_repo: AppRepo, registry: Registry, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    greeting = HOSTILE_ARG.format(pwned=pwned)
    spec = make_spec(app_repo, registry, "args", build_args={"GREETING": greeting})
    run = run_build(spec, tmp_path / "alloc-args", registry)
    assert run.build.returncode == 0, run.build.output
    # Byte for byte in the image, and nothing of it ran.
    assert file_in_image(registry, app_repo.commits["args"], "greeting").decode() == greeting
    assert not pwned.exists()


def test_another_branch_reads_the_cache_but_never_writes_it(
    first_build: BuildRun, app_repo: AppRepo, registry: Registry, tmp_path: Path
) -> None:
    before = registry.cache_tags()
    spec = make_spec(app_repo, registry, "feature")
    run = run_build(spec, tmp_path, registry)
    assert run.build.returncode == 0, run.build.output
    # The steps it shares with main (COPY and RUN) come from the cache; its own is built.
    assert run.build.output.count("--> Cache pulled from remote") == 2, run.build.output
    assert "Pushing cache" not in run.build.output
    assert registry.cache_tags() == before
    assert DIGEST_RE.search(run.build.output)[1] == pushed_digest(
        registry, app_repo.commits["feature"]
    )


def test_a_build_over_its_time_limit_fails_saying_so(
    app_repo: AppRepo, registry: Registry, tmp_path: Path
) -> None:
    spec = make_spec(app_repo, registry, "slow", time_limit_s=2)
    run = run_build(spec, tmp_path, registry)
    assert run.build.returncode == 124, run.build.output
    assert "helios-build: time limit of 2 s exceeded" in run.build.output
    assert run.build.seconds < 5 + 3, run.build.seconds  # stopped, not waited out
    assert not DIGEST_RE.search(run.build.output)
    answer = registry.get(f"{REPOSITORY}/manifests/{app_repo.commits['slow']}")
    assert answer.status_code == 404


def test_a_context_leading_out_of_the_repository_is_refused(
    app_repo: AppRepo, registry: Registry, tmp_path: Path
) -> None:
    spec = make_spec(app_repo, registry, "escape", context="outside")
    run = run_build(spec, tmp_path, registry)
    assert run.build.returncode == 2, run.build.output
    assert "the build context outside leads outside the repository" in run.build.output
    assert "STEP" not in run.build.output  # buildah never started


def test_a_registry_signed_by_the_cluster_ca_is_trusted_through_the_spec_only(
    app_repo: AppRepo, tls_registry: Registry, tmp_path: Path
) -> None:
    """TLS verified (not insecure): without the CA the push is refused by the certificate
    check; with ``registry_ca`` (HELIOS_REGISTRY_CA_FILE) the build logs in and pushes."""
    sha = app_repo.commits["main"]
    plain = make_spec(app_repo, tls_registry, "main", registry_insecure=False)
    refused = run_build(plain, tmp_path / "without-ca", tls_registry)
    assert refused.build.returncode != 0
    assert "certificate signed by unknown authority" in refused.build.output, refused.build.output
    assert tls_registry.get(f"{REPOSITORY}/manifests/{sha}").status_code == 404

    assert tls_registry.ca is not None
    trusted = make_spec(
        app_repo, tls_registry, "main", registry_insecure=False,
        registry_ca=tls_registry.ca.read_text(),
    )  # fmt: skip
    run = run_build(trusted, tmp_path / "with-ca", tls_registry)
    assert run.build.returncode == 0, run.build.output
    digests = DIGEST_RE.findall(run.build.output)
    assert digests == [pushed_digest(tls_registry, sha)]
