"""Token extraction from the three carriers and validation with exactly one algorithm."""

from __future__ import annotations

import hashlib
import hmac
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import close_codes
from gateway.admission.auth import Authenticator, AuthError, extract_token
from gateway.admission.query import MalformedQuery
from gateway.admission.query import parse as parse_query
from gateway.config.settings import Settings

SECRET = "a-test-secret-long-enough-for-hs256-use-and-for-hs512-as-well!!!"


def _auth(**env: str) -> Authenticator:
    return Authenticator(Settings.from_environ({"JWT_SECRET_KEY": SECRET, **env}))


def _token(claims: dict[str, object], key: object = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)  # type: ignore[arg-type]


def _valid_claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": int(time.time()) + 3600, **extra}


def test_query_parameter_carries_the_token() -> None:
    carried = extract_token({"a": "1", "token": "abc.def.ghi"}, [])
    assert (carried.token, carried.via_subprotocol) == ("abc.def.ghi", False)


def test_subprotocol_pair_carries_the_token() -> None:
    carried = extract_token({}, [(b"sec-websocket-protocol", b"bearer, abc.def.ghi")])
    assert (carried.token, carried.via_subprotocol) == ("abc.def.ghi", True)


def test_authorization_header_carries_the_token() -> None:
    carried = extract_token({}, [(b"authorization", b"Bearer abc.def.ghi")])
    assert (carried.token, carried.via_subprotocol) == ("abc.def.ghi", False)


def test_no_token_is_token_missing() -> None:
    with pytest.raises(AuthError) as error:
        extract_token({"other": "1"}, [(b"authorization", b"Basic dTpw")])
    assert error.value.refusal is close_codes.TOKEN_MISSING


def test_a_query_string_with_thousands_of_fields_is_refused_cheaply() -> None:
    query_string = "&".join(f"f{i}=1" for i in range(20_000)) + "&token=x"
    with pytest.raises(MalformedQuery):
        parse_query(query_string.encode())


def test_the_query_keeps_the_first_value_of_each_field() -> None:
    assert parse_query(b"token=a&since=&token=b&envelope=1") == {"token": "a", "since": "", "envelope": "1"}
    assert parse_query(b"") == {}


def test_a_valid_token_gives_user_and_expiry() -> None:
    claims = _valid_claims()
    identity = _auth().validate(_token(claims))
    assert (identity.user_id, identity.expires_at, identity.issued_at) == ("alice", claims["exp"], None)


@pytest.mark.parametrize("iat", [1_700_000_000, 1_700_000_000.25])
def test_the_tokens_iat_is_kept_with_its_fraction(iat: float) -> None:
    """What a disconnect's revocation compares (gateway/leases/revocation.py)."""
    assert _auth().validate(_token({**_valid_claims(), "iat": iat})).issued_at == iat


@pytest.mark.parametrize("iat", ["1700000000", True])
def test_an_iat_that_is_not_a_number_is_refused(iat: object) -> None:
    """PyJWT takes anything int() takes; the revocation check needs a number."""
    with pytest.raises(AuthError) as error:
        _auth().validate(_token({**_valid_claims(), "iat": iat}))
    assert error.value.refusal is close_codes.TOKEN_INVALID


def _rsa_keys() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.mark.parametrize(
    ("name", "token", "refusal"),
    [
        ("bad signature", _token(_valid_claims(), key=SECRET + "x"), close_codes.TOKEN_INVALID),
        ("other HMAC algorithm", _token(_valid_claims(), algorithm="HS384"), close_codes.TOKEN_INVALID),
        ("alg none", jwt.encode(_valid_claims(), None, algorithm="none"), close_codes.TOKEN_INVALID),  # type: ignore[arg-type]
        ("expired", _token({"sub": "alice", "exp": int(time.time()) - 60}), close_codes.TOKEN_EXPIRED),
        ("no sub", _token({"exp": int(time.time()) + 3600}), close_codes.TOKEN_INVALID),
        ("no exp", _token({"sub": "alice"}), close_codes.TOKEN_INVALID),
        ("numeric sub", _token({"sub": 42, "exp": int(time.time()) + 3600}), close_codes.TOKEN_INVALID),
        ("sub with spaces", _token(_valid_claims(sub="a b")), close_codes.TOKEN_INVALID),
        ("sub in our namespace", _token(_valid_claims(sub="ctl:x")), close_codes.TOKEN_INVALID),
        ("sub with a brace", _token(_valid_claims(sub="a{b}")), close_codes.TOKEN_INVALID),
        ("garbage", "garbage", close_codes.TOKEN_INVALID),
        ("oversized", "a" * 10_000, close_codes.TOKEN_INVALID),
    ],
)
def test_bad_tokens_are_refused_with_their_reason(
    name: str, token: str, refusal: close_codes.Refusal
) -> None:
    with pytest.raises(AuthError) as error:
        _auth().validate(token)
    assert error.value.refusal is refusal, name


def test_leeway_accepts_a_token_that_just_expired() -> None:
    token = _token({"sub": "alice", "exp": int(time.time()) - 2})
    assert _auth(JWT_LEEWAY="10").validate(token).user_id == "alice"
    with pytest.raises(AuthError):
        _auth(JWT_LEEWAY="0").validate(token)


def test_audience_and_issuer_are_enforced_when_configured() -> None:
    auth = _auth(JWT_AUDIENCE="gateway", JWT_ISSUER="https://id.example")
    good = _token(_valid_claims(aud="gateway", iss="https://id.example"))
    assert auth.validate(good).user_id == "alice"
    for claims in (
        _valid_claims(iss="https://id.example"),
        _valid_claims(aud="other", iss="https://id.example"),
    ):
        with pytest.raises(AuthError):
            auth.validate(_token(claims))


def test_rs256_with_public_key_and_no_algorithm_confusion() -> None:
    """An RS256 gateway accepts RS256 tokens, and refuses HS256 tokens signed with its public key."""
    private, public = _rsa_keys()
    auth = _auth(JWT_SECRET_KEY=public, JWT_ALGORITHM="RS256")
    assert auth.validate(_token(_valid_claims(), key=private, algorithm="RS256")).user_id == "alice"
    claims = b'{"sub":"mallory","exp":9999999999}'
    forged = jwt.api_jws.PyJWS().encode(claims, key=b"x" * 32, algorithm="HS256")
    with pytest.raises(AuthError):
        auth.validate(forged)
    header, payload, _ = forged.split(".")
    signature = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{payload}.{jwt.utils.base64url_encode(signature).decode()}"
    with pytest.raises(AuthError):
        auth.validate(confused)
