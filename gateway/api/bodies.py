"""The HTTP API's request bodies, checked: each turns into what the Redis calls need, or an
``ApiError`` carrying the status and reason the caller gets (docs/publishing.md, "HTTP API").

A publish names its target by one field, ``user``, ``group`` or ``broadcast``; each becomes the
history source and channel the publisher library uses for it (gateway/keys.py ``group_source``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.keys import BROADCAST, group_source, is_valid_group_id, is_valid_user_id

# A batch's messages and an online call's users: a bounded pipeline, a bounded answer.
MAX_BATCH = 1000
MAX_ONLINE_USERS = 1000
MAX_IDEMPOTENCY_KEY = 64
# JSON values a body may hold (gateway/untrusted_json.py ``values``), checked before it is parsed:
# what parsing costs grows with them, and a body of tiny ones (``[],[],...``) costs a second and
# a hundred megabytes within the size limit. A full batch may hold 100 per message on average.
VALUES_PER_MESSAGE = 100


def max_values(max_payload: int) -> int:
    """The bound for a body: that of a full batch, or more where one payload of the size allowed
    may hold more (at most one value per two bytes, ``[0,0,...]``), so any publish that fits
    ``WEBSOCKET_MAX_PAYLOAD_SIZE`` passes."""
    return max(MAX_BATCH * VALUES_PER_MESSAGE, max_payload // 2 + VALUES_PER_MESSAGE)


class ApiError(Exception):
    """What the caller is answered: ``{"error": reason}`` with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """Where a publish goes: ``source`` stands for it in the history and the channel's name (a
    user id, or ``{`` and a group id: gateway/keys.py), so an idempotency key is the target's."""

    source: str


@dataclass(frozen=True, slots=True)
class PublishRequest:
    target: Target
    data: bytes
    history: bool
    idempotency_key: str | None


def _user_target(value: object) -> Target:
    return Target(checked_user(value))


def _group_target(value: object) -> Target:
    if not isinstance(value, str) or not is_valid_group_id(value):
        raise ApiError(400, "invalid_group")
    return Target(group_source(value))


def _broadcast_target(value: object) -> Target:
    if value is not True:
        raise ApiError(400, "invalid_broadcast")
    return Target(group_source(BROADCAST))


_TARGETS: dict[str, Callable[[object], Target]] = {
    "user": _user_target,
    "group": _group_target,
    "broadcast": _broadcast_target,
}
_PUBLISH_FIELDS = frozenset({*_TARGETS, "data", "history", "idempotency_key"})


def checked_user(value: object) -> str:
    if not isinstance(value, str) or not is_valid_user_id(value):
        raise ApiError(400, "invalid_user")
    return value


def _object(body: object, fields: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "not_an_object")
    if not body.keys() <= fields:
        raise ApiError(400, "unknown_field")
    return body


def _target(body: dict[str, Any]) -> Target:
    named = [name for name in _TARGETS if name in body]
    if not named:
        raise ApiError(400, "missing_target")
    if len(named) > 1:
        raise ApiError(400, "ambiguous_target")
    return _TARGETS[named[0]](body[named[0]])


def encode_data(data: object) -> bytes:
    """As the publisher library sends a JSON value: a string as the string, anything else as
    compact JSON. A number too large for a double (``1e999``) would come out as ``Infinity``,
    which is no JSON, and a lone surrogate as no UTF-8: both are refused."""
    try:
        if isinstance(data, str):
            return data.encode()
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError:  # UnicodeEncodeError is one
        raise ApiError(400, "invalid_data") from None


def _idempotency_key(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_IDEMPOTENCY_KEY
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise ApiError(400, "invalid_idempotency_key")
    return value


def publish_request(body: object, max_payload: int) -> PublishRequest:
    fields = _object(body, _PUBLISH_FIELDS)
    target = _target(fields)
    if "data" not in fields:
        raise ApiError(400, "missing_data")
    history = fields.get("history", True)
    if not isinstance(history, bool):
        raise ApiError(400, "invalid_history")
    key = fields.get("idempotency_key")
    if key is not None:
        key = _idempotency_key(key)
        if not history:
            # The key is kept beside the history, for its time: without one there is neither.
            raise ApiError(400, "idempotency_needs_history")
    data = encode_data(fields["data"])
    if len(data) > max_payload:
        raise ApiError(413, "payload_too_large")
    return PublishRequest(target, data, history, key)


def batch_requests(body: object, max_payload: int) -> list[PublishRequest | ApiError]:
    """Each message checked on its own: a bad one is answered in its place, the rest go."""
    messages = _object(body, frozenset({"messages"})).get("messages")
    if not isinstance(messages, list):
        raise ApiError(400, "invalid_messages")
    if len(messages) > MAX_BATCH:
        raise ApiError(413, "too_many_messages")
    checked: list[PublishRequest | ApiError] = []
    for message in messages:
        try:
            checked.append(publish_request(message, max_payload))
        except ApiError as exc:
            checked.append(exc)
    return checked


def disconnect_user(body: object) -> str:
    fields = _object(body, frozenset({"user"}))
    if "user" not in fields:
        raise ApiError(400, "missing_target")
    return checked_user(fields["user"])


def online_users(body: object) -> list[str]:
    """The distinct users asked, in order."""
    users = _object(body, frozenset({"users"})).get("users")
    if not isinstance(users, list):
        raise ApiError(400, "invalid_users")
    if len(users) > MAX_ONLINE_USERS:
        raise ApiError(413, "too_many_users")
    return list(dict.fromkeys(checked_user(user) for user in users))
