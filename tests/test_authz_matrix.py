"""Every route, method and principal against the expected status in tests/authz_matrix.tsv.

A route missing from the table fails the test, so a new route cannot ship without someone
deciding who may use it. Each request runs on a fresh copy of one seeded database, so what one
principal changes never affects the next.

Regenerate the table after adding routes with HELIOS_RECORD_AUTHZ=1, then read every new row
before committing it: the table is the reviewed policy, not a snapshot to accept blindly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from panel.actions.accounts import create_user
from panel.actions.apps import add_domain, request_deploy, set_env
from panel.actions.apps import create_app as create_app_row
from panel.actions.builds import record_delivery
from panel.actions.sessions import create_session, find_session
from panel.actions.tokens import create_token
from panel.config import Settings
from panel.crypto import SecretCipher, hash_token
from panel.db import database, migrate_up, open_database
from panel.models import (
    ApiToken,
    Build,
    Host,
    Notifier,
    OneOffRun,
    ProvisionRun,
    Role,
    Team,
    UserSession,
    utcnow,
)
from panel.web import create_app

TABLE = Path(__file__).with_name("authz_matrix.tsv")
PRINCIPALS = [
    "anon", "operator", "owner", "admin", "deployer", "viewer", "other",
    "tok_read", "tok_deploy", "tok_admin", "tok_expired", "tok_viewer", "tok_other",
    "other_bearer", "tok_minted",
]  # fmt: skip
# tok_read/deploy/admin/expired belong to the owner; tok_viewer is an admin-scoped token of the
# viewer (its role still limits it); tok_other an admin-scoped token of another team's admin.
# other_bearer is the other team's admin signed in, sending the owner's read token in an
# Authorization header (pages must ignore it; the API must ignore the session); tok_minted a
# deploy-scoped token the owner's admin token made through the API (a child of tok_admin).
PASSWORD = "matrix password 123"
SKIP_RULES = {"/static/<path:filename>"}  # served files, no data behind them

# Request bodies for state-changing routes: valid input, so an allowed principal gets the
# route's success status and a refused one its 401/403/404.
FORMS = {
    "/apps/new": {"team": "acme", "slug": "fresh", "image": "nginx:1.27", "port": "8080",
                  "health_path": "/healthz", "count": "1", "cpu_mhz": "250",
                  "memory_mb": "256", "memory_max_mb": "0", "branch": "main"},
    "/apps/<slug>/settings": {"image": "nginx:1.28", "port": "8080", "health_path": "/healthz",
                              "count": "1", "cpu_mhz": "250", "memory_mb": "256",
                              "memory_max_mb": "0", "branch": "main"},
    "/apps/<slug>/env": {"key": "NEW_KEY", "value": "v"},
    "/apps/<slug>/domains": {"hostname": "new.example.com"},
    "/apps/<slug>/delete": {"confirm": "web"},
    "/apps/<slug>/deploy": {"image": ""},
    "/apps/<slug>/runs": {"command": "ls", "timeout": ""},  # no live release: 409 if allowed
    "/apps/<slug>/scale": {"count": "2"},
    "/teams": {"slug": "fresh-team", "name": "Fresh"},
    # acme still has its app: its owner is told so (409); tests/test_teams.py deletes teams
    "/teams/<slug>/delete": {"confirm": "acme"},
    "/teams/<slug>/members": {"email": "spare@example.com", "role": "viewer"},
    "/teams/<slug>/limits": {"memory_mb": "4096", "apps": ""},
    "/teams/<slug>/members/<int:user_id>/role": {"role": "deployer"},
    # a public address given as such: registering checks it without a DNS lookup
    "/teams/<slug>/notifiers": {"name": "chat", "url": "https://1.1.1.1/hook", "format": "json",
                                "subjects": "v1.build.failed"},
    "/teams/<slug>/notifiers/<int:notifier_id>/enabled": {"enabled": "0"},
    "/tokens": {"name": "matrix", "scopes": "read", "expiry": "30 days"},
    "/hosts/new": {"name": "node9", "address": "10.0.0.9", "ssh_user": "root",
                   "ssh_port": "22", "groups": "nomad_clients"},
    "/hosts/plan": {},
    "/hosts/apply": {},
    "/login": {"email": "nobody@example.com", "password": "wrong password"},
    "/account/password": {"current": PASSWORD, "new": "Matrix Lantern Quartz 71",
                          "confirm": "Matrix Lantern Quartz 71"},
}  # fmt: skip
JSON = {
    ("POST", "/api/v1/apps"): {"team": "acme", "slug": "fresh", "image": "nginx:1.27"},
    ("PATCH", "/api/v1/apps/<slug>"): {"count": 2},
    ("DELETE", "/api/v1/apps/<slug>"): {"confirm": "web"},
    ("POST", "/api/v1/apps/<slug>/deployments"): {},
    ("POST", "/api/v1/apps/<slug>/domains"): {"hostname": "new.example.com"},
    ("PUT", "/api/v1/apps/<slug>/env/<key>"): {"value": "v", "secret": False},
    ("POST", "/api/v1/apps/<slug>/rollback"): {"release": 1},
    ("POST", "/api/v1/apps/<slug>/runs"): {"command": ["ls"]},
    ("POST", "/api/v1/apps/<slug>/scale"): {"count": 2},
    ("POST", "/api/v1/tokens"): {"name": "matrix", "scopes": ["read"], "days": 30},
    ("POST", "/api/v1/teams/<team>/notifiers"): {
        "name": "chat",
        "url": "https://1.1.1.1/hook",
        "subjects": ["v1.build.failed"],
    },
    ("PATCH", "/api/v1/teams/<team>/notifiers/<notifier_id>"): {"enabled": False},
    ("POST", "/api/v1/teams"): {"slug": "fresh-team", "name": "Fresh"},
    ("DELETE", "/api/v1/teams/<team>"): {"confirm": "acme"},  # acme has an app: 409 for its owner
    ("PUT", "/api/v1/teams/<team>/limits"): {"memory_mb": 4096},  # operators only: 403 for all
    # No GitHub headers: refused (400) whoever sends it, before any app is asked.
    ("POST", "/webhooks/github"): {"repository": {"id": 1}},
}


def _seed(url: str, settings: Settings) -> dict[str, object]:
    """The world every request starts from; returns the values that fill URL parameters."""
    database = open_database(url)
    migrate_up()
    with database.connection_context():
        owner = create_user("owner@example.com", PASSWORD, team_slug="acme")
        people = {"owner": owner}
        for role in (Role.ADMIN, Role.DEPLOYER, Role.VIEWER):
            people[role.value] = create_user(f"{role.value}@example.com", PASSWORD,
                                             team_slug="acme", role=role)  # fmt: skip
        people["other"] = create_user("other@example.com", PASSWORD, team_slug="rival",
                                      role=Role.ADMIN)  # fmt: skip
        people["operator"] = create_user("operator@example.com", PASSWORD, team_slug="ops",
                                         is_operator=True)  # fmt: skip
        create_user("spare@example.com", PASSWORD, team_slug="spare")
        acme = Team.get(Team.slug == "acme")
        app = create_app_row(actor=None, team=acme, slug="web", image="nginx:1.27")
        cipher = SecretCipher.from_settings(settings)
        set_env(actor=None, app=app, key="EXISTING", value="x", secret=False, cipher=cipher)
        add_domain(actor=None, app=app, hostname="web.example.com",
                   base_domain=settings.base_domain)  # fmt: skip
        import redis

        dead_redis = redis.Redis(port=1, socket_connect_timeout=0.2)
        deployment = request_deploy(actor=None, app=app, settings=settings,
                                    redis_conn=dead_redis).deployment  # fmt: skip
        made = {
            scope: create_token(owner, f"matrix-{scope}", [scope], days=30)
            for scope in ("read", "deploy", "admin")
        }
        tokens = {scope: new.secret for scope, new in made.items()}
        minted = create_token(owner, "minted", ["deploy"], days=10, parent=made["admin"].row)
        spare = create_token(owner, "spare", ["read"], days=30).row
        viewer_token = create_token(people["viewer"], "viewer", ["admin"], days=30).secret
        other_token = create_token(people["other"], "other", ["admin"], days=30).secret
        expired = create_token(owner, "expired", ["admin"], days=1)
        ApiToken.update(expires_at=utcnow() - timedelta(days=1)).where(
            ApiToken.token_hash == hash_token(expired.secret)
        ).execute()
        host = Host.create(name="node1", address="10.0.0.1", groups=["nomad_servers"])
        Build.create(app=app, number=1, git_sha="a" * 40, branch="main", status="failed")
        delivery = record_delivery(
            app=app, delivery="matrix-delivery", event="push", outcome="failed",
            reason="not built", git_sha="a" * 40, branch="main",
        )  # fmt: skip
        owner_elsewhere = find_session(create_session(owner, address="192.0.2.1"))
        run_id = ProvisionRun.create(kind="plan", status="succeeded", host_ids=[host.id]).id
        # <run_id> names a provisioning run under /hosts and a one-off run under /apps: the
        # same id for both.
        OneOffRun.create(
            id=run_id, app=app, release=deployment.release, command=["ls"], timeout_s=60,
            requested_by_name="owner@example.com",
        )  # fmt: skip
        notifier_id = Notifier.create(
            team=acme,
            name="existing",
            url="https://1.1.1.1/hook",
            subjects=["v1.build.failed"],
            secret=cipher.encrypt("matrix"),
        ).id
    database.close()
    return {
        "values": {
            "slug": "web", "deployment_id": deployment.id, "number": 1,
            "key": "EXISTING", "hostname": "web.example.com", "token_id": spare.id,
            "user_id": people["viewer"].id, "host_id": host.id, "run_id": run_id,
            "session_id": owner_elsewhere.id, "delivery_id": delivery.id,
            "notifier_id": notifier_id, "team": "acme",
        },
        "tokens": {"tok_read": tokens["read"], "tok_deploy": tokens["deploy"],
                   "tok_admin": tokens["admin"], "tok_expired": expired.secret,
                   "tok_viewer": viewer_token, "tok_other": other_token,
                   "tok_minted": minted.secret, "other_bearer": tokens["read"]},
    }  # fmt: skip


def _rules(app) -> list[tuple[str, str]]:
    pairs = []
    for rule in app.url_map.iter_rules():
        if rule.rule in SKIP_RULES:
            continue
        pairs += [(method, rule.rule) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


def _url(rule: str, seed: dict) -> str:
    url = rule
    for name, value in seed["values"].items():
        for converter in ("", "int:", "path:"):
            url = url.replace(f"<{converter}{name}>", str(value))
    url = url.replace("/teams/web", "/teams/acme")  # <slug> names a team there, not an app
    assert "<" not in url, f"{rule}: add a value for its parameter to the seed"
    return url


def _load_table() -> dict[tuple[str, str], list[str]]:
    if not TABLE.exists():
        return {}
    rows = {}
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        method, rule, *statuses = line.split("\t")
        rows[(method, rule)] = statuses
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_server) -> Iterator[tuple[Path, Settings, dict]]:
    base = tmp_path_factory.mktemp("authz")
    settings = Settings.from_env(
        environ={}, data_dir=base / "var", redis_url=redis_server, log_level="error",
        login_free_failures=100000, login_address_failures=100000,
        login_account_failures=100000,
        stream_lifetime=1,  # a live page's stream ends after a second, not a minute
    )  # fmt: skip
    template = base / "template.db"
    seed = _seed(f"sqlite:///{template}", settings)
    yield template, settings, seed


class Caller:
    """One principal's client on its own database file, reset to the seed before each call."""

    def __init__(self, world, workdir: Path, principal: str) -> None:
        template, settings, seed = world
        self.template, self.seed, self.principal = template, seed, principal
        self.signed_in = False
        self.session_rows: list[dict] = []  # the server-side session of a signed-in client
        self.db = workdir / f"{principal}.db"
        self.reset()
        self.app = create_app(settings.replace(database_url=f"sqlite:///{self.db}"))
        self.app.config.update(WTF_CSRF_ENABLED=False, TESTING=False)
        self.client = self.app.test_client()
        self.headers = {}
        if principal.startswith("tok_") or principal == "other_bearer":
            self.headers["Authorization"] = f"Bearer {seed['tokens'][principal]}"

    def reset(self) -> None:
        # Models share one database proxy: point it at this caller's file first.
        if hasattr(self, "app"):
            database.initialize(self.app.extensions["helios.database"])
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.db)
        if self.signed_in:  # the copy lacks the server-side session the client signed in with
            with database.connection_context():
                UserSession.insert_many(self.session_rows).execute()

    def sign_in(self) -> None:
        if self.principal == "anon" or self.principal.startswith("tok_") or self.signed_in:
            return
        person = self.principal.removesuffix("_bearer")
        answer = self.client.post(
            "/login", data={"email": f"{person}@example.com", "password": PASSWORD}
        )
        assert answer.status_code == 302, f"{self.principal} could not sign in"
        with database.connection_context():
            newest = UserSession.select().order_by(UserSession.id.desc()).limit(1)
            self.session_rows = list(newest.dicts())
        self.signed_in = True

    def status(self, method: str, rule: str) -> int:
        self.reset()
        self.sign_in()
        kwargs: dict = {"headers": self.headers}
        if (method, rule) in JSON:
            kwargs["json"] = JSON[(method, rule)]
        elif method == "POST":
            kwargs["data"] = FORMS.get(rule, {})
        response = self.client.open(_url(rule, self.seed), method=method, **kwargs)
        if response.mimetype == "text/event-stream":
            response.close()  # a live stream: its status is the answer; its end comes later
        else:
            assert b"Traceback" not in response.data
        if rule in {"/logout", "/login"}:  # these change who the client is
            self.client = self.app.test_client()
            self.signed_in = False
        return response.status_code


