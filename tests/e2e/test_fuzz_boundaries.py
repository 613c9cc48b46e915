"""Generated input at every boundary where a stranger's bytes enter the gateway: the HTTP head,
WebSocket frames, /ws's query string, the JSON a client sends, raw publishes on a user's channel,
and token claims. One gateway (one worker) takes them all; after every example the worker is the
same process, its log has no traceback and nothing at ERROR, the answer is one docs/reference.md
documents, and a bystander on the worker has received every message published so far
(harness/bystander.py; on leaving, its latency and the worker's memory are checked too).

The examples are the same on every run (derandomized), so the suite stays repeatable; set
FUZZ_EXPLORE=1 for fresh random examples, ten times as many, when hunting for a new class.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import redis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode

from harness.bystander import Bystander, watching_bystander
from harness.gateway_process import Gateway, running_gateway
from harness.raw_websocket import DROPPED, OPEN, SILENT, RawWebSocket, client_frame
from harness.redis_server import RedisServer
from harness.tokens import SECRET, make_token

HANDSHAKE_TIMEOUT = 2.0
# docs/reference.md, "HTTP refusals": a request line or a header over 8 KiB gets 414 or 431.
_HEAD_LINE_LIMIT = 8 * 1024
_EXPLORE = os.environ.get("FUZZ_EXPLORE") == "1"

# The documented answers (docs/reference.md: endpoints, close codes, HTTP refusals).
HTTP_STATUSES = {101, 200, 400, 401, 403, 404, 405, 413, 414, 426, 431}
CLIENT_FRAME_CLOSES = {1002, 1007, 1008, 1009}
REFRESH_CLOSES = {4001, 4401}
TOKEN_CLOSES = {4001, 4401}


def _fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples * (10 if _EXPLORE else 1),
        derandomize=not _EXPLORE,
        # Shrinking a failure costs a minute against a live server: only when exploring.
        phases=list(Phase) if _EXPLORE else [Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT),
        WEBSOCKET_MAX_CONNECTIONS_PER_USER="50",
    ) as gw:
        yield gw


class Invariants:
    """What must hold after every example: same worker, a clean log, an unharmed bystander."""

    def __init__(self, gateway: Gateway, bystander: Bystander, redis_url: str) -> None:
        self.gateway = gateway
        self.bystander = bystander
        self.redis_url = redis_url
        self.examples = 0
        (self.worker,) = gateway.worker_pids()
        self._log = Path(gateway.log_path)
        self._log_offset = self._log.stat().st_size

    def check(self, example: object) -> None:
        assert Path(f"/proc/{self.worker}").exists(), f"the worker died on {example!r}"
        with self._log.open("rb") as log:
            log.seek(self._log_offset)
            new = log.read().decode(errors="replace")
            self._log_offset += len(new.encode(errors="replace"))
        bad = [line for line in new.splitlines() if "Traceback" in line or "[ERROR]" in line]
        assert not bad, f"{example!r} logged:\n{new[-3000:]}"
        self.bystander.check_from_thread()
        self.examples += 1


async def _fuzz_with_bystander(
    gateway: Gateway, redis_server: RedisServer, run: Callable[[Invariants], None]
) -> None:
    async with watching_bystander(gateway, redis_server.url) as bystander:
        invariants = Invariants(gateway, bystander, redis_server.url)
        await asyncio.to_thread(run, invariants)
    assert invariants.examples >= 10, "the fuzzer ran (almost) no example"


def _http_status(port: int, request: bytes) -> int | None:
    """The status of the first response to ``request``, or None if the server hung up first."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT + 5) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server hung up mid-request: read what it answered
        answer = b""
        while b"\r\n" not in answer:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            answer += chunk
    return int(answer.split(b" ", 2)[1])


# The HTTP head: request line and headers, any path the gateway serves.

_TOKEN_CHARS = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":")
_HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
            "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Authorization", "Origin",
            "Content-Length", "Transfer-Encoding", "X-Forwarded-For", "Expect",
        ]
    ),
    st.text(_TOKEN_CHARS, min_size=1, max_size=40),
)  # fmt: skip
_HEADER_VALUES = st.one_of(
    st.sampled_from(["websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "localhost", "0", "chunked"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=200),
    st.integers(0, 12_000).map(lambda n: "v" * n),
)
_TARGETS = st.one_of(
    st.sampled_from(["/ws", "/healthz", "/healthz/redis", "/healthz/websocket", "/metrics", "/nowhere", "*"]),
    st.tuples(st.sampled_from(["/ws", "/healthz"]), st.text(_TOKEN_CHARS, max_size=12_000)).map(
        lambda parts: f"{parts[0]}?{parts[1]}"
    ),
)
_REQUEST_LINES = st.tuples(
    st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "G\x00T", "get"]),
    _TARGETS,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 extra", "HTTX/1.1", ""]),
)


