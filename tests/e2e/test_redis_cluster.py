"""Gateways on a real Redis Cluster: two gunicorn hosts (2 workers each) on 3 masters; a master
SIGKILLed and its replica promoted; slots moved under subscribed users. No socket may close."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from gateway import keys
from gateway.history.position import parse_position
from gateway.publishing.publisher import Publisher
from harness.clients import admit, admit_or_refusal
from harness.gateway_process import Gateway, running_gateway
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import RedisServer, live_leases
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

LIMIT = 5
# The most messages a failover test's gap fill replays (history length and replay cap).
GAP = 1000


def cluster_env(cluster: RedisCluster, **extra: str) -> dict[str, str]:
    return {
        "REDIS_CLUSTER_NODES": cluster.startup_nodes,
        "WEBSOCKET_MAX_CONNECTIONS_PER_USER": str(LIMIT),
        "REDIS_PROBE_INTERVAL": "0.5",
        **extra,
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def hosts(cluster: RedisCluster) -> Iterator[tuple[Gateway, Gateway]]:
    env = cluster_env(cluster)
    with (
        running_gateway("redis://", workers=2, **env) as a,
        running_gateway("redis://", workers=2, **env) as b,
    ):
        yield a, b


def fresh(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


async def receive(ws: ClientConnection, timeout: float = 10) -> str:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str)
    return message


def subscriber_connections(cluster: RedisCluster) -> dict[tuple[int, str], int]:
    """(node port, worker id) -> the worker's pub/sub connections on that node (CLIENT LIST)."""
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for node in cluster.live_nodes():
        with node.client() as client:
            for entry in client.client_list():
                name = str(entry.get("name", ""))
                if name.startswith("gateway-sub:"):
                    counts[(node.port, name.removeprefix("gateway-sub:"))] += 1
    return counts


async def test_every_user_gets_exactly_its_messages_with_one_connection_per_worker_per_master(
    cluster: RedisCluster, hosts: tuple[Gateway, Gateway]
) -> None:
    """40 users over two hosts: each gets what a raw SPUBLISH and the publisher library sent it, and
    nothing else; each worker holds one pub/sub connection on each master holding one of its
    users or the broadcast's channel, and none elsewhere."""
    users = [fresh() for _ in range(40)]
    sockets = [await admit(hosts[i % 2].ws_url, user) for i, user in enumerate(users)]
    assert all(isinstance(ws, ClientConnection) for ws in sockets), sockets
    admitted = [ws for ws in sockets if isinstance(ws, ClientConnection)]
    publisher = Publisher(cluster_nodes=cluster.startup_nodes)
    with cluster.client() as client:
        for user in users:
            assert client.execute_command("SPUBLISH", f"ws:{user}", json.dumps({"raw": user})) == 1
            assert publisher.publish(user, {"library": user}) == 1
            client.execute_command("SPUBLISH", f"ws:{user}", "end")
    for user, ws in zip(users, admitted, strict=True):
        frames = [await receive(ws) for _ in range(3)]
        assert frames == [
            json.dumps({"raw": user}),
            json.dumps({"library": user}, separators=(",", ":")),
            "end",
        ]
    publisher.close()

    # Every socket also joins the broadcast (a shard channel too), so each worker holding one has
    # a connection on the broadcast's master, whether or not one of its users lives there.
    broadcast = cluster.master_of(keys.group_channel("ws", keys.BROADCAST)).port
    expected: dict[tuple[int, str], int] = {}
    for user, ws in zip(users, admitted, strict=True):
        worker = ws.response.headers["x-gateway-worker"]
        expected[(cluster.master_of(f"ws:{user}").port, worker)] = 1
        expected[(broadcast, worker)] = 1
    assert subscriber_connections(cluster) == expected
    await asyncio.gather(*(ws.close() for ws in admitted))
    await eventually(in_thread(lambda: not subscriber_connections(cluster)), what="every connection to close")


async def test_the_per_user_limit_is_exact_under_100_simultaneous_attempts_across_hosts(
    cluster: RedisCluster, hosts: tuple[Gateway, Gateway]
) -> None:
    """100 attempts at once, half on each host: exactly LIMIT admitted, the rest refused with 4029,
    or, beyond the user's share of a worker's handshakes, before Redis with 1013 too_many_handshakes."""
    user = fresh()
    results = await asyncio.gather(*(admit_or_refusal(hosts[i % 2].ws_url, user) for i in range(100)))
    admitted = [ws for ws in results if isinstance(ws, ClientConnection)]
    assert len(admitted) == LIMIT
    refused = {r for r in results if not isinstance(r, ClientConnection)}
    assert refused <= {(4029, "user_limit"), (1013, "too_many_handshakes")}, refused
    with cluster.client() as client:
        assert live_leases(client, user) == LIMIT
        client.execute_command("SPUBLISH", f"ws:{user}", "to all")
    assert [await receive(ws) for ws in admitted] == ["to all"] * LIMIT
    await asyncio.gather(*(ws.close() for ws in admitted))


