"""SSH host keys: read them from known_hosts lines or public keys, fingerprint them (pure).

A host's keys are kept as known_hosts lines. Provisioning trusts them only once an operator
pinned them, and writes each run's known_hosts from the pinned keys alone, keyed by the host's
address and port as ssh looks them up (``addr`` on port 22, ``[addr]:port`` otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KEY_TYPES",
    "HostKey",
    "HostKeyError",
    "known_hosts_pattern",
    "parse_host_keys",
    "render_known_hosts",
]

# Algorithm name → the label ssh-keygen -l prints for it.
KEY_TYPES = {
    "ssh-ed25519": "ED25519",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "ssh-rsa": "RSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}
MAX_KEYS = 16  # a host has 3 or 4; more means something else was pasted
MAX_TEXT = 64 * 1024  # characters of pasted or scanned text


class HostKeyError(ValueError):
    """Text that holds no usable SSH host key; the message says what to paste instead."""


@dataclass(frozen=True, order=True)
class HostKey:
    """One public host key: its algorithm and its base64 blob."""

    type: str
    blob: str

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -lf`` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def label(self) -> str:
        """``ED25519 SHA256:…``: the algorithm and the fingerprint, for people."""
        return f"{KEY_TYPES[self.type]} {self.fingerprint}"

    def known_hosts_line(self, address: str, port: int) -> str:
        """This key as a known_hosts line for ``address`` and ``port``."""
        return f"{known_hosts_pattern(address, port)} {self.type} {self.blob}"


def known_hosts_pattern(address: str, port: int) -> str:
    """How ssh names a host in known_hosts: ``addr`` on port 22, ``[addr]:port`` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def _check_blob(key_type: str, blob: str, where: str) -> None:
    try:
        raw = binascii.a2b_base64(blob, strict_mode=True)
    except (binascii.Error, ValueError):
        raise HostKeyError(f"{where}: the key is not valid base64") from None
    # The blob starts with its own algorithm name (RFC 4253 §6.6): it must match the line's.
    if len(raw) < 4:
        raise HostKeyError(f"{where}: the key is too short")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length] != key_type.encode():
        raise HostKeyError(f"{where}: the key's content is not a {key_type} key")


def parse_host_keys(text: str) -> list[HostKey]:
    """The keys in ``text``: known_hosts lines, ``ssh-keyscan`` output or ``*.pub`` files.

    Comments and blank lines are skipped; markers (``@cert-authority``, ``@revoked``) and
    anything that is not a host key are refused. Keys come back sorted, without repeats.
    """
    if len(text) > MAX_TEXT:
        raise HostKeyError(f"paste at most {MAX_TEXT // 1024} KB of host keys")
    keys: set[HostKey] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"line {number}"
        if tokens[0].startswith("@"):
            raise HostKeyError(f"{where}: {tokens[0]} lines are not accepted; paste plain keys")
        if tokens[0] in KEY_TYPES and len(tokens) >= 2:
            key_type, blob = tokens[0], tokens[1]
        elif len(tokens) >= 3 and tokens[1] in KEY_TYPES:
            key_type, blob = tokens[1], tokens[2]
        else:
            raise HostKeyError(
                f"{where}: not an SSH host key; paste the host's /etc/ssh/ssh_host_*_key.pub "
                "files or known_hosts lines (e.g. from ssh-keyscan)"
            )
        _check_blob(key_type, blob, where)
        keys.add(HostKey(key_type, blob))
    if not keys:
        raise HostKeyError("no SSH host key found: paste at least one public host key")
    if len(keys) > MAX_KEYS:
        raise HostKeyError(f"{len(keys)} keys: a host has a few host keys, at most {MAX_KEYS}")
    return sorted(keys)


def render_known_hosts(keys: Iterable[HostKey], address: str, port: int) -> str:
    """known_hosts text naming ``address``/``port`` for each key."""
    return "".join(f"{key.known_hosts_line(address, port)}\n" for key in keys)
