"""Keys and ciphers: secrets encrypted at rest, passwords and API tokens hashed."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from panel.config import Settings

__all__ = [
    "SecretCipher",
    "SecretKeyError",
    "check_password",
    "generate_password",
    "hash_password",
    "hash_token",
    "load_or_create_key",
    "new_token",
]

TOKEN_PREFIX = "hel_"  # noqa: S105 - a marker that makes leaked tokens easy to spot


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed or does not match the stored secrets."""


def load_or_create_key(path: Path) -> str:
    """Read a key file, creating it (mode 0600) with a fresh Fernet key when absent."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    try:
        # link() never replaces: when processes start together, the first key written wins.
        os.link(draft, path)
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        draft.unlink()
    return key


class SecretCipher:
    """Encrypts and decrypts secret values with the installation's Fernet key."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise SecretKeyError(
                "HELIOS_ENCRYPTION_KEY is not a Fernet key: generate one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretCipher:
        """The cipher for this installation: the configured key, else the key file."""
        key = settings.encryption_key or load_or_create_key(settings.data_dir / "encryption.key")
        return cls(key)

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a secret value for storage."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a stored secret value."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with this key: "
                "restore the HELIOS_ENCRYPTION_KEY the secret was written with"
            ) from None


def hash_password(password: str) -> str:
    """A salted, slow hash of a password (werkzeug's scrypt)."""
    from werkzeug.security import generate_password_hash  # the panel's; not every process

    return generate_password_hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``."""
    from werkzeug.security import check_password_hash

    return bool(stored_hash) and check_password_hash(stored_hash, password)


def new_token() -> str:
    """A new random API token (shown to its owner once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 under which a token is stored; tokens are random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    """A random password for a bootstrapped account."""
    return secrets.token_urlsafe(18)
