"""Every way the gateway refuses or ends a connection, with the client's retry rule.

Authentication and Origin failures are refused before the upgrade with an HTTP status (they
cost no socket), except when the client offered the ``bearer`` subprotocol: that is a browser,
which sees only 1006 for a refused handshake, so it is upgraded and closed at once with the
refusal's close code instead. Everything else a client must be able to read is a close code after
the upgrade. The table in docs/reference.md is generated from the same facts; ``reason`` is also the metric
label and, after the upgrade, the close frame's reason, so that closes with the same code (1013)
can be told apart. One close code has one retry rule: a client decides by the code.
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


def _close(reason: str, code: int, retry: Retry, meaning: str) -> Refusal:
    return Refusal(reason, None, code, retry, meaning)


def _handshake(reason: str, status: int, code: int, retry: Retry, meaning: str) -> Refusal:
    """An HTTP status before the upgrade, or ``code`` after it for a ``bearer`` subprotocol offer."""
    return Refusal(reason, status, code, retry, meaning)


# Before the upgrade (an HTTP response, no socket), or, when the client offered the bearer
# subprotocol, upgraded and closed at once (no Redis command, no lease, no subscription).
TOKEN_MISSING = _handshake(
    "token_missing",
    401,
    4401,
    Retry.GIVE_UP,
    "no token in query, subprotocol or header, or a refresh without one",
)
TOKEN_INVALID = _handshake(
    "token_invalid",
    401,
    4401,
    Retry.GIVE_UP,
    "bad signature, algorithm, claims or format, at the handshake or in a refresh",
)
TOKEN_EXPIRED = _handshake(
    "token_expired",
    401,
    4001,
    Retry.NEW_TOKEN,
    "the token's exp has passed, at the handshake or in a refresh",
)
ORIGIN_FORBIDDEN = _handshake("origin_forbidden", 403, 4403, Retry.GIVE_UP, "Origin not in CORS_ORIGINS")
QUERY_INVALID = _handshake(
    "query_invalid", 400, 4400, Retry.GIVE_UP, "a query string over 32 fields, or one that cannot be parsed"
)
# A refresh ({"type":"refresh"}) with a bad token closes with that token's refusal above, or:
TOKEN_WRONG_USER = _close(
    "token_wrong_user", 4401, Retry.GIVE_UP, "a refresh sent a valid token of another user"
)

# After the upgrade: a close frame the client can read.
GOING_AWAY = _close(
    "going_away", 1001, Retry.RECONNECT, "the server stopped at once, or left a socket open past its drain"
)
IDLE_TIMEOUT = _close("idle_timeout", 1001, Retry.RECONNECT, "no client frame for WEBSOCKET_IDLE_TIMEOUT")
PROTOCOL_ERROR = _close(
    "protocol_error", 1002, Retry.GIVE_UP, "a frame that breaks RFC 6455 (unmasked, bad opcode)"
)
INVALID_UTF8 = _close("invalid_utf8", 1007, Retry.GIVE_UP, "a client text frame that is not valid UTF-8")
POLICY_VIOLATION = _close(
    "policy_violation",
    1008,
    Retry.BACKOFF,
    "too many client frames (every frame counts: pings, pongs, each fragment)",
)
MESSAGE_TOO_BIG = _close("message_too_big", 1009, Retry.GIVE_UP, "a client frame over the size limit")
INTERNAL_ERROR = _close("internal_error", 1011, Retry.BACKOFF, "unexpected server error")
PING_TIMEOUT = _close("ping_timeout", 1011, Retry.BACKOFF, "no pong within WEBSOCKET_PING_TIMEOUT")
DRAINING = _close("draining", 1012, Retry.RECONNECT, "the worker is restarting; another will take you")
REDIS_UNAVAILABLE = _close("redis_unavailable", 1013, Retry.BACKOFF, "admission needs Redis and it is down")
OVERLOADED = _close(
    "overloaded",
    1013,
    Retry.BACKOFF,
    "the worker is at its connection capacity, or WEBSOCKET_MAX_PENDING_HANDSHAKES wait on Redis",
)
TOO_MANY_HANDSHAKES = _close(
    "too_many_handshakes",
    1013,
    Retry.BACKOFF,
    "the user (as many as its connection limit) or the client address"
    " (WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS) already has that many handshakes waiting on Redis",
)
TOO_MANY_RESUMES = _close(
    "too_many_resumes",
    1013,
    Retry.BACKOFF,
    "the user resumed (`since=`) more often, or replayed more bytes, than WEBSOCKET_RESUMES_PER_MINUTE"
    " or WEBSOCKET_RESUME_BYTES_PER_MINUTE allow on this worker",
)
ADMISSION_BACKLOG = _close(
    "admission_backlog",
    1013,
    Retry.BACKOFF,
    "more than WEBSOCKET_SEND_QUEUE_SIZE messages arrived while the socket was admitted (a resume "
    "from the same position later loses nothing)",
)
SESSION_EXPIRED = _close(
    "session_expired",
    4001,
    Retry.NEW_TOKEN,
    "the token expired during the session, and no refresh extended it",
)
DISCONNECTED = _close(
    "disconnected", 4003, Retry.NEW_TOKEN, "a backend ended the user's sessions (logout, revoked access)"
)
TOKEN_REVOKED = _close(
    "token_revoked",
    4003,
    Retry.NEW_TOKEN,
    "the token was issued before a disconnect of its user (`iat` earlier, or none), at admission "
    "or in a refresh",
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
    QUERY_INVALID,
    TOKEN_WRONG_USER,
    GOING_AWAY,
    IDLE_TIMEOUT,
    PROTOCOL_ERROR,
    INVALID_UTF8,
    POLICY_VIOLATION,
    MESSAGE_TOO_BIG,
    INTERNAL_ERROR,
    PING_TIMEOUT,
    DRAINING,
    REDIS_UNAVAILABLE,
    OVERLOADED,
    ADMISSION_BACKLOG,
    TOO_MANY_HANDSHAKES,
    TOO_MANY_RESUMES,
    SESSION_EXPIRED,
    DISCONNECTED,
    TOKEN_REVOKED,
    SLOW_CONSUMER,
    USER_LIMIT,
)


def markdown_table() -> str:
    """The refusal table of docs/reference.md, so the two cannot drift apart."""
    rows = ["| reason | signal | retry | meaning |", "|---|---|---|---|"]
    for r in ALL:
        if r.http_status is None:
            signal = f"close {r.close_code}"
        else:
            signal = f"HTTP {r.http_status}; close {r.close_code} after a `bearer` subprotocol offer"
        rows.append(f"| `{r.reason}` | {signal} | {r.retry.value} | {r.meaning} |")
    return "\n".join(rows)
