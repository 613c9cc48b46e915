"""Every way the gateway refuses or ends a connection, with the client's retry rule.

Authentication and Origin failures are refused before the upgrade with an HTTP status (they
cost no socket). Everything a browser script must be able to read is a close code after the
upgrade, because a browser sees only 1006 for a refused handshake. The README's table is
generated from the same facts; ``reason`` is also the metric label and, after the upgrade, the close
frame's reason, so that closes with the same code (1013) can be told apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Retry(enum.Enum):
    RECONNECT = "reconnect after a random 0-2 s delay"
    BACKOFF = "reconnect later, with jittered exponential back-off"
    NEW_TOKEN = "reconnect with a new token"
    WAIT_FOR_CLOSE = "do not reconnect until one of the user's connections closes"
    GIVE_UP = "do not reconnect: fix the client or its configuration"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    http_status: int | None
    close_code: int | None
    retry: Retry
    meaning: str


def _http(reason: str, status: int, retry: Retry, meaning: str) -> Refusal:
    return Refusal(reason, status, None, retry, meaning)


def _close(reason: str, code: int, retry: Retry, meaning: str) -> Refusal:
    return Refusal(reason, None, code, retry, meaning)


# Before the upgrade: an HTTP response, no socket.
TOKEN_MISSING = _http("token_missing", 401, Retry.GIVE_UP, "no token in query, subprotocol or header")
TOKEN_INVALID = _http("token_invalid", 401, Retry.GIVE_UP, "bad signature, algorithm, claims or format")
TOKEN_EXPIRED = _http("token_expired", 401, Retry.NEW_TOKEN, "the token's exp has passed")
ORIGIN_FORBIDDEN = _http("origin_forbidden", 403, Retry.GIVE_UP, "Origin not in CORS_ORIGINS")

# After the upgrade: a close frame the client can read.
GOING_AWAY = _close("going_away", 1001, Retry.RECONNECT, "the server is stopping at once")
IDLE_TIMEOUT = _close("idle_timeout", 1001, Retry.RECONNECT, "no client frame for WEBSOCKET_IDLE_TIMEOUT")
INVALID_UTF8 = _close("invalid_utf8", 1007, Retry.GIVE_UP, "a client text frame that is not valid UTF-8")
POLICY_VIOLATION = _close(
    "policy_violation",
    1008,
    Retry.BACKOFF,
    "too many client frames, or a refresh with an invalid token or for another user",
)
MESSAGE_TOO_BIG = _close("message_too_big", 1009, Retry.GIVE_UP, "a client frame over the size limit")
INTERNAL_ERROR = _close("internal_error", 1011, Retry.BACKOFF, "unexpected server error")
DRAINING = _close("draining", 1012, Retry.RECONNECT, "the worker is restarting; another will take you")
REDIS_UNAVAILABLE = _close("redis_unavailable", 1013, Retry.BACKOFF, "admission needs Redis and it is down")
OVERLOADED = _close("overloaded", 1013, Retry.BACKOFF, "the worker is at its connection capacity")
SESSION_EXPIRED = _close(
    "session_expired",
    4001,
    Retry.NEW_TOKEN,
    "the token expired during the session, or a refresh sent an expired one",
)
DISCONNECTED = _close(
    "disconnected", 4003, Retry.NEW_TOKEN, "a backend ended the user's sessions (logout, revoked access)"
)
SLOW_CONSUMER = _close("slow_consumer", 4008, Retry.RECONNECT, "the client did not read fast enough")
USER_LIMIT = _close(
    "user_limit", 4029, Retry.WAIT_FOR_CLOSE, "the user holds WEBSOCKET_MAX_CONNECTIONS_PER_USER connections"
)

ALL: tuple[Refusal, ...] = (
    TOKEN_MISSING,
    TOKEN_INVALID,
    TOKEN_EXPIRED,
    ORIGIN_FORBIDDEN,
    GOING_AWAY,
    IDLE_TIMEOUT,
    INVALID_UTF8,
    POLICY_VIOLATION,
    MESSAGE_TOO_BIG,
    INTERNAL_ERROR,
    DRAINING,
    REDIS_UNAVAILABLE,
    OVERLOADED,
    SESSION_EXPIRED,
    DISCONNECTED,
    SLOW_CONSUMER,
    USER_LIMIT,
)


def markdown_table() -> str:
    """The README's refusal table, so the two cannot drift apart."""
    rows = ["| reason | signal | retry | meaning |", "|---|---|---|---|"]
    for r in ALL:
        signal = f"HTTP {r.http_status}" if r.http_status is not None else f"close {r.close_code}"
        rows.append(f"| `{r.reason}` | {signal} | {r.retry.value} | {r.meaning} |")
    return "\n".join(rows)
