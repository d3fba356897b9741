"""Outgoing webhooks for real: local HTTP receivers, the RQ job run by a worker on the real
Redis, signatures checked the way docs/events.md tells receivers to, and URLs that lead to
internal addresses refused at registration and at send time, with nothing sent.

Receivers listen on 127.0.0.1 (and 127.0.0.2): the tests allow loopback through
HELIOS_NOTIFY_ALLOW_NETWORKS exactly as an operator would, and plain http through
HELIOS_NOTIFY_ALLOW_HTTP (the receivers speak no TLS).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from panel.actions.accounts import create_user
from panel.actions.common import ActionError
from panel.actions.notifiers import (
    KEEP_DELIVERIES,
    create_notifier,
    set_notifier_enabled,
    subject_choices,
)
from panel.config import Settings
from panel.events import emit
from panel.models import Notifier, NotifierDelivery, Role, Team, User, utcnow
from panel.notify import (
    NOTIFY_QUEUE,
    DeliveryError,
    check_address,
    enqueue_delivery,
    parse_url,
    post,
)
from panel.queue import get_queue
from panel.reconcile.notifications import resume_notifications

from conftest import run_queued, wait_until

PASSWORD = "notify password 123"
FAILED = {
    "app": "web", "app_id": 1, "deployment_id": 7, "release_id": 3, "release": 3,
    "reason": "canary unhealthy", "reverted_to_version": 2,
}  # fmt: skip
BUILD_FAILED = {"app": "web", "app_id": 1, "build_id": 4, "build": 4, "git_sha": "a" * 40,
                "reason": "exit 1"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# A receiver
# ---------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on a loopback address: records each request, answers from a script."""

    address: str = "127.0.0.1"
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((dict(self.headers.items()), body))
                status, headers = receiver.answers.pop(0) if receiver.answers else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((self.address, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.server.server_address[1]}/hooks/helios?x=1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def notify_env(settings: Settings, monkeypatch) -> Settings:
    """The environment the delivery job reads (it runs as in a worker: Settings.from_env)."""
    env = {
        "HELIOS_DATA_DIR": str(settings.data_dir),
        "HELIOS_DATABASE_URL": settings.effective_database_url,
        "HELIOS_REDIS_URL": settings.effective_redis_url,
        "HELIOS_NOTIFY_ALLOW_HTTP": "true",
        "HELIOS_NOTIFY_ALLOW_NETWORKS": "127.0.0.1/32",
        "HELIOS_NOTIFY_RETRY_DELAYS": "0,0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


@pytest.fixture
def team(db) -> Team:
    create_user("owner@example.com", PASSWORD, team_slug="acme")
    return Team.get(Team.slug == "acme")


def _owner() -> User:
    return User.get(User.email == "owner@example.com")


def _register(team, settings, redis_conn, url, fmt="json", subjects=("v1.build.failed",)):
    return create_notifier(
        actor=_owner(), team=team, name=f"hook-{fmt}", url=url, format=fmt,
        subjects=list(subjects), settings=settings, redis_conn=redis_conn,
    )  # fmt: skip


def _work(redis_conn) -> None:
    """Run every queued job (retries queued without delay included) with a real RQ worker."""
    run_queued(redis_conn, get_queue(redis_conn, NOTIFY_QUEUE))


def _verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What docs/events.md tells a receiver to do."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Helios-Signature-256"])


# ---------------------------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------------------------


def test_the_receiver_verifies_the_signature_of_a_delivery_an_event_triggered(
    team, notify_env, redis_conn, receiver
):
    new = _register(team, notify_env, redis_conn, receiver.url)
    event = emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    emit("v1.deployment.succeeded", {**{k: FAILED[k] for k in list(FAILED)[:5]},
         "nomad_job_version": 1}, team=team.id, redis_conn=redis_conn)  # fmt: skip  # not wanted
    _work(redis_conn)

    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert _verified(new.secret, headers, body)
    assert not _verified(new.secret + "x", headers, body)
    document = json.loads(body)
    assert document == {
        "id": event.id, "subject": "v1.build.failed", "team": "acme", "data": BUILD_FAILED,
        "created_at": event.created_at.isoformat() + "Z",
    }  # fmt: skip
    delivery = NotifierDelivery.get()
    assert headers["X-Helios-Event"] == "v1.build.failed"
    assert headers["X-Helios-Delivery"] == str(delivery.id)
    assert headers["Host"] == receiver.url.split("/")[2]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None
    assert new.secret not in Notifier.get().secret  # kept encrypted

    # The same delivery queued again (a duplicate job) sends nothing more.
    enqueue_delivery(redis_conn, delivery.id)
    _work(redis_conn)
    assert len(receiver.requests) == 1