def users_on(master: RedisServer, count: int) -> list[str]:
    with master.client() as client:
        ranges = [
            (int(start), int(end))
            for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS")
            if int(owner[1]) == master.port
        ]
    found = []
    for _ in range(100_000):
        user = fresh()
        slot = key_slot(f"ws:{user}".encode())
        if any(start <= slot <= end for start, end in ranges):
            found.append(user)
            if len(found) == count:
                return found
    raise AssertionError("no users found")


class Stream:
    """Numbered publishes to some users, every ``interval`` seconds from a thread, remembering when
    each one was acknowledged (errors while no master serves the slot are expected; with
    ``replicas``, a publish no replica acknowledged is an error too)."""

    def __init__(
        self,
        client: redis.RedisCluster,
        users: list[str],
        history: bool,
        interval: float = 0.02,
        replicas: int = 0,
    ) -> None:
        # A short WAIT: once the killed master's replica has taken over it has no replica itself,
        # and every publish waits the whole timeout.
        options: dict[str, Any] = {"replicas": replicas, "replica_timeout": 0.2} if replicas else {}
        self.publisher = Publisher(client=client, history_length=GAP, **options) if history else None
        self.raw = client
        self.users = users
        self.interval = interval
        self.acked: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.epochs: dict[str, set[str]] = defaultdict(set)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            for user in self.users:
                try:
                    if self.publisher is not None:
                        position = parse_position(self.publisher.publish(user, {"n": n}).position or "")
                        assert position is not None
                        self.epochs[user].add(position.epoch)
                    else:
                        self.raw.execute_command("SPUBLISH", f"ws:{user}", json.dumps({"n": n}))
                except Exception as exc:
                    self.errors.append(repr(exc))
                    continue
                self.acked[user].append((time.monotonic(), n))
            time.sleep(self.interval)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.raw.close()


async def collect(ws: ClientConnection, into: list[int]) -> None:
    async for message in ws:
        into.append(json.loads(message)["n"])


def held(cluster: RedisCluster, user: str) -> set[int]:
    """The numbers the user's history holds now (on its master, after the failover)."""
    with cluster.client() as client:
        entries = client.xrange(f"{{ws:{user}}}:history")
    return {json.loads(fields[b"d"])["n"] for _, fields in entries}


@pytest.mark.parametrize("mode", ["raw", "history", "replicated"])
async def test_a_killed_master_s_users_get_their_messages_again_after_the_failover_with_no_socket_closed(
    mode: str,
) -> None:
    """SIGKILL a master; its replica takes over. Its users' sockets stay open, delivery resumes
    within seconds, and every message the new master's history holds arrives, in order, once:
    with history, everything published after the failover, although the new master gives again
    the offsets of entries lost with the old one (docs/deploy.md, "Redis Cluster"); with ``replicas=1``
    every publish the library confirmed."""
    history = mode != "raw"
    with running_cluster(3, replicas=1) as cluster:
        client = cluster.client()
        masters = [cluster.owner(slot) for slot in (0, 8000, 16383)]
        # The publishing client's default node: the one it asks first, the hardest to leave.
        victim = next(m for m in masters if m.port == client.get_default_node().port)
        survivor = next(m for m in masters if m.port != victim.port)
        # A gap fill gives up past the replay cap: make it hold a slow resubscription's gap (a
        # few seconds at 50 messages a second) on this busy machine.
        bounds = {"WEBSOCKET_HISTORY_REPLAY_CAP": str(GAP), "WEBSOCKET_SEND_QUEUE_SIZE": str(2 * GAP)}
        with running_gateway("redis://", workers=2, **cluster_env(cluster, **bounds)) as host:
            affected = users_on(victim, 4)
            others = users_on(survivor, 2)
            users = affected + others
            sockets = {u: await connect(f"{host.ws_url}?token={make_token(u)}") for u in users}
            got: dict[str, list[int]] = {u: [] for u in users}
            readers = [asyncio.create_task(collect(sockets[u], got[u])) for u in users]
            stream = Stream(client, users, history, replicas=1 if mode == "replicated" else 0)
            try:
                await eventually(lambda: _now(all(got[u] for u in users)), timeout=10, what="first messages")
                await asyncio.to_thread(cluster.kill_master_and_wait_for_failover, victim)
                failed_over_at = time.monotonic()
                # Delivery resumes within seconds for the killed master's users.
                await eventually(
                    lambda: _now(
                        all(got[u] and got[u][-1] > _last_before(stream, u, failed_over_at) for u in affected)
                    ),
                    timeout=10,
                    what="delivery to resume",
                )
                resumed_in = time.monotonic() - failed_over_at
            finally:
                stream.close()
            for u in users:
                final = stream.acked[u][-1][1]
                await eventually(
                    lambda u=u, final=final: _now(bool(got[u]) and got[u][-1] >= final),
                    timeout=10,
                    what=f"{u} to catch up",
                )
            for u in users:
                assert sockets[u].state is State.OPEN, u
                numbers = got[u]
                assert numbers == sorted(set(numbers)), f"{u}: out of order or twice"
                lost = _expected(stream, u, mode, numbers, failed_over_at) - set(numbers)
                assert not lost, f"{u}: lost {sorted(lost)[:5]}"
                acked = {n for _, n in stream.acked[u]}
                missing = (acked & (held(cluster, u) if history else set())) - set(numbers)
                assert not missing, f"{u}: in history but not delivered: {sorted(missing)[:5]}"
                if mode == "history" and u in affected:
                    # The promoted replica has another replication id: its first publish forked.
                    # (With replicas=1 every publish after the failover raises: no replica left.)
                    assert len(stream.epochs[u]) == 2, f"{u}: epochs {stream.epochs[u]}"
            print(f"delivery resumed {resumed_in:.2f} s after the failover completed")

            for task in readers:
                task.cancel()
            await asyncio.gather(*(ws.close() for ws in sockets.values()))


