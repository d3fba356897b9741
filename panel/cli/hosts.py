"""`helios hosts …`: add, list and remove hosts, pin their SSH host keys, plan and apply
provisioning, maintain hosts one at a time (drain, OS updates, back into Nomad).

`plan` and `apply` record a run and queue it exactly as the panel does; they then follow its
events live until it ends (`--no-wait` returns at once). With `--inline` the run is carried out
by this process instead of a worker (the first to claim it runs it; the other does nothing).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from panel.cli.client import ACTION_EXIT
from panel.cli.operator import acting_as_os_user
from panel.cli.options import SchemaValue, schema_options
from panel.schema.hosts import HostIn

if TYPE_CHECKING:  # imported where used, so that `helios --help` stays quick
    from panel.actions.common import ActionError

__all__ = ["hosts"]

EXIT_FAILED = 1
EXIT_NOT_FOUND = 4
FILE_LIMIT = 64 * 1024  # bytes read from a key file: keys are far smaller


class HostCommandError(click.ClickException):
    """A one-line error with the exit code scripts rely on (2 bad input, 4 not found)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _refused(exc: ActionError, prefix: str = "") -> HostCommandError:
    """An ActionError as the command's error, exiting with the code its kind maps to."""
    return HostCommandError(f"{prefix}{exc}", ACTION_EXIT.get(exc.code, EXIT_FAILED))


def _recorded(command: Callable) -> Callable:
    """A command whose changes are recorded as done by the OS account running it."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> object:
        with acting_as_os_user():
            return command(*args, **kwargs)

    return run


def _process():
    from panel.config import ConfigError
    from panel.run.runtime import start_process

    try:
        return start_process("cli")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _no_such_host(name: str) -> HostCommandError:
    return HostCommandError(f"no host named {name!r}: see `helios hosts list`", EXIT_NOT_FOUND)


def _host_named(name: str):
    """The host called ``name``, or the "no such host" error (exit 4) for the command."""
    from panel.models import Host

    row = Host.get_or_none(Host.name == name)
    if row is None:
        raise _no_such_host(name)
    return row


def _read(path: Path) -> str:
    """A small text file given as an option; a usage error if it cannot be read as one."""
    try:
        with path.open(encoding="utf-8") as handle:
            text = handle.read(FILE_LIMIT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    if len(text) > FILE_LIMIT:
        raise click.BadParameter(f"{path} is larger than {FILE_LIMIT // 1024} KB: not a key")
    return text


@click.group()
def hosts() -> None:
    """Provision the cluster's hosts with Ansible (playbooks/site.yml)."""


@hosts.command("add")
@click.argument("name", type=SchemaValue(HostIn, "name"))
@click.argument("address", type=SchemaValue(HostIn, "address"))
@schema_options(
    HostIn,
    flags={"ssh_user": "--user", "ssh_port": "--port", "groups": "--group"},
    settings={"groups": {"multiple": True, "metavar": "GROUP"}},
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="SSH private key to store (encrypted) for this host.")  # fmt: skip
@click.option("--host-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The host's public SSH host keys (ssh_host_*_key.pub or known_hosts lines): "
                   "pinned at once instead of read from the host.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Pin the keys read from the host without asking.")
@_recorded
def add(
    name: str,
    address: str,
    key_file: Path | None,
    host_key_file: Path | None,
    yes: bool,
    **options: object,
) -> None:
    """Add host NAME reached over SSH at ADDRESS, and pin its SSH host keys.

    --group takes one group; repeat it for several. Without --host-key-file the keys are
    read from the host (ssh-keyscan) and their fingerprints shown for you to confirm;
    provisioning refuses the host until they are pinned.
    """
    from panel.actions.common import ActionError
    from panel.actions.hosts import add_host, host_keys
    from panel.crypto import SecretCipher

    process = _process()
    key = _read(key_file) if key_file else None
    given_keys = _read(host_key_file) if host_key_file else None
    try:
        with process.database.connection_context():
            host = add_host(
                actor=None, name=name, address=address, ssh_private_key=key,
                ssh_host_keys=given_keys, cipher=SecretCipher.from_settings(process.settings),
                redis_conn=process.redis,
                **{field: value for field, value in options.items() if value is not None},
            )  # fmt: skip
    except ActionError as exc:
        raise _refused(exc, f"{exc.field or 'host'}: ") from None
    click.echo(f"added {host.name} ({host.address}) in {', '.join(host.groups)}")
    if host.ssh_host_keys_pinned_at:
        _echo_keys("SSH host keys pinned:", host_keys(host))
        return
    _scan_and_pin(process, host, yes)


