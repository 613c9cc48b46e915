"""ClusterBroker against a real 3-master Redis Cluster: shard channels batched per slot, one pub/sub
connection per master holding a local user (closed with its last), a deaf one replaced alone, a
slot moved under subscribed users."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY
from redis.crc import key_slot

from gateway.admission import subscription
from gateway.broker import BrokerSetup, BrokerUnavailable
from gateway.broker.cluster import ClusterBroker
from gateway.broker.slot_map import fetch
from gateway.hub import Hub
from gateway.topology.modes import Topology
from harness.garbage_redis import GarbageRedis
from harness.outbox import Outbox
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import RedisServer, command_calls
from harness.waiting import eventually, in_thread


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster(3) as cluster:
        yield cluster


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.resubscribed: list[str] = []

    def __call__(self, user_id: str, payload: bytes) -> None:
        self.messages.append((user_id, payload))

    def of(self, user_id: str) -> list[bytes]:
        return [payload for user, payload in self.messages if user == user_id]


class Local:
    """A worker's hub and broker, joined as admission joins them (gateway/admission/subscription.py)."""

    def __init__(self, hub: Hub, broker: ClusterBroker, worker_id: str) -> None:
        self.hub = hub
        self.broker = broker
        self.worker_id = worker_id

    async def join(self, user_id: str) -> Outbox:
        socket = Outbox()
        await subscription.join(self.hub, self.broker, user_id, socket)
        return socket

    def leave(self, user_id: str, socket: Outbox) -> None:
        subscription.leave(self.hub, self.broker, user_id, socket)


@contextlib.asynccontextmanager
async def _local(cluster: RedisCluster, inbox: Inbox, probe_interval: float = 1.0) -> AsyncIterator[Local]:
    hub = Hub()
    worker_id = f"test-{uuid.uuid4().hex[:8]}"
    nodes = tuple(("127.0.0.1", node.port) for node in cluster.nodes)
    broker = ClusterBroker(
        Topology("redis://", cluster_nodes=nodes),
        BrokerSetup("ws", worker_id, inbox, hub.user_ids, probe_interval, inbox.resubscribed.append),
    )
    broker.start()
    try:
        await eventually(lambda: _now(broker.ready), what="the slot map to be read")
        yield Local(hub, broker, worker_id)
    finally:
        await broker.stop()


async def _now(value: object) -> object:
    return value


def _sample(name: str, shard: str) -> float:
    return REGISTRY.get_sample_value(name, {"shard": shard}) or 0.0


def _users_on(cluster: RedisCluster, master: RedisServer, count: int, run: str) -> list[str]:
    """``count`` user ids whose channels live on ``master`` now."""
    with master.client() as client:
        ranges = [
            (int(start), int(end))
            for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS")
            if int(owner[1]) == master.port
        ]
    users = []
    for i in range(100_000):
        user = f"{run}-{i}"
        slot = key_slot(f"ws:{user}".encode())
        if any(start <= slot <= end for start, end in ranges):
            users.append(user)
            if len(users) == count:
                return users
    raise AssertionError(f"fewer than {count} users found on {master.port}")


def _pubsub_connections(node: RedisServer, worker_id: str) -> list[dict[str, object]]:
    with node.client() as client:
        return [c for c in client.client_list() if c.get("name") == f"gateway-sub:{worker_id}"]


def _masters(cluster: RedisCluster) -> list[RedisServer]:
    ports = {cluster.owner(slot).port for slot in (0, 8000, 16383)}
    return [node for node in cluster.nodes if node.port in ports]


async def test_users_on_every_master_get_their_messages_over_one_connection_per_master(
    cluster: RedisCluster,
) -> None:
    """30 users over three masters: each gets exactly what SPUBLISH sent it; each master sees one
    pub/sub connection of the worker, subscribed to its users plus one control channel."""
    inbox = Inbox()
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-{i}" for i in range(30)]
    async with _local(cluster, inbox) as local:
        await asyncio.gather(*(local.join(user) for user in users))
        with cluster.client() as client:
            for user in users:
                assert client.execute_command("SPUBLISH", f"ws:{user}", f"for {user}") == 1
        await eventually(lambda: _now(len(inbox.messages) == 30), what="every message")
        assert sorted(inbox.messages) == sorted((u, f"for {u}".encode()) for u in users)
        on: dict[int, int] = defaultdict(int)
        for user in users:
            on[cluster.master_of(f"ws:{user}").port] += 1
        for node in _masters(cluster):
            connections = _pubsub_connections(node, local.worker_id)
            assert len(connections) == 1, node.port
            assert int(str(connections[0]["ssub"])) == on[node.port] + 1
        assert inbox.resubscribed == []


