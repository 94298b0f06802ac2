"""Access tokens: real PyJWT, every way a token must be refused, key rotation, key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from cortex_core import errors
from cortex_core.adapters.security.jwt_codec import (
    INVALID_TOKEN_MESSAGE,
    JwtAccessTokenCodec,
    Key,
    KeyRing,
    load_key_ring,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OLD_KEY = Key.from_secret(b"o" * 64)
CURRENT_KEY = Key.from_secret(b"c" * 64)
OTHER_KEY = Key.from_secret(b"x" * 64)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64url(json.dumps(value).encode())


def valid_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "cortex-core",
        "aud": "cortex-core",
        "sub": "user-1",
        "sid": "session-1",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 900,
        "jti": "token-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def signed(
    claims: dict[str, Any],
    *,
    key: Key = CURRENT_KEY,
    algorithm: str = "HS256",
    **header: Any,
) -> str:
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.secret, algorithm=algorithm, headers=headers)


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{b64url(signature)}"


def tampered_payload() -> str:
    header, _, signature = signed(valid_claims()).split(".")
    return f"{header}.{b64json(valid_claims(sub='admin'))}.{signature}"


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(key.secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.fixture
def codec() -> JwtAccessTokenCodec:
    return JwtAccessTokenCodec(KeyRing(CURRENT_KEY, [OLD_KEY]))


# --- issuing and verifying ------------------------------------------------------


def test_an_issued_token_verifies_to_its_claims(codec: JwtAccessTokenCodec) -> None:
    issued = codec.issue(user_id="user-1", session_id="session-1", now=NOW)

    claims = codec.verify(issued.token, now=NOW + timedelta(minutes=5))

    assert claims.user_id == "user-1"
    assert claims.session_id == "session-1"
    assert claims.token_id == issued.token_id
    assert claims.issue_time == NOW
    assert claims.expire_time == issued.expire_time == NOW + timedelta(minutes=15)
    assert claims.expire_time.tzinfo is not None


def test_an_issued_token_has_the_rfc_9068_header_and_every_claim(
    codec: JwtAccessTokenCodec,
) -> None:
    token = codec.issue(user_id="user-1", session_id="session-1", now=NOW).token

    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "HS256", "typ": "at+jwt", "kid": CURRENT_KEY.kid}
    assert set(payload) == {"iss", "aud", "sub", "sid", "iat", "exp", "jti"}


def test_every_token_gets_a_fresh_random_jti(codec: JwtAccessTokenCodec) -> None:
    ids = {codec.issue(user_id="u", session_id="s", now=NOW).token_id for _ in range(50)}

    assert len(ids) == 50
    assert all(len(token_id) >= 20 for token_id in ids)


def test_the_lifetime_is_a_constructor_argument() -> None:
    codec = JwtAccessTokenCodec(KeyRing(CURRENT_KEY), lifetime=timedelta(minutes=5))

    issued = codec.issue(user_id="u", session_id="s", now=NOW)

    assert issued.expire_time == NOW + timedelta(minutes=5)


def test_a_token_is_accepted_within_the_leeway_after_expiry(codec: JwtAccessTokenCodec) -> None:
    issued = codec.issue(user_id="u", session_id="s", now=NOW)

    codec.verify(issued.token, now=issued.expire_time + timedelta(seconds=4))


# --- refusals -------------------------------------------------------------------

REFUSED: dict[str, Callable[[], str]] = {
    "alg none": lambda: hand_made(
        {"alg": "none", "typ": "at+jwt", "kid": CURRENT_KEY.kid}, valid_claims()
    ),
    "alg none without kid": lambda: hand_made({"alg": "none"}, valid_claims()),
    "HS512 with the same key": lambda: signed(valid_claims(), algorithm="HS512"),
    "HS256 header lying about HS512": lambda: hs256_by_hand(
        {"alg": "HS512", "typ": "at+jwt", "kid": CURRENT_KEY.kid}, valid_claims(), CURRENT_KEY
    ),
    "wrong key under the current kid": lambda: jwt.encode(
        valid_claims(), OTHER_KEY.secret, headers={"kid": CURRENT_KEY.kid, "typ": "at+jwt"}
    ),
    "tampered payload": tampered_payload,
    "wrong audience": lambda: signed(valid_claims(aud="another-service")),
    "audience list": lambda: signed(valid_claims(aud=["cortex-core", "another-service"])),
    "wrong issuer": lambda: signed(valid_claims(iss="https://evil.example")),
    "missing sid": lambda: signed(valid_claims(sid=None)),
    "missing jti": lambda: signed(valid_claims(jti=None)),
    "missing sub": lambda: signed(valid_claims(sub=None)),
    "missing iat": lambda: signed(valid_claims(iat=None)),
    "missing exp": lambda: signed(valid_claims(exp=None)),
    "missing aud": lambda: signed(valid_claims(aud=None)),
    "missing iss": lambda: signed(valid_claims(iss=None)),
    "empty sid": lambda: signed(valid_claims(sid="")),
    "numeric sub": lambda: signed(valid_claims(sub=42)),
    "string exp": lambda: signed(valid_claims(exp=str(int(NOW.timestamp()) + 900))),
    "issued in the future": lambda: signed(valid_claims(iat=int(NOW.timestamp()) + 60)),
    "not yet valid (nbf)": lambda: signed(valid_claims(nbf=int(NOW.timestamp()) + 60)),
    "typ refresh": lambda: signed(valid_claims(), typ="rt+jwt"),
    "typ JWT": lambda: signed(valid_claims(), typ="JWT"),
    "no typ": lambda: signed(valid_claims(), typ=None),
    "unknown kid": lambda: signed(valid_claims(), key=OTHER_KEY),
    "no kid": lambda: jwt.encode(valid_claims(), CURRENT_KEY.secret, headers={"typ": "at+jwt"}),
    "garbage": lambda: "not.a.token",
    "two segments": lambda: "abc.def",
    "binary noise": lambda: "\x00\xff\u2603.\u00e9.\ud83d",
    "header not an object": lambda: f"{b64json([1, 2])}.{b64json(valid_claims())}.",
    "huge": lambda: "a" * 100_000,
    "empty": lambda: "",
}


@pytest.mark.parametrize("make_token", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_token_is_refused_with_one_generic_message(
    codec: JwtAccessTokenCodec, make_token: Callable[[], str]
) -> None:
    with pytest.raises(errors.Unauthenticated) as caught:
        codec.verify(make_token(), now=NOW)

    assert caught.value.message == INVALID_TOKEN_MESSAGE
    assert caught.value.reason == "TOKEN_INVALID"
    assert caught.value.__cause__ is None


def test_an_expired_token_is_refused_as_expired(codec: JwtAccessTokenCodec) -> None:
    issued = codec.issue(user_id="u", session_id="s", now=NOW)

    with pytest.raises(errors.Unauthenticated) as caught:
        codec.verify(issued.token, now=issued.expire_time + timedelta(seconds=6))

    assert caught.value.message == INVALID_TOKEN_MESSAGE
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_an_expired_forgery_is_invalid_not_expired(codec: JwtAccessTokenCodec) -> None:
    forged = signed(valid_claims(exp=int(NOW.timestamp()) - 60), key=OTHER_KEY, kid=CURRENT_KEY.kid)

    with pytest.raises(errors.Unauthenticated) as caught:
        codec.verify(forged, now=NOW)

    assert caught.value.reason == "TOKEN_INVALID"


def test_a_token_for_another_audience_configuration_is_refused() -> None:
    token = JwtAccessTokenCodec(KeyRing(CURRENT_KEY), audience="a").issue(
        user_id="u", session_id="s", now=NOW
    )

    with pytest.raises(errors.Unauthenticated):
        JwtAccessTokenCodec(KeyRing(CURRENT_KEY), audience="b").verify(token.token, now=NOW)


def test_the_typ_application_at_jwt_is_accepted(codec: JwtAccessTokenCodec) -> None:
    codec.verify(signed(valid_claims(), typ="application/at+jwt"), now=NOW)


# --- key rotation ---------------------------------------------------------------


def test_a_token_signed_with_a_previous_key_verifies_until_that_key_is_dropped() -> None:
    old_token = JwtAccessTokenCodec(KeyRing(OLD_KEY)).issue(user_id="u", session_id="s", now=NOW)

    rotated = JwtAccessTokenCodec(KeyRing(CURRENT_KEY, [OLD_KEY]))
    assert rotated.verify(old_token.token, now=NOW).user_id == "u"

    retired = JwtAccessTokenCodec(KeyRing(CURRENT_KEY))
    with pytest.raises(errors.Unauthenticated) as caught:
        retired.verify(old_token.token, now=NOW)
    assert caught.value.reason == "TOKEN_INVALID"


def test_new_tokens_carry_the_current_kid(codec: JwtAccessTokenCodec) -> None:
    token = codec.issue(user_id="u", session_id="s", now=NOW).token

    assert jwt.get_unverified_header(token)["kid"] == CURRENT_KEY.kid


def test_a_key_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Key.from_secret(b"s" * 31)


def test_a_leeway_over_five_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="leeway"):
        JwtAccessTokenCodec(KeyRing(CURRENT_KEY), leeway=timedelta(seconds=30))


# --- load_key_ring ----------------------------------------------------------------


def test_without_a_secret_one_is_generated_once_in_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    ring, warning = load_key_ring("", [], data_dir)
    again, warning_again = load_key_ring("", [], data_dir)

    secret_file = data_dir / "jwt_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(secret_file.read_text())) == 48
    assert again.current == ring.current
    assert warning is not None
    assert "CORTEX_JWT_SECRET" in warning
    assert "not for production" in warning
    assert warning_again is not None
    assert [p.name for p in data_dir.iterdir()] == ["jwt_secret"]


def test_tokens_survive_a_restart_with_a_generated_secret(tmp_path: Path) -> None:
    before = JwtAccessTokenCodec(load_key_ring("", [], tmp_path)[0])
    token = before.issue(user_id="u", session_id="s", now=NOW).token

    after = JwtAccessTokenCodec(load_key_ring("", [], tmp_path)[0])

    assert after.verify(token, now=NOW).user_id == "u"


def test_a_configured_secret_is_used_without_warning_or_file(tmp_path: Path) -> None:
    secret = "s3cret-" * 6

    ring, warning = load_key_ring(secret, ["", "p" * 32 + " "], tmp_path)

    assert warning is None
    assert ring.current.secret == secret.encode()
    assert ring.current.kid == hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert [key.secret for key in ring.previous] == [b"p" * 32]
    assert not (tmp_path / "jwt_secret").exists()


def test_a_short_secret_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CORTEX_JWT_SECRET"):
        load_key_ring("too-short", [], tmp_path)
    with pytest.raises(ValueError, match="CORTEX_JWT_PREVIOUS_SECRETS"):
        load_key_ring("k" * 32, ["short"], tmp_path)


def test_a_short_secret_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("short\n")

    with pytest.raises(ValueError, match="jwt_secret"):
        load_key_ring("", [], tmp_path)


def test_a_generated_secret_can_be_rotated_into_previous(tmp_path: Path) -> None:
    generated, _ = load_key_ring("", [], tmp_path)
    stored = (tmp_path / "jwt_secret").read_text().strip()
    old_token = JwtAccessTokenCodec(generated).issue(user_id="u", session_id="s", now=NOW)

    ring, warning = load_key_ring("n" * 48, [stored], tmp_path)

    assert warning is None
    assert ring.find(generated.current.kid) == generated.current
    assert JwtAccessTokenCodec(ring).verify(old_token.token, now=NOW).user_id == "u"