def _expected(stream: Stream, user: str, mode: str, numbers: list[int], failed_over_at: float) -> set[int]:
    """What must have arrived, besides whatever the user's history holds now. With ``replicas=1``:
    every publish the library confirmed (the replica that took over had it). With history alone:
    every publish after the failover (writes the old master had not replicated are lost with it,
    but the promoted replica's history forks into a new epoch, so the messages that take their
    offsets are no repeats to a worker that delivered the lost ones). Without history, pub/sub
    loses the gap: what follows the first message received after the failover."""
    acked = stream.acked[user]
    if mode == "replicated":
        return {n for _, n in acked}
    after = {n for at, n in acked if at > failed_over_at}
    if mode == "history":
        return after
    resumed_from = min((n for n in numbers if n > _last_before(stream, user, failed_over_at)), default=0)
    return {n for n in after if n > resumed_from}


def _last_before(stream: Stream, user: str, moment: float) -> int:
    acked = [n for at, n in stream.acked[user] if at <= moment]
    return acked[-1] if acked else 0


async def _now(value: object) -> object:
    return value


async def test_users_whose_slots_move_keep_their_sockets_and_messages() -> None:
    """Slots holding subscribed users moved with ``redis-cli --cluster reshard`` while messages
    flow: no socket closes, and every message published reaches its user, in order, once."""
    with running_cluster(3) as cluster:
        masters = [cluster.owner(slot) for slot in (0, 16383)]
        source, target = masters
        with running_gateway("redis://", workers=2, **cluster_env(cluster)) as host:
            lowest = _lowest(source, 30)
            movers = [u for u in (fresh() for _ in range(300_000)) if key_slot(f"ws:{u}".encode()) in lowest][
                :3
            ]
            sockets = {u: await connect(f"{host.ws_url}?token={make_token(u)}") for u in movers}
            got: dict[str, list[int]] = {u: [] for u in movers}
            readers = [asyncio.create_task(collect(sockets[u], got[u])) for u in movers]
            stream = Stream(cluster.client(), movers, history=True)
            try:
                await eventually(lambda: _now(all(got[u] for u in movers)), timeout=10, what="first messages")
                await asyncio.to_thread(cluster.reshard, source, target, len(lowest))
                moved_at = time.monotonic()
                await eventually(
                    lambda: _now(all(got[u][-1] > _last_before(stream, u, moved_at) for u in movers)),
                    timeout=10,
                    what="delivery after the move",
                )
            finally:
                stream.close()
            for u in movers:
                final = stream.acked[u][-1][1]
                await eventually(
                    lambda u=u, final=final: _now(got[u][-1] >= final), timeout=10, what="catch up"
                )
                assert sockets[u].state is State.OPEN
                assert got[u] == sorted(set(got[u])), f"{u}: out of order or twice"
                assert {n for _, n in stream.acked[u]} <= set(got[u]), f"{u}: lost messages"
            for task in readers:
                task.cancel()
            await asyncio.gather(*(ws.close() for ws in sockets.values()))


def _lowest(master: RedisServer, count: int) -> set[int]:
    with master.client() as client:
        owned = sorted(
            slot
            for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS")
            if int(owner[1]) == master.port
            for slot in range(int(start), int(end) + 1)
        )
    return set(owned[:count])
