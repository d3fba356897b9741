"""Hosts and provisioning pages (operators only): add hosts, plan, apply, watch runs live."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import wraps

import redis
from flask import (
    Blueprint,
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

from panel.actions.hosts import (
    HostError,
    KeyScan,
    add_host,
    host_keys,
    pin_host_keys,
    request_provision,
    scan_host_keys,
)
from panel.crypto import SecretCipher
from panel.db import database
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus
from panel.reconcile.provision import END_MARK, channel_for
from panel.render.ansible import HOST_GROUPS
from panel.web.paths import parse_row_id
from panel.web.streams import HEARTBEAT, event_stream, streams_stopping

bp = Blueprint("hosts", __name__, url_prefix="/hosts")

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
    ssh_host_keys = TextAreaField("SSH host keys", validators=[Optional(), Length(max=65536)])


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
                ssh_host_keys=form.ssh_host_keys.data or None,
                cipher=SecretCipher.from_settings(_settings()), redis_conn=_redis(),
            )  # fmt: skip
        except HostError as exc:
            target = getattr(form, exc.field or "", None)
            if target is not None:
                target.errors = [*target.errors, str(exc)]
            else:
                form.form_errors.append(str(exc))
        else:
            if host.ssh_host_keys_pinned_at:
                flash(f"Host {host.name} added with the SSH host keys you gave (pinned). "
                      "Plan to see what provisioning would change.")  # fmt: skip
            elif _scan(host) is not None:
                flash(f"Host {host.name} added. Compare the fingerprints of its SSH host keys "
                      "with the host's own, then pin them.")  # fmt: skip
            return redirect(url_for("hosts.show", host_id=host.id))
    status = 400 if form.is_submitted() else 200
    return render_template("hosts/new.html", form=form, section="hosts"), status


@bp.get("/<int:host_id>")
@operator_required
def show(host_id: int):
    """One host: its state, groups, SSH host keys and the runs that included it."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    runs = [run for run in _latest_runs(100) if host.id in run.host_ids][:20]
    return render_template("hosts/show.html", host=host, keys=host_keys(host), runs=runs,
                           section="hosts")  # fmt: skip


def _scan(host: Host) -> KeyScan | None:
    try:
        return scan_host_keys(actor=current_user, host=host, redis_conn=_redis())
    except HostError as exc:
        flash(f"Could not read the SSH host keys of {host.name}: {exc}", "error")
        return None


@bp.post("/<int:host_id>/scan")
@operator_required
def scan(host_id: int):
    """Read the host's SSH host keys again; when pinned ones differ, show both to choose."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    found = _scan(host)
    if found is not None and found.pinned and not found.changed:
        flash(f"{host.name} offers the SSH host keys pinned for it: nothing changed.")
    if found is None or not found.changed:
        return redirect(url_for("hosts.show", host_id=host.id))
    offered = "".join(f"{key.type} {key.blob}\n" for key in found.keys)
    return render_template("hosts/keys.html", host=host, scan=found, offered=offered,
                           section="hosts")  # fmt: skip


@bp.post("/<int:host_id>/pin")
@operator_required
def pin(host_id: int):
    """Pin the SSH host keys the operator confirmed (from a scan) or pasted."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    try:
        pin_host_keys(actor=current_user, host=host,
                      ssh_host_keys=request.form.get("ssh_host_keys", ""),
                      scanned=request.form.get("source") == "scan",
                      redis_conn=_redis())  # fmt: skip
    except HostError as exc:
        flash(f"SSH host keys of {host.name} not pinned: {exc}", "error")
    else:
        flash(f"SSH host keys of {host.name} pinned: provisioning trusts only these.")
    return redirect(url_for("hosts.show", host_id=host.id))


def _provision(kind: str):
    host_ids = None
    if request.form.get("host_id"):
        host_id = parse_row_id(request.form["host_id"])
        if host_id is None:
            abort(400, "host_id must be the number of a host.")
        host_ids = [host_id]
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


def _stored_after(run_id: int, after: int) -> list[dict]:
    with database.connection_context():
        rows = ProvisionEvent.select().where(
            (ProvisionEvent.run == run_id) & (ProvisionEvent.seq > after)
        )
        return [row.data for row in rows.order_by(ProvisionEvent.seq)]


def _run_ended(run_id: int) -> bool:
    with database.connection_context():
        return ProvisionStatus(ProvisionRun.get_by_id(run_id).status).is_terminal


def _stream(run_id: int, after: int, redis_conn: redis.Redis, lifetime: float) -> Iterator[str]:
    """Events after ``after``: stored, then live; ``end`` once the run is over.

    After ``lifetime`` seconds (or when the process stops) the stream closes without ``end``:
    the browser reconnects with Last-Event-ID and the next stream resumes after it.
    """
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_for(run_id))  # before reading the rows: nothing falls between
    try:
        deadline = time.monotonic() + lifetime
        last = after
        for event in _stored_after(run_id, last):
            last = event["seq"]
            yield _sse(event)
        ended, beat = False, time.monotonic()
        while not ended and time.monotonic() < deadline and not streams_stopping():
            message = pubsub.get_message(timeout=POLL)
            if message is not None:
                event = json.loads(message["data"])
                ended = event == END_MARK
                if not ended and event.get("seq", 0) > last:
                    last = event["seq"]
                    yield _sse(event)
                continue
            ended = _run_ended(run_id)
            if not ended and time.monotonic() - beat > HEARTBEAT:
                beat = time.monotonic()
                yield ": still running\n\n"
        if not ended:
            return
        for event in _stored_after(run_id, last):  # any whose live copy Redis did not deliver
            yield _sse(event)
        yield f"event: end\ndata: {json.dumps({'kind': 'end'})}\n\n"
    finally:
        pubsub.close()


@bp.get("/runs/<int:run_id>/events")
@operator_required
def events(run_id: int):
    """Server-Sent Events: the run's stored events, then live ones until it ends.

    One connection lasts HELIOS_STREAM_LIFETIME seconds at most; EventSource reconnects and
    resumes after its Last-Event-ID. 503 when this process already serves HELIOS_STREAM_MAX.
    """
    ProvisionRun.get_or_none(ProvisionRun.id == run_id) or abort(404)
    after = parse_row_id(request.headers.get("Last-Event-ID") or request.args.get("after") or "0")
    if after is None:
        abort(400)
    return event_stream(_stream(run_id, after, _redis(), _settings().stream_lifetime))
