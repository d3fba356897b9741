"""The only code that talks to Consul: the check states the sampler reads, one request a pass.

``GET /v1/health/state/any`` lists every check Consul knows of, node checks and service checks
alike (https://developer.hashicorp.com/consul/api-docs/health#list-checks-in-state). Helios
sends its token in ``X-Consul-Token``
(https://developer.hashicorp.com/consul/api-docs/api-structure#authentication) and always
verifies TLS. Every failure becomes a :class:`ConsulError` whose message says what
to do, with the original exception kept as ``__cause__``; the token is never part of one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import requests

from panel.config import Settings

__all__ = ["ConsulConnection", "ConsulDriver", "ConsulError"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = (3.05, 10)  # seconds: to connect, then between bytes of the answer
# Consul says so when its ACLs hid part of an answer from the token (instead of refusing it).
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


class ConsulError(RuntimeError):
    """Consul could not be read; the message says why and what to change."""


@dataclass(frozen=True)
class ConsulConnection:
    """Where and how to reach Consul's HTTP API, from HELIOS_CONSUL_* settings."""

    address: str
    token: str = ""
    ca_cert: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsulConnection:
        """The connection described by HELIOS_CONSUL_* settings."""
        return cls(settings.consul_addr.rstrip("/"), settings.consul_token, settings.consul_cacert)


def _reason(response: requests.Response) -> str:
    text = " ".join(response.text.split())
    return text[:300] if text else f"HTTP {response.status_code}"


class ConsulDriver:
    """Reads from one Consul agent or server."""

    def __init__(self, connection: ConsulConnection) -> None:
        if not connection.address:
            raise ConsulError(
                "no Consul is configured: set HELIOS_CONSUL_ADDR, e.g. https://consul.internal:8501"
            )
        self.connection = connection
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "helios"
        if connection.token:
            self._session.headers["X-Consul-Token"] = connection.token

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsulDriver:
        """A driver for the Consul the settings point at."""
        return cls(ConsulConnection.from_settings(settings))

    def close(self) -> None:
        """Close the driver's connections."""
        self._session.close()

    def service_checks(self) -> list[dict[str, Any]]:
        """Every check Consul knows of (HealthCheck objects: Node, CheckID, Name, Status,
        Output, ServiceID, ServiceName …), in one request."""
        response = self._get("/v1/health/state/any", "the check states")
        try:
            checks = response.json()
        except ValueError as exc:
            raise ConsulError(
                f"Consul at {self.connection.address} did not answer the check states in JSON "
                f"({_reason(response)}): is HELIOS_CONSUL_ADDR Consul's HTTP API?"
            ) from exc
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            raise ConsulError(
                f"Consul at {self.connection.address} did not answer a list of checks: is "
                "HELIOS_CONSUL_ADDR Consul's HTTP API?"
            )
        if response.headers.get(FILTERED_HEADER, "").lower() == "true":
            logger.warning(
                "Consul's ACLs hid some checks from HELIOS_CONSUL_TOKEN: give its policy "
                "service:read and node:read on every service and node Helios deploys to"
            )
        return checks

    def _get(self, path: str, what: str) -> requests.Response:
        address = self.connection.address
        verify: bool | str = self.connection.ca_cert or True
        if self.connection.ca_cert and not os.path.isfile(self.connection.ca_cert):
            raise ConsulError(
                f"HELIOS_CONSUL_CACERT={self.connection.ca_cert!r} is not a file: set it to the "
                "PEM file of the CA that signed Consul's certificate, or empty for system CAs"
            )
        try:
            response = self._session.get(f"{address}{path}", timeout=REQUEST_TIMEOUT, verify=verify)
        except requests.exceptions.SSLError as exc:
            raise ConsulError(
                f"Consul's TLS certificate at {address} could not be verified ({exc}): set "
                "HELIOS_CONSUL_CACERT to the CA certificate that signed it"
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ConsulError(
                f"Consul is not reachable at {address} ({type(exc).__name__}): start the "
                "agent or set HELIOS_CONSUL_ADDR to its HTTP API"
            ) from exc
        except (requests.RequestException, OSError) as exc:
            raise ConsulError(f"Consul at {address} could not be asked for {what}: {exc}") from exc
        if response.status_code in (401, 403):
            raise ConsulError(
                f"Consul at {address} refused {what} ({_reason(response)}): set "
                "HELIOS_CONSUL_TOKEN to a token whose policy grants service:read and node:read"
            )
        if response.status_code != 200:
            raise ConsulError(
                f"Consul at {address} answered HTTP {response.status_code} to {what}: "
                f"{_reason(response)}"
            )
        return response
