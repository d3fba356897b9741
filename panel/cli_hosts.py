"""`helios hosts …`: add and list hosts, plan and apply provisioning from the shell.

`plan` and `apply` record a run and queue it exactly as the panel does; they then follow its
events live until it ends (`--no-wait` returns at once). With `--inline` the run is carried out
by this process instead of a worker (the first to claim it runs it; the other does nothing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

__all__ = ["hosts"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def _process():
    from panel.config import ConfigError
    from panel.runtime import start_process

    try:
        return start_process("cli")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def hosts() -> None:
    """Provision the cluster's hosts with Ansible (playbooks/site.yml)."""


@hosts.command("add")
@click.argument("name")
@click.argument("address")
@click.option("--user", "ssh_user", default="root", show_default=True, help="SSH user.")
@click.option("--port", "ssh_port", default=22, show_default=True, type=int, help="SSH port.")
@click.option("--group", "groups", multiple=True, required=True,
              type=click.Choice(["nomad_servers", "nomad_clients", "edge"]),
              help="Group(s) of the host; repeat the option for several.")  # fmt: skip
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="SSH private key to store (encrypted) for this host.")  # fmt: skip
def add(name, address, ssh_user, ssh_port, groups, key_file) -> None:
    """Add host NAME reached over SSH at ADDRESS."""
    from panel.crypto import SecretCipher
    from panel.hosts import HostError, add_host

    process = _process()
    key = key_file.read_text() if key_file else None
    try:
        with process.database.connection_context():
            host = add_host(
                actor=None, name=name, address=address, groups=groups, ssh_user=ssh_user,
                ssh_port=ssh_port, ssh_private_key=key,
                cipher=SecretCipher.from_settings(process.settings), redis_conn=process.redis,
            )  # fmt: skip
    except HostError as exc:
        raise click.ClickException(f"{exc.field or 'host'}: {exc}") from None
    click.echo(f"added {host.name} ({host.address}) in {', '.join(host.groups)}")


@hosts.command("list")
def list_hosts() -> None:
    """List hosts with their groups and state."""
    from panel.models import Host

    process = _process()
    with process.database.connection_context():
        rows = list(Host.select().order_by(Host.name))
    for host in rows:
        last = host.last_run_at.strftime("%Y-%m-%d %H:%M") if host.last_run_at else "never"
        click.echo(f"{host.name}\t{host.ssh_user}@{host.address}:{host.ssh_port}\t"
                   f"{','.join(host.groups)}\t{host.state}\t{last}")  # fmt: skip


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
    return None


def _follow(process, run_id: int) -> str:
    """Print the run's events (stored, then live) until it ends; return its status."""
    from panel.models import ProvisionEvent, ProvisionRun, ProvisionStatus
    from panel.reconcile.provision import END_MARK, channel_for

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
    from panel.hosts import HostError, request_provision
    from panel.models import Host, ProvisionRun

    process = _process()
    with process.database.connection_context():
        host_ids = None
        if host:
            row = Host.get_or_none(Host.name == host)
            if row is None:
                raise click.ClickException(f"no host named {host!r}: see `helios hosts list`")
            host_ids = [row.id]
        try:
            run = request_provision(actor=None, kind=kind, settings=process.settings,
                                    redis_conn=process.redis, host_ids=host_ids)  # fmt: skip
        except HostError as exc:
            raise click.ClickException(str(exc)) from None
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
def plan(host: str | None, wait: bool, inline: bool) -> None:
    """Show what provisioning would change (check mode with diff; nothing changes)."""
    _provision("plan", host, wait, inline)


@hosts.command("apply")
@_host
@_wait
@_inline
def apply(host: str | None, wait: bool, inline: bool) -> None:
    """Provision the hosts: run playbooks/site.yml."""
    _provision("apply", host, wait, inline)
