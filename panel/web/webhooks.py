"""GitHub webhooks: the endpoint GitHub delivers pushes to, and each app's page of deliveries.

``POST /webhooks/github`` takes a delivery in the order that costs least to refuse: the size
and content type (before any byte of the body is read), the ``X-GitHub-Event`` and
``X-GitHub-Delivery`` headers, then the JSON body and its ``repository.id``. The apps connected
to that repository (by GitHub's numeric id) whose webhook secret verifies
``X-Hub-Signature-256`` over the exact body bytes each handle the delivery: it is recorded
once per app (a copy of a delivery id already recorded is answered "already received" and does
nothing), then a push to the app's tracked branch requests a build. When no app verifies —
none connected, none with a secret, or a wrong signature — the answer is the same 401 and
nothing is written, so the endpoint does not tell which repositories are connected.

Answers are quick and JSON: nothing on the request path talks to Nomad or GitHub (a build is
queued for a worker). A delivery that was verified is always acknowledged with a 2xx, even when
its build cannot be requested: GitHub does not redeliver on its own, and the failure is shown
on the app's deliveries page, whose **Redeliver** button builds the commit again.

Not rate-limited per address, unlike the API: GitHub sends every hook of every app from a few
shared addresses, so a budget per address would drop real pushes of busy installations (and,
behind a proxy not declared in HELIOS_TRUSTED_PROXIES, let anyone use up everyone's budget). A
forged delivery costs little: its headers are checked before its body is read, the body is
capped at GitHub's 25 MB, and it costs one HMAC per app of its repository, no write.

The webhook is not in the API's OpenAPI document: that document describes ``/api/v1`` only.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import login_required
from werkzeug.exceptions import RequestEntityTooLarge

from panel.actions.builds import (
    latest_builds,
    may_redeliver,
    record_delivery,
    redeliver,
    request_build,
)
from panel.actions.common import ActionError
from panel.crypto import SecretCipher, SecretKeyError
from panel.models import App, Role, WebhookDelivery
from panel.schema.github import MAX_BODY_BYTES, SIGNATURE_HEADER, Intent, decide, signature_matches
from panel.web import csrf
from panel.web.access import abort_for, app_or_404, role_in
from panel.web.api_io import error_response
from panel.web.pages import signed_in

__all__ = ["bp"]

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_RE = re.compile(r"[a-z][a-z_]{0,63}")  # GitHub's event names: push, ping, pull_request …
DELIVERY_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")  # a GUID: letters, digits, dashes; ≤ 64
REPO_ID_MAX = 2**63 - 1  # the column is a bigint
DELIVERIES_SHOWN = 100  # rows on an app's deliveries page
NOT_VERIFIED = (
    "the signature (X-Hub-Signature-256) does not verify: give the hook the app's webhook "
    "secret from Helios, and keep its content type application/json"
)
# Spent on a delivery no app could check, so a repository that is not connected answers in
# about the time of one that is (one HMAC over the body).
_UNUSED_SECRET = secrets.token_hex(32)


class DeliveryRefusedError(Exception):
    """A delivery refused before any app handles it: the status and why (for the sender)."""

    def __init__(self, status: int, message: str, note: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.note = status, message, note


@dataclass(frozen=True)
class Handled:
    """What one app made of a verified delivery."""

    app: str
    outcome: str  # accepted, ignored, failed, or duplicate (recorded before: nothing done)
    message: str
    status: int
    build: int | None = None


# ---------------------------------------------------------------------------------------------
# Receiving a delivery
# ---------------------------------------------------------------------------------------------


def _one_header(name: str, pattern: re.Pattern[str], what: str) -> str:
    values = request.headers.getlist(name)
    if len(values) != 1 or not pattern.fullmatch(values[0]):
        message = f"{name} is missing or not {what}: send the headers GitHub sends"
        raise DeliveryRefusedError(400, message)
    return values[0]


def _check_request() -> tuple[str, str]:
    """The event and delivery id, once size, content type and headers pass (body unread)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise DeliveryRefusedError(
            413, f"the body is {request.content_length} bytes: GitHub's limit, and Helios's, "
            f"is {MAX_BODY_BYTES} bytes (25 MB)",
        )  # fmt: skip
    if request.mimetype != "application/json":
        raise DeliveryRefusedError(
            415, "the body is not application/json: set the hook's content type to "
            "application/json in the repository's webhook settings",
        )  # fmt: skip
    event = _one_header(EVENT_HEADER, EVENT_RE, "an event name (lowercase letters and _)")
    delivery = _one_header(DELIVERY_HEADER, DELIVERY_RE, "a GUID of at most 64 characters")
    return event, delivery


