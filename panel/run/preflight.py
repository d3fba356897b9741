"""Checks before a process starts serving: is the address free, does Redis answer, does the
database open. Each failure is one ``PreflightError`` whose message says what is wrong and what
to do, so `helios up` stops before it creates anything (an administrator whose password nobody
saw, a Redis server for nothing) and `helios panel` / `helios worker` stop without a traceback.
"""

from __future__ import annotations

import errno
import socket

import peewee as pw
import redis

from panel.config import mask_url

__all__ = ["PreflightError", "check_database", "check_port", "check_redis"]

REDIS_TIMEOUT = 2.0  # seconds for Redis to answer PING


class PreflightError(RuntimeError):
    """Something a process needs is not there; the message says what to do."""


def _holder(port: int) -> str:
    """' by pid N (command)' for the process listening on ``port``, when it can be seen."""
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):  # another user's sockets are hidden without root
        return ""
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return ""
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline()[:4])[:120]
            except psutil.Error:
                command = ""
            return f" by pid {conn.pid}" + (f" ({command})" if command else "")
    return ""


def check_port(bind: str) -> None:
    """Refuse when HELIOS_BIND's address cannot be listened on (taken, not ours, privileged)."""
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise PreflightError(
                f"HELIOS_BIND={bind}: {host!r} is not an address of this machine ({exc.strerror}); "
                "use e.g. HELIOS_BIND=127.0.0.1:8080"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"{bind} is already in use{_holder(port)}: stop that, or run Helios on "
                    f"another port, e.g. HELIOS_BIND={host}:{_free_neighbour(host, port)} helios up"
                ) from None
            if exc.errno == errno.EACCES:
                raise PreflightError(
                    f"port {port} needs root privileges to listen on: use a port from 1024 up, "
                    f"e.g. HELIOS_BIND={host}:8080, behind a proxy for port 80 or 443"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PreflightError(
                    f"HELIOS_BIND={bind}: {host} is not an address of this machine; use "
                    "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
                ) from None
            raise PreflightError(f"cannot listen on {bind}: {exc.strerror}") from None


def _free_neighbour(host: str, port: int) -> int:
    """The next port above ``port`` that can be listened on now (or port + 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port + 1, min(port + 50, 65535)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return port + 1


def check_redis(url: str, *, configured: bool = True) -> None:
    """Refuse when the Redis at ``url`` does not answer PING within REDIS_TIMEOUT."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    except redis.AuthenticationError:
        raise PreflightError(
            f"Redis at {mask_url(url)} refused the password in HELIOS_REDIS_URL: fix it "
            "(redis://:PASSWORD@host:6379/0)"
        ) from None
    except redis.RedisError as exc:
        where = "HELIOS_REDIS_URL" if configured else "the default address"
        hint = (
            "start it (e.g. systemctl start redis-server) or correct HELIOS_REDIS_URL"
            if configured
            else "install and start redis-server (apt-get install redis-server), or set "
            "HELIOS_REDIS_URL; `helios up` starts a Redis of its own"
        )
        raise PreflightError(
            f"Redis at {mask_url(url)} ({where}) does not answer: {str(exc).rstrip('.')}; {hint}"
        ) from None
    finally:
        client.close()


def check_database(database: pw.Database, url: str) -> None:
    """Refuse when the database cannot be opened (unreachable server, unwritable file)."""
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except pw.DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(
            f"the database at {mask_url(url)} cannot be opened: {reason}; check "
            "HELIOS_DATABASE_URL (or that HELIOS_DATA_DIR is writable for SQLite)"
        ) from None