def test_a_receiver_answering_500_gets_the_retry_and_other_4xx_do_not(
    team, notify_env, redis_conn, receiver
):
    new = _register(team, notify_env, redis_conn, receiver.url)
    receiver.answers = [(500, {}), (200, {})]
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert len(receiver.requests) == 2
    (first, body1), (second, body2) = receiver.requests
    assert first["X-Helios-Delivery"] == second["X-Helios-Delivery"] and body1 == body2
    assert _verified(new.secret, second, body2)
    delivery = NotifierDelivery.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)

    # Bounded: 500 every time fails after the last of HELIOS_NOTIFY_RETRY_DELAYS (two here).
    receiver.requests.clear()
    receiver.answers = [(503, {}), (429, {}), (500, {})]
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert len(receiver.requests) == 3
    last = NotifierDelivery.select().order_by(NotifierDelivery.id.desc()).get()
    assert (last.status, last.attempts, last.last_status_code) == ("failed", 3, 500)
    assert last.last_error.startswith("answered 500")

    # A 404 is final.
    receiver.requests.clear()
    receiver.answers = [(404, {})]
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert len(receiver.requests) == 1
    last = NotifierDelivery.select().order_by(NotifierDelivery.id.desc()).get()
    assert (last.status, last.attempts, last.last_status_code) == ("failed", 1, 404)