def _read_payload() -> tuple[bytes, dict[str, Any], int]:
    """The exact body bytes, the parsed object and its repository id."""
    request.max_content_length = MAX_BODY_BYTES  # the panel's 1 MiB cap is for forms and API
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        message = f"the body is larger than {MAX_BODY_BYTES} bytes (25 MB)"
        raise DeliveryRefusedError(413, message) from None
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DeliveryRefusedError(400, f"the body is not valid JSON: {exc}") from None
    repository = payload.get("repository") if isinstance(payload, dict) else None
    repo_id = repository.get("id") if isinstance(repository, dict) else None
    if type(repo_id) is not int or not 0 < repo_id <= REPO_ID_MAX:
        raise DeliveryRefusedError(
            400, "the body names no repository by a numeric repository.id: Helios takes "
            "deliveries of repository webhooks",
        )  # fmt: skip
    return raw, payload, repo_id


def _verified_apps(repo_id: int, raw: bytes) -> list[App]:
    """The apps of that repository whose webhook secret signed exactly these bytes."""
    header = request.headers.get(SIGNATURE_HEADER)
    candidates = [
        app
        for app in App.live().where(App.github_repo_id == repo_id).order_by(App.id)
        if app.webhook_secret
    ]
    if not candidates:
        signature_matches(_UNUSED_SECRET, raw, header)
        return []
    cipher = SecretCipher.from_settings(current_app.extensions["helios.settings"])
    verified = []
    for app in candidates:
        try:
            secret = cipher.decrypt(app.webhook_secret)
        except SecretKeyError as exc:
            logger.error("app %s: its webhook secret cannot be read: %s", app.slug, exc)
            continue
        if signature_matches(secret, raw, header):
            verified.append(app)
    return verified


def _handle(app: App, event: str, delivery: str, payload: dict[str, Any]) -> Handled:
    """Record the delivery for ``app`` (once), then do what it asks."""
    decision = decide(event, payload, repo_id=app.github_repo_id, branch=app.branch)
    outcome = "ignored" if decision.intent is Intent.NOTHING else "accepted"
    row = record_delivery(
        app=app, delivery=delivery, event=event, outcome=outcome, reason=decision.reason,
        git_sha=decision.git_sha, branch=decision.branch,
    )  # fmt: skip
    if row is None:
        return Handled(app.slug, "duplicate", "already received", 200)
    if decision.intent is Intent.PONG:
        return Handled(app.slug, outcome, decision.reason, 200)
    if decision.intent is Intent.NOTHING:
        return Handled(app.slug, outcome, decision.reason, 202)
    try:
        requested = request_build(
            actor=None, app=app, settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"], git_sha=decision.git_sha,
            branch=decision.branch, reason="push", delivery=row, by="github",
        )  # fmt: skip
    except ActionError as exc:  # the action marked the delivery failed, with this reason
        logger.warning("app %s: delivery %s not built: %s", app.slug, delivery, exc.message)
        return Handled(app.slug, "failed", f"not built: {exc.message}", 202)
    number = requested.build.number
    if requested.created:
        message = f"build #{number} requested"
    else:
        message = f"build #{number} of this commit is under way already"
    return Handled(app.slug, "accepted", message, 202, build=number)