async def test_subscribes_of_one_tick_go_out_as_one_ssubscribe_per_slot(cluster: RedisCluster) -> None:
    """40 users in 4 slots, admitted at once on open connections: 4 SSUBSCRIBE commands."""
    inbox = Inbox()
    run = uuid.uuid4().hex[:8]
    by_slot: dict[int, list[str]] = defaultdict(list)
    for i in range(400_000):
        user = f"{run}-{i}"
        by_slot[key_slot(f"ws:{user}".encode())].append(user)
    # In slot order, so the first and the last are on different masters.
    slots = sorted(slot for slot, found in by_slot.items() if len(found) >= 11)
    chosen = [slots[0], slots[1], slots[len(slots) // 2], slots[-1]]
    users = [user for slot in chosen for user in by_slot[slot][:10]]
    assert len({cluster.owner(slot).port for slot in chosen}) >= 2
    async with _local(cluster, inbox) as local:
        # One user per master first: its connection is open before the batch.
        warm = [by_slot[slot][10] for slot in chosen]
        await asyncio.gather(*(local.join(user) for user in warm))
        masters = _masters(cluster)
        before = [command_calls(node.client()).get("ssubscribe", 0) for node in masters]
        await asyncio.gather(*(local.join(user) for user in users))
        after = [command_calls(node.client()).get("ssubscribe", 0) for node in masters]
        assert sum(after) - sum(before) == len(chosen)


async def test_the_last_user_on_a_master_closes_its_connection(cluster: RedisCluster) -> None:
    """A master's connection opens with its first local user and closes after its last."""
    inbox = Inbox()
    master = _masters(cluster)[0]
    run = uuid.uuid4().hex[:8]
    first, second = _users_on(cluster, master, 2, run)
    async with _local(cluster, inbox) as local:
        assert _pubsub_connections(master, local.worker_id) == []
        a = await local.join(first)
        b = await local.join(second)
        assert len(_pubsub_connections(master, local.worker_id)) == 1
        local.leave(first, a)
        with cluster.client() as client:
            client.execute_command("SPUBLISH", f"ws:{second}", b"still here")
        await eventually(lambda: _now(inbox.of(second) == [b"still here"]), what="the message")
        local.leave(second, b)
        await eventually(
            in_thread(lambda: _pubsub_connections(master, local.worker_id) == []),
            what="the connection to close",
        )
        assert local.broker.channel_count == 0


async def test_a_deaf_master_connection_is_replaced_and_the_others_keep_delivering(
    cluster: RedisCluster,
) -> None:
    """One master paused (its sockets open, answering nothing): its probe fails, the worker
    reports not ready, the other masters' users keep receiving; once it answers again its users
    are subscribed again on a new connection and reported for the gap fill."""
    inbox = Inbox()
    paused, other = _masters(cluster)[:2]
    run = uuid.uuid4().hex[:8]
    (deaf_user,) = _users_on(cluster, paused, 1, run)
    (live_user,) = _users_on(cluster, other, 1, run + "x")
    async with _local(cluster, inbox, probe_interval=0.3) as local:
        await local.join(deaf_user)
        await local.join(live_user)
        (old,) = _pubsub_connections(paused, local.worker_id)
        label = next(str(s.index) for s in local.broker.shard_states() if s.node.endswith(f":{paused.port}"))
        reconnects = _sample("websocket_redis_shard_reconnects_total", label)
        with paused.paused():
            await eventually(lambda: _now(not local.broker.ready), timeout=5, what="the probe to fail")
            report = await local.broker.redis_health(1.0)
            assert report.verdict == "reconnecting"
            assert report.fields["unreachable"] == [f"127.0.0.1:{paused.port}"]
            with other.client() as client:  # the cluster client could ask the paused node
                client.execute_command("SPUBLISH", f"ws:{live_user}", b"meanwhile")
            await eventually(lambda: _now(inbox.of(live_user) == [b"meanwhile"]), what="other masters")
        await eventually(lambda: _now(local.broker.ready), timeout=15, what="a new connection")
        assert (await local.broker.redis_health(1.0)).verdict == "ok"
        assert _sample("websocket_redis_shard_reconnects_total", label) == reconnects + 1
        (new,) = _pubsub_connections(paused, local.worker_id)
        assert new["id"] != old["id"]
        assert deaf_user in inbox.resubscribed
        with cluster.client() as client:
            client.execute_command("SPUBLISH", f"ws:{deaf_user}", b"after")
        await eventually(lambda: _now(inbox.of(deaf_user) == [b"after"]), what="delivery again")


async def test_subscribe_fails_closed_while_a_master_is_unreachable(cluster: RedisCluster) -> None:
    """A user whose master's connection is down is refused at once, not admitted deaf."""
    inbox = Inbox()
    master = _masters(cluster)[2]
    run = uuid.uuid4().hex[:8]
    first, second = _users_on(cluster, master, 2, run)
    async with _local(cluster, inbox, probe_interval=0.3) as local:
        await local.join(first)
        with master.paused():
            await eventually(lambda: _now(not local.broker.ready), timeout=5, what="the probe to fail")
            with pytest.raises(BrokerUnavailable):
                await local.join(second)
            assert local.hub.user_ids() == [first]
        await eventually(lambda: _now(local.broker.ready), timeout=15, what="a new connection")
        await local.join(second)


async def test_users_whose_slots_migrate_are_subscribed_on_the_new_master() -> None:
    """Slots of one master moved to another (redis-cli --cluster reshard) under subscribed users:
    the node drops their channels, the broker subscribes them on the new owner and reports them
    for the gap fill, its other users stay where they were."""
    inbox = Inbox()
    with running_cluster(3) as cluster:
        source, target = _masters(cluster)[:2]
        lowest = _lowest_slots(source, 40)
        run = uuid.uuid4().hex[:8]
        moving = [u for u in (f"{run}-{i}" for i in range(200_000)) if _slot(u) in lowest][:4]
        staying = _users_on(cluster, source, 30, run + "s")
        staying = [u for u in staying if _slot(u) not in lowest][:2]
        async with _local(cluster, inbox) as local:
            await asyncio.gather(*(local.join(user) for user in moving + staying))
            await asyncio.to_thread(cluster.reshard, source, target, len(lowest))
            await eventually(
                lambda: _now(set(inbox.resubscribed) >= set(moving)), timeout=10, what="re-subscriptions"
            )
            for node, users in ((target, moving), (source, staying)):
                with node.client() as client:
                    for user in users:
                        assert client.execute_command("SPUBLISH", f"ws:{user}", b"here") == 1, user
            await eventually(lambda: _now(len(inbox.messages) == 6), what="delivery after the move")
            assert sorted(user for user, _ in inbox.messages) == sorted(moving + staying)
            assert local.broker.ready
            for node in (source, target):
                assert len(_pubsub_connections(node, local.worker_id)) == 1


def _slot(user: str) -> int:
    return key_slot(f"ws:{user}".encode())


def _lowest_slots(master: RedisServer, count: int) -> set[int]:
    """The ``count`` lowest slots of a master: those ``redis-cli --cluster reshard`` moves first."""
    with master.client() as client:
        owned = sorted(
            slot
            for start, end, owner, *_ in client.execute_command("CLUSTER", "SLOTS")
            if int(owner[1]) == master.port
            for slot in range(int(start), int(end) + 1)
        )
    return set(owned[:count])


async def test_a_user_leaving_as_its_slot_migrates_costs_the_others_nothing() -> None:
    """The node drops a migrating slot's channels (an ``sunsubscribe`` push) while the broker's
    SUNSUBSCRIBE of a user leaving that slot is on its way: the push answers nothing written
    (nothing the broker asked for), and the MOVED that the node then answers the SUNSUBSCRIBE
    with must not be taken for a broken connection: the master's other users keep theirs."""
    inbox = Inbox()
    with running_cluster(3) as cluster:
        source, target = _masters(cluster)[:2]
        lowest = _lowest_slots(source, 1)
        run = uuid.uuid4().hex[:8]
        leaving = next(u for u in (f"{run}-{i}" for i in range(200_000)) if _slot(u) in lowest)
        staying = next(u for u in _users_on(cluster, source, 30, run + "s") if _slot(u) not in lowest)
        async with _local(cluster, inbox) as local:
            socket = await local.join(leaving)
            await local.join(staying)
            label = _label_of(local.broker, source)
            reconnects = _sample("websocket_redis_shard_reconnects_total", label)
            # The event loop is held while the slot moves: the push waits unread in the socket,
            # and the SUNSUBSCRIBE goes out before the reader sees it.
            cluster.reshard(source, target, 1)
            local.leave(leaving, socket)
            with cluster.client() as client:
                marker = client.execute_command("SPUBLISH", f"ws:{staying}", b"after")
            assert marker == 1
            await eventually(lambda: _now(inbox.of(staying) == [b"after"]), what="the other user's message")
            assert _sample("websocket_redis_shard_reconnects_total", label) == reconnects
            assert inbox.resubscribed == []


def _label_of(broker: ClusterBroker, master: RedisServer) -> str:
    return next(str(s.index) for s in broker.shard_states() if s.node.endswith(f":{master.port}"))


class Poisoned(Inbox):
    """A handler with a bug that one payload triggers."""

    def __call__(self, user_id: str, payload: bytes) -> None:
        if payload == b"poison":
            raise ValueError("a bug in the handler")
        super().__call__(user_id, payload)


async def test_a_message_whose_handler_raises_costs_the_shard_session_nothing(cluster: RedisCluster) -> None:
    """Whatever the exception, it costs that one message: counted, and the next ones arrive over
    the same connection to the master (no reconnect, so nothing published meanwhile is lost)."""
    inbox = Poisoned()
    user = f"{uuid.uuid4().hex[:8]}-poisoned"
    async with _local(cluster, inbox) as local:
        await local.join(user)
        reconnects = _count("websocket_redis_reconnects_total")
        failed = _count("websocket_messages_dropped_total", reason="handler_failed")
        with cluster.client() as client:
            for payload in (b"before", b"poison", b"after", b"poison", b"last"):
                assert client.execute_command("SPUBLISH", f"ws:{user}", payload) == 1
        await eventually(lambda: _now(len(inbox.of(user)) == 3), what="the three good messages")
        assert inbox.of(user) == [b"before", b"after", b"last"]
        assert _count("websocket_messages_dropped_total", reason="handler_failed") == failed + 2
        assert _count("websocket_redis_reconnects_total") == reconnects


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_null_endpoint_in_cluster_slots_means_the_node_that_answered(cluster: RedisCluster) -> None:
    """``cluster-preferred-endpoint-type unknown-endpoint`` (nodes behind a load balancer): CLUSTER
    SLOTS names each master's endpoint NULL, which means the address the client asked, with the
    port given. The broker subscribes there and delivers, never to a host called "None"."""
    inbox = Inbox()
    nodes = cluster.live_nodes()
    try:
        for node in nodes:
            with node.client() as client:
                client.config_set("cluster-preferred-endpoint-type", "unknown-endpoint")
        first = nodes[0]
        slot_map = await fetch([("127.0.0.1", first.port)], {})
        assert {host for _, _, (host, _) in slot_map.ranges} == {"127.0.0.1"}
        user = f"null-endpoint-{uuid.uuid4().hex[:8]}"
        async with _local(cluster, inbox) as local:
            await local.join(user)
            with cluster.master_of(f"ws:{user}").client() as client:
                assert client.execute_command("SPUBLISH", f"ws:{user}", b"here") == 1
            await eventually(lambda: _now(inbox.of(user) == [b"here"]), what="the message")
    finally:
        for node in nodes:
            with node.client() as client:
                client.config_set("cluster-preferred-endpoint-type", "ip")


@pytest.mark.parametrize(
    "entry",
    [b"*2\r\n$9\r\n127.0.0.1\r\n:99999999\r\n", b"*2\r\n$9\r\n127.0.0.1\r\n:0\r\n"],
    ids=["port-too-large", "port-zero"],
)
async def test_a_cluster_slots_reply_naming_an_impossible_port_is_refused(entry: bytes) -> None:
    """A node answering CLUSTER SLOTS with a port no socket can have: the map is refused (the
    slot-map task reads again), not learned as a node that would fail every connection later."""
    reply = b"*1\r\n*3\r\n:0\r\n:16383\r\n" + entry
    async with GarbageRedis(reply) as garbage:
        with pytest.raises(ValueError):
            await fetch([("127.0.0.1", garbage.port)], {})


async def test_the_slot_map_task_outlives_an_unexpected_error() -> None:
    """An error nobody foresaw while the map is applied (here the hub's list of users fails
    once): the slot-map task logs it and goes on, so a slot that later moves under subscribed
    users is still followed."""
    inbox = Inbox()
    with running_cluster(3) as cluster:
        source, target = _masters(cluster)[:2]
        lowest = _lowest_slots(source, 20)
        run = uuid.uuid4().hex[:8]
        moving = [u for u in (f"{run}-{i}" for i in range(200_000)) if _slot(u) in lowest][:2]
        hub = Hub()
        failures = [RuntimeError("a bug")]

        def users() -> list[str]:
            if failures:
                raise failures.pop()
            return hub.user_ids()

        nodes = tuple(("127.0.0.1", node.port) for node in cluster.nodes)
        broker = ClusterBroker(
            Topology("redis://", cluster_nodes=nodes),
            BrokerSetup("ws", f"test-{run}", inbox, users, 1.0, inbox.resubscribed.append),
        )
        broker.start()
        try:
            await eventually(lambda: _now(broker.ready and not failures), what="the slot map to be read")
            local = Local(hub, broker, f"test-{run}")
            await asyncio.gather(*(local.join(user) for user in moving))
            await asyncio.to_thread(cluster.reshard, source, target, len(lowest))
            await eventually(
                lambda: _now(set(inbox.resubscribed) >= set(moving)), timeout=15, what="re-subscriptions"
            )
        finally:
            await broker.stop()