def test_slack_format_sends_one_readable_line(team, notify_env, redis_conn, receiver):
    new = _register(team, notify_env, redis_conn, receiver.url, fmt="slack",
                    subjects=["v1.deployment.failed"])  # fmt: skip
    emit("v1.deployment.failed", FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    headers, body = receiver.requests[0]
    assert _verified(new.secret, headers, body)
    assert json.loads(body) == {
        "text": "[acme/web] deployment failed: release v3, reverted to job version 2 "
        "(canary unhealthy)"
    }


def test_a_disabled_notifier_gets_nothing(team, notify_env, redis_conn, receiver):
    new = _register(team, notify_env, redis_conn, receiver.url)
    set_notifier_enabled(actor=_owner(), team=team, notifier_id=new.row.id, enabled=False)
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert receiver.requests == [] and NotifierDelivery.select().count() == 0


# ---------------------------------------------------------------------------------------------
# Internal addresses (SSRF)
# ---------------------------------------------------------------------------------------------

REFUSED = [
    ("https://127.0.0.1/hook", "127.0.0.1 is loopback"),
    ("https://localhost/hook", "localhost resolves to 127.0.0.1 is loopback"),
    ("https://localhost./hook", "resolves to 127.0.0.1 is loopback"),
    ("https://[::1]/hook", "::1 is loopback"),
    ("https://10.1.2.3/hook", "10.1.2.3 is private"),
    ("https://192.168.1.20:8443/hook", "192.168.1.20 is private"),
    ("https://172.16.0.1/hook", "172.16.0.1 is private"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
    ("https://0.0.0.0/hook", "0.0.0.0 is unspecified"),
    ("https://100.64.0.1/hook", "100.64.0.1 is carrier-grade NAT"),
    ("https://224.0.0.1/hook", "224.0.0.1 is multicast"),
    ("https://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1 (that is 127.0.0.1) is loopback"),
    ("https://[::ffff:a9fe:a9fe]/", "(that is 169.254.169.254) is link-local"),
    ("https://[64:ff9b::a00:1]/hook", "(that is 10.0.0.1) is private"),
    ("https://[fd00::1]/hook", "fd00::1 is private"),
    ("https://[fe80::1]/hook", "fe80::1 is link-local"),
    ("http://2130706433/hook", "an IP address in an unusual form"),
    ("https://0x7f.1/hook", "an IP address in an unusual form"),
    ("https://127.1/hook", "an IP address in an unusual form"),
    ("https://user:pw@hooks.example.com/hook", "may not carry a user name or password"),
    ("https://hooks.example.com/hook#x", "#fragment"),
    ("ftp://hooks.example.com/hook", "must start with https://"),
    ("https://hooks.example.com:0/hook", "port must be a number from 1 to 65535"),
    ("https://hooks.exa mple.com/", "spaces"),
    ("https:///hook", "has no host"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_internal_urls_are_refused_at_registration_with_the_reason(team, settings, url, reason):
    allowed_http = settings.replace(notify_allow_http=True)
    with pytest.raises(ActionError) as refused:
        _register(team, allowed_http, None, url)
    assert refused.value.field == "url"
    assert reason in refused.value.message, refused.value.message
    assert Notifier.select().count() == 0


def test_plain_http_needs_the_operator_setting(team, settings):
    with pytest.raises(ActionError, match="HELIOS_NOTIFY_ALLOW_HTTP"):
        _register(team, settings, None, "http://1.1.1.1/hook")
    assert parse_url("http://1.1.1.1/hook", allow_http=True).port == 80


def test_the_operator_allows_a_network_and_only_that_network():
    assert check_address("10.20.0.5", ["10.20.0.0/16"]) is None
    assert check_address("::ffff:10.20.0.5", ["10.20.0.0/16"]) is None
    assert check_address("10.21.0.5", ["10.20.0.0/16"]) == "10.21.0.5 is private"
    assert check_address("1.1.1.1") is None and check_address("2606:4700::1111") is None


def test_the_url_is_checked_again_at_send_time_and_nothing_is_sent(
    team, notify_env, redis_conn, receiver, monkeypatch
):
    """Registered while the operator allowed loopback; the setting gone, the delivery fails."""
    _register(team, notify_env, redis_conn, receiver.url)
    monkeypatch.delenv("HELIOS_NOTIFY_ALLOW_NETWORKS")
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert receiver.requests == []
    delivery = NotifierDelivery.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "refused: 127.0.0.1 resolves to 127.0.0.1 is loopback" in delivery.last_error


def test_a_redirect_to_an_internal_address_is_not_followed(team, notify_env, redis_conn, receiver):
    inside = Receiver(address="127.0.0.2").start()  # not in the allowed 127.0.0.1/32
    try:
        _register(team, notify_env, redis_conn, receiver.url)
        receiver.answers = [(302, {"Location": inside.url}), (307, {"Location": inside.url})]
        emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
        _work(redis_conn)
        assert inside.requests == [] and len(receiver.requests) == 1
        delivery = NotifierDelivery.get()
        assert (delivery.status, delivery.attempts) == ("failed", 1)
        assert delivery.last_error == "answered 302: redirects are not followed"
    finally:
        inside.stop()


def test_the_checked_address_is_the_one_connected_to(receiver):
    """No second lookup (DNS rebinding has nothing to rebind): the request goes to the address
    given, for a name that does not even resolve, whose Host header it still carries."""
    port = receiver.server.server_address[1]
    target = parse_url(f"http://rebind.invalid:{port}/x", allow_http=True)
    answer = post(target, ["127.0.0.1"], b"{}", {"X-Helios-Event": "v1.test.sent"})
    assert answer.status == 200
    headers, _ = receiver.requests[0]
    assert headers["Host"] == f"rebind.invalid:{port}"


# ---------------------------------------------------------------------------------------------
# The team page
# ---------------------------------------------------------------------------------------------


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def test_admins_register_a_notifier_on_the_team_page_and_see_the_secret_once(client, auth, team):
    auth.login("owner@example.com", PASSWORD)
    page = client.get("/teams/acme").get_data(as_text=True)
    assert "Notifications" in page and "Deploy failed or reverted" in page
    assert set(subject_choices()) >= {"v1.deployment.failed", "v1.build.failed"}
    form = {"csrf_token": _csrf(page), "name": "chat", "format": "json",
            "subjects": "v1.build.failed"}  # fmt: skip

    refused = client.post("/teams/acme/notifiers", data={**form, "url": "https://10.0.0.8/x"})
    assert refused.status_code == 422
    assert "10.0.0.8 is private" in refused.get_data(as_text=True)

    made = client.post("/teams/acme/notifiers", data={**form, "url": "https://1.1.1.1/T0/s3cr"})
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    secret = Notifier.get().secret
    shown = re.search(r'id="notifier-secret" type="text" value="([0-9a-f]{64})"',
                      made.get_data(as_text=True)).group(1)  # fmt: skip
    assert shown not in secret
    again = client.get("/teams/acme").get_data(as_text=True)
    assert shown not in again and "/T0/s3cr" not in again and "https://1.1.1.1/…" in again

    # "Send a test" queues a v1.notifier.tested delivery to this notifier only.
    notifier = Notifier.get()
    sent = client.post(
        f"/teams/acme/notifiers/{notifier.id}/test", data={"csrf_token": _csrf(again)}
    )
    assert sent.status_code == 302
    assert [d.subject for d in NotifierDelivery.select()] == ["v1.notifier.tested"]
    off = client.post(f"/teams/acme/notifiers/{notifier.id}/enabled",
                      data={"csrf_token": _csrf(again), "enabled": "0"})  # fmt: skip
    assert off.status_code == 302 and not Notifier.get().enabled
    gone = client.post(f"/teams/acme/notifiers/{notifier.id}/delete",
                       data={"csrf_token": _csrf(again)})  # fmt: skip
    assert gone.status_code == 302 and Notifier.select().count() == 0


def test_a_deployer_sees_no_notifications_section(client, auth, team):
    create_user("dev@example.com", PASSWORD, team_slug="acme", role=Role.DEPLOYER)
    auth.login("dev@example.com", PASSWORD)
    page = client.get("/teams/acme").get_data(as_text=True)
    assert "Notifications" not in page and "/notifiers" not in page


def test_only_the_newest_deliveries_of_a_notifier_are_kept(team, notify_env, redis_conn, receiver):
    new = _register(team, notify_env, redis_conn, receiver.url)
    old = [{"notifier": new.row.id, "subject": "v1.build.failed", "status": "delivered",
            "created_at": utcnow()} for _ in range(KEEP_DELIVERIES + 5)]  # fmt: skip
    NotifierDelivery.insert_many(old).execute()
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)
    _work(redis_conn)
    assert NotifierDelivery.select().count() == KEEP_DELIVERIES
    newest = NotifierDelivery.select().order_by(NotifierDelivery.id.desc()).get()
    assert newest.status == "delivered" and newest.event_id is not None


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    """A certificate for ``name`` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    return str(cert_file), str(key_file)


def test_tls_is_verified_against_the_host_name_while_connecting_to_the_checked_address(
    receiver, tmp_path, monkeypatch
):
    cert, key = _self_signed(tmp_path, "hooks.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    port = receiver.server.server_address[1]

    untrusted = parse_url(f"https://hooks.test:{port}/x")
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        post(untrusted, ["127.0.0.1"], b"{}", {})

    monkeypatch.setenv("SSL_CERT_FILE", cert)  # trusted as a system root would be
    assert post(untrusted, ["127.0.0.1"], b"{}", {}).status == 200
    assert receiver.requests[-1][0]["Host"] == f"hooks.test:{port}"
    wrong_name = parse_url(f"https://other.test:{port}/x")
    with pytest.raises(DeliveryError, match="Hostname mismatch"):
        post(wrong_name, ["127.0.0.1"], b"{}", {})


def test_a_real_worker_retries_after_the_back_off(team, notify_env, redis_conn, receiver,
                                                  start_worker):  # fmt: skip
    """The production path: `helios worker` (with RQ's scheduler) runs the delivery, and the
    retry waits in RQ's schedule for its delay (1 s here) before it is sent."""
    new = _register(team, notify_env, redis_conn, receiver.url)
    receiver.answers = [(502, {}), (200, {})]
    start_worker(
        HELIOS_NOTIFY_ALLOW_HTTP="true", HELIOS_NOTIFY_ALLOW_NETWORKS="127.0.0.1/32",
        HELIOS_NOTIFY_RETRY_DELAYS="1",
    )  # fmt: skip
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=redis_conn)

    def delivered() -> NotifierDelivery | None:
        row = NotifierDelivery.get()
        return row if row.status == "delivered" else None

    row = wait_until(delivered, timeout=60, what="the retried delivery")
    assert (row.attempts, row.last_status_code) == (2, 200)
    assert [headers["X-Helios-Delivery"] for headers, _ in receiver.requests] == [str(row.id)] * 2
    assert all(_verified(new.secret, headers, body) for headers, body in receiver.requests)


def test_a_delivery_whose_job_was_lost_is_queued_again(team, notify_env, redis_conn, receiver):
    """Redis was down when the event came (no job): the worker's sweep queues it, once."""
    _register(team, notify_env, redis_conn, receiver.url)
    emit("v1.build.failed", BUILD_FAILED, team=team.id, redis_conn=None)
    assert NotifierDelivery.get().status == "pending"
    assert resume_notifications(redis_conn, older_than=0, locked=False) == 1
    assert resume_notifications(redis_conn, older_than=0, locked=False) == 0  # queued already
    _work(redis_conn)
    assert len(receiver.requests) == 1 and NotifierDelivery.get().status == "delivered"
    assert resume_notifications(redis_conn, older_than=0, locked=False) == 0
