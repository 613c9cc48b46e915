"""A connection's outbox against a link whose state the test sets: burst, stall, client gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway import close_codes
from gateway.admission.auth import Authenticator
from gateway.config.settings import Settings
from gateway.connection import Connection
from harness.tokens import SECRET
from harness.waiting import eventually

QUEUE_SIZE = 8


class ScriptedLink:
    """The protocol's side of a socket, reduced to what Connection uses, with settable state."""

    def __init__(self) -> None:
        self.last_activity = time.monotonic()
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


@pytest.fixture
async def served() -> AsyncIterator[tuple[Connection, ScriptedLink]]:
    """A connection inside ``run``, as after the accept, whose client never sends anything."""
    link = ScriptedLink()
    settings = Settings.from_environ({"JWT_SECRET_KEY": SECRET})
    silent: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        return await silent

    async def send(message: Any) -> None:
        pass

    async def release() -> None:
        pass

    connection = Connection(
        "alice", time.time() + 3600, link, receive, send, QUEUE_SIZE, 3600.0, Authenticator(settings), 10.0
    )
    task = asyncio.create_task(connection.run(release))
    await asyncio.sleep(0)  # run() has started: the connection is open
    try:
        yield connection, link
    finally:
        if not silent.done():  # an ended connection's reader stopped waiting on it
            silent.set_result({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)


async def test_a_burst_to_a_client_that_keeps_up_is_written_whole_and_in_order(
    served: tuple[Connection, ScriptedLink],
) -> None:
    connection, link = served
    payloads = [str(i).encode() for i in range(10 * QUEUE_SIZE)]
    for payload in payloads:
        connection.push(payload, time.monotonic())
    await asyncio.sleep(0)  # the tick's flush
    assert link.frames == payloads
    assert connection.end_reason is None
    # Writes came in queue-sized pieces, not one per frame.
    assert len(link.writes) <= len(payloads) // QUEUE_SIZE + 1


async def test_a_client_that_stops_reading_is_ended_with_4008(
    served: tuple[Connection, ScriptedLink],
) -> None:
    connection, link = served
    link.paused = True
    for i in range(QUEUE_SIZE + 1):
        connection.push(str(i).encode(), time.monotonic())
    assert connection.end_reason is close_codes.SLOW_CONSUMER
    assert link.frames == []


async def test_a_client_that_left_is_not_taken_for_a_slow_one(
    served: tuple[Connection, ScriptedLink],
) -> None:
    """Messages that arrive between the client leaving and the reader noticing are dropped as
    'closing': no 4008, no slow-consumer count."""
    connection, link = served
    link.closing = True
    for i in range(3 * QUEUE_SIZE):
        connection.push(str(i).encode(), time.monotonic())
    await asyncio.sleep(0)
    assert connection.end_reason is None
    assert link.frames == []


async def test_ending_after_the_deadline_fired_but_before_the_reader_woke(
    served: tuple[Connection, ScriptedLink],
) -> None:
    """The pub/sub reader can run in that window (its wake-up was queued first): ending the
    connection then must not raise into it."""
    connection, _ = served
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0) as expired:
            await asyncio.sleep(1)
    connection._deadline = expired  # the reader's deadline, as it is in that window
    connection.end(close_codes.SLOW_CONSUMER)
    assert connection.end_reason is close_codes.SLOW_CONSUMER


async def test_pings_and_pongs_spend_the_message_budget(served: tuple[Connection, ScriptedLink]) -> None:
    """The protocol reports each read's control frames: within the burst (twice the rate of 10)
    they pass; beyond it the connection ends with 1008 and the protocol is told to stop reading."""
    connection, link = served
    assert link.on_control is not None
    assert link.on_control(15)
    assert connection.end_reason is None
    assert not link.on_control(10)
    assert connection.end_reason is close_codes.POLICY_VIOLATION


def dropped_as_closing() -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": "closing"}) or 0.0


async def test_frames_still_queued_when_the_connection_ends_are_counted(
    served: tuple[Connection, ScriptedLink],
) -> None:
    """Frames waiting for a paused transport when the connection ends, and frames pushed after,
    never reach the client: each is counted as dropped ('closing')."""
    connection, link = served
    link.paused = True
    before = dropped_as_closing()
    for i in range(3):
        connection.push(str(i).encode(), time.monotonic())
    connection.end(close_codes.DRAINING)

    async def run_returned() -> bool:
        return link.on_writable is None

    await eventually(run_returned, what="run() to return")
    connection.push(b"late", time.monotonic())
    assert dropped_as_closing() - before == 4
    assert link.frames == []


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
    link = ScriptedLink()
    settings = Settings.from_environ({"JWT_SECRET_KEY": SECRET})
    frames: asyncio.Queue[Any] = asyncio.Queue()
    for message in (text, '{"type":"ping"}'):
        frames.put_nowait({"type": "websocket.receive", "text": message})
    connection = Connection(
        "alice", time.time() + 3600, link, frames.get, _ignore, QUEUE_SIZE, 3600, Authenticator(settings), 10
    )
    task = asyncio.create_task(connection.run(_nothing))
    try:
        await eventually(lambda: _now(b'{"type":"pong"}' in link.frames), what="the pong")
        assert connection.end_reason is None
    finally:
        frames.put_nowait({"type": "websocket.disconnect", "code": 1000})
        assert await asyncio.wait_for(task, 5) is None


async def _ignore(message: Any) -> None:
    pass


async def _nothing() -> None:
    pass


async def _now(value: object) -> object:
    return value
