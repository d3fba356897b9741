"""The API's notifiers: a team's outgoing webhooks, for its admins and owners (admin scope).

Thin over ``panel.actions.notifiers``, the functions the team page calls: the same checks (the
URL against internal addresses), the same events. A notifier's answer never holds its signing
secret nor its URL's path; the secret is in the one answer that creates or rotates it, sent
with ``Cache-Control: no-store``.

The routes belong to the API blueprint (bearer tokens, scopes, JSON errors): ``panel.web.api``
imports this module, which registers them on its ``bp``.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify, url_for
from werkzeug.exceptions import NotFound

from panel.actions.notifiers import (
    create_notifier,
    delete_notifier,
    list_notifiers,
    recent_deliveries,
    rotate_notifier_secret,
    send_test_notification,
    set_notifier_enabled,
)
from panel.models import Notifier, NotifierDelivery, Role, Team, TokenScope
from panel.schema.accounts import list_model
from panel.schema.notifiers import (
    DeliveryOut,
    NotifierCreated,
    NotifierIn,
    NotifierOut,
    NotifierPatch,
    NotifierRotated,
)
from panel.validation import ValidationError, validate_slug
from panel.web.access import team_or_404
from panel.web.api import _created, _principal, _redis, _settings, _user, bp
from panel.web.api_io import dump, fail, read_body
from panel.web.openapi import operation
from panel.web.paths import parse_row_id

__all__ = [
    "create_notifier_view",
    "delete_notifier_view",
    "get_notifier",
    "list_notifiers_view",
    "rotate_notifier_secret_view",
    "test_notifier_view",
    "update_notifier_view",
]

TAG = "notifiers"


def _team(slug: str) -> Team:
    """The team ``slug`` if the caller is one of its admins or owners; 404 outside the
    caller's teams, 403 with a weaker role."""
    try:
        validate_slug(slug, "team")
        return team_or_404(slug, _principal(), Role.ADMIN)
    except (ValidationError, NotFound):
        fail(404, f"you are not in a team named {slug[:63]!r}: leave --team out and "
                  "`helios notifiers list` names the teams you administer")  # fmt: skip


def _origin(url: str) -> str:
    """scheme://host[:port] of a notifier's URL, as the team page shows it."""
    return "/".join(url.split("/")[:3])


def _delivery_json(row: NotifierDelivery) -> dict[str, Any]:
    return dump(DeliveryOut, row)


def _notifier_json(row: Notifier, deliveries: list[NotifierDelivery]) -> dict[str, Any]:
    author = row.created_by.email if row.created_by_id and row.created_by else None
    return dump(
        NotifierOut, row, origin=_origin(row.url), subjects=list(row.subjects),
        created_by=author, deliveries=[_delivery_json(d) for d in deliveries],
    )  # fmt: skip


def _one(team: Team, notifier_id: str) -> Notifier:
    """The team's notifier of that id. The id is read here rather than by an ``<int:…>`` rule:
    Werkzeug answers 405 instead of 404 when such a rule's number is out of range and the
    same path has rules for other methods."""
    number = parse_row_id(notifier_id)
    row = None
    if number is not None:
        row = Notifier.get_or_none((Notifier.id == number) & (Notifier.team == team.id))
    if row is None:
        fail(404, f"{team.slug} has no notifier #{notifier_id[:20]}: list them with "
                  f"`helios notifiers list --team {team.slug}`")  # fmt: skip
    return row


def _with_secret(body: dict[str, Any], status: int, location: str | None = None):
    response = _created(body, location, status) if location else jsonify(body)
    response.status_code = status
    # The only answers that hold the secret: keep them out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/teams/<team>/notifiers")
@operation(TAG, TokenScope.ADMIN, out=list_model(NotifierOut), errors=(404,))
def list_notifiers_view(team: str):
    """A team's notifiers by name, each with its most recent deliveries (never a secret)."""
    rows = list_notifiers(_team(team))
    return jsonify({"items": [_notifier_json(row, deliveries) for row, deliveries in rows]})


