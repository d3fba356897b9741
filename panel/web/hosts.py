"""Hosts and provisioning pages (operators only): add hosts, plan, apply, watch runs live."""

from __future__ import annotations

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

from panel.actions.common import ActionError
from panel.actions.hosts import (
    END_MARK,
    KeyScan,
    NodeLoad,
    add_host,
    channel_for,
    host_keys,
    host_load,
    pin_host_keys,
    remove_host,
    request_provision,
    scan_host_keys,
)
from panel.actions.maintenance import request_maintenance
from panel.cluster_access import connection_source
from panel.crypto import SecretCipher
from panel.models import Host, ProvisionEvent, ProvisionRun, ProvisionStatus
from panel.web.forms import HostForm
from panel.web.pages import show_action_error
from panel.web.paths import parse_row_id
from panel.web.streams import END, Frame, live_stream

bp = Blueprint("hosts", __name__, url_prefix="/hosts")


def operator_required(view):
    """Signed in and an operator; anyone else gets a 404, as if the page did not exist."""

    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_operator:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


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
    cluster = connection_source(_settings())  # where the Nomad connection comes from, masked
    return render_template("hosts/index.html", hosts=hosts, runs=_latest_runs(), cluster=cluster,
                           section="hosts")  # fmt: skip


@bp.route("/new", methods=["GET", "POST"])
@operator_required
def new():
    """Add a host: address, SSH user and key, groups (the fields of HostIn).

    Every field at fault is shown next to it after one submit; the private key is never
    shown back.
    """
    form = HostForm()
    status = 422 if form.is_submitted() else 200
    if form.validate_on_submit():
        try:
            host = add_host(
                actor=current_user, cipher=SecretCipher.from_settings(_settings()),
                redis_conn=_redis(), **form.values(),
            )  # fmt: skip
        except ActionError as exc:
            status = show_action_error(form, exc)
        else:
            if host.ssh_host_keys_pinned_at:
                flash(f"Host {host.name} added with the SSH host keys you gave (pinned). "
                      "Plan to see what provisioning would change.")  # fmt: skip
            elif _scan(host) is not None:
                flash(f"Host {host.name} added. Compare the fingerprints of its SSH host keys "
                      "with the host's own, then pin them.")  # fmt: skip
            return redirect(url_for("hosts.show", host_id=host.id))
    return render_template("hosts/new.html", form=form, section="hosts"), status


@bp.get("/<int:host_id>")
@operator_required
def show(host_id: int):
    """One host: its state, groups, SSH host keys and the runs that included it."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    runs = [run for run in _latest_runs(100) if host.id in run.host_ids][:20]
    return render_template("hosts/show.html", host=host, keys=host_keys(host), runs=runs,
                           load=_load(host), section="hosts")  # fmt: skip


def _load(host: Host) -> NodeLoad | None:
    """What runs on the host's Nomad node, for the Remove button; None when Nomad cannot say
    (the button then asks to drain whatever runs there)."""
    if host.state == "draining":
        return None
    try:
        return host_load(host, _settings())
    except ActionError:
        return None


@bp.post("/<int:host_id>/remove")
@operator_required
def remove(host_id: int):
    """Remove a host: at once when its Nomad node runs nothing, else (with ``drain``) once
    Nomad has moved its allocations to other nodes."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    drain = request.form.get("drain") == "1"
    try:
        outcome = remove_host(actor=current_user, host=host, settings=_settings(),
                              redis_conn=_redis(), drain=drain)  # fmt: skip
    except ActionError as exc:
        flash(f"{host.name} not removed: {exc}", "error")
        return redirect(url_for("hosts.show", host_id=host.id))
    if outcome == "draining":
        flash(f"{host.name} is draining: Nomad moves its allocations to other hosts, then "
              "Helios removes it.")  # fmt: skip
        return redirect(url_for("hosts.show", host_id=host.id))
    flash(f"Host {host.name} removed.")
    return redirect(url_for("hosts.index"))


@bp.post("/<int:host_id>/maintain")
@operator_required
def maintain(host_id: int):
    """Maintain a host: drain its Nomad node, upgrade its packages (a reboot if they need
    one), wait until the node is ready, make it eligible again; the run's page follows it."""
    host = Host.get_or_none(Host.id == host_id) or abort(404)
    try:
        run = request_maintenance(actor=current_user, settings=_settings(),
                                  redis_conn=_redis(), host_ids=[host.id])  # fmt: skip
    except ActionError as exc:
        flash(f"{host.name} not maintained: {exc}", "error")
        return redirect(url_for("hosts.show", host_id=host.id))
    return redirect(url_for("hosts.run", run_id=run.id))


def _scan(host: Host) -> KeyScan | None:
    try:
        return scan_host_keys(actor=current_user, host=host, redis_conn=_redis())
    except ActionError as exc:
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
    except ActionError as exc:
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
    except ActionError as exc:
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


class _RunFeed:
    """What a run's live stream sends: its stored events after ``after``, then live ones (each
    once, in order), then ``end`` once the run is over."""

    def __init__(self, run_id: int, after: int) -> None:
        self.run_id = run_id
        self.last = after  # the seq of the last event sent

    def _frame(self, event: dict) -> Frame:
        self.last = event.get("seq", 0)
        return Frame(event["kind"], event, id=self.last)

    def stored(self) -> list[Frame]:
        """The stored events not sent yet (all of them, in the first stream)."""
        rows = ProvisionEvent.select().where(
            (ProvisionEvent.run == self.run_id) & (ProvisionEvent.seq > self.last)
        )
        return [self._frame(row.data) for row in rows.order_by(ProvisionEvent.seq)]

    def render(self, event: dict) -> list[Frame]:
        """A live event, unless sent already; at the run's END_MARK, any stored event whose
        live copy Redis did not deliver, then ``end``."""
        if event == END_MARK:
            return [*self.stored(), END]
        if not isinstance(event, dict) or "kind" not in event or event.get("seq", 0) <= self.last:
            return []
        return [self._frame(event)]

    def snapshot(self) -> list[Frame]:
        """The first frames: the stored events not sent yet, and ``end`` when the run is over."""
        return [*self.stored(), *self.ended()]

    def ended(self) -> list[Frame]:
        """When the run is over already: the rest, then ``end`` (a run's end is published as
        END_MARK once recorded, so a live stream needs no other look at the row)."""
        run = ProvisionRun.get_or_none(ProvisionRun.id == self.run_id)
        if run is not None and not ProvisionStatus(run.status).is_terminal:
            return []
        return [*self.stored(), END]


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
    feed = _RunFeed(run_id, after)
    return live_stream([channel_for(run_id)], feed.snapshot, feed.render)
