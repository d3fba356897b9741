"""Ansible inventory and extra variables from hosts (pure: no I/O).

Every string Helios hands to Ansible is tagged ``!unsafe``: Ansible then treats it as data and
never as a template, so a host name or a value such as ``{{ lookup('pipe', 'id') }}`` reaches
the hosts exactly as written. Variable names are not tagged (Ansible never templates them); they
must be plain identifiers, which is checked here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "HOST_GROUPS",
    "InventoryHost",
    "RenderError",
    "hosts_reached",
    "is_address",
    "render_extravars",
    "render_inventory",
]

# site.yml's groups: build_nodes are Nomad clients in the "build" node pool (never serving
# apps), registry holds the cluster's image registry (one host).
HOST_GROUPS = ("nomad_servers", "nomad_clients", "edge", "build_nodes", "registry")
UNSAFE_TAG = "!unsafe"
_VARIABLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,127}")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Hosts the roles delegate to whatever the limit (site.yml): the CA signs every certificate,
# the bootstrap servers hold the cluster's secrets. Each is the first host of its group unless
# the variable names another host.
_DELEGATES = {
    "pki_ca_host": "pki_servers_group",
    "consul_bootstrap_host": "consul_servers_group",
    "nomad_bootstrap_host": "nomad_servers_group",
    "traefik_bootstrap_host": "traefik_servers_group",
}
_DEFAULT_SERVERS_GROUP = "nomad_servers"


class RenderError(ValueError):
    """Input the renderer refuses (a bug in the caller or an unvalidated value)."""


@dataclass(frozen=True)
class InventoryHost:
    """One host as the inventory describes it; ``key_file`` is a path on the controller."""

    name: str
    address: str
    ssh_user: str = "root"
    ssh_port: int = 22
    groups: tuple[str, ...] = ()
    key_file: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


def is_address(value: object) -> bool:
    """True for an IPv4/IPv6 address without a scope id, or a DNS name.

    Nothing else may reach ssh's command line (where ``-`` starts an option) or a
    ProxyCommand (a shell): ``ipaddress`` alone accepts ``::1%$(id)`` as a scoped address.
    """
    if not isinstance(value, str) or not value or len(value) > 253 or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return _DNS_NAME_RE.fullmatch(value) is not None
    return True


def _check_connection(host: InventoryHost) -> None:
    """Refuse connection values that were not validated: they reach ssh's command line and
    its ProxyCommand (a shell, through %h, %p and %r). The name does not (it is data)."""
    problems = []
    if not is_address(host.address):
        problems.append(f"address {host.address!r}")
    if not _SSH_USER_RE.fullmatch(host.ssh_user):
        problems.append(f"SSH user {host.ssh_user!r}")
    port = host.ssh_port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(f"SSH port {port!r}")
    if problems:
        raise RenderError(f"{host.name!r}: not a valid {', '.join(problems)}")


class _UnsafeDumper(yaml.SafeDumper):
    """A YAML dumper that tags every string value ``!unsafe`` (mapping keys stay plain)."""


def _represent_unsafe(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar(UNSAFE_TAG, value, style="'")


def _represent_mapping(dumper: yaml.SafeDumper, value: Mapping[str, Any]) -> yaml.Node:
    pairs = []
    for key, item in value.items():
        pairs.append(
            (dumper.represent_scalar("tag:yaml.org,2002:str", key), dumper.represent_data(item))
        )
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs)


_UnsafeDumper.add_representer(str, _represent_unsafe)
_UnsafeDumper.add_representer(dict, _represent_mapping)


def _check_variables(variables: Mapping[str, Any], where: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in variables.items():
        if not isinstance(name, str) or not _VARIABLE_RE.fullmatch(name):
            raise RenderError(
                f"{where}: variable name {name!r} is not allowed: use lowercase letters, digits "
                "and '_' (starting with a letter or '_')"
            )
        checked[name] = _plain(value, f"{where}.{name}")
    return checked


def _plain(value: Any, where: str) -> Any:
    """Copy ``value`` keeping only JSON-like types (str, int, float, bool, None, list, dict)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RenderError(f"{where}: mapping keys must be strings, not {key!r}")
            result[key] = _plain(item, f"{where}.{key}")
        return result
    if isinstance(value, Sequence):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise RenderError(f"{where}: {type(value).__name__} values cannot be passed to Ansible")


def _dump(document: Any) -> str:
    body = yaml.dump(
        document, Dumper=_UnsafeDumper, default_flow_style=False, sort_keys=True, width=1000
    )
    return "---\n# Generated by Helios: every string is data (!unsafe), never a template.\n" + body


def _host_vars(host: InventoryHost) -> dict[str, Any]:
    facts = {
        "ansible_host": host.address,
        "ansible_port": host.ssh_port,
        "ansible_user": host.ssh_user,
        # The address cluster traffic uses; Helios has one address per host.
        "helios_private_address": host.address,
        "pki_address": host.address,
        "consul_bind_address": host.address,
        "nomad_bind_address": host.address,
    }
    if host.key_file:
        facts["ansible_ssh_private_key_file"] = host.key_file
    return {**_check_variables(host.variables, host.name), **facts}


def render_inventory(
    hosts: Sequence[InventoryHost], group_vars: Mapping[str, Any] | None = None
) -> str:
    """A YAML inventory of ``hosts`` in the groups site.yml expects; ``group_vars`` apply to all."""
    seen: set[str] = set()
    groups: dict[str, dict[str, Any]] = {name: {} for name in HOST_GROUPS}
    for host in hosts:
        if not host.name or host.name in seen:
            raise RenderError(f"host names must be unique and not empty: {host.name!r}")
        _check_connection(host)
        seen.add(host.name)
        unknown = set(host.groups) - set(HOST_GROUPS)
        if unknown:
            raise RenderError(
                f"{host.name}: unknown groups {sorted(unknown)}: use {', '.join(HOST_GROUPS)}"
            )
        if not host.groups:
            raise RenderError(f"{host.name}: put the host in at least one of {HOST_GROUPS}")
        variables = _host_vars(host)
        first = True
        for group in HOST_GROUPS:
            if group in host.groups:
                # A host's variables are given once; other groups only list it.
                groups[group][host.name] = variables if first else None
                first = False
    document = {
        "all": {
            "vars": _check_variables(group_vars or {}, "all"),
            "children": {name: {"hosts": members} for name, members in groups.items()},
        }
    }
    return _dump(document)


def render_extravars(variables: Mapping[str, Any]) -> str:
    """Extra variables (``-e @file``) as YAML, every string tagged ``!unsafe``."""
    return _dump(_check_variables(variables, "extravars"))


def hosts_reached(
    groups: Mapping[str, Collection[str]],
    chosen: Collection[str],
    group_vars: Mapping[str, Any] | None = None,
) -> list[str]:
    """Names (sorted) of the hosts a run limited to ``chosen`` connects to.

    ``groups`` maps every host of the inventory to its groups, in the order the hosts are
    given to :func:`render_inventory` (Ansible's ``groups[...]`` keep it). The chosen hosts are
    reached, and so are the hosts the roles delegate to whatever the limit (see
    ``_DELEGATES``): a run on one client still asks the CA on the first server to sign.
    """
    variables = group_vars or {}
    reached = set(chosen) & set(groups)
    for host_var, group_var in _DELEGATES.items():
        named = variables.get(host_var)
        if isinstance(named, str) and named in groups:
            reached.add(named)
            continue
        group = variables.get(group_var, _DEFAULT_SERVERS_GROUP)
        members = [name for name, member_of in groups.items() if group in member_of]
        if members:
            reached.add(members[0])
    return sorted(reached)
