"""Who runs a `helios` operator command on the server: the OS account, recorded as the actor of
what the command changes (the audit log says ``operator alice (local shell)``), or the command
is refused when that account has no usable name."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager

import click

__all__ = ["EXIT_AUTH", "OperatorUnknownError", "acting_as_os_user", "os_user"]

EXIT_AUTH = 3  # as the client commands: not logged in or not allowed
# A portable POSIX account name (useradd's default rule, and no more than it allows).
OS_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")


class OperatorUnknownError(click.ClickException):
    """The OS account running the command cannot be named, so nothing is changed (exit 3)."""

    exit_code = EXIT_AUTH


def os_user() -> str:
    """The name of the OS account this process acts as (its effective user id)."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = ""
    if not OS_USER_RE.fullmatch(name):
        raise OperatorUnknownError(
            f"the OS account running this command (uid {uid}) has no usable name in the "
            "password database, and changes are recorded under it: run the command as a named "
            "user (letters, digits, '.', '_', '-')"
        )
    return name


@contextmanager
def acting_as_os_user() -> Iterator[str]:
    """Within, actions taken with ``actor=None`` are recorded as done by the OS account;
    yields the name the audit log gives it."""
    from panel.actions.common import as_local_operator

    with as_local_operator(os_user()) as name:
        yield name
