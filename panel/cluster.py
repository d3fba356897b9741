"""Whether a Nomad cluster is connected, and with which token, for the dashboard's banner."""

from __future__ import annotations

import time
from dataclasses import dataclass

from panel.config import Settings
from panel.drivers.nomad import NomadConnection, NomadDriver, NomadError

__all__ = ["ClusterStatus", "probe_cluster"]

PROBE_TIMEOUT = 2  # seconds: the dashboard waits for the probe
PROBE_CACHE = 15  # seconds a probe result is reused

_cache: dict[NomadConnection, tuple[float, ClusterStatus]] = {}


@dataclass(frozen=True)
class ClusterStatus:
    """What the panel can say about the cluster in one line."""

    connected: bool
    address: str
    message: str


def probe_cluster(settings: Settings) -> ClusterStatus:
    """Ask Nomad about the token Helios uses, as the driver does (cached briefly); never raises."""
    connection = NomadConnection.from_settings(settings)
    if not connection.address:
        return ClusterStatus(
            False,
            "",
            (
                "No cluster connected: set NOMAD_ADDR to a Nomad server, or provision the cluster "
                "(Hosts → Apply)."
            ),
        )
    cached = _cache.get(connection)
    if cached and time.monotonic() - cached[0] < PROBE_CACHE:
        return cached[1]
    status = _probe(connection)
    _cache[connection] = (time.monotonic(), status)
    return status


def _probe(connection: NomadConnection) -> ClusterStatus:
    """One look: connected only when Nomad answers and accepts the token (or has no ACLs)."""
    address = connection.address
    try:
        token = NomadDriver(connection).read_own_token(timeout=PROBE_TIMEOUT)
    except NomadError as exc:
        return ClusterStatus(False, address, str(exc))
    if token is None:
        return ClusterStatus(True, address, f"Connected to Nomad at {address} (ACLs disabled).")
    kind = token.get("Type") or "client"
    name = token.get("Name")
    who = f"token {name!r} ({kind})" if name else f"an unnamed {kind} token"
    return ClusterStatus(True, address, f"Connected to Nomad at {address} with {who}.")
