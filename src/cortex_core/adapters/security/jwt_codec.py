"""Access tokens as HS256 JWTs (RFC 7519) in the RFC 9068 profile, with PyJWT.

A token looks like::

    header  {"alg": "HS256", "typ": "at+jwt", "kid": "<16 hex>"}
    payload {"iss", "aud", "sub": user id, "sid": session id, "iat", "exp", "jti"}

Verification pins everything it can before trusting the token: the header must
say ``alg: HS256`` and ``typ: at+jwt`` (so a refresh token or an ID token with
another ``typ`` is refused), the ``kid`` must name a key of the ring, PyJWT
checks the signature with ``algorithms=["HS256"]`` only, then issuer, audience
(exactly), the required claims and their types, and finally the times against
the caller's ``now`` with a small leeway. Any failure raises
``Unauthenticated`` with one message for every cause; the reason is
``TOKEN_EXPIRED`` for a genuine but expired token and ``TOKEN_INVALID`` for the rest.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from cortex_core import errors
from cortex_core.adapters.security.keys import Key, KeyRing, load_key_ring
from cortex_core.domain.access_tokens import AccessClaims, IssuedToken

__all__ = ["INVALID_TOKEN_MESSAGE", "JwtAccessTokenCodec", "Key", "KeyRing", "load_key_ring"]

INVALID_TOKEN_MESSAGE = "the access token is not valid"
ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"
_ACCEPTED_TYPES = frozenset({TOKEN_TYPE, "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "iat", "exp", "jti")
DEFAULT_LIFETIME = timedelta(minutes=15)
DEFAULT_LEEWAY = timedelta(seconds=5)
MAX_LEEWAY = timedelta(seconds=5)
#: Longer strings are refused before any parsing (a real token is ~350 bytes).
MAX_TOKEN_CHARS = 4096


class _Expired(Exception):
    """A correctly signed token whose ``exp`` has passed."""


class _Invalid(Exception):
    """Any other reason to refuse a token."""


class JwtAccessTokenCodec:
    """The ``AccessTokenCodec`` port: mints with the ring's current key, verifies with any.

    ``issue`` and ``verify`` are pure CPU work of a few microseconds (HMAC), safe
    to call on the event loop.
    """

    def __init__(
        self,
        key_ring: KeyRing,
        *,
        issuer: str = "cortex-core",
        audience: str = "cortex-core",
        lifetime: timedelta = DEFAULT_LIFETIME,
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> None:
        """Raise ``ValueError`` for a lifetime under one second or a leeway outside 0 to 5 s."""
        if lifetime < timedelta(seconds=1):
            raise ValueError("lifetime must be at least one second")
        if not timedelta(0) <= leeway <= MAX_LEEWAY:
            raise ValueError("leeway must be between 0 and 5 seconds")
        self._ring = key_ring
        self._issuer = issuer
        self._audience = audience
        self._lifetime = int(lifetime.total_seconds())
        self._leeway = leeway.total_seconds()

    def issue(self, *, user_id: str, session_id: str, now: datetime) -> IssuedToken:
        """Mint a token for ``user_id`` in ``session_id``, valid from ``now`` for the lifetime.

        Raises ``ValueError`` when ``now`` is naive or an id is empty.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not user_id or not session_id:
            raise ValueError("user_id and session_id must not be empty")
        issued_at = int(now.timestamp())
        expires_at = issued_at + self._lifetime
        token_id = secrets.token_urlsafe(18)
        key = self._ring.current
        token = jwt.encode(
            {
                "iss": self._issuer,
                "aud": self._audience,
                "sub": user_id,
                "sid": session_id,
                "iat": issued_at,
                "exp": expires_at,
                "jti": token_id,
            },
            key.secret,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": TOKEN_TYPE},
        )
        return IssuedToken(
            token=token,
            token_id=token_id,
            expire_time=datetime.fromtimestamp(expires_at, UTC),
        )

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        """Return the claims of a valid token; raise ``Unauthenticated`` otherwise."""
        try:
            payload = self._decode(token, now.timestamp())
            return AccessClaims(
                user_id=payload["sub"],
                session_id=payload["sid"],
                token_id=payload["jti"],
                issue_time=datetime.fromtimestamp(payload["iat"], UTC),
                expire_time=datetime.fromtimestamp(payload["exp"], UTC),
            )
        except _Expired:
            raise errors.Unauthenticated(INVALID_TOKEN_MESSAGE, reason="TOKEN_EXPIRED") from None
        except (_Invalid, jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError):
            raise errors.Unauthenticated(INVALID_TOKEN_MESSAGE, reason="TOKEN_INVALID") from None

    def _decode(self, token: str, now: float) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _Invalid
        key = self._key_for(jwt.get_unverified_header(token))
        payload = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=self._audience,
            issuer=self._issuer,
            options={
                "require": list(REQUIRED_CLAIMS),
                "strict_aud": True,
                # Times are checked below against the caller's clock, not PyJWT's.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        for claim in ("sub", "sid", "jti"):
            if not isinstance(payload[claim], str) or not payload[claim]:
                raise _Invalid
        issued_at, expires_at = _integer(payload["iat"]), _integer(payload["exp"])
        if issued_at > now + self._leeway:
            raise _Invalid
        if "nbf" in payload and _integer(payload["nbf"]) > now + self._leeway:
            raise _Invalid
        if expires_at <= now - self._leeway:
            raise _Expired
        return payload

    def _key_for(self, header: dict[str, Any]) -> Key:
        if header.get("alg") != ALGORITHM:
            raise _Invalid
        token_type = header.get("typ")
        if not isinstance(token_type, str) or token_type.lower() not in _ACCEPTED_TYPES:
            raise _Invalid
        kid = header.get("kid")
        key = self._ring.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise _Invalid
        return key


def _integer(value: object) -> int:
    # bool is an int subclass; a float or string time is not what we issue.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid
    return value
