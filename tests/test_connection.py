"""A connection against a link whose state the test sets and a clock the test moves: its outbox
(burst, stall, client gone), its state, its idle timeout and its session's end, with no sleep."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway import close_codes
from gateway.admission.auth import Authenticator, Identity
from gateway.config.settings import Settings
from gateway.connection import Connection, ConnectionLimits, State
from harness.clock import FakeClock
from harness.tokens import SECRET, make_token
from harness.waiting import eventually

QUEUE_SIZE = 8
IDLE = 60.0
LEEWAY = 5.0  # JWT_LEEWAY's default: a session ends at exp plus it
LIMITS = ConnectionLimits(queue_size=QUEUE_SIZE, idle_timeout=IDLE, messages_per_second=10.0)
AUTHENTICATOR = Authenticator(Settings.from_environ({"JWT_SECRET_KEY": SECRET}))


class ScriptedLink:
    """The protocol's side of a socket, reduced to what Connection uses, with settable state."""

    def __init__(self, last_activity: float) -> None:
        self.last_activity = last_activity
        self.on_writable: Callable[[], None] | None = None
        self.on_control: Callable[[int], bool] | None = None
        self.writes: list[list[bytes]] = []
        self.paused = False
        self.closing = False

    def can_write(self) -> bool:
        return not self.paused and not self.closing

    def is_closing(self) -> bool:
        return self.closing

    def write_frames(self, payloads: list[bytes]) -> None:
        assert self.can_write(), "written while the link could not take it"
        self.writes.append(payloads)

    @property
    def frames(self) -> list[bytes]:
        return [frame for write in self.writes for frame in write]


