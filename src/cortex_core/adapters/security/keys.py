"""HMAC signing keys for access tokens: the key ring and where its secrets come from.

A key's ``kid`` is the first 16 hex digits of SHA-256 of its secret, so the same
secret always gets the same ``kid`` on every replica without extra configuration,
and a token names the key that signed it without revealing anything usable about
it (a 64-bit fingerprint of a secret of at least 256 bits).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
GENERATED_SECRET_BYTES = 48
SECRET_FILE_NAME = "jwt_secret"
SECRET_VARIABLE = "CORTEX_JWT_SECRET"
PREVIOUS_SECRETS_VARIABLE = "CORTEX_JWT_PREVIOUS_SECRETS"


def key_id(secret: bytes) -> str:
    """The ``kid`` of ``secret``: 16 hex digits of its SHA-256."""
    return hashlib.sha256(secret).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One HS256 secret and its ``kid``; the secret is kept out of ``repr``."""

    kid: str
    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not self.kid:
            raise ValueError("a key needs a non-empty kid")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes")

    @classmethod
    def from_secret(cls, secret: bytes) -> Key:
        """A key whose ``kid`` is derived from ``secret`` (see :func:`key_id`)."""
        return cls(key_id(secret), secret)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRing:
    """The key that signs new tokens, and older keys whose tokens are still accepted.

    Raises ``ValueError`` when two different secrets share a ``kid``.
    """

    current: Key
    previous: Sequence[Key] = ()

    def __post_init__(self) -> None:
        unique: dict[str, Key] = {self.current.kid: self.current}
        for key in self.previous:
            known = unique.setdefault(key.kid, key)
            if known.secret != key.secret:
                raise ValueError(f"two different secrets share the kid {key.kid!r}")
        object.__setattr__(
            self, "previous", tuple(k for k in unique.values() if k is not self.current)
        )

    def find(self, kid: str) -> Key | None:
        """The key named ``kid`` (current or previous), or None."""
        if kid == self.current.kid:
            return self.current
        for key in self.previous:
            if key.kid == kid:
                return key
        return None


def load_key_ring(
    secret: str, previous: Sequence[str], data_dir: Path
) -> tuple[KeyRing, str | None]:
    """Build the key ring from configuration; return it and a warning, if any.

    ``secret`` is ``CORTEX_JWT_SECRET`` and ``previous`` the split
    ``CORTEX_JWT_PREVIOUS_SECRETS``; a variable's UTF-8 bytes are the key, and
    empty entries are ignored. When ``secret`` is empty, 48 random bytes are
    generated once and their base64 text (64 characters) is stored in
    ``data_dir/jwt_secret`` (mode 0600) and reused on later starts, so tokens
    survive restarts; the returned warning says so. The file's text is used
    exactly like a configured secret, so it can later be moved into
    ``CORTEX_JWT_SECRET`` or ``CORTEX_JWT_PREVIOUS_SECRETS`` without invalidating
    tokens. Raises ``ValueError`` naming the variable (or the file) for a secret
    shorter than 32 bytes.

    Blocking file I/O: call it once, at start, not on the event loop.
    """
    warning: str | None = None
    if secret:
        current = Key.from_secret(_configured(secret, SECRET_VARIABLE))
    else:
        path = data_dir / SECRET_FILE_NAME
        current = Key.from_secret(_configured(_stored_or_new_secret(path), str(path)))
        warning = (
            f"{SECRET_VARIABLE} is not set: access tokens are signed with a generated "
            f"secret stored in {path}. Fine for development, not for production: set "
            f"{SECRET_VARIABLE} to the same value on every replica."
        )
        if path.stat().st_mode & 0o077:
            warning += f" {path} is readable by other users; run chmod 600 on it."
    previous_keys = [
        Key.from_secret(_configured(entry.strip(), PREVIOUS_SECRETS_VARIABLE))
        for entry in previous
        if entry.strip()
    ]
    return KeyRing(current, previous_keys), warning


def _configured(secret: str, variable: str) -> bytes:
    raw = secret.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{variable} must be at least {MIN_SECRET_BYTES} bytes long "
            "(generate one with: openssl rand -base64 48)"
        )
    return raw


def _stored_or_new_secret(path: Path) -> str:
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode("ascii")
    # Write a private temporary file, then hard-link it into place: the link is
    # atomic and fails if the file exists, so two processes starting at once
    # agree on one secret and nobody ever reads a half-written file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_secret(path)
    finally:
        temporary.unlink(missing_ok=True)
    return text


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(
            f"{path} is not a text secret; delete it or set {SECRET_VARIABLE}"
        ) from None