@hosts.command("pin")
@click.argument("host")
@click.option("--host-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Pin these keys (ssh_host_*_key.pub or known_hosts lines) instead of the "
                   "ones read from the host.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Pin the keys read from the host without asking.")
@_recorded
def pin(host: str, host_key_file: Path | None, yes: bool) -> None:
    """Read HOST's SSH host keys, show their fingerprints and pin them once you confirm."""
    from panel.actions.common import ActionError
    from panel.actions.hosts import pin_host_keys

    process = _process()
    with process.database.connection_context():
        row = _host_named(host)
        if host_key_file is None:
            _scan_and_pin(process, row, yes)
            return
        try:
            keys = pin_host_keys(actor=None, host=row, ssh_host_keys=_read(host_key_file),
                                 scanned=False, redis_conn=process.redis)  # fmt: skip
        except ActionError as exc:
            raise _refused(exc) from None
    _echo_keys(f"SSH host keys of {row.name} pinned:", keys)


@hosts.command("remove")
@click.argument("host")
@click.option("--drain", is_flag=True,
              help="When its Nomad node runs allocations, drain them to other nodes first, "
                   "then remove the host (without it such a host is refused).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Remove without asking.")
@_recorded
def remove(host: str, drain: bool, yes: bool) -> None:
    """Remove HOST: at once when its Nomad node runs nothing, else (with --drain) once Nomad
    has moved its allocations to other nodes. Exits 2 when refused, 4 when there is no HOST."""
    from panel.actions.common import ActionError
    from panel.actions.hosts import host_load, remove_host

    process = _process()
    with process.database.connection_context():
        row = _host_named(host)
        try:
            load = None if yes else host_load(row, process.settings)
            if load is not None and (drain or not load.allocations):  # else refused below
                what = (f"Drain {load.describe()} to other hosts, then remove {row.name}?"
                        if load.allocations else f"Remove {row.name} now?")  # fmt: skip
                if not _confirm(what):
                    raise HostCommandError(f"{row.name} not removed (give --yes to skip asking)")
            outcome = remove_host(actor=None, host=row, settings=process.settings,
                                  redis_conn=process.redis, drain=drain)  # fmt: skip
        except ActionError as exc:
            raise _refused(exc) from None
    if outcome == "draining":
        click.echo(f"{row.name} is draining: it is removed once Nomad has moved its "
                   "allocations (see `helios hosts list`)")  # fmt: skip
    else:
        click.echo(f"removed {row.name}")


def _echo_keys(title: str, keys) -> None:
    click.echo(title)
    for key in keys:
        click.echo(f"  {key.label}")


