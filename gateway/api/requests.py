"""The HTTP side of an API request before its handler runs: the key, the content type and the
body, each refused with the ``ApiError`` docs/publishing.md lists.

The key is compared with every configured key in constant time: the SHA-256 digests of the two
(so not even a length shows) through ``hmac.compare_digest``, over all of them with no early exit,
so neither the time nor the answer tells which key came close. The body
is read up to ``WEBSOCKET_API_MAX_BODY_SIZE`` within a deadline: a client that declares or sends
more, or dribbles it, costs a bounded buffer for a bounded time; a body of more JSON values than
``bodies.max_values`` is refused before it is parsed, so its parse costs a bounded time too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from starlette.types import Receive, Scope

from gateway import untrusted_json
from gateway.api.bodies import ApiError

_BEARER = b"bearer "


def key_digests(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(key.encode()).digest() for key in keys)


def authorized(scope: Scope, digests: tuple[bytes, ...]) -> bool:
    """Whether the request carries ``Authorization: Bearer <key>`` for a key of ``digests``."""
    given = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            given = value
            break
    if given[: len(_BEARER)].lower() != _BEARER:
        return False
    token = hashlib.sha256(given[len(_BEARER) :].strip()).digest()
    match = False
    for digest in digests:
        match |= hmac.compare_digest(token, digest)
    return match


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def check_json_content_type(scope: Scope) -> None:
    """``application/json``, with parameters (``charset=utf-8``) or not."""
    value = _header(scope, b"content-type")
    if value is None or value.split(b";", 1)[0].strip().lower() != b"application/json":
        raise ApiError(415, "unsupported_media_type")


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None or not value.strip().isdigit():
        return None  # chunked, or none: counted as it comes
    return int(value)


async def read_body(scope: Scope, receive: Receive, limit: int, deadline: float) -> bytes:
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise ApiError(413, "body_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ApiError(400, "body_incomplete")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "body_too_large")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise ApiError(408, "body_timeout") from None


def parse_json(body: bytes, max_values: int) -> object:
    """The body's JSON value; a body of more values than ``max_values`` is refused unparsed."""
    if untrusted_json.values(body, max_values) > max_values:
        raise ApiError(413, "too_many_values")
    try:
        return untrusted_json.loads(body.decode())
    except (UnicodeDecodeError, untrusted_json.NotJSON):
        raise ApiError(400, "invalid_json") from None
