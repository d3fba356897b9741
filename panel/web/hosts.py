"""Hosts and provisioning pages (operators only): add hosts, plan, apply, watch runs live."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import wraps

import redis
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectMultipleField, StringField, TextAreaField, widgets
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from panel.crypto import SecretCipher
from panel.db import database
from panel.hosts import HostError, add_host, request_provision
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus
from panel.reconcile.provision import END_MARK, channel_for
from panel.render.ansible import HOST_GROUPS

bp = Blueprint("hosts", __name__, url_prefix="/hosts")

HEARTBEAT = 15  # seconds between SSE comments that keep proxies from closing the stream
POLL = 1.0  # seconds a stream waits for a live event before looking at the run again


def operator_required(view):
    """Signed in and an operator; anyone else gets a 404, as if the page did not exist."""

    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_operator:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


class HostForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=253)])
    address = StringField("Address", validators=[DataRequired(), Length(max=253)])
    ssh_user = StringField("SSH user", default="root", validators=[DataRequired(), Length(max=32)])
    ssh_port = IntegerField("SSH port", default=22, validators=[NumberRange(1, 65535)])
    groups = SelectMultipleField(
        "Groups",
        choices=list(HOST_GROUPS),
        option_widget=widgets.CheckboxInput(),
        widget=widgets.ListWidget(prefix_label=False),
    )
    ssh_private_key = TextAreaField("SSH private key", validators=[Optional(), Length(max=16384)])


def _settings():
    return current_app.extensions["helios.settings"]


def _redis() -> redis.Redis:
    return current_app.extensions["helios.redis"]


def _latest_runs(limit: int = 20) -> list[ProvisionRun]:
    return list(ProvisionRun.select().order_by(ProvisionRun.id.desc()).limit(limit))


@bp.get("/")
@operator_required
def index():
    """Every host with its groups and state, and the latest runs."""
    hosts = list(Host.select().order_by(Host.name))
    return render_template("hosts/index.html", hosts=hosts, runs=_latest_runs(), section="hosts")


@bp.route("/new", methods=["GET", "POST"])
@operator_required
def new():
    """Add a host: address, SSH user and key, groups."""
    form = HostForm()
    if form.validate_on_submit():
        try:
            host = add_host(
                actor=current_user, name=(form.name.data or "").strip(),
                address=(form.address.data or "").strip(), groups=form.groups.data or [],
                ssh_user=(form.ssh_user.data or "").strip(), ssh_port=form.ssh_port.data or 22,
                ssh_private_key=form.ssh_private_key.data or None,
                cipher=SecretCipher.from_settings(_settings()), redis_conn=_redis(),
            )  # fmt: skip
        except HostError as exc:
            target = getattr(form, exc.field or "", None)
            if target is not None:
                target.errors = [*target.errors, str(exc)]
            else:
                form.form_errors.append(str(exc))
        else:
            flash(f"Host {host.name} added. Plan to see what provisioning would change.")
            return redirect(url_for("hosts.show", host_id=host.id))
    status = 400 if form.is_submitted() else 200
    return render_template("hosts/new.html", form=form, section="hosts"), status


@bp.get("/<int:host_id>")
@operator_required
def show(host_id: int):
    """One host: its state, groups and the runs that included it."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    runs = [run for run in _latest_runs(100) if host.id in run.host_ids][:20]
    return render_template("hosts/show.html", host=host, runs=runs, section="hosts")


def _provision(kind: str):
    host_ids = None
    if request.form.get("host_id"):
        if not request.form["host_id"].isdigit():
            abort(400)
        host_ids = [int(request.form["host_id"])]
    try:
        run = request_provision(actor=current_user, kind=kind, settings=_settings(),
                                redis_conn=_redis(), host_ids=host_ids)  # fmt: skip
    except HostError as exc:
        flash(str(exc), "error")
        return redirect(url_for("hosts.index"))
    return redirect(url_for("hosts.run", run_id=run.id))


@bp.post("/plan")
@operator_required
def plan():
    """Queue a plan: the playbooks in check mode with diff; nothing changes on the hosts."""
    return _provision("plan")


@bp.post("/apply")
@operator_required
def apply():
    """Queue an apply: the playbooks converge the hosts."""
    return _provision("apply")


@bp.get("/runs/<int:run_id>")
@operator_required
def run(run_id: int):
    """A run: status, per-host recap and its events (live while it runs)."""
    found = ProvisionRun.get_or_none(ProvisionRun.id == run_id) or abort(404)
    events = [e.data for e in found.events.order_by(ProvisionEvent.seq)]
    hosts = {h.id: h for h in Host.select().where(Host.id.in_(found.host_ids))}
    return render_template("hosts/run.html", run=found, events=events, hosts=hosts,
                           section="hosts")  # fmt: skip


def _sse(event: dict) -> str:
    return f"id: {event.get('seq', 0)}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"


def _stream(run_id: int, after: int, redis_conn: redis.Redis, limit: float) -> Iterator[str]:
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_for(run_id))  # before reading the rows: nothing falls between
    try:
        last = after
        with database.connection_context():
            stored = ProvisionEvent.select().where(
                (ProvisionEvent.run == run_id) & (ProvisionEvent.seq > after)
            )
            for row in stored.order_by(ProvisionEvent.seq):
                last = row.seq
                yield _sse(row.data)
        started = beat = time.monotonic()
        while time.monotonic() - started < limit:
            message = pubsub.get_message(timeout=POLL)
            if message is not None:
                event = json.loads(message["data"])
                if event == END_MARK:
                    break
                if event.get("seq", 0) > last:
                    last = event["seq"]
                    yield _sse(event)
                continue
            with database.connection_context():
                status = ProvisionRun.get_by_id(run_id).status
            if ProvisionStatus(status).is_terminal:
                break
            if time.monotonic() - beat > HEARTBEAT:
                beat = time.monotonic()
                yield ": still running\n\n"
        yield f"event: end\ndata: {json.dumps({'kind': 'end'})}\n\n"
    finally:
        pubsub.close()


@bp.get("/runs/<int:run_id>/events")
@operator_required
def events(run_id: int):
    """Server-Sent Events: the run's stored events, then live ones until it ends."""
    ProvisionRun.get_or_none(ProvisionRun.id == run_id) or abort(404)
    after = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    if not after.isdigit():
        abort(400)
    stream = _stream(run_id, int(after), _redis(), float(_settings().provision_timeout))
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