@given(
    line=_REQUEST_LINES,
    headers=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=30),
    line_end=st.sampled_from(["\r\n", "\n"]),
)
@_fuzz(60)
def _http_heads(
    invariants: Invariants, line: tuple[str, str, str], headers: list[tuple[str, str]], line_end: str
) -> None:
    head = " ".join(line) + line_end + "".join(f"{name}: {value}{line_end}" for name, value in headers)
    request = (head + line_end).encode("latin-1")
    status = _http_status(invariants.gateway.port, request)
    assert status in HTTP_STATUSES, (status, request[:300])
    if len(" ".join(line)) > _HEAD_LINE_LIMIT:
        assert status in {400, 414}, (status, request[:300])
    elif any(len(name) + len(value) + 2 > _HEAD_LINE_LIMIT for name, value in headers):
        assert status in {400, 431}, (status, request[:300])
    invariants.check(request[:300])


async def test_http_heads_get_a_documented_status(gateway: Gateway, redis_server: RedisServer) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _http_heads(inv))


# WebSocket frames after a valid handshake: every opcode, fragments, control frames inside
# fragments, masked or not, reserved bits, lengths across each encoding's bounds.

_PAYLOADS = st.one_of(
    st.binary(max_size=130),
    st.sampled_from([b'{"type":"ping"}', b"\xff\xfe", b"\xe2\x82", "é".encode()]),
    st.sampled_from([125, 126, 127, 65_535, 65_536]).map(lambda n: b"a" * n),
)
_FRAMES = st.lists(
    st.builds(
        lambda opcode, payload, fin, rsv, masked: client_frame(
            opcode, payload, fin=fin, rsv=rsv, mask=b"\x01\x02\x03\x04" if masked else None
        ),
        opcode=st.one_of(st.sampled_from([0, 1, 2, 8, 9, 10]), st.integers(0, 15)),
        payload=_PAYLOADS,
        fin=st.booleans(),
        rsv=st.one_of(st.just(0), st.integers(0, 7)),
        masked=st.booleans().map(lambda unmasked: not unmasked) | st.just(True),
    ),
    min_size=1,
    max_size=6,
)


@given(frames=_FRAMES)
@_fuzz(80)
def _frames(invariants: Invariants, frames: list[bytes]) -> None:
    ws = RawWebSocket(f"{invariants.gateway.ws_url}?token={make_token(f'frames-{uuid.uuid4().hex[:8]}')}")
    try:
        assert ws.handshake.status == 101
        sent_close = any(frame[0] & 0x0F == Opcode.CLOSE.value for frame in frames)
        for frame in frames:
            if not ws.send(frame):
                break
        outcome = ws.outcome()
    finally:
        ws.close()
    if sent_close:
        assert outcome not in (SILENT, DROPPED), (outcome, frames)  # an echo of it, or 1002
    else:
        assert outcome == OPEN or outcome in CLIENT_FRAME_CLOSES, (outcome, frames)
    invariants.check(frames)


async def test_frames_of_every_shape_get_a_documented_answer(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _frames(inv))


# /ws's query string (the token in a header, so every field is the fuzzer's).

_QUERY_KEYS = st.one_of(st.sampled_from(["since", "envelope", "token", "groups", ""]), st.text(max_size=20))
_QUERY_VALUES = st.one_of(
    st.sampled_from(["1", "0", "true", "0-abc", "99999999999999999999-x", "-1", "", "1-"]),
    st.text(max_size=60),
)


_QUERY_FIELDS = st.one_of(
    st.lists(st.tuples(_QUERY_KEYS, _QUERY_VALUES), max_size=8),
    # Many fields, with and without a position to resume from.
    st.tuples(st.booleans(), st.lists(st.tuples(_QUERY_KEYS, _QUERY_VALUES), min_size=30, max_size=80)).map(
        lambda parts: [("since", "0-abc")] * parts[0] + parts[1]
    ),
)


