"""Hostile admission: query strings, tokens at the edge of their expiry, handshake bursts and
resume loops each get their documented answer, and a bystander on the same worker keeps receiving."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import jwt
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.publishing.publisher import Publisher
from harness.bystander import assert_still_served
from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.handshake_burst import Burster
from harness.redis_server import RedisServer, command_calls
from harness.tokens import make_token

LEEWAY = 5.0


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1, JWT_LEEWAY=str(LEEWAY)) as gw:
        yield gw


@pytest.fixture
async def bystander(gateway: Gateway) -> AsyncIterator[tuple[ClientConnection, str]]:
    user = "admission-bystander"
    async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
        yield ws, user


async def assert_bystander_served(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """The worker is healthy, logged no traceback, and another user's delivery is intact."""
    await assert_still_served(gateway, redis_server.url, *bystander)
    assert "Traceback" not in gateway.log()


def _header(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}"}


async def _status_of(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return int(refused.value.response.status_code)


async def _close_of(url: str, **kwargs: object) -> tuple[int, str]:
    """Connect and read until the server closes: its close code and reason."""
    async with connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


MANY_FIELDS = "&".join(f"f{i}=1" for i in range(40))


@pytest.mark.parametrize(
    "query",
    [f"since=1-ab&{MANY_FIELDS}", f"envelope=1&{MANY_FIELDS}", f"{MANY_FIELDS}&token=x"],
    ids=["since", "envelope", "token"],
)
async def test_a_query_string_with_too_many_fields_gets_400(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    query: str,
) -> None:
    """More fields than the gateway reads is a malformed query: 400, never a server error."""
    status = await _status_of(f"{gateway.ws_url}?{query}", additional_headers=_header("many-fields"))
    assert status == 400
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_a_browser_with_a_malformed_query_reads_4400(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    url = f"{gateway.ws_url}?since=1-ab&{MANY_FIELDS}"
    code = await _close_of(url, subprotocols=["bearer", make_token("browser")])
    assert code == (4400, "query_invalid")
    await assert_bystander_served(gateway, redis_server, bystander)


_TEXT = st.text(alphabet=st.sampled_from("=&;%+?#/ab019\x00\x7f\xe9\u20ac"), max_size=40)
_KEY = st.one_of(st.sampled_from(["since", "envelope", "token", "x"]), _TEXT)
_FIELD = st.builds(lambda key, sep, value: key + sep + value, _KEY, st.sampled_from(["=", ""]), _TEXT)
# Field counts around the bound as often as small ones.
_QUERY = st.integers(0, 40).flatmap(lambda n: st.lists(_FIELD, min_size=n, max_size=n)).map("&".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_QUERY)
def test_fuzzed_query_strings_get_a_documented_answer(gateway: Gateway, query: str) -> None:
    """Any query string, with a valid token in a header (which wins over a token field): admitted,
    or refused with 400, never a server error."""

    async def run() -> int:
        url = f"{gateway.ws_url}?{_percent_safe(query)}"
        try:
            async with connect(url, additional_headers=_header("query-fuzzer"), open_timeout=10) as ws:
                await ws.send('{"type":"ping"}')
                while json.loads(await asyncio.wait_for(ws.recv(), 5)).get("type") != "pong":
                    pass
                return 101
        except InvalidStatus as refused:
            return int(refused.response.status_code)

    assert asyncio.run(run()) in {101, 400}
    assert "Traceback" not in gateway.log()


def _percent_safe(query: str) -> str:
    """The query as a client could send it: characters an HTTP request line cannot carry escaped."""
    return "".join(
        c if 0x21 <= ord(c) < 0x7F and c != "#" else "".join(f"%{b:02X}" for b in c.encode()) for c in query
    )


async def test_a_token_in_its_leeway_lives_until_the_leeway_ends(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """The leeway that admitted the token also keeps the session: it is served, and closed with
    4001 only once exp + JWT_LEEWAY has passed, not at once."""
    token = make_token("in-leeway", ttl=-2)  # exp 2 to 3 s ago: admitted within the leeway
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    async with connect(f"{gateway.ws_url}?token={token}&envelope=1") as ws:
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(LEEWAY + 10):
                while True:
                    await ws.recv()
        closed_at = time.time()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "session_expired")
    # Clocks of one machine: the close came no earlier than the end of the leeway.
    assert closed_at >= exp + LEEWAY - 0.05, closed_at - exp
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_a_token_past_its_leeway_is_refused_at_the_handshake(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    assert await _status_of(f"{gateway.ws_url}?token={make_token('past-leeway', ttl=-LEEWAY - 2)}") == 401
    await assert_bystander_served(gateway, redis_server, bystander)


# A pool smaller than the default, and three times as many handshakes at once: the shares, not
# the pool's size, must keep the others' places. Each attacker comes from a loopback address of
# its own; the others come from 127.0.0.1, all at once, within the address share.
POOL = 100
ADDRESS_SHARE = 50
HANDSHAKES = 300
OTHERS = 30


@pytest.fixture(scope="module")
def crowded(redis_server: RedisServer) -> Iterator[Gateway]:
    """A second host on the same Redis, with a small handshake pool."""
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_MAX_PENDING_HANDSHAKES=str(POOL),
        WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS=str(ADDRESS_SHARE),
    ) as gw:
        yield gw


async def _round_trips(
    redis_server: RedisServer, ws: ClientConnection, user: str, seconds: float
) -> list[float]:
    """Publish-to-receive times of ``user``'s messages, one after another for ``seconds``."""
    publisher = aioredis.Redis.from_url(redis_server.url)
    times = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = time.monotonic()
            assert await publisher.publish(f"ws:{user}", b'{"probe":1}') == 1
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"probe": 1}
            times.append(time.monotonic() - sent)
            await asyncio.sleep(0.005)
    finally:
        await publisher.aclose()
    return times


async def _others_during_a_burst(
    host: Gateway, redis_server: RedisServer, burster: Burster
) -> tuple[list[ClientConnection | int], Counter[str], list[float], list[float]]:
    """Other users connect to ``host`` as ``burster``'s handshakes arrive all at once: what each
    got, what the burst got, and a bystander's round trips before and during it."""
    bystander = f"bystander-{uuid.uuid4().hex[:8]}"
    async with connect(f"{host.ws_url}?token={make_token(bystander)}") as ws:
        before = await _round_trips(redis_server, ws, bystander, 1.0)
        await burster.ready()
        burster.fire()
        prefix = uuid.uuid4().hex[:8]
        others, during = await asyncio.gather(
            asyncio.gather(*(admit(host.ws_url, f"other-{prefix}-{i}") for i in range(OTHERS))),
            _round_trips(redis_server, ws, bystander, 2.0),
        )
        answers = await burster.answers()
        for other in others:
            if not isinstance(other, int):
                await other.close()
        return list(others), answers, before, during


def _assert_bystander_invariant(before: list[float], during: list[float]) -> None:
    """Every probe arrived (``_round_trips`` checks each); the median round trip at most doubles,
    plus 5 ms of noise on a shared machine."""
    assert statistics.median(during) <= 2 * statistics.median(before) + 0.005, (
        statistics.median(before),
        statistics.median(during),
    )


async def test_one_users_handshake_burst_leaves_everyone_else_admitted(
    gateway: Gateway, crowded: Gateway, redis_server: RedisServer
) -> None:
    """A user at its limit on another host sends handshakes all at once: it holds at most its
    share of the pool (1013 past it), so every other user is admitted, and a bystander's
    messages all arrive, their median round trip at most doubled."""
    burster = f"burster-{uuid.uuid4().hex[:8]}"
    held = [await admit(gateway.ws_url, burster) for _ in range(5)]
    assert all(not isinstance(ws, int) for ws in held), held
    try:
        others, answers, before, during = await _others_during_a_burst(
            crowded,
            redis_server,
            Burster(crowded.port, burster, HANDSHAKES, source="127.0.0.2"),
        )
    finally:
        for ws in held:
            if not isinstance(ws, int):
                await ws.close()
    assert [o for o in others if isinstance(o, int)] == [], answers
    # The burst got its documented answers: 4029 from Redis, or 1013 past its share.
    assert set(+answers) <= {"4029", "1013"}, answers
    assert answers["1013"] >= HANDSHAKES - POOL, answers
    _assert_bystander_invariant(before, during)
    assert "Traceback" not in crowded.log()


async def test_many_users_handshakes_from_one_address_leave_everyone_else_admitted(
    crowded: Gateway, redis_server: RedisServer
) -> None:
    """One address holding the tokens of many users: it holds at most its share of the pool."""
    crowd = f"crowd-{uuid.uuid4().hex[:8]}"
    burster = Burster(crowded.port, crowd, HANDSHAKES, users=HANDSHAKES, source="127.0.0.3")
    others, answers, before, during = await _others_during_a_burst(crowded, redis_server, burster)
    assert [o for o in others if isinstance(o, int)] == [], answers
    assert set(+answers) <= {"accepted", "1013"}, answers
    assert answers["1013"] >= HANDSHAKES - POOL, answers
    _assert_bystander_invariant(before, during)
    assert "Traceback" not in crowded.log()


async def test_a_user_at_its_limit_on_this_worker_is_refused_without_redis(
    crowded: Gateway, redis_server: RedisServer
) -> None:
    """Every place of the user is held on this worker: each handshake of its burst is certain to
    end in 4029, and is refused so without a Redis command or a place in the pool."""
    burster = f"burster-{uuid.uuid4().hex[:8]}"
    held = [await admit(crowded.ws_url, burster) for _ in range(5)]
    assert all(not isinstance(ws, int) for ws in held), held
    client = redis_server.client()
    scripts_before = command_calls(client).get("evalsha", 0)
    try:
        others, answers, before, during = await _others_during_a_burst(
            crowded, redis_server, Burster(crowded.port, burster, HANDSHAKES, source="127.0.0.2")
        )
    finally:
        for ws in held:
            if not isinstance(ws, int):
                await ws.close()
    scripts = command_calls(client).get("evalsha", 0) - scripts_before
    client.close()
    assert [o for o in others if isinstance(o, int)] == [], answers
    assert +answers == Counter({"4029": HANDSHAKES}), answers
    # The others' admissions and releases, and the beats of the workers: far fewer than the burst.
    assert scripts < HANDSHAKES // 2, scripts
    _assert_bystander_invariant(before, during)


RESUMES_PER_MINUTE = 10
RESUME_BYTES_PER_MINUTE = 4 * 1024 * 1024
HISTORY = 60
ENTRY = "x" * 50_000  # 60 of them: about 3 MB per full replay


@pytest.fixture(scope="module")
def resuming(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_RESUMES_PER_MINUTE=str(RESUMES_PER_MINUTE),
        WEBSOCKET_RESUME_BYTES_PER_MINUTE=str(RESUME_BYTES_PER_MINUTE),
    ) as gw:
        yield gw


async def _resume(host: Gateway, user: str, since: str) -> int | tuple[int, str]:
    """One resume read to its end: the bytes replayed, or the close code and reason it got."""
    async with connect(f"{host.ws_url}?token={make_token(user)}&since={since}") as ws:
        try:
            recovery = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert recovery["type"] == "recovery" and recovery["recovered"], recovery
            replayed = 0
            for _ in range(recovery["replayed"]):
                replayed += len(json.loads(await asyncio.wait_for(ws.recv(), 10))["data"])
            return replayed
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason


async def _resume_loop(host: Gateway, user: str, since: str, attempts: int) -> list[int | tuple[int, str]]:
    return [await _resume(host, user, since) for _ in range(attempts)]


@pytest.mark.parametrize("replay", ["everything", "nothing"])
async def test_a_resume_loop_is_bounded_in_rate_and_bytes(
    resuming: Gateway, redis_server: RedisServer, replay: str
) -> None:
    """One user resuming without pause over a large history: once its resumes or their replayed
    bytes for the minute are spent, each resume is refused with 1013 before any Redis read, and
    a bystander's messages all arrive, median round trip at most doubled."""
    looper = f"looper-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(redis_server.url)
    positions = [publisher.publish(looper, ENTRY).position for _ in range(HISTORY)]
    publisher.close()
    since = positions[0] if replay == "everything" else positions[-1]
    bystander = f"bystander-{uuid.uuid4().hex[:8]}"
    async with connect(f"{resuming.ws_url}?token={make_token(bystander)}") as ws:
        before = await _round_trips(redis_server, ws, bystander, 1.0)
        results, during = await asyncio.gather(
            _resume_loop(resuming, looper, since, 3 * RESUMES_PER_MINUTE),
            _round_trips(redis_server, ws, bystander, 2.0),
        )
    replays = [r for r in results if isinstance(r, int)]
    refusals = [r for r in results if not isinstance(r, int)]
    assert set(refusals) == {(1013, "too_many_resumes")}, results
    if replay == "everything":
        # The byte budget, overdrawn by one replay at most.
        assert sum(replays) <= RESUME_BYTES_PER_MINUTE + (HISTORY - 1) * len(ENTRY), results
    else:
        # The minute's resumes (and what refilled while the loop ran), no more.
        assert RESUMES_PER_MINUTE <= len(replays) <= RESUMES_PER_MINUTE + 2, results
    _assert_bystander_invariant(before, during)
    assert "Traceback" not in resuming.log()
