"""The publisher library and CLI through Sentinel (1 master, 1 replica, 3 sentinels): they find
the master the sentinels name, publish there (plain PUBLISH: Sentinel is one Redis), and find the
new master after a failover."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway import wire
from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.paths import ROOT
from harness.redis_sentinel import RedisSentinelSet, running_sentinel


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinelSet]:
    with running_sentinel() as started:
        yield started


@contextmanager
def subscriber_on_master(sentinel: RedisSentinelSet, user: str) -> Iterator[Any]:
    with sentinel.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(f"ws:{user}")
        assert pubsub.get_message(timeout=5) is not None
        yield pubsub


def _next(pubsub: Any) -> bytes:
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["type"] == "message", message
    data: bytes = message["data"]
    return data


def _publisher(sentinel: RedisSentinelSet, **options: Any) -> Publisher:
    return Publisher(sentinels=sentinel.sentinel_addresses, sentinel_master=sentinel.master_name, **options)


def test_publish_through_sentinel_with_and_without_history(sentinel: RedisSentinelSet, user: str) -> None:
    with_history, plain = _publisher(sentinel), _publisher(sentinel, history=False)
    with subscriber_on_master(sentinel, user) as pubsub:
        published = with_history.publish(user, "one")
        assert int(published) == 1 and published.position is not None
        parsed = wire.parse_history(_next(pubsub))
        assert parsed is not None and parsed.data == b"one"
        assert plain.publish(user, "two") == 1
        assert _next(pubsub) == b"two"
    assert with_history.online([user]) == {user: 0}
    with_history.close()
    plain.close()


def test_group_and_broadcast_publishes_through_sentinel(sentinel: RedisSentinelSet, user: str) -> None:
    """A group's channel is ``ws:{<group>``, the broadcast's ``ws:{*``: subscribed as a user's would be."""
    publisher = _publisher(sentinel)
    with (
        subscriber_on_master(sentinel, "{" + user) as group,
        subscriber_on_master(sentinel, "{*") as everyone,
    ):
        assert int(publisher.publish_group(user, "to the group")) == 1
        parsed = wire.parse_history(_next(group))
        assert parsed is not None and parsed.data == b"to the group"
        assert int(publisher.broadcast("to all")) == 1
        parsed = wire.parse_history(_next(everyone))
        assert parsed is not None and parsed.data == b"to all"
    publisher.close()


async def test_async_publisher_through_sentinel(sentinel: RedisSentinelSet, user: str) -> None:
    publisher = AsyncPublisher(sentinels=sentinel.sentinel_addresses, sentinel_master=sentinel.master_name)
    with subscriber_on_master(sentinel, user) as pubsub:
        assert int(await publisher.publish(user, "one")) == 1
        parsed = wire.parse_history(_next(pubsub))
        assert parsed is not None and parsed.data == b"one"
    await publisher.aclose()


def _cli(sentinel: RedisSentinelSet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_SENTINELS": sentinel.sentinel_addresses,
        "REDIS_SENTINEL_MASTER": sentinel.master_name,
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_cli_through_sentinel(sentinel: RedisSentinelSet, user: str) -> None:
    with subscriber_on_master(sentinel, user) as pubsub:
        done = _cli(sentinel, "publish", "--no-history", user, '{"n": 1}')
        assert (done.returncode, _next(pubsub)) == (0, b'{"n": 1}'), done.stderr
        assert _cli(sentinel, "online", user).stdout == f"{user}\t0\n"
        assert _cli(sentinel, "connections", user).stdout == f"0 live connection(s) for {user}\n"
        done = _cli(sentinel, "disconnect", user)
        assert done.stdout == f"disconnected 0 live connection(s) of {user}\n"
        assert _next(pubsub) == wire.control_command("disconnect", None)


def test_a_publisher_follows_a_failover(sentinel: RedisSentinelSet, user: str) -> None:
    """The master is killed and the replica promoted: the same publisher publishes to the new
    master (run last: the module's set is left with one server)."""
    publisher = _publisher(sentinel, history=False)
    with subscriber_on_master(sentinel, user) as pubsub:
        assert publisher.publish(user, "before") == 1
        assert _next(pubsub) == b"before"
    sentinel.kill_master_and_wait_for_failover()
    with subscriber_on_master(sentinel, user) as pubsub:
        assert publisher.publish(user, "after") == 1
        assert _next(pubsub) == b"after"
    publisher.close()
