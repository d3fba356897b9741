"""People and history: teams and their members' roles, personal API tokens, the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from peewee import JOIN, fn
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired
from wtforms.widgets import CheckboxInput, ListWidget

from panel.actions.common import ActionError
from panel.actions.limits import limits_of, set_team_limits, usage_of
from panel.actions.members import add_member, change_role, list_members, remove_member
from panel.actions.notifiers import (
    FORMATS,
    NewNotifier,
    create_notifier,
    delete_notifier,
    list_notifiers,
    rotate_notifier_secret,
    send_test_notification,
    set_notifier_enabled,
    subject_choices,
)
from panel.actions.team_namespace import move_team_namespace
from panel.actions.teams import create_team, delete_team
from panel.actions.tokens import create_token, revoke_token
from panel.models import ApiToken, Event, Membership, Role, Team, utcnow
from panel.namespaces import namespace_for
from panel.schema.limits import MEASURES
from panel.web.access import ACTION_STATUS, abort_for, role_in, team_or_404
from panel.web.forms import (
    EXPIRY_DAYS,
    ROLE_CHOICES,
    AuditFilterForm,
    MemberForm,
    TeamForm,
    TokenForm,
)
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


def _render_teams(form: TeamForm, status: int = 200):
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
    page = render_template("team/index.html", teams=list(rows), roles=roles, form=form)
    return page, status


@bp.get("/teams")
@login_required
def teams():
    """The teams the person belongs to, with their role and head count; and the form that
    creates one."""
    return _render_teams(TeamForm())


@bp.post("/teams")
@login_required
def create_team_view():
    """Create a team; the person creating it is its first owner."""
    form = TeamForm()
    if not form.validate_on_submit():
        return _render_teams(form, 422)
    try:
        team = create_team(actor=signed_in().user, redis_conn=_redis(), **form.values())
    except ActionError as exc:
        return _render_teams(form, show_action_error(form, exc))
    flash(f"Created the team {team.slug}: you are its owner. Add members below.")
    return redirect(url_for("team.team", slug=team.slug))


def _render_team(
    team: Team,
    form: MemberForm,
    status: int = 200,
    row_errors: dict[int, str] | None = None,
    notifier_form: NotifierForm | None = None,
    delete_error: str = "",
    limits_error: str = "",
    limits_given: dict[str, str] | None = None,
):
    user = signed_in().user
    role = role_in(user, team.id)
    is_admin = role is not None and role.rank >= Role.ADMIN.rank
    limits = limits_of(team).as_dict()
    page = render_template(
        "team/show.html",
        team=team,
        nomad_namespace=namespace_for(team, current_app.extensions["helios.settings"]),
        form=form,
        members=list_members(team),
        is_owner=role == Role.OWNER,
        role_choices=ROLE_CHOICES,
        row_errors=row_errors or {},
        is_admin=is_admin,
        notifiers=list_notifiers(team) if is_admin else [],
        notifier_form=notifier_form or NotifierForm(formdata=None),
        delete_error=delete_error,
        usage=usage_rows(usage_of(team).as_dict(), limits),
        may_set_limits=user.is_operator,
        limits_error=limits_error,
        limits_given=limits_given
        or {m: "" if limits[m] is None else str(limits[m]) for m in MEASURES},
    )
    return page, status


USAGE_LABELS = {
    "apps": ("Apps", ""),
    "instances": ("Instances", ""),
    "cpu_mhz": ("CPU", " MHz"),
    "memory_mb": ("Memory", " MB"),
}


def usage_rows(used: dict[str, int], limits: dict[str, int | None]) -> list[dict]:
    """One row per measure for the team page's Usage section: label, used and limit as shown,
    and the numbers its bar needs (``limit`` None: no limit, no bar)."""
    rows = []
    for measure in MEASURES:
        label, unit = USAGE_LABELS[measure]
        limit = limits[measure]
        rows.append({
            "measure": measure,
            "label": label,
            "used": used[measure],
            "limit": limit,
            "used_text": f"{used[measure]:,}{unit}",
            "limit_text": "no limit" if limit is None else f"{limit:,}{unit}",
            "over": limit is not None and used[measure] > limit,
        })  # fmt: skip
    return rows


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


@bp.post("/teams/<slug>/delete")
@login_required
def delete_team_view(slug: str):
    """Delete the team (its slug typed in ``confirm``); refused with the reason while it has
    apps, back at the team page's danger zone."""
    principal = signed_in()
    team = team_or_404(slug, principal, Role.OWNER)
    try:
        delete_team(
            actor=principal.user, team=team, confirm=request.form.get("confirm", "")[:200],
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        if exc.code in {"forbidden", "not_found"}:
            abort_for(exc)
        page, _status = _render_team(team, MemberForm(formdata=None), delete_error=str(exc))
        return page, ACTION_STATUS.get(exc.code, 400)
    flash(f"Deleted the team {team.slug}, with its memberships and notifiers.")
    return redirect(url_for("team.teams"))


def _for_site_admin(slug: str, what: str):
    """The signed-in site admin (operator) and team SLUG, for an action only site admins take:
    404 for anyone else outside the team (as for a team that does not exist), 403 inside it."""
    principal = signed_in()
    if not principal.user.is_operator:
        team_or_404(slug, principal)  # 404 outside the team
        abort(403, f"Only a site admin (operator) {what}.")
    team = Team.get_or_none(Team.slug == slug)
    if team is None:
        abort(404)
    return principal, team


@bp.post("/teams/<slug>/limits")
@login_required
def set_limits_view(slug: str):
    """Set the team's limits (site admins): an empty field is no limit."""
    principal, team = _for_site_admin(slug, "sets a team's limits")
    given = {m: request.form.get(m, "")[:40].strip() for m in MEASURES}
    try:
        set_team_limits(
            actor=principal.user, team=team, redis_conn=_redis(),
            limits={m: (value or None) for m, value in given.items()},
        )  # fmt: skip
    except ActionError as exc:
        if exc.code in {"forbidden", "not_found"}:
            abort_for(exc)
        if role_in(principal.user, team.id) is None:
            abort(ACTION_STATUS.get(exc.code, 400), str(exc))
        page, _status = _render_team(
            team, MemberForm(formdata=None), limits_error=str(exc), limits_given=given
        )
        return page, ACTION_STATUS.get(exc.code, 400)
    flash(f"Limits of {team.slug} saved.")
    if role_in(principal.user, team.id) is None:  # an operator outside the team
        return redirect(url_for("team.teams"))
    return redirect(url_for("team.team", slug=slug) + "#usage")


# ---------------------------------------------------------------------------------------------
# Notifications: the team's outgoing webhooks (admins and owners)
# ---------------------------------------------------------------------------------------------


class NotifierForm(FlaskForm):
    """A new outgoing webhook; ``create_notifier`` checks every value (the URL against
    internal addresses too)."""

    name = StringField("Name", validators=[DataRequired("Name it, e.g. team chat.")])
    url = StringField(
        "URL",
        description="https:// address that receives a POST for each event, e.g. a Slack "
        "incoming webhook. Internal addresses are refused.",
        validators=[DataRequired("Give the address that receives the events.")],
    )
    format = SelectField(
        "Format",
        choices=[("json", "JSON (the event, signed)"), ("slack", "Slack-compatible text")],
        default="json",
    )
    subjects = SelectMultipleField(
        "Events",
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired("Tick at least one event.")],
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subjects.choices = list(subject_choices().items())


def _settings():
    return current_app.extensions["helios.settings"]


@bp.post("/teams/<slug>/notifiers")
@login_required
def create_notifier_view(slug: str):
    """Register an outgoing webhook and show its signing secret once."""
    principal = signed_in()
    team = team_or_404(slug, principal, Role.ADMIN)
    form = NotifierForm()
    if not form.validate_on_submit() or form.format.data not in FORMATS:
        return _render_team(team, MemberForm(formdata=None), 422, notifier_form=form)
    try:
        new = create_notifier(
            actor=principal.user, team=team, name=form.name.data, url=form.url.data,
            format=form.format.data, subjects=form.subjects.data, settings=_settings(),
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        status = show_action_error(form, exc)
        return _render_team(team, MemberForm(formdata=None), status, notifier_form=form)
    return _secret_page(team, new)


def _secret_page(team: Team, new: NewNotifier, rotated: bool = False):
    """The page that shows a notifier's signing secret, once."""
    page = render_template("team/notifier_created.html", team=team, notifier=new, rotated=rotated)
    response = current_app.make_response(page)
    # The only page that ever holds the secret: keep it out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def _notifier_action(slug: str, action, done: str, **kwargs):
    principal = signed_in()
    team = team_or_404(slug, principal, Role.ADMIN)
    try:
        action(actor=principal.user, team=team, redis_conn=_redis(), **kwargs)
    except ActionError as exc:
        abort_for(exc)
    flash(done)
    return redirect(url_for("team.team", slug=slug) + "#notifications")


@bp.post("/teams/<slug>/notifiers/<int:notifier_id>/enabled")
@login_required
def notifier_enabled_view(slug: str, notifier_id: int):
    """Turn a notifier on (enabled=1) or off (enabled=0)."""
    enabled = request.form.get("enabled", "")
    if enabled not in {"0", "1"}:
        abort(400, "Send enabled=1 to turn the notifier on, enabled=0 to turn it off.")
    on = enabled == "1"
    done = "Notifier turned on." if on else "Notifier turned off."
    return _notifier_action(slug, set_notifier_enabled, done, notifier_id=notifier_id, enabled=on)


@bp.post("/teams/<slug>/notifiers/<int:notifier_id>/test")
@login_required
def test_notifier_view(slug: str, notifier_id: int):
    """Send a test event to one notifier; its outcome shows in the deliveries."""
    return _notifier_action(slug, send_test_notification,
                            "Test queued: its outcome shows below in a few seconds.",
                            notifier_id=notifier_id)  # fmt: skip


@bp.post("/teams/<slug>/notifiers/<int:notifier_id>/rotate-secret")
@login_required
def rotate_notifier_secret_view(slug: str, notifier_id: int):
    """Give a notifier a new signing secret and show it once; the old one stops at once."""
    principal = signed_in()
    team = team_or_404(slug, principal, Role.ADMIN)
    try:
        new = rotate_notifier_secret(
            actor=principal.user, team=team, notifier_id=notifier_id, settings=_settings(),
            redis_conn=_redis(),
        )  # fmt: skip
    except ActionError as exc:
        abort_for(exc)
    return _secret_page(team, new, rotated=True)


@bp.post("/teams/<slug>/notifiers/<int:notifier_id>/delete")
@login_required
def delete_notifier_view(slug: str, notifier_id: int):
    """Delete a notifier and its deliveries."""
    return _notifier_action(slug, delete_notifier, "Notifier deleted.", notifier_id=notifier_id)


@bp.post("/teams/<slug>/move-namespace")
@login_required
def move_namespace_view(slug: str):
    """Move the team's apps into a Nomad namespace of their own (site admins)."""
    principal, team = _for_site_admin(slug, "moves a team to its own Nomad namespace")
    try:
        move = move_team_namespace(
            actor=principal.user, team=team, settings=_settings(), redis_conn=_redis()
        )
    except ActionError as exc:
        flash(str(exc), "error")
    else:
        queued = len(move.deployments)
        flash(
            f"{team.slug} runs in Nomad namespace {move.namespace}: {queued} deployment(s) "
            "queued there; each app's old job is purged once its deployment succeeded."
        )
    if role_in(principal.user, team.id) is None:  # an operator outside the team
        return redirect(url_for("team.teams"))
    return redirect(url_for("team.team", slug=slug) + "#namespace")


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
