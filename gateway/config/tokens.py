"""The JWTs clients present and how long a disconnect refuses older ones.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.parsers import Setting, choice, number, optional_text, required

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


JWT_SECRET_KEY = Setting(
    "JWT_SECRET_KEY",
    "jwt_secret_key",
    "",
    required("a secret or a PEM public key", "an HS* secret, or a PEM public key for RS*/ES*"),
    "HS* secret of at least 32 / 48 / 64 bytes (HS256 / HS384 / HS512), or the PEM public key for "
    "RS*/PS* (RSA, 2048 bits or more), ES256/384/512 (EC on P-256/P-384/P-521) or EdDSA "
    "(Ed25519, Ed448); checked at start-up",
    shown="none: required",
)

JWT_ALGORITHM = Setting(
    "JWT_ALGORITHM",
    "jwt_algorithm",
    "HS256",
    choice(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS),
    "the one accepted algorithm; `none` is always refused",
)

JWT_AUDIENCE = Setting(
    "JWT_AUDIENCE",
    "jwt_audience",
    None,
    optional_text("any text"),
    "when set, the `aud` claim is required and checked",
    shown="unset",
)

JWT_ISSUER = Setting(
    "JWT_ISSUER",
    "jwt_issuer",
    None,
    optional_text("any text"),
    "when set, the `iss` claim is required and checked",
    shown="unset",
)

JWT_LEEWAY = Setting(
    "JWT_LEEWAY",
    "jwt_leeway",
    5.0,
    number(0.0, 300.0),
    "seconds of clock skew allowed on `exp`: a token is good until `exp` plus this, at the handshake,"
    " in a refresh and for the session's end (4001)",
)

JWT_REVOCATION_TTL = Setting(
    "JWT_REVOCATION_TTL",
    "revocation_ttl",
    86_400.0,
    number(1.0, 31_622_400.0),
    "seconds a disconnect refuses the user's tokens issued before it: at least your tokens' longest "
    "lifetime (`exp` - `iat`); read by the publisher library, the CLI and the HTTP API, which write it",
)
