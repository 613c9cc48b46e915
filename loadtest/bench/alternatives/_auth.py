"""The one JWT check every alternative makes, as the gateway does: HS256, ``sub`` and ``exp`` required."""

from __future__ import annotations

import os
from urllib.parse import parse_qs

import jwt


def user_from_token(token: object) -> str | None:
    """The token's user id, or None when it is missing, invalid or expired."""
    if not isinstance(token, str) or not token:
        return None
    try:
        claims = jwt.decode(
            token, os.environ["BENCH_JWT_SECRET"], algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub else None


def user_from_query(query_string: bytes) -> str | None:
    tokens = parse_qs(query_string.decode("latin-1")).get("token", [])
    return user_from_token(tokens[0]) if tokens else None


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