@given(fields=_QUERY_FIELDS, joiner=st.sampled_from(["&", ";"]))
@_fuzz(60)
def _queries(invariants: Invariants, fields: list[tuple[str, str]], joiner: str) -> None:
    query = joiner.join(f"{quote(key)}={quote(value)}" for key, value in fields)
    user = f"query-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {make_token(user)}"}
    ws = RawWebSocket(f"{invariants.gateway.ws_url}?{query}", headers=headers)
    try:
        status = ws.handshake.status
        outcome = ws.outcome(until=b"") if status == 101 else None
    finally:
        ws.close()
    assert status in {101, 400, 401, 414, 431}, (status, query[:300])
    if status == 101:
        assert outcome == OPEN or outcome in {1008, 1013}, (outcome, query[:300])
    invariants.check(query[:300])


async def test_query_strings_of_ws_get_a_documented_answer(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _queries(inv))


# The JSON a client sends: pings, refreshes with every kind of token, anything else, and nesting.

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _token_of(kind: str, user: str) -> object:
    tokens: dict[str, object] = {
        "same": make_token(user),
        "other": make_token("someone-else"),
        "expired": make_token(user, ttl=-60),
        "forged": make_token(user, secret="not-the-secret-" * 4),
        "garbage": "a.b.c",
        "number": 17,
        "list": [make_token(user)],
        "none": None,
    }
    return tokens[kind]


_MESSAGES = st.one_of(
    st.builds(
        lambda kind, token, extra: {"type": kind, "token": token, **extra},
        st.sampled_from(["refresh", "ping", "Refresh", "resume", ""]),
        st.sampled_from(["same", "other", "expired", "forged", "garbage", "number", "list", "none"]),
        st.dictionaries(st.text(max_size=8), _JSON, max_size=3),
    ),
    _JSON,
)


def _encode(message: object, user: str) -> bytes:
    if isinstance(message, dict) and "token" in message and isinstance(message["token"], str):
        message = {**message, "token": _token_of(message["token"], user)}
    return json.dumps(message).encode()


@given(
    messages=st.lists(
        st.one_of(
            _MESSAGES.map(lambda m: ("json", m)),
            # Nesting deep enough for any recursive parser, small enough for the size limit.
            st.integers(1, 2040).map(lambda depth: ("nested", depth)),
        ),
        min_size=1,
        max_size=4,
    ),
    envelope=st.booleans(),
)
@_fuzz(60)
def _client_json(invariants: Invariants, messages: list[tuple[str, Any]], envelope: bool) -> None:
    user = f"json-{uuid.uuid4().hex[:8]}"
    query = "&envelope=1" if envelope else ""
    ws = RawWebSocket(f"{invariants.gateway.ws_url}?token={make_token(user)}{query}")
    texts = []
    for kind, message in messages:
        if kind == "nested":
            texts.append(b'{"type":"refresh","token":' + b"[" * message + b"]" * message + b"}")
        else:
            texts.append(_encode(message, user))
    try:
        assert ws.handshake.status == 101
        for text in texts:
            ws.send(client_frame(Opcode.TEXT.value, text))
        outcome = ws.outcome()
    finally:
        ws.close()
    assert outcome == OPEN or outcome in REFRESH_CLOSES | {1009}, (outcome, [t[:200] for t in texts])
    invariants.check([t[:200] for t in texts])


async def test_client_json_gets_a_documented_answer(gateway: Gateway, redis_server: RedisServer) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _client_json(inv))


# Raw publishes on a user's channel: 0xFF frames of every shape, beside plain payloads.

_EPOCHS = st.one_of(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12),
    st.sampled_from(['ab"c', "ép", "a\\b", "x}"]),
)
_OFFSETS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(20, 200).map(lambda n: "9" * n),
    st.integers(4000, 5000).map(lambda n: "9" * n),  # past int()'s digit limit
    st.sampled_from(["-1", "", "1.5", "0x10", "١٢"]),
)
_DATA = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=100).map(str.encode),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    _JSON.map(lambda v: json.dumps(v).encode()),
)
_RAW_PUBLISHES = st.one_of(
    # Well-formed but for what the data holds.
    st.builds(
        lambda epoch, offset, data: b"\xffH%s %d %s" % (epoch.encode(), offset, data),
        st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12),
        st.integers(0, 10**6),
        _DATA,
    ),
    st.builds(
        lambda epoch, offset, data, sep: b"\xffH" + epoch.encode() + sep + offset.encode() + sep + data,
        _EPOCHS,
        _OFFSETS,
        _DATA,
        st.sampled_from([b" ", b"", b"  "]),
    ),
    st.builds(
        lambda body: b"\xffC" + body,
        st.one_of(st.binary(max_size=40), st.sampled_from([b"", b" ", b"nope x"])),
    ),
    st.builds(
        lambda kind, body: b"\xff" + kind + body, st.binary(min_size=0, max_size=1), st.binary(max_size=40)
    ),
    st.binary(max_size=60),
)


