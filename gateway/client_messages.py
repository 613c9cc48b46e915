"""What a client may send on an open socket, and how often.

``{"type":"ping"}`` (answered ``{"type":"pong"}``) and ``{"type":"refresh","token":"<JWT>"}``;
any other frame is ignored. A frame is read through ``untrusted_json``, bounded first: no frame
makes the reader raise. A refresh brings a token of the same user, issued after the user's last
disconnect, or it ends the connection with that token's refusal (``refreshed``). Every client
frame, pings and pongs included, spends the connection's ``MessageBudget``: past it, 1008.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import close_codes, untrusted_json
from gateway.admission.auth import Authenticator, AuthError, Identity
from gateway.close_codes import Refusal
from gateway.leases.revocation import is_revoked

PONG = b'{"type":"pong"}'
# Far beyond any refresh (a token is at most auth.MAX_TOKEN_LENGTH characters): a longer frame
# is not one of these messages, and is not parsed.
_MAX_TEXT = 8192 + 64


@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: str  # "ping" or "refresh"
    token: object = None  # a refresh's, as sent: ``refreshed`` checks it


_PING = ClientMessage("ping")


def parse(text: str) -> ClientMessage | None:
    """The message a client's text frame carries; None for anything else."""
    if len(text) > _MAX_TEXT or '"type"' not in text:
        return None
    try:
        message = untrusted_json.loads(text)
    except untrusted_json.NotJSON:
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    if kind == "ping":
        return _PING
    if kind == "refresh":
        return ClientMessage("refresh", message.get("token"))
    return None


def refreshed(
    authenticator: Authenticator, token: object, user_id: str, revoked_at: int
) -> Identity | Refusal:
    """The identity a refresh's ``token`` carries, or the refusal that ends the connection
    (``revoked_at``: the user's last disconnect as the connection's admission saw it)."""
    if token is None or token == "":
        return close_codes.TOKEN_MISSING
    if not isinstance(token, str):
        return close_codes.TOKEN_INVALID
    try:
        identity = authenticator.validate(token)
    except AuthError as exc:
        return exc.refusal  # token_invalid (4401) or token_expired (4001)
    if identity.user_id != user_id:
        return close_codes.TOKEN_WRONG_USER
    if is_revoked(identity.issued_at, revoked_at):
        return close_codes.TOKEN_REVOKED
    return identity


class MessageBudget:
    """A token bucket: a burst of twice the rate, then the rate."""

    __slots__ = ("_burst", "_rate", "_refilled_at", "_tokens")

    def __init__(self, per_second: float) -> None:
        self._rate = per_second
        self._burst = max(2 * per_second, 1.0)
        self._tokens = self._burst
        self._refilled_at = 0.0

    def spend(self, messages: int, now: float) -> bool:
        """Take ``messages`` at ``now`` (seconds, monotonic); False when the budget lacks them."""
        self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens < messages:
            return False
        self._tokens -= messages
        return True
