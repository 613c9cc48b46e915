"""Bad requests to the HTTP API: each gets its documented status and ``{"error": reason}``, never a
500, and a bystander on the same worker notices nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.api_client import API_KEY, call
from harness.bystander import watching_bystander
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer

PAYLOAD_LIMIT = 1024
BODY_LIMIT = 65536
DEADLINE = 1.0


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_API_KEYS=API_KEY,
        WEBSOCKET_MAX_PAYLOAD_SIZE=str(PAYLOAD_LIMIT),
        WEBSOCKET_API_MAX_BODY_SIZE=str(BODY_LIMIT),
        WEBSOCKET_HANDSHAKE_TIMEOUT=str(DEADLINE),
    ) as gateway:
        yield gateway


PUBLISH = "/api/publish"
BATCH = "/api/publish/batch"
# (path, options for harness.api_client.call, status, reason)
REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    (PUBLISH, {"key": None}, 401, "unauthorized"),
    (PUBLISH, {"key": "x" * 40}, 401, "unauthorized"),
    (PUBLISH, {"key": API_KEY[:-1]}, 401, "unauthorized"),
    (PUBLISH, {"headers": {"Authorization": f"Basic {API_KEY}"}, "key": None}, 401, "unauthorized"),
    ("/api/nothing", {"key": None}, 401, "unauthorized"),
    ("/api", {}, 404, "not_found"),
    ("/api/publish/", {}, 404, "not_found"),
    (PUBLISH, {"method": "GET"}, 405, "method_not_allowed"),
    (PUBLISH, {"method": "PUT", "body": {"user": "a", "data": 1}}, 405, "method_not_allowed"),
    ("/api/openapi.json", {"method": "POST", "body": {}}, 405, "method_not_allowed"),
    (
        PUBLISH,
        {"content_type": "text/plain", "body": {"user": "a", "data": 1}},
        415,
        "unsupported_media_type",
    ),
    (PUBLISH, {"content_type": None, "body": {"user": "a", "data": 1}}, 415, "unsupported_media_type"),
    (PUBLISH, {"raw": b"{not json"}, 400, "invalid_json"),
    (PUBLISH, {"raw": b"\xff\xfe"}, 400, "invalid_json"),
    (PUBLISH, {"raw": b"[" * 10_000 + b"]" * 10_000}, 400, "invalid_json"),
    (PUBLISH, {"raw": b'{"user":"a","data":NaN}'}, 400, "invalid_json"),
    (PUBLISH, {"raw": b""}, 400, "invalid_json"),
    (PUBLISH, {"body": [1]}, 400, "not_an_object"),
    (PUBLISH, {"body": {"user": "a", "data": 1, "extra": 1}}, 400, "unknown_field"),
    (PUBLISH, {"body": {"data": 1}}, 400, "missing_target"),
    (PUBLISH, {"body": {"user": "a", "group": "g", "data": 1}}, 400, "ambiguous_target"),
    (PUBLISH, {"body": {"group": "*", "data": 1}}, 400, "invalid_group"),
    (PUBLISH, {"body": {"group": "a{b", "data": 1}}, 400, "invalid_group"),
    (PUBLISH, {"body": {"group": 7, "data": 1}}, 400, "invalid_group"),
    (PUBLISH, {"body": {"broadcast": False, "data": 1}}, 400, "invalid_broadcast"),
    (PUBLISH, {"body": {"broadcast": 1, "data": 1}}, 400, "invalid_broadcast"),
    (PUBLISH, {"body": {"user": 7, "data": 1}}, 400, "invalid_user"),
    (PUBLISH, {"body": {"user": "", "data": 1}}, 400, "invalid_user"),
    (PUBLISH, {"body": {"user": "a{b}", "data": 1}}, 400, "invalid_user"),
    (PUBLISH, {"body": {"user": "ctl:x", "data": 1}}, 400, "invalid_user"),
    (PUBLISH, {"body": {"user": "u" * 257, "data": 1}}, 400, "invalid_user"),
    (PUBLISH, {"body": {"user": "a"}}, 400, "missing_data"),
    (PUBLISH, {"body": {"user": "a", "data": 1, "history": "no"}}, 400, "invalid_history"),
    (PUBLISH, {"body": {"user": "a", "data": 1, "idempotency_key": ""}}, 400, "invalid_idempotency_key"),
    (
        PUBLISH,
        {"body": {"user": "a", "data": 1, "idempotency_key": "k" * 65}},
        400,
        "invalid_idempotency_key",
    ),
    (PUBLISH, {"body": {"user": "a", "data": 1, "idempotency_key": "a b"}}, 400, "invalid_idempotency_key"),
    (PUBLISH, {"body": {"user": "a", "data": 1, "idempotency_key": 5}}, 400, "invalid_idempotency_key"),
    (
        PUBLISH,
        {"body": {"user": "a", "data": 1, "idempotency_key": "k", "history": False}},
        400,
        "idempotency_needs_history",
    ),
    (PUBLISH, {"raw": b'{"user":"a","data":1e999}'}, 400, "invalid_data"),
    (PUBLISH, {"raw": b'{"user":"a","data":"\\ud800"}'}, 400, "invalid_data"),
    (PUBLISH, {"body": {"user": "a", "data": "x" * (PAYLOAD_LIMIT + 1)}}, 413, "payload_too_large"),
    (PUBLISH, {"raw": b" " * (BODY_LIMIT + 1)}, 413, "body_too_large"),
    (BATCH, {"body": {"messages": {}}}, 400, "invalid_messages"),
    (BATCH, {"body": {"messages": [], "more": 1}}, 400, "unknown_field"),
    (BATCH, {"body": {"messages": [{"user": "a", "data": 1}] * 1001}}, 413, "too_many_messages"),
    ("/api/disconnect", {"body": {}}, 400, "missing_target"),
    ("/api/disconnect", {"body": {"user": ["a"]}}, 400, "invalid_user"),
    ("/api/online", {"body": {"users": "a"}}, 400, "invalid_users"),
    ("/api/online", {"body": {"users": ["a", None]}}, 400, "invalid_user"),
    ("/api/online", {"body": {"users": ["a"] * 1001}}, 413, "too_many_users"),
]


@pytest.mark.parametrize(("path", "options", "status", "reason"), REFUSALS)
def test_a_bad_request_gets_its_documented_answer(
    api: Gateway, path: str, options: dict[str, Any], status: int, reason: str
) -> None:
    options = {"body": {"user": "a", "data": 1}, **options}
    answer = call(api.port, path, options.pop("body"), **options)
    assert (answer.status, answer.json()) == (status, {"error": reason})
    assert answer.headers["content-type"] == "application/json"
    if status == 405:
        assert answer.headers["allow"] in ("POST", "GET")
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


def _raw_request(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        return answer


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(api: Gateway) -> None:
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_LIMIT * 100}\r\n\r\n"
    ).encode()
    assert _raw_request(api.port, head, b"").startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_over_the_limit_is_refused(api: Gateway) -> None:
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (BODY_LIMIT, b" " * BODY_LIMIT)
    assert _raw_request(api.port, head, chunk * 2).startswith(b"HTTP/1.1 413 ")


def test_a_body_that_never_arrives_is_answered_408_after_the_deadline(api: Gateway) -> None:
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _raw_request(api.port, head, b'{"user":')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert DEADLINE <= time.monotonic() - started < DEADLINE + 5


async def test_a_flood_of_bad_requests_costs_a_bystander_nothing(
    api: Gateway, redis_server: RedisServer
) -> None:
    def flood() -> None:
        for path, options, status, _ in REFUSALS * 3:
            options = {"body": {"user": "a", "data": 1}, **options}
            assert call(api.port, path, options.pop("body"), **options).status == status

    async with watching_bystander(api, redis_server.url) as bystander:
        await asyncio.to_thread(flood)
        await bystander.check()
    assert api.get("/healthz")[0] == 200