@given(payloads=st.lists(_RAW_PUBLISHES, min_size=1, max_size=4))
# Seeds: the shapes an outside review found (an offset past int()'s digit limit, deep nesting).
@example(payloads=[b"\xffHe " + b"9" * 5000 + b" x"])
@example(payloads=[b"\xffHe 1 " + b"[" * 1500 + b"]" * 1500])
@_fuzz(60)
def _raw_publishes(invariants: Invariants, payloads: list[bytes]) -> None:
    user = f"raw-{uuid.uuid4().hex[:8]}"
    url = f"{invariants.gateway.ws_url}?token={make_token(user)}"
    sockets = [RawWebSocket(url), RawWebSocket(f"{url}&envelope=1")]
    client = redis.Redis.from_url(invariants.redis_url, socket_timeout=5)
    try:
        assert [ws.handshake.status for ws in sockets] == [101, 101]
        for payload in payloads:
            client.publish(f"ws:{user}", payload)
        marker = f"marker-{uuid.uuid4().hex[:8]}".encode()
        assert client.publish(f"ws:{user}", b'"' + marker + b'"') == 1
        outcomes = [ws.outcome(until=marker, probe=False) for ws in sockets]
    finally:
        client.close()
        for ws in sockets:
            ws.close()
    # Every socket is still served after whatever came before; a well-formed disconnect ends them.
    disconnect = any(p.startswith(b"\xffCdisconnect") for p in payloads)
    assert all(o == OPEN or (disconnect and o == 4003) for o in outcomes), (outcomes, payloads)
    invariants.check(payloads)


async def test_raw_publishes_cost_no_session(gateway: Gateway, redis_server: RedisServer) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _raw_publishes(inv))


# Token claims, in each carrier.

_CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.text(max_size=10), max_size=70),
)
_CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(st.text(max_size=300), st.sampled_from(["alice", "a{b}", "a b", ""]), _CLAIM_VALUES),
        "exp": st.one_of(st.integers(-3600, 7200).map(lambda d: int(time.time()) + d), _CLAIM_VALUES),
        "nbf": st.one_of(st.integers(-3600, 3600).map(lambda d: int(time.time()) + d), _CLAIM_VALUES),
        "iat": _CLAIM_VALUES,
        "aud": _CLAIM_VALUES,
        "iss": _CLAIM_VALUES,
        "groups": st.one_of(st.lists(st.text(max_size=20), max_size=70), _CLAIM_VALUES),
    },
)


def _sign(claims: dict[str, Any]) -> str:
    try:
        return jwt.encode(claims, SECRET, algorithm="HS256")
    except (TypeError, ValueError, OverflowError):
        # Not JSON (infinity, NaN): sign the header and payload as text ourselves.
        body = json.dumps(claims, default=str).encode()
        return jwt.api_jws.encode(body, SECRET, algorithm="HS256")


@given(claims=_CLAIMS, carrier=st.sampled_from(["query", "header", "bearer"]))
@_fuzz(60)
def _token_claims(invariants: Invariants, claims: dict[str, Any], carrier: str) -> None:
    token = _sign(claims)
    url, headers, subprotocols = invariants.gateway.ws_url, {}, None
    if carrier == "query":
        url += f"?token={token}"
    elif carrier == "header":
        headers = {"Authorization": f"Bearer {token}"}
    else:
        subprotocols = ["bearer", token]
    ws = RawWebSocket(url, subprotocols=subprotocols, headers=headers)
    try:
        status = ws.handshake.status
        outcome = ws.outcome() if status == 101 else None
    finally:
        ws.close()
    assert status in {101, 401, 414, 431}, (status, claims)
    if status == 101:
        assert outcome == OPEN or outcome in TOKEN_CLOSES, (outcome, claims)
    invariants.check(claims)


async def test_token_claims_get_a_documented_answer(gateway: Gateway, redis_server: RedisServer) -> None:
    await _fuzz_with_bystander(gateway, redis_server, lambda inv: _token_claims(inv))