def _scan_and_pin(process, host, yes: bool) -> None:
    """Read the host's keys, show them (and the pinned ones when they differ), pin if agreed."""
    from panel.actions.common import ActionError
    from panel.actions.hosts import pin_host_keys, scan_host_keys

    with process.database.connection_context():
        try:
            scan = scan_host_keys(actor=None, host=host, redis_conn=process.redis)
        except ActionError as exc:
            raise click.ClickException(
                f"{host.name} is recorded, but its SSH host keys are not pinned: {exc}. "
                f"Then run `helios hosts pin {host.name}` (or give --host-key-file)."
            ) from None
    if scan.pinned and not scan.changed:
        _echo_keys(f"{host.name} offers the SSH host keys pinned for it:", scan.keys)
        return
    if scan.changed:
        click.echo(f"WARNING: the SSH host keys of {host.name} changed. If you did not reinstall "
                   "it or replace its keys, do not pin them.", err=True)  # fmt: skip
        _echo_keys("Pinned:", scan.pinned)
    _echo_keys(f"SSH host keys offered by {host.address} port {host.ssh_port}:", scan.keys)
    click.echo("Compare them with the host's own: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    if not (yes or _confirm(f"Pin these keys for {host.name}?")):
        raise click.ClickException(
            f"not pinned: provisioning refuses {host.name} until you run "
            f"`helios hosts pin {host.name}`"
        )
    offered = "".join(f"{key.type} {key.blob}\n" for key in scan.keys)
    with process.database.connection_context():
        pin_host_keys(actor=None, host=host, ssh_host_keys=offered, scanned=True,
                      redis_conn=process.redis)  # fmt: skip
    click.echo(f"pinned: provisioning trusts only these keys for {host.name}")


def _confirm(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.Abort:  # no terminal to answer on
        return False


@hosts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
def list_hosts(as_json: bool) -> None:
    """List hosts with their groups, state and whether their SSH host keys are pinned."""
    from panel.cli.client import print_table
    from panel.models import Host

    process = _process()
    with process.database.connection_context():
        rows = list(Host.select().order_by(Host.name))
    if as_json:
        click.echo(json.dumps([_host_json(host) for host in rows], indent=2, sort_keys=True))
        return
    table = []
    for host in rows:
        last = host.last_run_at.strftime("%Y-%m-%d %H:%M") if host.last_run_at else "never"
        keys = "keys pinned" if host.ssh_host_keys_pinned_at else "keys NOT pinned"
        table.append([host.name, f"{host.ssh_user}@{host.address}:{host.ssh_port}",
                      list(host.groups), host.state, keys, last])  # fmt: skip
    print_table(["name", "ssh", "groups", "state", "host keys", "last run"], table)


def _host_json(host) -> dict:
    """What `helios hosts list --json` says of a host (never its keys or secrets)."""
    when = host.last_run_at
    return {
        "name": host.name, "address": host.address, "ssh_user": host.ssh_user,
        "ssh_port": host.ssh_port, "groups": list(host.groups), "state": host.state,
        "host_keys_pinned": host.ssh_host_keys_pinned_at is not None,
        "last_run_at": when.isoformat() if when else None,
    }  # fmt: skip


def _line(event: dict) -> str | None:
    kind = event.get("kind")
    if kind == "play":
        return f"PLAY {event.get('play', '')}"
    if kind == "task":
        return f"  TASK {event.get('task', '')}"
    if kind in {"ok", "changed", "failed", "unreachable", "skipped"}:
        extra = f": {event['msg']}" if kind in {"failed", "unreachable"} and "msg" in event else ""
        return f"    {kind}: {event.get('host', '')}{extra}"
    if kind == "recap":
        return "RECAP " + json.dumps(event.get("recap", {}), sort_keys=True)
    if kind == "step":  # a maintenance step
        return f"{event.get('host', '')}: {event.get('task', '')}"
    return None


def _follow(process, run_id: int) -> str:
    """Print the run's events (stored, then live) until it ends; return its status."""
    from panel.actions.hosts import END_MARK, channel_for
    from panel.models import ProvisionEvent, ProvisionRun, ProvisionStatus

    pubsub = process.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_for(run_id))
    last = 0
    try:
        while True:
            with process.database.connection_context():
                for row in (
                    ProvisionEvent.select()
                    .where((ProvisionEvent.run == run_id) & (ProvisionEvent.seq > last))
                    .order_by(ProvisionEvent.seq)
                ):
                    last = row.seq
                    line = _line(row.data)
                    if line:
                        click.echo(line)
                run = ProvisionRun.get_by_id(run_id)
            if ProvisionStatus(run.status).is_terminal:
                return run.status
            message = pubsub.get_message(timeout=1.0)
            if message is not None and json.loads(message["data"]) == END_MARK:
                time.sleep(0.1)
    finally:
        pubsub.close()


def _provision(kind: str, host: str | None, wait: bool, inline: bool) -> None:
    from panel.actions.common import ActionError
    from panel.actions.hosts import request_provision
    from panel.models import ProvisionRun

    process = _process()
    with process.database.connection_context():
        host_ids = None
        if host:
            host_ids = [_host_named(host).id]
        try:
            run = request_provision(actor=None, kind=kind, settings=process.settings,
                                    redis_conn=process.redis, host_ids=host_ids)  # fmt: skip
        except ActionError as exc:
            raise _refused(exc) from None
    click.echo(f"{kind} run #{run.id} queued")
    if inline:
        from panel.reconcile.provision import apply_hosts, plan_hosts

        with process.database.connection_context():
            (plan_hosts if kind == "plan" else apply_hosts)(run.id)
    if not (wait or inline):
        return
    status = _follow(process, run.id)
    with process.database.connection_context():
        run = ProvisionRun.get_by_id(run.id)
    click.echo(f"{kind} run #{run.id} {status}: {run.message}")
    if status != "succeeded":
        raise SystemExit(EXIT_FAILED)


_wait = click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Follow the run's events until it ends.")  # fmt: skip
_inline = click.option("--inline", is_flag=True,
                       help="Run it in this process instead of waiting for a worker.")  # fmt: skip
_host = click.option("--host", help="Only this host (default: every host).")


@hosts.command("plan")
@_host
@_wait
@_inline
@_recorded
def plan(host: str | None, wait: bool, inline: bool) -> None:
    """Show what provisioning would change (check mode with diff; nothing changes)."""
    _provision("plan", host, wait, inline)


@hosts.command("apply")
@_host
@_wait
@_inline
@_recorded
def apply(host: str | None, wait: bool, inline: bool) -> None:
    """Provision the hosts: run playbooks/site.yml."""
    _provision("apply", host, wait, inline)


@hosts.command("maintain")
@click.argument("names", metavar="[HOST]...", nargs=-1)
@click.option("--group", help="Every host of this group (in name order) instead of HOSTs.")
@click.option("--deadline", type=click.IntRange(1, 86_400), default=600, show_default=True,
              help="Seconds Nomad gives each drain before it stops what is left.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Start without asking.")
@click.option("--json", "as_json", is_flag=True,
              help="Print only the run's outcome, as JSON, once it ends.")  # fmt: skip
@_wait
@_recorded
def maintain(names: tuple[str, ...], group: str | None, deadline: int, yes: bool,
             as_json: bool, wait: bool) -> None:  # fmt: skip
    """Maintain hosts one at a time: drain each one's Nomad node, upgrade its packages (and
    reboot it if they need it), wait until its node is ready, make it eligible again. Stops at
    the first failure, leaving that host ineligible and the next ones untouched. Exits 1 when
    a step failed, 2 when refused, 4 when a HOST does not exist."""
    from panel.actions.common import ActionError
    from panel.actions.maintenance import request_maintenance
    from panel.models import Host, ProvisionRun

    if bool(names) == bool(group):
        raise click.UsageError("name the hosts to maintain, or give --group (not both)")
    process = _process()
    with process.database.connection_context():
        host_ids = None
        if names:
            rows = {row.name: row for row in Host.select().where(Host.name.in_(list(names)))}
            missing = [name for name in names if name not in rows]
            if missing:
                raise _no_such_host(missing[0])
            host_ids = [rows[name].id for name in dict.fromkeys(names)]
            chosen = list(dict.fromkeys(names))
        else:
            chosen = sorted(row.name for row in Host.select() if group in row.groups)
        if chosen and not yes:
            question = (
                f"Maintain {', '.join(chosen)} one at a time: drain each one's Nomad node "
                f"(deadline {deadline} s), upgrade its packages, reboot it if they need it?"
            )
            if not _confirm(question):
                raise HostCommandError("not maintained (give --yes to skip asking)")
        try:
            run = request_maintenance(actor=None, settings=process.settings,
                                      redis_conn=process.redis, host_ids=host_ids,
                                      group=group, deadline=deadline)  # fmt: skip
        except ActionError as exc:
            raise _refused(exc) from None
    if not wait:
        if as_json:
            click.echo(json.dumps({"run_id": run.id, "status": run.status, "hosts": chosen,
                                   "deadline": deadline, "message": run.message}))  # fmt: skip
        else:
            click.echo(f"maintenance run #{run.id} queued: {', '.join(chosen)}")
        return
    if not as_json:
        click.echo(f"maintenance run #{run.id} queued: {', '.join(chosen)}")
        status = _follow(process, run.id)
    else:
        status = _wait_quietly(process, run.id)
    with process.database.connection_context():
        run = ProvisionRun.get_by_id(run.id)
    if as_json:
        click.echo(json.dumps({"run_id": run.id, "status": status, "hosts": chosen,
                               "deadline": deadline, "message": run.message}))  # fmt: skip
    else:
        click.echo(f"maintenance run #{run.id} {status}: {run.message}")
    if status != "succeeded":
        raise SystemExit(EXIT_FAILED)


def _wait_quietly(process, run_id: int) -> str:
    """Wait until the run ends, printing nothing; its status."""
    from panel.actions.hosts import END_MARK, channel_for
    from panel.models import ProvisionRun, ProvisionStatus

    pubsub = process.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_for(run_id))
    try:
        while True:
            with process.database.connection_context():
                status = ProvisionRun.get_by_id(run_id).status
            if ProvisionStatus(status).is_terminal:
                return status
            message = pubsub.get_message(timeout=1.0)
            if message is not None and json.loads(message["data"]) == END_MARK:
                time.sleep(0.1)
    finally:
        pubsub.close()
