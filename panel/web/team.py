"""People and history: teams and their members' roles, personal API tokens, the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required
from peewee import JOIN, fn

from panel.actions.common import ActionError
from panel.actions.members import add_member, change_role, list_members, remove_member
from panel.actions.tokens import create_token, revoke_token
from panel.models import ApiToken, Event, Membership, Role, Team, utcnow
from panel.web.access import abort_for, role_in, team_or_404
from panel.web.forms import EXPIRY_DAYS, ROLE_CHOICES, AuditFilterForm, MemberForm, TokenForm
from panel.web.pages import paginate, show_action_error, signed_in

bp = Blueprint("team", __name__)

AUDIT_PER_PAGE = 50
# Ids that only machines read; the audit log shows the names next to them instead.
AUDIT_HIDDEN_KEYS = {"app_id", "release_id", "user_id", "nomad_eval_id", "token_id"}
AUDIT_SHORTCUTS = (
    "v1.app", "v1.deployment", "v1.env", "v1.domain", "v1.member", "v1.token", "v1.signin",
)  # fmt: skip


def _redis():
    return current_app.extensions["helios.redis"]


# ---------------------------------------------------------------------------------------------
# Teams and members
# ---------------------------------------------------------------------------------------------


@bp.get("/teams")
@login_required
def teams():
    """The teams the person belongs to, with their role and head count."""
    user = signed_in().user
    mine = Membership.select(Membership.team).where(Membership.user == user.id)
    rows = (
        Team.select(Team, fn.COUNT(Membership.id).alias("members"))
        .join(Membership)
        .where(Team.id.in_(mine))
        .group_by(Team.id)
        .order_by(Team.slug)
    )
    roles = {m.team_id: m.role for m in Membership.select().where(Membership.user == user.id)}
    return render_template("team/index.html", teams=list(rows), roles=roles)


def _render_team(
    team: Team, form: MemberForm, status: int = 200, row_errors: dict[int, str] | None = None
):
    user = signed_in().user
    page = render_template(
        "team/show.html",
        team=team,
        form=form,
        members=list_members(team),
        is_owner=role_in(user, team.id) == Role.OWNER,
        role_choices=ROLE_CHOICES,
        row_errors=row_errors or {},
    )
    return page, status


@bp.get("/teams/<slug>")
@login_required
def team(slug: str):
    """A team's members and their roles; owners manage them here."""
    return _render_team(team_or_404(slug, signed_in()), MemberForm())


@bp.post("/teams/<slug>/members")
@login_required
def add_member_view(slug: str):
    """Add a person who has an account to the team."""
    principal = signed_in()
    team = team_or_404(slug, principal, Role.OWNER)
    form = MemberForm()
    if not form.validate_on_submit():
        return _render_team(team, form, 422)
    try:
        row = add_member(actor=principal.user, team=team, redis_conn=_redis(), **form.values())
    except ActionError as exc:
        return _render_team(team, form, show_action_error(form, exc))
    flash(f"Added {row.user.email} to {team.slug} as {row.role}.")
    return redirect(url_for("team.team", slug=slug))


def _member_action(slug: str, user_id: int, action, done: str, **kwargs):
    """Run a member action; a refusal (e.g. the last owner) shows next to that member's row."""
    principal = signed_in()
    team = team_or_404(slug, principal, Role.OWNER)
    try:
        action(actor=principal.user, team=team, user_id=user_id, redis_conn=_redis(), **kwargs)
    except ActionError as exc:
        if exc.code != "conflict":
            abort_for(exc)
        return _render_team(team, MemberForm(formdata=None), 409, {user_id: str(exc)})
    flash(done)
    return redirect(url_for("team.team", slug=slug))


@bp.post("/teams/<slug>/members/<int:user_id>/role")
@login_required
def change_role_view(slug: str, user_id: int):
    """Give a member another role (the team keeps at least one owner)."""
    role = request.form.get("role", "")
    if role not in ROLE_CHOICES:
        abort(400, "Pick one of the roles offered.")
    return _member_action(slug, user_id, change_role, "Role changed.", role=role)


@bp.post("/teams/<slug>/members/<int:user_id>/remove")
@login_required
def remove_member_view(slug: str, user_id: int):
    """Remove a member from the team (the team keeps at least one owner)."""
    return _member_action(slug, user_id, remove_member, "Member removed.")


# ---------------------------------------------------------------------------------------------
# Personal API tokens
# ---------------------------------------------------------------------------------------------


def _render_tokens(form: TokenForm, status: int = 200):
    user = signed_in().user
    rows = ApiToken.select().where(ApiToken.user == user.id).order_by(ApiToken.id.desc())
    page = render_template("tokens/index.html", form=form, tokens=list(rows), now=utcnow())
    return page, status


@bp.get("/tokens")
@login_required
def tokens():
    """The person's API tokens, and the form that creates one."""
    return _render_tokens(TokenForm())


@bp.post("/tokens")
@login_required
def create_token_view():
    """Create a token and show its secret once."""
    form = TokenForm()
    if not form.validate_on_submit():
        return _render_tokens(form, 422)
    days = EXPIRY_DAYS[form.expires.data]
    try:
        new = create_token(
            signed_in().user, form.name.data, form.scopes.data, days, redis_conn=_redis()
        )
    except ActionError as exc:
        return _render_tokens(form, show_action_error(form, exc, {"days": "expires"}))
    response = current_app.make_response(render_template("tokens/created.html", token=new))
    # The only page that ever holds the secret: keep it out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke_token_view(token_id: int):
    """Revoke one of the person's tokens; it stops working at once."""
    try:
        row = revoke_token(signed_in().user, token_id, redis_conn=_redis())
    except ActionError:
        abort(404)
    flash(f"Revoked the token {row.name!r}.")
    return redirect(url_for("team.tokens"))


# ---------------------------------------------------------------------------------------------
# Audit log
# ---------------------------------------------------------------------------------------------


@bp.app_template_filter("event_details")
def event_details(data: dict) -> list[tuple[str, str]]:
    """An event's data as (name, value) pairs a person reads, internal ids left out."""
    pairs = []
    for key, value in sorted(data.items()):
        if key in AUDIT_HIDDEN_KEYS:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            value = ", ".join(str(item) for item in value)
        pairs.append((key.replace("_", " "), str(value)))
    return pairs


@bp.get("/audit")
@login_required
def audit():
    """What happened in the person's teams and to the person (sign-ins, tokens), newest first;
    operators also see the events of no team (hosts, provisioning). Filter by subject prefix."""
    user = signed_in().user
    form = AuditFilterForm(request.args)
    mine = Membership.select(Membership.team).where(Membership.user == user.id)
    visible = Event.team.in_(mine) | (Event.team.is_null() & (Event.user == user.id))
    if user.is_operator:
        visible |= Event.team.is_null() & Event.user.is_null()
    query = Event.select(Event, Team).join(Team, JOIN.LEFT_OUTER).where(visible)
    status = 200
    if form.subject.data and form.validate():
        query = query.where(Event.subject.startswith(form.subject.data))
    elif form.subject.data:
        status = 422
    page = paginate(query.order_by(Event.id.desc()), AUDIT_PER_PAGE)
    return render_template("audit.html", form=form, page=page, shortcuts=AUDIT_SHORTCUTS), status
