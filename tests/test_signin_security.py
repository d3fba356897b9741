"""Signing in safely: server-side sessions, the lock-out, equal work for unknown emails,
password strength, safe redirects, audit events and logs without secrets."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

import pytest

from panel.actions.accounts import create_user, dummy_password_hash, validate_password
from panel.actions.common import ActionError
from panel.actions.members import add_member, remove_member
from panel.actions.sessions import SESSION_ID_KEY
from panel.actions.tokens import create_token
from panel.config import ConfigError, Settings
from panel.crypto import generate_password, hash_token
from panel.models import Event, Team, User, UserSession, utcnow
from panel.run.runtime import QUIET_LOGGERS, configure_logging
from panel.web import create_app

from conftest import Auth

PASSWORD = "Copper Walrus Umbrella 42"
NEW_PASSWORD = "Lantern Meadow Quartz 97"
ATTACKER, OWNER, OTHER = "203.0.113.9", "198.51.100.7", "192.0.2.33"


@pytest.fixture
def user(db):
    return create_user("dev@example.com", PASSWORD, team_slug="acme")


def _csrf(client, path: str = "/") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


def _browser(app, email: str = "dev@example.com", password: str = PASSWORD):
    client = app.test_client()
    assert Auth(client).login(email, password).status_code == 302
    return client


def _signed_in(client, address: str | None = None) -> bool:
    headers = {"X-Forwarded-For": address} if address else {}
    return client.get("/", headers=headers).status_code == 200


def _subjects(**where) -> list[str]:
    query = Event.select().order_by(Event.id)
    for name, value in where.items():
        query = query.where(getattr(Event, name) == value)
    return [row.subject for row in query]


# ---------------------------------------------------------------------------------------------
# Server-side sessions
# ---------------------------------------------------------------------------------------------


def test_a_cookie_copied_before_logout_stops_working_after_it(app, user):
    owner = _browser(app)
    thief = app.test_client()
    thief.set_cookie("session", owner.get_cookie("session").value)
    assert _signed_in(thief)

    assert owner.post("/logout", data={"csrf_token": _csrf(owner)}).status_code == 302
    assert not _signed_in(owner)
    assert not _signed_in(thief)
    assert UserSession.get().revoked_at is not None


def test_password_change_ends_every_other_session(app, user):
    here, elsewhere = _browser(app), _browser(app)
    answer = here.post(
        "/account/password",
        data={"current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD,
              "csrf_token": _csrf(here, "/account")},
    )  # fmt: skip
    assert answer.status_code == 302
    assert "1 other session signed out" in here.get("/account").get_data(as_text=True)
    assert _signed_in(here)
    assert not _signed_in(elsewhere)
    assert "v1.password.changed" in _subjects(user=user.id)
    revoked = Event.get(Event.subject == "v1.session.revoked")
    assert revoked.data == {"user_id": user.id, "email": "dev@example.com", "count": 1,
                            "reason": "password_changed"}  # fmt: skip
    assert _browser(app, password=NEW_PASSWORD)


def test_password_change_needs_the_current_password(app, user):
    client = _browser(app)
    answer = client.post(
        "/account/password",
        data={"current": "not my password", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD,
              "csrf_token": _csrf(client, "/account")},
    )  # fmt: skip
    assert answer.status_code == 422
    assert "the current password is wrong" in answer.get_data(as_text=True)
    assert User.get_by_id(user.id).password_hash == user.password_hash


def test_sign_out_everywhere_else_ends_other_sessions(app, user):
    here, elsewhere, third = _browser(app), _browser(app), _browser(app)
    page = here.get("/account").get_data(as_text=True)
    assert page.count(">this browser</span>") == 1
    assert len(re.findall(r'action="/account/sessions/\d+/revoke"', page)) == 3
    token = _csrf(here, "/account")
    answer = here.post("/account/sessions/revoke-others", data={"csrf_token": token})
    assert answer.status_code == 302
    assert _signed_in(here)
    assert not _signed_in(elsewhere) and not _signed_in(third)
    assert Event.get(Event.subject == "v1.session.revoked").data["count"] == 2


def test_one_session_can_be_signed_out_but_not_someone_elses(app, user):
    create_user("other@example.com", PASSWORD, team_slug="rival")
    here, elsewhere = _browser(app), _browser(app)
    stranger = _browser(app, "other@example.com")
    token = _csrf(here, "/account")

    def revoke(session_id: int):
        return here.post(f"/account/sessions/{session_id}/revoke", data={"csrf_token": token})

    theirs = UserSession.get(UserSession.user == User.get(User.email == "other@example.com").id)
    assert revoke(theirs.id).status_code == 404
    assert _signed_in(stranger)
    mine = [row.id for row in UserSession.select().where(UserSession.user == user.id)]
    assert revoke(mine[1]).status_code == 302
    assert not _signed_in(elsewhere)
    assert _signed_in(here)
    assert revoke(mine[0]).headers["Location"] == "/login"  # this browser's own: signed out
    assert not _signed_in(here)


def test_removal_from_the_last_team_ends_the_sessions(app, user):
    owner = create_user("owner@example.com", PASSWORD, team_slug="ops")
    add_member(actor=owner, team=Team.get(Team.slug == "ops"), email=user.email, role="viewer")
    acme = Team.get(Team.slug == "acme")
    add_member(actor=user, team=acme, email=owner.email, role="owner")
    client = _browser(app)

    remove_member(actor=owner, team=Team.get(Team.slug == "ops"), user_id=user.id)
    assert _signed_in(client)  # still in acme
    remove_member(actor=owner, team=acme, user_id=user.id)
    assert not _signed_in(client)
    assert Event.get(Event.subject == "v1.session.revoked").data["reason"] == "no_team_left"


def _set_last_seen(row: UserSession, value: datetime) -> None:
    UserSession.update(last_seen_at=value).where(UserSession.id == row.id).execute()


def test_last_seen_is_written_at_most_once_a_minute(app, user):
    client = _browser(app)
    row = UserSession.get()
    for _ in range(3):
        assert _signed_in(client)
    assert UserSession.get_by_id(row.id).last_seen_at == row.last_seen_at
    _set_last_seen(row, utcnow() - timedelta(seconds=61))
    assert _signed_in(client)
    assert UserSession.get_by_id(row.id).last_seen_at > utcnow() - timedelta(seconds=5)


def test_a_session_unused_for_two_weeks_is_over(app, user):
    client = _browser(app)
    _set_last_seen(UserSession.get(), utcnow() - timedelta(days=14, minutes=1))
    assert not _signed_in(client)


def test_a_session_without_its_row_is_anonymous(app, user):
    client = _browser(app)
    with client.session_transaction() as sess:
        assert sess[SESSION_ID_KEY]
        sess[SESSION_ID_KEY] = "forged-session-id"
    assert not _signed_in(client)
    with client.session_transaction() as sess:
        del sess[SESSION_ID_KEY]
    assert not _signed_in(client)


# ---------------------------------------------------------------------------------------------
# The lock-out
# ---------------------------------------------------------------------------------------------


def _guarded_app(settings, **login):
    app = create_app(settings.replace(trusted_proxies=1, **login))
    app.config["WTF_CSRF_ENABLED"] = False  # these tests are about counting attempts
    return app


def _try(client, address: str, password: str, email: str = "dev@example.com"):
    return client.post(
        "/login",
        data={"email": email, "password": password},
        headers={"X-Forwarded-For": address},
    )


def test_an_attacker_is_locked_out_while_the_owner_signs_in_from_elsewhere(settings, db, user):
    app = _guarded_app(settings)
    attacker = app.test_client()
    codes = [_try(attacker, ATTACKER, f"guess {n}").status_code for n in range(5)]
    assert codes == [401] * 5
    sixth = _try(attacker, ATTACKER, "guess 6")
    assert sixth.status_code == 401
    assert sixth.headers["Retry-After"] == "2"
    refused = _try(attacker, ATTACKER, PASSWORD)  # even the right password waits here
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert re.search(
        r"Too many failed attempts from this address for this account: try again in \d+ s\.",
        refused.get_data(as_text=True),
    )

    owner = app.test_client()
    assert _try(owner, OWNER, PASSWORD).status_code == 302
    assert _signed_in(owner, OWNER)


def test_back_off_doubles_up_to_its_cap(settings, db, user, redis_conn):
    from panel.lockout import Attempt, Policy, backoff_seconds, record_failure

    policy = Policy(free_failures=2, backoff_max=10)
    assert [backoff_seconds(policy, n) for n in range(1, 8)] == [0, 0, 2, 4, 8, 10, 10]
    attempt = Attempt("dev@example.com", ATTACKER)
    assert [record_failure(redis_conn, policy, attempt) for _ in range(4)] == [0, 0, 2, 4]


def test_ipv6_addresses_count_per_64_block():
    from panel.lockout import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_without_redis_attempts_are_let_through():
    import redis

    from panel.lockout import Attempt, Policy, check_attempt, record_failure

    from conftest import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    attempt = Attempt("dev@example.com", ATTACKER)
    assert check_attempt(dead, Policy(), attempt) is None
    assert record_failure(dead, Policy(), attempt) == 0


def test_a_distributed_guess_does_not_lock_out_a_known_browser(settings, db, user):
    app = _guarded_app(settings, login_account_failures=4)
    known = app.test_client()
    assert _try(known, OWNER, PASSWORD).status_code == 302
    assert known.get_cookie("helios_device") is not None
    assert known.post("/logout").status_code == 302

    botnet = app.test_client()
    codes = [_try(botnet, f"10.1.0.{n}", "guess").status_code for n in range(6)]
    assert codes == [401, 401, 401, 401, 429, 429]
    stranger = app.test_client()
    refused = _try(stranger, OTHER, PASSWORD)
    assert refused.status_code == 429
    assert "browser you signed in with before" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) > 0

    assert _try(known, "10.9.9.9", PASSWORD).status_code == 302  # a known browser, a new address
    assert _signed_in(known, "10.9.9.9")


def test_a_spray_from_one_address_does_not_lock_out_a_known_browser_there(settings, db, user):
    app = _guarded_app(settings, login_address_failures=3)
    known = app.test_client()
    assert _try(known, ATTACKER, PASSWORD).status_code == 302
    with known.session_transaction() as sess:
        sess.clear()
    sprayer = app.test_client()
    codes = [_try(sprayer, ATTACKER, "guess", f"u{n}@example.com").status_code for n in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert "from this address: try again in" in _try(sprayer, ATTACKER, PASSWORD).get_data(
        as_text=True
    )
    assert _try(known, ATTACKER, PASSWORD).status_code == 302


def test_a_forged_known_browser_cookie_counts_for_nothing(settings, db, user):
    app = _guarded_app(settings, login_account_failures=2)
    botnet = app.test_client()
    for n in range(2):
        _try(botnet, f"10.1.0.{n}", "guess")
    forger = app.test_client()
    forger.set_cookie("helios_device", '{"d": "x", "u": [1]}')
    assert _try(forger, OTHER, PASSWORD).status_code == 429


def test_refusals_do_not_tell_which_emails_have_accounts(settings, db, user):
    app = _guarded_app(settings, login_free_failures=1)
    client = app.test_client()
    real = [_try(client, ATTACKER, "guess").status_code for _ in range(3)]
    unknown = [_try(client, ATTACKER, "guess", "ghost@example.com").status_code for _ in range(3)]
    assert real == unknown == [401, 401, 429]


# ---------------------------------------------------------------------------------------------
# Equal work for unknown emails
# ---------------------------------------------------------------------------------------------


def test_every_sign_in_verifies_exactly_one_hash_of_the_same_kind(app, user, monkeypatch):
    import panel.actions.accounts

    User.create(email="gone@example.com", password_hash=user.password_hash, is_active=False)
    User.create(email="octo@example.com", github_id=4242, github_login="octo")
    checked: list[str] = []
    real_check = panel.actions.accounts.check_password

    def counting(stored_hash, password):
        checked.append(stored_hash)
        return real_check(stored_hash, password)

    monkeypatch.setattr(panel.actions.accounts, "check_password", counting)
    for email, password in [
        ("dev@example.com", PASSWORD),
        ("dev@example.com", "a wrong password"),
        ("nobody@example.com", PASSWORD),
        ("gone@example.com", PASSWORD),
        ("octo@example.com", PASSWORD),
    ]:
        before = len(checked)
        Auth(app.test_client()).login(email, password)
        assert len(checked) == before + 1, f"{email}: {len(checked) - before} verifications"

    method = user.password_hash.split("$")[0]  # e.g. scrypt:32768:8:1
    assert {stored.split("$")[0] for stored in checked} == {method}
    assert checked[2:] == [dummy_password_hash()] * 3


# ---------------------------------------------------------------------------------------------
# Password strength
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "advice"),
    [
        ("password123456", "similar to a commonly used password"),
        ("qwertyuiop1234", "Add another word or two"),
        ("aaaaaaaaaaaaaaaa", 'Repeats like "aaa" are easy to guess'),
        ("short", "at least 12 characters"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
def test_weak_passwords_are_refused_with_advice(password, advice):
    with pytest.raises(ActionError, match=re.escape(advice)):
        validate_password(password, "dev@example.com")


@pytest.mark.parametrize(
    ("password", "email"),
    [("my DEV@Example.com pass 9", "dev@example.com"),
     ("Walter and his lamp 77", "walter@example.com")],
)  # fmt: skip
def test_passwords_containing_the_email_are_refused(password, email):
    with pytest.raises(ActionError, match="contains the email address"):
        validate_password(password, email)


def test_strong_and_generated_passwords_pass():
    for password in [PASSWORD, NEW_PASSWORD, *(generate_password() for _ in range(20))]:
        assert validate_password(password, "dev@example.com") == password


def test_the_account_page_shows_zxcvbn_advice(app, user):
    client = _browser(app)
    answer = client.post(
        "/account/password",
        data={"current": PASSWORD, "new": "password123456", "confirm": "password123456",
              "csrf_token": _csrf(client, "/account")},
    )  # fmt: skip
    assert answer.status_code == 422
    assert "similar to a commonly used password" in answer.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# Redirects, events, logs, settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/apps%0D%0ASet-Cookie:%20x=1", "/%0Aevil", "/%09/evil.example", "/%5Cevil.example",
     "/\\evil.example", "/%E2%80%AE", "/ok%20path", "http:/evil.example"],
)  # fmt: skip
def test_odd_next_targets_fall_back_to_the_dashboard(client, user, target):
    token = _csrf(client, "/login")
    answer = client.post(
        f"/login?next={target}",
        data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/"


def test_a_plain_next_path_is_kept(client, user):
    token = _csrf(client, "/login")
    answer = client.post(
        "/login?next=/apps/web%3Ftab%3Denv",
        data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert answer.headers["Location"] == "/apps/web?tab=env"


def test_sign_ins_are_audit_events_without_passwords(app, user):
    Auth(app.test_client()).login("dev@example.com", "a wrong password")
    Auth(app.test_client()).login("ghost@example.com", "another guess")
    Auth(app.test_client()).login("Hunter2 Secret Pass", "x")  # a password in the email field
    _browser(app)

    rows = list(Event.select().order_by(Event.id))
    assert [r.subject for r in rows] == ["v1.signin.failed"] * 3 + ["v1.signin.succeeded"]
    wrong, ghost, typo, success = rows
    assert wrong.user_id == user.id and wrong.data["reason"] == "wrong_password"
    assert ghost.user_id is None and ghost.data["email"] == "ghost@example.com"
    assert ghost.data["reason"] == "unknown_account"
    assert typo.data["email"] is None
    assert success.user_id == user.id and success.actor == "dev@example.com"
    assert success.data["method"] == "password"
    stored = str([r.data for r in rows])
    for secret in (PASSWORD, "a wrong password", "another guess", "Hunter2"):
        assert secret not in stored


def test_debug_logs_carry_no_password_or_hash(app, client, user, capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in QUIET_LOGGERS})
    try:
        configure_logging(Settings(log_level="debug"), "test")
        logging.getLogger("panel.test").debug("debug logging is on")
        Auth(client).login("dev@example.com", PASSWORD)
        with client.session_transaction() as sess:
            session_id = sess[SESSION_ID_KEY]
        other = create_user("ops@example.com", NEW_PASSWORD, team_slug="ops")
        token = create_token(other, "cli", ["read"], days=30).secret
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    log = capsys.readouterr().err
    assert "debug logging is on" in log
    secrets = [
        PASSWORD,
        NEW_PASSWORD,
        token,
        session_id,
        hash_token(token),
        hash_token(session_id),
        user.password_hash,
        User.get_by_id(other.id).password_hash,
    ]
    for secret in secrets:  # fmt: skip
        assert secret not in log
        assert secret.split("$")[-1] not in log


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "http://127.0.0.1:8080"), ("https://helios.example.com/", "https://helios.example.com"),
     ("http://10.0.0.5:8080", "http://10.0.0.5:8080")],
)  # fmt: skip
def test_external_url_setting(value, expected):
    settings = Settings.from_env({"HELIOS_EXTERNAL_URL": value})
    assert settings.effective_external_url == expected


@pytest.mark.parametrize(
    "value",
    ["helios.example.com", "ftp://helios.example.com", "https://helios.example.com/panel",
     "https://helios.example.com?x=1", "https://user:pw@helios.example.com",
     "https://helios.example.com:99999", "https://helios.example.com\r\nX: y"],
)  # fmt: skip
def test_external_url_setting_refuses_anything_but_an_origin(value):
    with pytest.raises(ConfigError, match="HELIOS_EXTERNAL_URL"):
        Settings.from_env({"HELIOS_EXTERNAL_URL": value})
