"""Whether a Nomad cluster is connected, for the panel's banner and readiness page."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from panel.config import Settings

__all__ = ["ClusterStatus", "probe_cluster"]

PROBE_TIMEOUT = 2  # seconds
PROBE_CACHE = 15  # seconds a probe result is reused

_cache: dict[str, tuple[float, ClusterStatus]] = {}


@dataclass(frozen=True)
class ClusterStatus:
    """What the panel can say about the cluster in one line."""

    connected: bool
    address: str
    message: str


def probe_cluster(settings: Settings) -> ClusterStatus:
    """Ask Nomad who its leader is (cached briefly); never raises."""
    address = settings.nomad_addr.rstrip("/")
    if not address:
        return ClusterStatus(False, "", "No cluster connected: set NOMAD_ADDR to a Nomad server.")
    cached = _cache.get(address)
    if cached and time.monotonic() - cached[0] < PROBE_CACHE:
        return cached[1]
    headers = {"X-Nomad-Token": settings.nomad_token} if settings.nomad_token else {}
    try:
        response = requests.get(
            f"{address}/v1/status/leader", headers=headers, timeout=PROBE_TIMEOUT
        )
        response.raise_for_status()
        status = ClusterStatus(True, address, f"Connected to Nomad at {address}.")
    except requests.RequestException as exc:
        reason = type(exc).__name__
        status = ClusterStatus(
            False, address, f"Nomad at {address} is not answering ({reason}): is the cluster up?"
        )
    _cache[address] = (time.monotonic(), status)
    return status
