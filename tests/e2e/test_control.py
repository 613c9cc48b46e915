"""Control across two gunicorn "hosts" sharing one Redis: disconnect a user everywhere or one of
its connections, count who is online, and no way for a client to send a command itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway import keys
from gateway.publishing.publisher import AsyncPublisher
from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer, leases_key, live_leases
from harness.tokens import make_token
from harness.waiting import eventually

LIMIT = 5
# Short, so that a renewal (every third of it) comes within a test's patience.
LEASE = "3"


@pytest.fixture(scope="module")
def hosts(redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    with (
        running_gateway(redis_server.url, workers=2, WEBSOCKET_LEASE_TTL=LEASE) as a,
        running_gateway(redis_server.url, workers=2, WEBSOCKET_LEASE_TTL=LEASE) as b,
    ):
        yield a, b


async def open_socket(gateway: Gateway, user: str) -> ClientConnection:
    ws = await admit(gateway.ws_url, user)
    assert isinstance(ws, ClientConnection), f"refused with {ws}"
    return ws


async def open_with_id(gateway: Gateway, user: str, client: redis.Redis) -> tuple[ClientConnection, str]:
    """A socket and its lease's connection id: the field its admission added to the user's hash."""
    before = set(await asyncio.to_thread(client.hkeys, leases_key(user)))
    ws = await open_socket(gateway, user)
    (added,) = set(await asyncio.to_thread(client.hkeys, leases_key(user))) - before
    return ws, added.decode()


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    """The close frame the server sent, waited for with a deadline."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None, "closed without a close frame from the server"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def still_served(ws: ClientConnection) -> None:
    await ws.send('{"type":"ping"}')
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}