class Client:
    """The ASGI side of the socket: what the client sends in, what the connection sends out."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    def says(self, text: str) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    def leaves(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})


@dataclass
class Served:
    connection: Connection
    link: ScriptedLink
    client: Client
    clock: FakeClock
    task: asyncio.Task[Any]

    async def ended(self) -> Any:
        """What run() returned, once the connection ended."""
        return await asyncio.wait_for(asyncio.shield(self.task), 5)


def _connection(
    clock: FakeClock, link: ScriptedLink, expires_in: float = 3600.0, envelope: bool = False
) -> Connection:
    identity = Identity("alice", clock.time() + expires_in)
    return Connection(
        identity, link, limits=LIMITS, authenticator=AUTHENTICATOR, clock=clock, envelope=envelope
    )


async def _serve(connection: Connection, client: Client) -> asyncio.Task[Any]:
    """run() as the endpoint calls it after the accept; returns once it is OPEN."""
    connection.admitted()
    task = asyncio.create_task(connection.run(client.receive, client.send, _nothing))
    await eventually(lambda: _now(connection.state is State.OPEN), what="run() to start")
    return task


@pytest.fixture(params=[False, True], ids=["raw", "envelope"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """A connection inside ``run``, as after the accept, whose token lives an hour."""
    clock = FakeClock()
    link = ScriptedLink(clock.monotonic())
    connection = _connection(clock, link, envelope=request.param)
    client = Client()
    task = await _serve(connection, client)
    try:
        yield Served(connection, link, client, clock, task)
    finally:
        client.leaves()  # an ended connection's reader stopped reading already
        await asyncio.wait_for(task, 5)
        assert connection.state is State.CLOSED
        assert clock.pending == 0  # its timer went with it


async def test_a_burst_to_a_client_that_keeps_up_is_written_whole_and_in_order(served: Served) -> None:
    payloads = [str(i).encode() for i in range(10 * QUEUE_SIZE)]
    for payload in payloads:
        served.connection.push(payload, time.monotonic())
    await eventually(lambda: _now(len(served.link.frames) == len(payloads)), what="the tick's flush")
    assert served.link.frames == payloads
    assert served.connection.end_reason is None
    # Writes came in queue-sized pieces, not one per frame.
    assert len(served.link.writes) <= len(payloads) // QUEUE_SIZE + 1


async def test_a_client_that_stops_reading_is_ended_with_4008(served: Served) -> None:
    served.link.paused = True
    for i in range(QUEUE_SIZE + 1):
        served.connection.push(str(i).encode(), time.monotonic())
    assert served.connection.state is State.CLOSING
    assert await served.ended() is close_codes.SLOW_CONSUMER
    assert served.link.frames == []
    assert served.client.sent == [{"type": "websocket.close", "code": 4008, "reason": "slow_consumer"}]


async def test_a_client_that_left_is_not_taken_for_a_slow_one(served: Served) -> None:
    """Messages that arrive between the client leaving and the reader noticing are dropped as
    'closing': no 4008, no slow-consumer count."""
    served.link.closing = True
    for i in range(3 * QUEUE_SIZE):
        served.connection.push(str(i).encode(), time.monotonic())
    assert served.connection.end_reason is None
    assert served.connection.state is State.OPEN
    assert served.link.frames == []


async def test_a_client_silent_for_the_idle_timeout_is_closed_with_1001(served: Served) -> None:
    """Any client frame (a pong too) restarts the wait; IDLE seconds without one end it."""
    served.clock.advance(IDLE - 1)
    served.link.last_activity = served.clock.monotonic()  # a pong, read by the protocol
    served.clock.advance(IDLE - 1)
    assert served.connection.state is State.OPEN
    served.clock.advance(1)
    assert served.connection.state is State.CLOSING
    assert await served.ended() is close_codes.IDLE_TIMEOUT
    assert served.client.sent == [{"type": "websocket.close", "code": 1001, "reason": "idle_timeout"}]


async def test_a_session_ends_with_4001_at_its_tokens_exp_plus_the_leeway() -> None:
    clock = FakeClock()
    link = ScriptedLink(clock.monotonic())
    connection = _connection(clock, link, expires_in=30)
    client = Client()
    task = await _serve(connection, client)
    clock.advance(20)
    link.last_activity = clock.monotonic()  # the client is active: only the token runs out
    clock.advance(10 + LEEWAY - 0.1)
    assert connection.state is State.OPEN
    clock.advance(0.2)
    assert await asyncio.wait_for(task, 5) is close_codes.SESSION_EXPIRED
    assert client.sent == [{"type": "websocket.close", "code": 4001, "reason": "session_expired"}]


async def test_a_refresh_moves_the_sessions_end_to_the_new_tokens() -> None:
    """A token of the same user, sent in-band, keeps the session past the old exp until its own."""
    clock = FakeClock()
    link = ScriptedLink(clock.monotonic())
    connection = _connection(clock, link, expires_in=30, envelope=True)
    client = Client()
    task = await _serve(connection, client)
    client.says(json.dumps({"type": "refresh", "token": make_token("alice", ttl=IDLE * 10)}))
    acked = await eventually(lambda: _now([f for f in link.frames if b"refreshed" in f]), what="the ack")
    new_exp = json.loads(acked[0])["exp"]
    ends_at = new_exp + LEEWAY
    while clock.time() < ends_at - 1:  # past the first token's end, the client pinging meanwhile
        clock.advance(min(IDLE - 1, ends_at - 1 - clock.time()))
        link.last_activity = clock.monotonic()
    assert connection.state is State.OPEN
    clock.advance(1.1)
    assert await asyncio.wait_for(task, 5) is close_codes.SESSION_EXPIRED


async def test_the_first_reason_to_end_a_connection_is_the_one_it_closes_with(served: Served) -> None:
    """The idle timer and a full outbox in the same tick (the pub/sub reader runs before the
    connection's reader wakes): the second changes nothing, and nothing raises."""
    served.link.paused = True
    served.clock.advance(IDLE)
    assert served.connection.end_reason is close_codes.IDLE_TIMEOUT
    for i in range(QUEUE_SIZE + 1):
        served.connection.push(str(i).encode(), time.monotonic())
    served.connection.end(close_codes.DRAINING)
    assert await served.ended() is close_codes.IDLE_TIMEOUT


async def test_the_states_are_walked_in_order() -> None:
    """run() only after admission; an end during the accept closes it at once."""
    clock = FakeClock()
    connection = _connection(clock, ScriptedLink(clock.monotonic()))
    client = Client()
    assert connection.state is State.CONNECTING
    with pytest.raises(RuntimeError, match="CONNECTING"):
        await connection.run(client.receive, client.send, _nothing)
    connection.admitted()
    assert connection.state is State.ADMITTED
    connection.end(close_codes.DRAINING)  # while its accept went out
    assert await connection.run(client.receive, client.send, _nothing) is close_codes.DRAINING
    assert connection.state is State.CLOSED
    assert client.sent == [{"type": "websocket.close", "code": 1012, "reason": "draining"}]
    assert clock.pending == 0


async def test_pings_and_pongs_spend_the_message_budget(served: Served) -> None:
    """The protocol reports each read's control frames: within the burst (twice the rate of 10)
    they pass, the budget refills at the rate on the connection's clock, and beyond it the
    connection ends with 1008 and the protocol is told to stop reading."""
    on_control = served.link.on_control
    assert on_control is not None
    assert on_control(15)
    served.clock.advance(0.5)  # five more
    assert on_control(10)
    assert served.connection.end_reason is None
    assert not on_control(1)
    assert served.connection.end_reason is close_codes.POLICY_VIOLATION


def dropped_as_closing() -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": "closing"}) or 0.0


async def test_frames_still_queued_when_the_connection_ends_are_counted(served: Served) -> None:
    """Frames waiting for a paused transport when the connection ends, and frames pushed after,
    never reach the client: each is counted as dropped ('closing')."""
    served.link.paused = True
    before = dropped_as_closing()
    for i in range(3):
        served.connection.push(str(i).encode(), time.monotonic())
    served.connection.end(close_codes.DRAINING)
    await served.ended()
    served.connection.push(b"late", time.monotonic())
    assert dropped_as_closing() - before == 4
    assert served.link.frames == []


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"ping","x":' + "[" * 2000 + "]" * 2000 + "}",
        '{"type":"refresh","token":' + "[" * 3000,
        '{"type":"ping","n":' + "9" * 4100 + "}",
    ],
    ids=["nested 2000 deep", "unterminated nesting", "huge integer"],
)
async def test_a_client_frame_json_cannot_parse_is_ignored(text: str) -> None:
    """Client JSON that makes Python's parser raise something other than ValueError (RecursionError
    past its stack) is ignored like any unknown frame: the connection answers the next ping."""
    clock = FakeClock()
    link = ScriptedLink(clock.monotonic())
    connection = _connection(clock, link)
    client = Client()
    client.says(text)
    client.says('{"type":"ping"}')
    task = await _serve(connection, client)
    try:
        await eventually(lambda: _now(b'{"type":"pong"}' in link.frames), what="the pong")
        assert connection.end_reason is None
    finally:
        client.leaves()
        assert await asyncio.wait_for(task, 5) is None


async def _nothing() -> None:
    pass


async def _now(value: object) -> object:
    return value
