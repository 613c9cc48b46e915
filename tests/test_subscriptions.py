"""The pub/sub core's bookkeeping (gateway/broker/subscriptions.py), driven as its session drives
it, with no connection: the commands it would write and the replies Redis would send are plain
values here. What reaches a real Redis is in test_broker_redis.py and test_broker_cluster.py."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from gateway.broker import BrokerUnavailable
from gateway.broker.ledger import PLAIN, SHARDED, Verbs
from gateway.broker.subscriptions import Subscriptions

CONTROL = b"ws:ctl:w"


def _ready(verbs: Verbs = PLAIN, displaced: list[bytes] | None = None) -> tuple[Subscriptions, list[bytes]]:
    """Subscriptions on an open connection whose control channel Redis confirmed; and the channels
    confirmed again after a loss (``on_resubscribed``)."""
    resubscribed: list[bytes] = []
    hook = None if displaced is None else displaced.extend
    subscriptions = Subscriptions(verbs, "", resubscribed.append, displaced=hook)
    assert subscriptions.opened(CONTROL, None) == [(verbs.subscribe, CONTROL)]
    assert subscriptions.answered(CONTROL, subscribe=True)
    assert subscriptions.ready
    return subscriptions, resubscribed


async def _queued(subscriptions: Subscriptions, channel: bytes) -> asyncio.Task[None]:
    task = asyncio.create_task(subscriptions.subscribe(channel))
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def _confirmed(subscriptions: Subscriptions, channel: bytes) -> None:
    """Subscribed, written and confirmed by Redis."""
    task = await _queued(subscriptions, channel)
    subscriptions.changes()
    assert not subscriptions.answered(channel, subscribe=True)
    await asyncio.wait_for(task, 1)


async def test_a_subscribe_returns_once_redis_confirms_it() -> None:
    subscriptions, resubscribed = _ready()
    task = await _queued(subscriptions, b"ws:alice")
    assert subscriptions.changes() == [("SUBSCRIBE", b"ws:alice")]
    assert subscriptions.unanswered == 1
    assert not subscriptions.answered(b"ws:alice", subscribe=True)
    await asyncio.wait_for(task, 1)
    assert subscriptions.unanswered == 0
    assert resubscribed == []  # a first confirmation: no gap to fill


async def test_a_channel_left_before_its_subscribe_is_written_costs_no_command() -> None:
    subscriptions, _ = _ready()
    task = await _queued(subscriptions, b"ws:alice")
    subscriptions.unsubscribe(b"ws:alice")
    assert subscriptions.changes() == []
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(task, 1)


async def test_a_channel_left_and_taken_again_before_the_unsubscribe_is_written_costs_no_command() -> None:
    subscriptions, _ = _ready()
    await _confirmed(subscriptions, b"ws:alice")
    subscriptions.unsubscribe(b"ws:alice")
    await asyncio.wait_for(subscriptions.subscribe(b"ws:alice"), 1)
    assert subscriptions.changes() == []


async def test_a_return_after_the_answer_was_read_but_before_the_unsubscribe_was_written() -> None:
    """The last connection leaves while the SUBSCRIBE is in flight, Redis's answer is read, and the
    user returns before the UNSUBSCRIBE is written: the subscription stands, the return is admitted
    at once and nothing is written (not left waiting for a confirmation already read)."""
    subscriptions, _ = _ready(SHARDED, displaced=[])
    first = await _queued(subscriptions, b"ws:alice")
    subscriptions.changes()
    first.cancel()
    subscriptions.unsubscribe(b"ws:alice")
    subscriptions.answered(b"ws:alice", subscribe=True)
    await asyncio.wait_for(subscriptions.subscribe(b"ws:alice"), 1)
    assert subscriptions.changes() == []
    assert subscriptions.held == {b"ws:alice"}


async def test_a_lost_connection_fails_every_wait_and_the_next_one_subscribes_again() -> None:
    subscriptions, resubscribed = _ready()
    await _confirmed(subscriptions, b"ws:alice")
    bob = await _queued(subscriptions, b"ws:bob")
    subscriptions.closed()
    with pytest.raises(BrokerUnavailable):
        await bob
    with pytest.raises(BrokerUnavailable):
        await subscriptions.subscribe(b"ws:carol")  # not connected: refused at once
    # The broker's truth (the hub) lists alice only: bob and carol rolled back.
    assert subscriptions.opened(CONTROL, [b"ws:alice"]) == [("SUBSCRIBE", CONTROL, b"ws:alice")]
    subscriptions.answered(CONTROL, subscribe=True)
    subscriptions.answered(b"ws:alice", subscribe=True)
    assert resubscribed == [b"ws:alice"]


async def test_plain_channels_go_in_order_at_most_a_thousand_a_command() -> None:
    subscriptions = Subscriptions(PLAIN, "", lambda channel: None)
    channels = [f"ws:u{i}".encode() for i in range(2500)]
    commands = subscriptions.opened(CONTROL, channels)
    assert [len(command) - 1 for command in commands] == [1000, 1000, 501]
    assert [c for command in commands for c in command[1:]] == [CONTROL, *channels]


async def test_shard_channels_go_one_slot_a_command() -> None:
    subscriptions = Subscriptions(SHARDED, " to node", lambda channel: None, displaced=lambda c: None)
    channels = [f"ws:u{i}".encode() for i in range(50)]
    commands = subscriptions.opened(CONTROL, channels)
    assert all(command[0] == "SSUBSCRIBE" for command in commands)
    assert all(len({key_slot(c) for c in command[1:]}) == 1 for command in commands)
    assert sorted(c for command in commands for c in command[1:]) == sorted([CONTROL, *channels])


async def test_a_refused_subscribe_ends_a_plain_session_and_hands_shard_channels_back() -> None:
    plain, _ = _ready()
    await _queued(plain, b"ws:alice")
    plain.changes()
    with pytest.raises(ResponseError):
        plain.refused(ResponseError("NOPERM no permission"))
    displaced: list[bytes] = []
    sharded, _ = _ready(SHARDED, displaced)
    task = await _queued(sharded, b"ws:alice")
    sharded.changes()
    sharded.refused(ResponseError("MOVED 1 127.0.0.1:7001"))
    assert displaced == [b"ws:alice"] and sharded.dropped == {b"ws:alice"}
    assert not task.done()  # waits until the broker routes it again
    future, first = sharded.release(b"ws:alice")
    assert future is not None and first
    future.set_result(True)
    await asyncio.wait_for(task, 1)


async def test_a_channel_the_server_drops_unasked_is_handed_back() -> None:
    displaced: list[bytes] = []
    subscriptions, _ = _ready(SHARDED, displaced)
    await _confirmed(subscriptions, b"ws:alice")
    subscriptions.answered(b"ws:alice", subscribe=False)  # pushed: the slot moved away
    assert displaced == [b"ws:alice"]
    with pytest.raises(ConnectionError):
        subscriptions.answered(CONTROL, subscribe=False)
