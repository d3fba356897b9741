"""Signing in and out with a local account."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from panel.accounts import authenticate
from panel.web import limiter

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an absolute URL here would be an open redirect.
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.index")


def _login_limit() -> str:
    return current_app.extensions["helios.settings"].login_limit


def _submitted_account() -> str:
    return "login:" + (request.form.get("email") or "").strip().lower()[:254]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message="Too many sign-in attempts.")
@limiter.limit(
    _login_limit, key_func=_submitted_account, methods=["POST"],
    error_message="Too many sign-in attempts for this account.",
)  # fmt: skip
def login():
    """The sign-in page."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = authenticate(form.email.data or "", form.password.data or "")
        if user is not None:
            session.clear()  # a fresh session on every sign-in
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        error = "Email or password is wrong."
    status = 401 if error else 200
    github = bool(current_app.extensions["helios.settings"].github_client_id)
    return render_template("login.html", form=form, error=error, github=github), status


@bp.post("/logout")
@login_required
def logout():
    """Sign out and forget the session."""
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
