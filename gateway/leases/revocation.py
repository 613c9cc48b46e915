"""Revocation by disconnect: a token issued before its user's last disconnect is refused.

``disconnect`` (lua/disconnect.lua) stamps ``{prefix:user}:revoked`` with its time (ms, Redis
clock), for ``JWT_REVOCATION_TTL``; the admission's acquire script reads the stamp in the same call
(lua/acquire.lua), and an in-band refresh compares with the stamp its admission saw. The token's
``iat`` decides, to the millisecond when it carries a fraction: a token issued in the rest of the
disconnect's second with a whole-second ``iat`` is refused too (its client asks for another). A
token without ``iat`` cannot show it is newer, so it is refused while the stamp lives.
"""

from __future__ import annotations


class TokenRevoked(Exception):
    """The token was issued before its user's last disconnect."""


def issued_ms(issued_at: float | None) -> str:
    """The acquire script's ARGV for a token's ``iat``: ms, or "" for a token without one."""
    return "" if issued_at is None else str(int(issued_at * 1000))


def is_revoked(issued_at: float | None, revoked_at: int) -> bool:
    """The acquire script's rule, for a refresh; ``revoked_at`` 0: the user has no stamp."""
    if revoked_at <= 0:
        return False
    return issued_at is None or int(issued_at * 1000) < revoked_at
