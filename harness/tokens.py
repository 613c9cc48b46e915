"""The JWTs the gateways started by the harness accept."""

from __future__ import annotations

import time
from typing import Any

import jwt

# 64 bytes: long enough for HS512 too (RFC 7518 3.2), which some tests sign with.
SECRET = "test-secret-that-is-long-enough-for-every-hs-algorithm-0123456789"


def make_token(user_id: str, ttl: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    """``iat`` is now, with its fraction (a token minted just after a disconnect is newer than
    it); pass ``iat=None`` for a token without one, or a time to back-date it."""
    now = time.time()
    payload: dict[str, Any] = {"sub": user_id, "exp": int(now + ttl), "iat": now, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")