def test_every_route_has_a_row_and_every_principal_gets_its_status(world, tmp_path):
    template, settings, _seed_values = world
    app = create_app(settings.replace(database_url=f"sqlite:///{template}"))
    table = _load_table()
    callers = [Caller(world, tmp_path, principal) for principal in PRINCIPALS]
    observed = {
        (method, rule): [str(caller.status(method, rule)) for caller in callers]
        for method, rule in _rules(app)
    }
    if os.environ.get("HELIOS_RECORD_AUTHZ") == "1":
        lines = ["# method\trule\t" + "\t".join(PRINCIPALS)]
        lines += [f"{m}\t{r}\t" + "\t".join(s) for (m, r), s in observed.items()]
        TABLE.write_text("\n".join(lines) + "\n")
        pytest.skip(f"recorded {len(observed)} rows into {TABLE.name}: review them")
    missing = sorted(set(observed) - set(table))
    assert not missing, f"routes without a row in {TABLE.name}: {missing}"
    stale = sorted(set(table) - set(observed))
    assert not stale, f"rows for routes that no longer exist: {stale}"
    wrong = [
        f"{method} {rule} as {principal}: expected {want}, got {got}"
        for (method, rule), statuses in observed.items()
        for principal, want, got in zip(PRINCIPALS, table[(method, rule)], statuses, strict=True)
        if want != got
    ]
    assert not wrong, "\n".join(wrong)
    print(f"authorization matrix: {len(observed)} routes x {len(PRINCIPALS)} principals")
