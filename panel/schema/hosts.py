"""Hosts that Helios provisions with Ansible: what an operator gives to add one (pure).

:class:`HostIn` is the one list of a new host's fields: the panel's form, the `helios hosts add`
options and the action's checks are derived from it. Its validators are the allow-lists that
keep every value safe on ssh's command line, in a ProxyCommand and in the Ansible inventory;
each raises :class:`~panel.validation.ValidationError` with the words a person reads.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, ClassVar

from pydantic import Field

from panel.host_keys import HostKey, HostKeyError, parse_host_keys
from panel.render.ansible import HOST_GROUPS, is_address
from panel.schema.base import Meta, Resource, checked
from panel.validation import ValidationError

__all__ = [
    "KEY_MAX_BYTES",
    "HostIn",
    "validate_address",
    "validate_groups",
    "validate_host_keys",
    "validate_host_name",
    "validate_private_key",
    "validate_ssh_port",
    "validate_ssh_user",
]

KEY_MAX_BYTES = 16 * 1024  # an RSA-8192 private key in OpenSSH format is ~6.5 KB
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEY_RE = re.compile(
    r"-----BEGIN (?:OPENSSH|RSA|EC|DSA)? ?PRIVATE KEY-----\r?\n"
    r"[A-Za-z0-9+/=\r\n:,\- ]+"
    r"-----END (?:OPENSSH|RSA|EC|DSA)? ?PRIVATE KEY-----\r?\n?"
)


# ---------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------


def validate_host_name(value: object, field: str = "name") -> str:
    """A lowercase DNS name (also the Nomad and Consul node name)."""
    if not isinstance(value, str) or len(value) > 253 or not _HOST_NAME_RE.fullmatch(value):
        raise ValidationError(
            field, "use a lowercase DNS name for the host, e.g. node-1 or node-1.dc1"
        )
    return value


def validate_address(value: object, field: str = "address") -> str:
    """An IPv4/IPv6 address (no scope id) or a DNS name where SSH reaches the host."""
    if is_address(value):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return str(value).lower()
    raise ValidationError(
        field, "give an IP address (without a %scope) or a DNS name, e.g. 10.0.0.5"
    )


def validate_ssh_user(value: object, field: str = "ssh_user") -> str:
    """A Unix account name."""
    if not isinstance(value, str) or not _SSH_USER_RE.fullmatch(value):
        raise ValidationError(field, "use a Unix user name such as root or debian")
    return value


def validate_ssh_port(value: object, field: str = "ssh_port") -> int:
    """A TCP port, as a number or the text of one."""
    try:
        port = int(str(value))
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValidationError(field, "the SSH port is a number from 1 to 65535")
    return port


def validate_groups(values: object, field: str = "groups") -> list[str]:
    """At least one of HOST_GROUPS, in that order, no repeats; never an app client and a build
    node at once."""
    items = values if isinstance(values, list | tuple | set | frozenset) else ()
    chosen = set(items) if all(isinstance(item, str) for item in items) else set()
    if not chosen or not chosen <= set(HOST_GROUPS):
        raise ValidationError(field, f"choose at least one of {', '.join(HOST_GROUPS)}")
    if {"nomad_clients", "build_nodes"} <= chosen:
        raise ValidationError(
            field, "a build node runs the apps' builds and never serves apps: choose "
            "nomad_clients or build_nodes, not both",
        )  # fmt: skip
    return [group for group in HOST_GROUPS if group in chosen]


def validate_private_key(value: object, field: str = "ssh_private_key") -> str:
    """One PEM or OpenSSH private key without a passphrase prompt in its way."""
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
        raise ValidationError(field, "paste one SSH private key (at most 16 KB)")
    key = value.strip().replace("\r\n", "\n") + "\n"
    if not _KEY_RE.fullmatch(key) or "ENCRYPTED" in key:
        raise ValidationError(
            field,
            "paste an unencrypted SSH private key, from -----BEGIN … PRIVATE KEY----- to the "
            "END line",
        )
    return key


def validate_host_keys(value: object, field: str = "ssh_host_keys") -> list[HostKey]:
    """Public SSH host keys: known_hosts lines, ssh-keyscan output or ``*.pub`` files."""
    if not isinstance(value, str):
        raise ValidationError(field, "paste the host's public SSH host keys")
    try:
        return parse_host_keys(value)
    except HostKeyError as exc:
        raise ValidationError(field, str(exc)) from None


def _host_keys_text(value: object, field: str = "ssh_host_keys") -> str:
    """The keys of ``value`` as plain ``type blob`` lines, sorted and without repeats."""
    return "".join(f"{key.type} {key.blob}\n" for key in validate_host_keys(value, field))


# ---------------------------------------------------------------------------------------------
# The resource
# ---------------------------------------------------------------------------------------------


class HostIn(Resource):
    """A host to provision: where SSH reaches it, as whom, and what it runs.

    Its SSH private key is stored encrypted and never shown or returned again. Its SSH host
    keys, when given, are pinned at once; else Helios reads them from the host and shows their
    fingerprints until the operator confirms them.
    """

    example: ClassVar[dict[str, Any] | None] = {
        "name": "node-1",
        "address": "10.0.0.5",
        "groups": ["nomad_servers", "edge"],
    }

    name: Annotated[
        str,
        checked(validate_host_name, "name", before=True),
        Meta(label="Name", placeholder="node-1", cli=False),
    ] = Field(
        description="Lowercase DNS name; it also names the Nomad and Consul node.",
        examples=["node-1"],
    )
    address: Annotated[
        str,
        checked(validate_address, "address", before=True),
        Meta(label="Address", placeholder="10.0.0.5", cli=False),
    ] = Field(
        description="IP address or DNS name SSH reaches; cluster traffic uses it too.",
        examples=["10.0.0.5"],
    )
    ssh_user: Annotated[
        str, checked(validate_ssh_user, "ssh_user", before=True), Meta(label="SSH user")
    ] = Field("root", description="A user that may sudo, or root.", examples=["debian"])
    ssh_port: Annotated[
        int,
        checked(validate_ssh_port, "ssh_port", before=True),
        Meta(label="SSH port", kind="a whole number", widget="number"),
    ] = Field(
        22,
        description="The port sshd listens on.",
        examples=[2222],
        json_schema_extra={"minimum": 1, "maximum": 65535},
    )
    groups: Annotated[
        list[str],
        checked(validate_groups, "groups", before=True),
        Meta(label="Groups", kind="a list of groups", widget="select"),
    ] = Field(
        description="What the host runs, one or more of: nomad_servers (also the Consul "
        "servers and the cluster CA), nomad_clients (the apps), edge (Traefik), build_nodes "
        "(builds; never with nomad_clients), registry (the container registry, one host).",
        examples=[["nomad_clients", "edge"]],
        json_schema_extra={"items": {"type": "string", "enum": list(HOST_GROUPS)}},
    )
    ssh_private_key: Annotated[
        str | None,
        checked(validate_private_key, "ssh_private_key", before=True, optional=True),
        Meta(label="SSH private key", secret=True, widget="textarea", cli=False),
    ] = Field(
        None,
        description="Unencrypted private key. Stored encrypted and never shown again; leave "
        "empty to use the worker's own SSH setup.",
    )
    ssh_host_keys: Annotated[
        str | None,
        checked(_host_keys_text, "ssh_host_keys", before=True, optional=True),
        Meta(label="SSH host keys", widget="textarea", cli=False),
    ] = Field(
        None,
        description="Optional: the host's public keys (its /etc/ssh/ssh_host_*_key.pub files "
        "or known_hosts lines), pinned at once. Leave empty and Helios reads them from the "
        "host, then shows their fingerprints for you to confirm.",
    )
