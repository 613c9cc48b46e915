"""Control: the hub's handling of ``\\xffC`` commands, and the library's disconnect and online
against a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from prometheus_client import REGISTRY

from gateway import wire
from gateway.hub import Hub
from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.outbox import Outbox
from harness.paths import ROOT
from harness.redis_server import RedisServer, leases_key, live_leases


def _disconnects() -> float:
    return REGISTRY.get_sample_value("websocket_disconnects_total", {"origin": "command"}) or 0.0


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": reason}) or 0.0


def test_a_disconnect_command_ends_every_local_connection_of_the_user_with_4003() -> None:
    hub = Hub()
    alice_1, alice_2, bob = (
        Outbox(connection_id="w-1:1"),
        Outbox(connection_id="w-1:2"),
        Outbox(connection_id="w-1:3"),
    )
    hub.add("alice", alice_1)
    hub.add("alice", alice_2)
    hub.add("bob", bob)
    before = _disconnects()
    hub.deliver("alice", wire.control_command("disconnect"))
    assert alice_1.codes == alice_2.codes == [4003]
    assert alice_1.frames == alice_2.frames == []  # the command is never sent as a frame
    assert bob.codes == [] and bob.frames == []
    assert _disconnects() - before == 2


def test_a_disconnect_naming_one_connection_ends_only_that_one() -> None:
    hub = Hub()
    first, second = Outbox(connection_id="host-1-7:1"), Outbox(connection_id="host-1-7:2")
    hub.add("alice", first)
    hub.add("alice", second)
    hub.deliver("alice", wire.control_command("disconnect", "host-1-7:2"))
    assert (first.codes, second.codes) == ([], [4003])
    hub.deliver("alice", wire.control_command("disconnect", "host-1-7:99"))
    assert first.codes == []


def test_text_that_looks_like_a_command_is_a_plain_message() -> None:
    """'ÿCdisconnect' typed by anyone is UTF-8 (0xC3 0xBF ...), never the 0xFF mark: delivered as is."""
    hub = Hub()
    alice = Outbox(connection_id="w:1")
    hub.add("alice", alice)
    for text in ["ÿCdisconnect", "\\xffCdisconnect", '{"type":"disconnect"}']:
        hub.deliver("alice", text.encode())
    assert alice.codes == []
    assert alice.frames == [t.encode() for t in ["ÿCdisconnect", "\\xffCdisconnect", '{"type":"disconnect"}']]


def test_unknown_or_malformed_gateway_messages_are_dropped_and_counted() -> None:
    hub = Hub()
    alice = Outbox(connection_id="w:1")
    hub.add("alice", alice)
    unknown, bad = _dropped("malformed"), _dropped("bad_control")
    hub.deliver("alice", b"\xffZwhatever")
    hub.deliver("alice", b"\xffCreboot")
    hub.deliver("alice", b"\xffC")
    hub.deliver("alice", wire.control_command("disconnect", "x" * 600))
    hub.deliver("alice", b"next")
    assert alice.codes == []
    assert alice.frames == [b"next"]
    assert (_dropped("malformed") - unknown, _dropped("bad_control") - bad) == (1, 3)


def _listen(server: RedisServer, channel: str) -> redis.client.PubSub:
    pubsub = server.client().pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def _now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_disconnect_frees_the_live_places_and_publishes_the_command(
    redis_server: RedisServer, user: str
) -> None:
    client = redis_server.client()
    now = _now_ms(client)
    key = leases_key(user)
    client.hset(
        key,
        mapping={"h-1:1": now + 30_000, "h-2:4": now + 30_000, "lapsed:1": now - 1, "gone:1": -(now + 5000)},
    )
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url)
    assert publisher.disconnect(user) == 2
    assert pubsub.get_message(timeout=5)["data"] == b"\xffCdisconnect"  # type: ignore[index]
    assert live_leases(client, user) == 0
    assert client.pttl(key) > 0  # tombstones never outlive a TTL
    # One connection: only that place is freed, and the command names it.
    client.hset(key, mapping={"h-1:5": now + 30_000, "h-1:6": now + 30_000})
    assert publisher.disconnect(user, connection_id="h-1:6") == 1
    assert pubsub.get_message(timeout=5)["data"] == b"\xffCdisconnect h-1:6"  # type: ignore[index]
    assert live_leases(client, user) == 1
    publisher.close()
    pubsub.close()
    client.close()


def test_disconnect_of_a_user_with_no_connections_is_a_no_op_returning_0(
    redis_server: RedisServer, user: str
) -> None:
    publisher = Publisher(redis_server.url)
    assert publisher.disconnect(user) == 0
    client = redis_server.client()
    assert not client.exists(leases_key(user))
    # Leases but no worker listening (a dead host's): the places are freed, but nobody was reached.
    client.hset(leases_key(user), "dead:1", _now_ms(client) + 30_000)
    assert publisher.disconnect(user) == 0
    assert live_leases(client, user) == 0
    publisher.close()
    client.close()


def test_online_counts_only_live_leases_per_user(redis_server: RedisServer, user: str) -> None:
    client = redis_server.client()
    now = _now_ms(client)
    other = f"{user}-other"
    client.hset(leases_key(user), mapping={"a:1": now + 30_000, "a:2": now + 30_000, "b:1": now - 10})
    client.hset(leases_key(other), mapping={"b:2": -(now + 5000)})
    publisher = Publisher(redis_server.url)
    assert publisher.online([user, other, f"{user}-nobody", user]) == {
        user: 2,
        other: 0,
        f"{user}-nobody": 0,
    }
    assert publisher.online([]) == {}
    publisher.close()
    client.close()


async def test_async_disconnect_and_online(redis_server: RedisServer, user: str) -> None:
    client = redis_server.client()
    client.hset(leases_key(user), "a:1", _now_ms(client) + 30_000)
    pubsub = _listen(redis_server, f"notify:{user}")
    client.hset(leases_key(user, "notify"), "a:1", _now_ms(client) + 30_000)
    publisher = AsyncPublisher(redis_server.url, prefix="notify")
    assert await publisher.online([user]) == {user: 1}
    assert await publisher.disconnect(user) == 1
    assert await publisher.online([user]) == {user: 0}
    assert pubsub.get_message(timeout=5)["data"] == b"\xffCdisconnect"  # type: ignore[index]
    assert live_leases(client, user) == 1  # another prefix: untouched
    await publisher.aclose()
    pubsub.close()
    client.close()


def test_online_answers_a_thousand_users_and_refuses_more(redis_server: RedisServer) -> None:
    publisher = Publisher(redis_server.url)
    users = [f"many-{i}" for i in range(1000)]
    assert publisher.online(users) == dict.fromkeys(users, 0)
    with pytest.raises(ValueError, match="at most 1000"):
        publisher.online([*users, "one-more"])
    with pytest.raises(TypeError):
        publisher.online("alice")
    publisher.close()


@pytest.mark.parametrize("bad", ["", "has space", "a" * 257, "ctl:w-1", "conns:x", "new\nline", "a{b}", "x}"])
def test_invalid_user_ids_are_refused_before_anything_is_sent(redis_server: RedisServer, bad: str) -> None:
    publisher = Publisher(redis_server.url)
    with pytest.raises(ValueError, match="user id"):
        publisher.disconnect(bad)
    with pytest.raises(ValueError, match="user id"):
        publisher.online(["fine", bad])
    publisher.close()


@pytest.mark.parametrize("bad", ["", "has space", "a" * 257, "new\nline", "h-1:1 extra", "é:1"])
def test_invalid_connection_ids_are_refused(redis_server: RedisServer, bad: str) -> None:
    publisher = Publisher(redis_server.url)
    with pytest.raises(ValueError, match="connection id"):
        publisher.disconnect("fine", connection_id=bad)
    publisher.close()


def _cli(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": server.url},
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_online_and_disconnect(redis_server: RedisServer, user: str) -> None:
    client = redis_server.client()
    now = _now_ms(client)
    client.hset(leases_key(user), mapping={"h-1:1": now + 30_000, "h-1:2": now + 30_000})
    online = _cli(redis_server, "online", user, f"{user}-2")
    assert (online.returncode, online.stdout) == (0, f"{user}\t2\n{user}-2\t0\n")
    one = _cli(redis_server, "disconnect", user, "--connection", "h-1:2")
    assert one.returncode == 0, one.stderr
    assert live_leases(client, user) == 1
    everything = _cli(redis_server, "disconnect", user)
    assert everything.returncode == 0, everything.stderr
    assert live_leases(client, user) == 0
    client.close()


def test_cli_errors_are_one_line_and_exit_2(redis_server: RedisServer) -> None:
    for args in (
        ["disconnect", "has space"],
        ["online", "ok", "ctl:x"],
        ["online", *[f"u{i}" for i in range(1001)]],
    ):
        result = _cli(redis_server, *args)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