@bp.post("/teams/<team>/notifiers")
@operation(
    TAG, TokenScope.ADMIN, body=NotifierIn, out=NotifierCreated, ok=201, location=True,
    errors=(404, 409),
)  # fmt: skip
def create_notifier_view(team: str):
    """Register an outgoing webhook; its signing secret is in this answer and nowhere else.

    The URL must lead to public addresses only (an operator may allow networks with
    HELIOS_NOTIFY_ALLOW_NETWORKS): it is checked now, and again at every send. A team has at
    most 20 notifiers (409 beyond)."""
    row_team = _team(team)
    body = read_body(NotifierIn)
    new = create_notifier(
        actor=_user(), team=row_team, name=body.name, url=body.url, format=body.format,
        subjects=list(body.subjects), settings=_settings(), redis_conn=_redis(),
    )  # fmt: skip
    answer = {"notifier": _notifier_json(new.row, []), "secret": new.secret}
    location = url_for("api.get_notifier", team=row_team.slug, notifier_id=new.row.id)
    return _with_secret(answer, 201, location)


@bp.get("/teams/<team>/notifiers/<notifier_id>")
@operation(TAG, TokenScope.ADMIN, out=NotifierOut, errors=(404,))
def get_notifier(team: str, notifier_id: str):
    """One notifier, with its most recent deliveries (never its secret)."""
    row = _one(_team(team), notifier_id)
    return jsonify(_notifier_json(row, recent_deliveries(row)))


@bp.patch("/teams/<team>/notifiers/<notifier_id>")
@operation(TAG, TokenScope.ADMIN, body=NotifierPatch, out=NotifierOut, errors=(404,))
def update_notifier_view(team: str, notifier_id: str):
    """Turn a notifier on or off; off, events no longer reach it."""
    row_team = _team(team)
    body = read_body(NotifierPatch)
    row = set_notifier_enabled(
        actor=_user(), team=row_team, notifier_id=_one(row_team, notifier_id).id,
        enabled=body.enabled,
        redis_conn=_redis(),
    )  # fmt: skip
    return jsonify(_notifier_json(row, recent_deliveries(row)))


@bp.delete("/teams/<team>/notifiers/<notifier_id>")
@operation(TAG, TokenScope.ADMIN, ok=204, errors=(404,))
def delete_notifier_view(team: str, notifier_id: str):
    """Delete a notifier and its deliveries (one queued then sends nothing)."""
    row_team = _team(team)
    row = _one(row_team, notifier_id)
    delete_notifier(actor=_user(), team=row_team, notifier_id=row.id, redis_conn=_redis())
    return "", 204


@bp.post("/teams/<team>/notifiers/<notifier_id>/test")
@operation(TAG, TokenScope.ADMIN, out=DeliveryOut, ok=202, errors=(404,))
def test_notifier_view(team: str, notifier_id: str):
    """Send a v1.notifier.tested event to this notifier only, enabled or not.

    The answer is the queued delivery; its outcome shows in the notifier's deliveries a few
    seconds later."""
    row_team = _team(team)
    row = _one(row_team, notifier_id)
    delivery = send_test_notification(
        actor=_user(), team=row_team, notifier_id=row.id, redis_conn=_redis()
    )
    return jsonify(_delivery_json(delivery)), 202


@bp.post("/teams/<team>/notifiers/<notifier_id>/rotate-secret")
@operation(TAG, TokenScope.ADMIN, out=NotifierRotated, errors=(404,))
def rotate_notifier_secret_view(team: str, notifier_id: str):
    """Give a notifier a new signing secret, in this answer and nowhere else.

    The old secret stops at once: every attempt made from now on, retries of earlier
    deliveries included, is signed with the new one (a delivery is signed when sent). Update
    the receiver right after; deliveries it refuses meanwhile fail, and can be seen in the
    notifier's deliveries."""
    row_team = _team(team)
    row = _one(row_team, notifier_id)
    new = rotate_notifier_secret(
        actor=_user(), team=row_team, notifier_id=row.id, settings=_settings(),
        redis_conn=_redis(),
    )  # fmt: skip
    answer = {"notifier": _notifier_json(new.row, recent_deliveries(new.row)), "secret": new.secret}
    return _with_secret(answer, 200)
