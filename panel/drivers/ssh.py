"""Reading a host's SSH host keys over the network with ``ssh-keyscan`` (argument list only)."""

from __future__ import annotations

import logging
import shutil
import subprocess

from panel.host_keys import HostKey, HostKeyError, parse_host_keys

__all__ = ["KEYSCAN_TIMEOUT", "ScanError", "scan_host_keys"]

logger = logging.getLogger(__name__)

KEYSCAN_TIMEOUT = 5  # seconds ssh-keyscan waits for the host to answer


class ScanError(RuntimeError):
    """The host's keys could not be read; the message says what to do."""


def scan_host_keys(address: str, port: int, *, timeout: int = KEYSCAN_TIMEOUT) -> list[HostKey]:
    """The host keys the SSH server at ``address``:``port`` offers (every algorithm)."""
    program = shutil.which("ssh-keyscan")
    if program is None:
        raise ScanError("ssh-keyscan is not installed: install openssh-client, or paste the keys")
    # `--` ends the options: the address can never be read as one (it is validated anyway).
    argv = [program, "-T", str(timeout), "-p", str(port), "--", address]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5,
                                stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ScanError(f"{address} port {port} did not answer within {timeout} s") from None
    try:
        return parse_host_keys(result.stdout)
    except HostKeyError:
        problems = [line for line in result.stderr.splitlines() if not line.startswith("#")]
        reason = problems[-1] if problems else "no SSH server answered"
        logger.info("ssh-keyscan %s:%d: %s", address, port, result.stderr.strip())
        raise ScanError(
            f"no SSH host key from {address} port {port}: {reason} — check that the host is up "
            "and sshd listens there, or paste its keys"
        ) from None