async def test_disconnect_closes_exactly_the_users_sockets_on_both_hosts_and_frees_its_places(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    a, b = hosts
    bystander = f"{user}-bystander"
    sockets = [await open_socket((a, b)[i % 2], user) for i in range(LIMIT)]
    watchers = [await open_socket(a, bystander), await open_socket(b, bystander)]
    assert await admit(a.ws_url, user) == 4029
    publisher = AsyncPublisher(redis_server.url)
    before = [value(scrape(host), "websocket_disconnects_total", origin="command") for host in hosts]

    started = time.monotonic()
    assert await publisher.disconnect(user) == LIMIT
    codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
    elapsed = time.monotonic() - started
    assert codes == [(4003, "disconnected")] * LIMIT
    assert elapsed < 3.0, f"the last socket closed after {elapsed:.2f}s"  # not at a lease or idle time

    # Free at once: the full limit is admitted again with no wait, and no more.
    again = [await open_socket((a, b)[i % 2], user) for i in range(LIMIT)]
    assert await admit(b.ws_url, user) == 4029
    # The bystander lost nothing.
    assert await publisher.publish(bystander, "still here") == 2
    assert [await asyncio.wait_for(ws.recv(), 10) for ws in watchers] == ["still here"] * 2
    for ws in watchers:
        await still_served(ws)
    after = [value(scrape(host), "websocket_disconnects_total", origin="command") for host in hosts]
    assert sum(after) - sum(before) == LIMIT
    assert all(n > m for n, m in zip(after, before, strict=True)), "both hosts ended sockets"
    await asyncio.gather(*(ws.close() for ws in [*again, *watchers]))
    await publisher.aclose()


async def test_disconnecting_one_connection_leaves_the_users_others_open(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    a, b = hosts
    client = redis_server.client()
    opened = [await open_with_id(host, user, client) for host in (a, b, a)]
    publisher = AsyncPublisher(redis_server.url)
    (target, target_id), *others = opened[1], opened[0], opened[2]
    assert await publisher.disconnect(user, connection_id=target_id) == 1
    assert await close_code(target) == (4003, "disconnected")
    assert await publisher.online([user]) == {user: 2}
    assert await publisher.publish(user, "for the rest") >= 1
    for ws, _ in others:
        assert await asyncio.wait_for(ws.recv(), 10) == "for the rest"
        await still_served(ws)
    # Naming a connection that is gone reaches nothing and ends nothing.
    assert await publisher.disconnect(user, connection_id=target_id) == 0
    for ws, _ in others:
        await still_served(ws)
    await asyncio.gather(*(ws.close() for ws, _ in others))
    await publisher.aclose()
    client.close()


async def test_a_worker_that_missed_the_command_ends_the_connection_at_its_next_beat(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """The PUBLISH missed this worker (its pub/sub connection was being re-established): the
    note the disconnect left for the lease's worker is read by its next beat, and the socket ends
    with 4003 all the same. Simulated by writing the tombstone and the note without the PUBLISH."""
    a, _ = hosts
    client = redis_server.client()
    (missed, missed_id), (kept, _) = await open_with_id(a, user, client), await open_with_id(a, user, client)
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    # What disconnect.lua writes: the tombstone, and the note for the lease's worker.
    client.hset(leases_key(user), missed_id, -(now + 3_600_000))
    worker = missed_id.rpartition(":")[0]
    client.hset(
        keys.worker_ended_key(worker, keys.holder_tag("ws", user, cluster=False)), missed_id, "revoked"
    )
    assert await close_code(missed, timeout=float(LEASE) * 3) == (4003, "disconnected")
    await still_served(kept)
    assert live_leases(client, user) == 1
    await kept.close()
    client.close()


async def test_online_counts_exactly_across_hosts_and_a_killed_hosts_leases_stop_counting(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """A killed host's leases are not released by anyone: they stop counting once they lapse."""
    a, b = hosts
    lease = 2.0
    other, nobody = f"{user}-other", f"{user}-nobody"
    publisher = AsyncPublisher(redis_server.url)
    with running_gateway(redis_server.url, workers=1, WEBSOCKET_LEASE_TTL=str(lease)) as doomed:
        survivors = [await open_socket(a, user), await open_socket(b, user), await open_socket(b, other)]
        on_doomed = [await open_socket(doomed, user), await open_socket(doomed, other)]
        assert await publisher.online([user, other, nobody]) == {user: 3, other: 2, nobody: 0}
        assert doomed.process is not None
        for pid in [doomed.process.pid, *doomed.worker_pids()]:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        async def lapsed() -> bool:
            return await publisher.online([user, other, nobody]) == {user: 2, other: 1, nobody: 0}

        await eventually(lapsed, timeout=lease * 3, what="the killed host's leases to stop counting")
        assert time.monotonic() - killed_at <= lease + 1.0
        client = redis_server.client()
        assert live_leases(client, user) == 2  # what the limit sees agrees
        client.close()
    await asyncio.gather(*(ws.close() for ws in [*survivors, *on_doomed]))
    await publisher.aclose()


async def test_a_client_cannot_send_a_command(hosts: tuple[Gateway, Gateway], user: str) -> None:
    """Clients never publish: a frame shaped like a command, binary or text, changes nothing."""
    a, b = hosts
    sender, sibling = await open_socket(a, user), await open_socket(b, user)
    await sender.send(b"\xffCdisconnect")
    await sender.send("ÿCdisconnect")
    await sender.send('{"type":"disconnect"}')
    for ws in (sender, sibling):
        await still_served(ws)
    await asyncio.gather(sender.close(), sibling.close())


async def test_after_a_disconnect_the_old_token_is_refused_on_every_host_and_a_new_one_admitted(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """4003 means "only with a new token": the same still-valid JWT reconnecting after the
    disconnect is closed with 4003 `token_revoked` on every host and receives nothing; a token
    issued after it is admitted; a refresh with the old token ends that session too; a token
    without iat is refused while the revocation lasts."""
    a, b = hosts
    old = make_token(user, iat=time.time() - 30)
    first = await connect(f"{a.ws_url}?token={old}")
    await still_served(first)
    publisher = AsyncPublisher(redis_server.url)
    assert await publisher.disconnect(user) == 1
    assert await close_code(first) == (4003, "disconnected")

    for host in (a, b, a, b):
        again = await connect(f"{host.ws_url}?token={old}")
        assert await close_code(again) == (4003, "token_revoked")
    assert await publisher.publish(user, "after the logout") == 0  # nobody holds the user
    no_iat = await connect(f"{b.ws_url}?token={make_token(user, iat=None)}")
    assert await close_code(no_iat) == (4003, "token_revoked")

    fresh = await connect(f"{b.ws_url}?token={make_token(user)}&envelope=1")
    assert await publisher.publish(user, "for the new session") == 1
    assert json.loads(await asyncio.wait_for(fresh.recv(), 10))["data"] == "for the new session"
    await fresh.send(json.dumps({"type": "refresh", "token": old}))
    assert await close_code(fresh) == (4003, "token_revoked")
    assert await publisher.online([user]) == {user: 0}
    await publisher.aclose()


async def test_a_refresh_with_a_newer_token_after_a_disconnect_keeps_the_session(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    a, _ = hosts
    publisher = AsyncPublisher(redis_server.url)
    await publisher.disconnect(user)
    ws = await connect(f"{a.ws_url}?token={make_token(user)}&envelope=1")
    await ws.send(json.dumps({"type": "refresh", "token": make_token(user, ttl=7200)}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "refreshed"
    await ws.send(json.dumps({"type": "refresh", "token": make_token(user, iat=None)}))
    assert await close_code(ws) == (4003, "token_revoked")
    await publisher.aclose()