def _answer(delivery: str, handled: list[Handled]):
    if len(handled) == 1:
        message = handled[0].message
    else:
        message = "; ".join(f"{item.app}: {item.message}" for item in handled)
    body = {
        "message": message,
        "delivery": delivery,
        "apps": [
            {"app": h.app, "outcome": h.outcome, "message": h.message, "build": h.build}
            for h in handled
        ],
    }
    return jsonify(body), max(item.status for item in handled)


@bp.post("/webhooks/github")
@csrf.exempt
def github():
    """Take a GitHub delivery: verify it, record it once per app, build a pushed commit."""
    delivery = ""
    try:
        event, delivery = _check_request()
        raw, payload, repo_id = _read_payload()
        apps = _verified_apps(repo_id, raw)
        if not apps:
            raise DeliveryRefusedError(401, NOT_VERIFIED, f"{event} of repository {repo_id}")
    except DeliveryRefusedError as exc:
        logger.warning(
            "GitHub delivery %s from %s refused (%d): %s%s", delivery or "(no valid id)",
            request.remote_addr, exc.status, exc.message, f" [{exc.note}]" if exc.note else "",
        )  # fmt: skip
        response = error_response(exc.status, exc.message)
        response.headers.pop("WWW-Authenticate", None)  # signed deliveries, not bearer tokens
        return response
    return _answer(delivery, [_handle(app, event, delivery, payload) for app in apps])


# ---------------------------------------------------------------------------------------------
# An app's deliveries
# ---------------------------------------------------------------------------------------------


@bp.get("/apps/<slug>/deliveries")
@login_required
def deliveries(slug: str):
    """The app's last deliveries from GitHub, newest first, with the build each led to."""
    principal = signed_in()
    app = app_or_404(slug, principal)
    rows = list(
        WebhookDelivery.select()
        .where(WebhookDelivery.app == app.id)
        .order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc())
        .limit(DELIVERIES_SHOWN)
    )
    builds = latest_builds([row.id for row in rows])
    role = role_in(principal.user, app.team_id)
    can_deploy = role is not None and role.rank >= Role.DEPLOYER.rank
    listed = [
        {
            "row": row,
            "build": builds.get(row.id),
            "redeliver": can_deploy and may_redeliver(row, builds.get(row.id)),
        }
        for row in rows
    ]
    github_url = current_app.extensions["helios.settings"].github_url.rstrip("/")
    return render_template(
        "apps/deliveries.html", app=app, deliveries=listed, shown=DELIVERIES_SHOWN,
        can_deploy=can_deploy, github_url=github_url,
    )  # fmt: skip


@bp.post("/apps/<slug>/deliveries/<int:delivery_id>/redeliver")
@login_required
def redeliver_view(slug: str, delivery_id: int):
    """Build a failed delivery's commit again (deployer role)."""
    principal = signed_in()
    app = app_or_404(slug, principal, Role.DEPLOYER)
    row = WebhookDelivery.get_or_none(
        (WebhookDelivery.id == delivery_id) & (WebhookDelivery.app == app.id)
    )
    if row is None:
        abort(404)
    row.app = app  # the team is joined already
    try:
        requested = redeliver(
            actor=principal.user, delivery=row,
            settings=current_app.extensions["helios.settings"],
            redis_conn=current_app.extensions["helios.redis"],
        )  # fmt: skip
    except ActionError as exc:
        if exc.code in {"forbidden", "not_found"}:
            abort_for(exc)
        flash(f"Not redelivered: {exc.message}", "error")
    else:
        build = requested.build
        commit = build.git_sha[:12]
        if not requested.created:
            flash(f"Build #{build.number} of {commit} is under way already.")
        elif requested.enqueued:
            flash(f"Build #{build.number} of {commit} requested: it deploys once built.")
        else:
            flash(
                f"Build #{build.number} is recorded, but the queue is unreachable right now: "
                "a worker starts it as soon as Redis answers again.",
                "error",
            )
    return redirect(url_for("webhooks.deliveries", slug=app.slug))
