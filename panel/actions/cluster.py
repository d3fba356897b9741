"""The cluster credentials provisioning hands over: stored once per apply that brings them.

The nomad role gives the run that provisioned the cluster the address of Nomad's API, the
region, the `helios` client token (policy `helios`), the cluster's CA certificate, when the
agents require client certificates the panel's client certificate and key, unless turned
off a management token used only to create team namespaces and team tokens, and when the
cluster has one, its registry's address and account (for builds). They are checked
here (an allow-list of shapes), the token and the key encrypted, and kept in one row that every
process reads (:mod:`panel.cluster_access`). Nothing of them is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from panel.actions.common import ActionError
from panel.crypto import SecretCipher
from panel.db import database
from panel.models import ClusterCredentials, ProvisionRun, utcnow
from panel.render.build import validate_registry
from panel.validation import ValidationError

__all__ = ["HANDOFF_KEY", "store_cluster_credentials"]

logger = logging.getLogger(__name__)

HANDOFF_KEY = "helios_nomad"  # the set_stats key the nomad role hands the credentials under
_ADDRESS = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REGION = re.compile(r"[A-Za-z0-9_.-]{0,128}")
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PASSWORD = re.compile(r"[\x21-\x7e]{8,256}")  # printable, no spaces
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----\n[A-Za-z0-9+/=\n]+-----END [A-Z0-9 ]+-----\n?")


def _text(handed: Mapping[str, Any], name: str) -> str:
    value = handed.get(name, "")
    if not isinstance(value, str):
        raise ActionError("invalid", f"the cluster credentials' {name} is not text")
    return value.strip()


def _pem(handed: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = _text(handed, name).replace("\r\n", "\n")
    if not value and not required:
        return ""
    if not _PEM.fullmatch(value + "\n"):
        raise ActionError(
            "invalid",
            f"the cluster credentials' {name} is not a PEM block: check the certificates the "
            "pki role issued (or the nomad_tls_* and nomad_helios_* variables)",
        )
    return value + "\n"


def _registry(handed: Any) -> tuple[str, str, str]:
    """The registry's (address, username, password) handed over, or three empty strings."""
    if not isinstance(handed, Mapping):
        raise ActionError("invalid", "the cluster credentials' registry is not a mapping")
    if not handed:
        return "", "", ""
    try:
        address = validate_registry(_text(handed, "address"), "registry address")
    except ValidationError as exc:
        raise ActionError("invalid", f"the cluster credentials' {exc.message}") from None
    username, password = _text(handed, "username"), _text(handed, "password")
    if not _USERNAME.fullmatch(username) or not _PASSWORD.fullmatch(password):
        raise ActionError(
            "invalid",
            "the cluster credentials' registry account is not a user name and password: "
            "check /etc/helios/secrets/registry.password on the first Nomad server",
        )
    return address, username, password


def store_cluster_credentials(
    run: ProvisionRun, handed: Mapping[str, Any], cipher: SecretCipher
) -> ClusterCredentials:
    """Check what run ``run`` handed over and keep it as the cluster's credentials.

    Raises :class:`ActionError` (saying what is wrong, never a secret) when a part is missing
    or has the wrong shape; the stored credentials then stay as they were.
    """
    if not isinstance(handed, Mapping):
        raise ActionError("invalid", "the cluster credentials handed over are not a mapping")
    address = _text(handed, "address").rstrip("/")
    if not _ADDRESS.fullmatch(address):
        raise ActionError(
            "invalid",
            "the cluster credentials' address is not http(s)://<host>:<port>: set "
            "nomad_helios_address (nomad role) to the address the panel reaches Nomad at",
        )
    region = _text(handed, "region")
    if not _REGION.fullmatch(region):
        raise ActionError("invalid", "the cluster credentials' region is not a Nomad region name")
    token, accessor = _text(handed, "token"), _text(handed, "accessor")
    if not _TOKEN.fullmatch(token) or not _TOKEN.fullmatch(accessor):
        raise ActionError(
            "invalid", "the cluster credentials' token or accessor is not a Nomad ACL UUID"
        )
    management = _text(handed, "management_token")
    management_accessor = _text(handed, "management_accessor")
    if (management or management_accessor) and not (
        _TOKEN.fullmatch(management) and _TOKEN.fullmatch(management_accessor)
    ):
        raise ActionError(
            "invalid",
            "the cluster credentials' management token or accessor is not a Nomad ACL UUID",
        )
    try:
        registry = _registry(handed.get("registry") or {})
    except ActionError as exc:
        # The cluster stays usable without builds: keep the rest, say why the registry is not.
        logger.warning("run #%d: the registry handed over was not kept: %s", run.id, exc)
        registry = ("", "", "")
    ca_cert = _pem(handed, "ca_cert", required=address.startswith("https://"))
    client_cert = _pem(handed, "client_cert", required=False)
    client_key = _pem(handed, "client_key", required=bool(client_cert))
    if client_key and not client_cert:
        raise ActionError(
            "invalid", "the cluster credentials hold a client key without its certificate"
        )
    values = {
        "address": address,
        "region": region,
        "accessor": accessor,
        "token": cipher.encrypt(token),
        "ca_cert": ca_cert,
        "client_cert": client_cert,
        "client_key": cipher.encrypt(client_key) if client_key else "",
        "management_accessor": management_accessor,
        "management_token": cipher.encrypt(management) if management else "",
        "registry": registry[0],
        "registry_username": registry[1],
        "registry_password": cipher.encrypt(registry[2]) if registry[2] else "",
        "run": run.id,
        "received_at": utcnow(),
    }
    with database.atomic():
        ClusterCredentials.delete().execute()
        return ClusterCredentials.create(**values)
