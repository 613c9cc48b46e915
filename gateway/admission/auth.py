"""Find the token of a WebSocket handshake and validate it with PyJWT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from gateway import close_codes
from gateway.close_codes import Refusal
from gateway.config.settings import Settings
from gateway.keys import MAX_GROUPS, is_valid_group_id, is_valid_user_id

# A JWT this size is already absurd; refusing early bounds the work a hostile client causes.
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: float
    # The token's iat; None when it has none (gateway/leases/revocation.py says what that means).
    issued_at: float | None = None
    # The groups of its ``groups`` claim (server-side membership), in the claim's order, once each.
    groups: tuple[str, ...] = ()


class AuthError(Exception):
    """The handshake carries no usable token; ``refusal`` says how to answer."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class _Carried:
    token: str
    via_subprotocol: bool


def offers_bearer(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the client offered the ``bearer`` subprotocol: a browser, which must have it selected
    in the accept and can read a refusal only as a close code after the upgrade."""
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            first, _, _ = value.partition(b",")
            if first.strip().lower() == b"bearer":
                return True
    return False


def extract_token(query: Mapping[str, str], headers: list[tuple[bytes, bytes]]) -> _Carried:
    """Token from ``Sec-WebSocket-Protocol: bearer, <JWT>``, ``Authorization: Bearer``, or ``?token=``
    (``query``: gateway/admission/query.py's parse of the query string)."""
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            parts = [p.strip() for p in value.decode("latin-1").split(",")]
            if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1]:
                return _Carried(parts[1], via_subprotocol=True)
        elif name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return _Carried(credentials.strip(), via_subprotocol=False)
    token = query.get("token")
    if token:
        return _Carried(token, via_subprotocol=False)
    raise AuthError(close_codes.TOKEN_MISSING, "no token")


class Authenticator:
    """Validates tokens with exactly the configured algorithm; ``none`` can never be configured."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret_key
        self._algorithms = [settings.jwt_algorithm]
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        required = ["exp", "sub"]
        if settings.jwt_audience:
            required.append("aud")
        if settings.jwt_issuer:
            required.append("iss")
        self._options: jwt.types.Options = {"require": required}

    def session_ends_at(self, exp: float) -> float:
        """When a session on a token with this ``exp`` ends: the leeway that admits a token at the
        handshake or in a refresh also keeps its session, so one rule holds for both."""
        return exp + self._leeway

    def authenticate(self, query: Mapping[str, str], headers: list[tuple[bytes, bytes]]) -> Identity:
        carried = extract_token(query, headers)
        return self.validate(carried.token)

    def validate(self, token: str) -> Identity:
        """The identity a valid token carries, or AuthError."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(close_codes.TOKEN_INVALID, "token too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(close_codes.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(close_codes.TOKEN_INVALID, type(exc).__name__) from None
        sub, exp = claims.get("sub"), claims.get("exp")
        if not isinstance(sub, str) or not is_valid_user_id(sub):
            raise AuthError(close_codes.TOKEN_INVALID, "unusable sub claim")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError(close_codes.TOKEN_INVALID, "unusable exp claim")
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, int | float) or isinstance(iat, bool)):
            # PyJWT takes any value int() takes ("123", true): the revocation check needs a number.
            raise AuthError(close_codes.TOKEN_INVALID, "unusable iat claim")
        groups = parse_groups(claims.get("groups"))
        if groups is None:
            raise AuthError(close_codes.TOKEN_INVALID, "unusable groups claim")
        return Identity(sub, float(exp), None if iat is None else float(iat), groups)


def parse_groups(claim: object) -> tuple[str, ...] | None:
    """The groups a ``groups`` claim names (absent or null: none); None when it is not a list of
    at most ``MAX_GROUPS`` valid group ids (``keys.is_valid_group_id``)."""
    if claim is None:
        return ()
    if not isinstance(claim, list) or len(claim) > MAX_GROUPS:
        return None
    if not all(isinstance(group, str) and is_valid_group_id(group) for group in claim):
        return None
    return tuple(dict.fromkeys(claim))


def issue_token(
    settings: Settings, user_id: str, ttl: float, now: float, groups: tuple[str, ...] = ()
) -> str:
    """A token for development and tests: HS* only, since it needs the shared secret."""
    claims: dict[str, object] = {"sub": user_id, "exp": int(now + ttl), "iat": int(now)}
    if groups:
        claims["groups"] = list(groups)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)
