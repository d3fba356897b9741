"""Signing in and out: the lock-out, server-side sessions and the known-browser cookie.

A sign-in starts a server-side session (``panel.actions.sessions``) and marks the browser as known
to the account with a signed cookie, which exempts it from the lock-out's address and account
limits later (``panel.lockout`` explains the numbers). Every outcome is an audit event:
``v1.signin.succeeded`` or ``v1.signin.failed``.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadData, URLSafeTimedSerializer
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from panel.actions.accounts import check_sign_in, dummy_password_hash
from panel.actions.accounts import record_failed_sign_in as record_failure_event
from panel.actions.sessions import SESSION_ID_KEY, find_session, revoke_session, start_session
from panel.config import Settings
from panel.lockout import (
    Attempt,
    Policy,
    backoff_message,
    check_attempt,
    forget_failures,
    record_failure,
)
from panel.models import User

bp = Blueprint("auth", __name__)

DEVICE_COOKIE = "helios_device"
DEVICE_SALT = "helios.known-browser"
MAX_DEVICE_ACCOUNTS = 10  # accounts one browser is remembered for
MAX_NEXT_LENGTH = 2000
WRONG = "Email or password is wrong."


@bp.record_once
def _warm_dummy_hash(_state: Any) -> None:
    # The first unknown email would otherwise pay for making the dummy hash as well.
    dummy_password_hash()


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _settings() -> Settings:
    return current_app.extensions["helios.settings"]


def _redis():
    return current_app.extensions["helios.redis"]


def client_address() -> str:
    """The client's address (as the trusted proxies report it, see HELIOS_TRUSTED_PROXIES)."""
    return (request.remote_addr or "")[:64]


def _safe_next(target: str | None) -> str:
    # Only a plain same-site path: an absolute URL would be an open redirect, and browsers read
    # "\" as "/" and drop tabs and newlines, so "/\evil" and "/\t/evil" are off-site too.
    fallback = url_for("dashboard.index")
    if not target or len(target) > MAX_NEXT_LENGTH or not target.isascii():
        return fallback
    if not target.isprintable() or any(char in target for char in " \\"):
        return fallback
    if not target.startswith("/") or target.startswith("//"):
        return fallback
    parts = urlsplit(target)
    return fallback if parts.scheme or parts.netloc else target


# ---------------------------------------------------------------------------------------------
# The known-browser cookie
# ---------------------------------------------------------------------------------------------


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=DEVICE_SALT)


def _device_cookie() -> dict[str, Any] | None:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        data = _device_serializer().loads(raw, max_age=_settings().login_device_days * 86400)
    except BadData:
        return None
    valid = isinstance(data, dict) and isinstance(data.get("d"), str)
    return data if valid and isinstance(data.get("u"), list) else None


def known_device(account: User | None) -> str | None:
    """This browser's id when it signed in to ``account`` before, else None."""
    data = _device_cookie()
    if account is None or data is None or account.id not in data["u"]:
        return None
    return data["d"]


def remember_device(response: Response, user: User) -> None:
    """Mark this browser as known to ``user`` (refreshing the cookie's age)."""
    data = _device_cookie() or {"d": secrets.token_urlsafe(16), "u": []}
    accounts = [uid for uid in data["u"] if uid != user.id][-(MAX_DEVICE_ACCOUNTS - 1) :]
    settings = _settings()
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps({"d": data["d"], "u": [*accounts, user.id]}),
        max_age=settings.login_device_days * 86400,
        httponly=True,
        samesite="Lax",
        secure=settings.secure_cookies,
    )


# ---------------------------------------------------------------------------------------------
# Starting and ending sessions
# ---------------------------------------------------------------------------------------------


def finish_sign_in(user: User, method: str, target: str) -> Response:
    """Sign ``user`` in on this browser with a fresh session, record it, then go to ``target``."""
    session.clear()  # a fresh session on every sign-in
    session[SESSION_ID_KEY] = start_session(
        user, method=method, address=client_address(),
        user_agent=request.user_agent.string or "", redis_conn=_redis(),
    )  # fmt: skip
    login_user(user)
    response = redirect(target)
    remember_device(response, user)
    return response


def record_failed_sign_in(
    email: str | None, method: str, reason: str, *, account: User | None = None, **extra: Any
) -> None:
    """Record ``v1.signin.failed`` from this request's address (see the action of that name)."""
    record_failure_event(
        email, method, reason, address=client_address(), account=account, redis_conn=_redis(),
        **extra,
    )  # fmt: skip


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in page."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if not form.validate_on_submit():
        return _page(form)
    email = (form.email.data or "").strip().lower()[:254]
    account = User.get_or_none(User.email == email)
    attempt = Attempt(email, client_address(), known_device(account))
    policy = Policy.from_settings(_settings())
    refusal = check_attempt(_redis(), policy, attempt)
    if refusal is not None:
        return _page(form, refusal.message, 429, {"Retry-After": str(refusal.retry_after)})
    check = check_sign_in(email, form.password.data or "")
    if check.user is not None:
        forget_failures(_redis(), attempt)
        return finish_sign_in(check.user, "password", _safe_next(request.args.get("next")))
    backoff = record_failure(_redis(), policy, attempt)
    record_failed_sign_in(
        email, "password", str(check.failure), account=check.account, backoff_seconds=backoff
    )
    if backoff:
        notice = f"{WRONG} {backoff_message(attempt, backoff)}"
        return _page(form, notice, 401, {"Retry-After": str(backoff)})
    return _page(form, WRONG, 401)


def _page(
    form: LoginForm, error: str | None = None, status: int = 200, headers: dict | None = None
):
    github = bool(_settings().github_client_id)
    page = render_template("login.html", form=form, error=error, github=github)
    return page, status, headers or {}


@bp.post("/logout")
@login_required
def logout():
    """Sign out: the server-side session ends, so a copy of the cookie stops working too."""
    row = find_session(session.get(SESSION_ID_KEY))
    if row is not None:
        revoke_session(row)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
