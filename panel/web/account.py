"""A person's own account: change the password, see and end their signed-in sessions, forget
the GitHub token Helios keeps for them."""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_login import login_required, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from panel.actions.accounts import MAX_PASSWORD_LENGTH, change_password
from panel.actions.common import ActionError
from panel.actions.github import forget_github_token
from panel.actions.sessions import live_sessions, revoke_all_sessions, revoke_session
from panel.lockout import Attempt, Policy, check_attempt, forget_failures, record_failure
from panel.models import User, UserSession
from panel.web.apps import forget_repositories
from panel.web.auth import client_address
from panel.web.pages import signed_in

bp = Blueprint("account", __name__)

# (pattern, name) in the order to try them: Edge and Chrome also say "Safari", Edge "Chrome".
_BROWSERS = (
    (r"Edg/", "Edge"), (r"Firefox/", "Firefox"), (r"Chromium/", "Chromium"),
    (r"Chrome/", "Chrome"), (r"Safari/", "Safari"), (r"curl/", "curl"),
    (r"python-requests/", "Python requests"),
)  # fmt: skip
_SYSTEMS = (
    (r"Android", "Android"), (r"iPhone|iPad", "iOS"), (r"Windows", "Windows"),
    (r"Mac OS X|Macintosh", "macOS"), (r"CrOS", "ChromeOS"), (r"Linux", "Linux"),
)  # fmt: skip


class PasswordForm(FlaskForm):
    """Change one's own password."""

    current = PasswordField(
        "Current password",
        validators=[DataRequired("Give your current password."), Length(max=MAX_PASSWORD_LENGTH)],
    )
    new = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password."), Length(max=MAX_PASSWORD_LENGTH)],
    )
    confirm = PasswordField(
        "New password again",
        validators=[
            DataRequired("Type the new password again."),
            EqualTo("new", message="The two new passwords differ."),
        ],
    )


def describe_browser(user_agent: str) -> str:
    """A short name for a browser ("Firefox on Linux") from its User-Agent header."""
    browser = next((name for pattern, name in _BROWSERS if re.search(pattern, user_agent)), "")
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, user_agent)), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "unknown browser"


def _current_session() -> UserSession:
    return g.user_session  # set by the user loader for every signed-in request


def _redis():
    return current_app.extensions["helios.redis"]


def _page(form: PasswordForm, status: int = 200, headers: dict[str, str] | None = None):
    user: User = signed_in().user
    rows = live_sessions(user)
    page = render_template(
        "account.html",
        user=user,
        form=form,
        sessions=[(row, describe_browser(row.user_agent)) for row in rows],
        current_id=_current_session().id,
        others=sum(1 for row in rows if row.id != _current_session().id),
        github_sign_in=bool(current_app.extensions["helios.settings"].github_client_id),
    )
    return page, status, headers or {}


@bp.get("/account")
@login_required
def account():
    """The person's account: password and signed-in sessions."""
    return _page(PasswordForm())


@bp.post("/account/password")
@login_required
def password():
    """Change the password; every other session of the person ends."""
    user: User = signed_in().user
    form = PasswordForm()
    if not form.validate_on_submit():
        return _page(form, 422)
    # Guessing the current password from a stolen session backs off like signing in does.
    attempt = Attempt(user.email, client_address(), f"session-{_current_session().id}")
    policy = Policy.from_settings(current_app.extensions["helios.settings"])
    refusal = check_attempt(_redis(), policy, attempt)
    if refusal is not None:
        form.current.errors = [refusal.message]
        return _page(form, 429, {"Retry-After": str(refusal.retry_after)})
    try:
        ended = change_password(
            user, form.current.data or "", form.new.data or "",
            keep=_current_session(), redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        if exc.field == "current" and user.password_hash:
            record_failure(_redis(), policy, attempt)
        field = form.current if exc.field == "current" else form.new
        field.errors = [str(exc)]
        return _page(form, 422)
    forget_failures(_redis(), attempt)
    others = f" {ended} other session{'s' if ended != 1 else ''} signed out." if ended else ""
    flash(f"Password changed.{others}")
    return redirect(url_for("account.account"))


@bp.post("/account/sessions/<int:session_id>/revoke")
@login_required
def revoke(session_id: int):
    """End one of the person's sessions (their own browser's signs them out)."""
    user: User = signed_in().user
    row = next((row for row in live_sessions(user) if row.id == session_id), None)
    if row is None:
        abort(404)
    revoke_session(row)
    if row.id == _current_session().id:
        logout_user()
        session.clear()
        return redirect(url_for("auth.login"))
    flash("That session is signed out.")
    return redirect(url_for("account.account"))


@bp.post("/account/sessions/revoke-others")
@login_required
def revoke_others():
    """Sign out everywhere else: every session of the person but this browser's ends."""
    user: User = signed_in().user
    ended = revoke_all_sessions(
        user, reason="sign_out_everywhere", actor=user.email,
        keep=_current_session(), redis_conn=_redis(),
    )  # fmt: skip
    flash(f"Signed out everywhere else ({ended} session{'s' if ended != 1 else ''}).")
    return redirect(url_for("account.account"))


@bp.post("/account/github/forget")
@login_required
def forget_github():
    """Delete the GitHub token Helios keeps for the person (signing in with GitHub keeps a new
    one)."""
    user: User = signed_in().user
    forgotten = forget_github_token(user=user, redis_conn=_redis())
    forget_repositories(_redis(), user.id)
    if forgotten:
        flash(
            "Helios forgot your GitHub token. Repository lists and webhooks need it: signing in "
            "with GitHub again keeps a new one."
        )
    else:
        flash("Helios keeps no GitHub token of yours.")
    return redirect(url_for("account.account"))
