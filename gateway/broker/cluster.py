"""``ClusterBroker``: a worker's pub/sub on a Redis Cluster, with shard channels (SSUBSCRIBE).

Each user's channel ``ws:<user>`` lives in one hash slot, served by one master. The broker keeps
the slot map (``slot_map.py``: CLUSTER SLOTS from any node that answers, the configured ones and
every master learned since) and routes each user to a ``Shard`` (``shard.py``): the worker's one
pub/sub connection to that master, opened with the master's first local user and closed with its
last. Each shard has its own probe, so a deaf connection to one master is replaced alone.

The map is read again periodically, when a shard's connection is lost or cannot be made (a dead
master answers nothing: the map is read again with back-off until it names a live new owner), and
when a node drops a channel (the ``sunsubscribe`` it pushes when a slot migrates away) or refuses
one (MOVED). Users whose master changed are then subscribed on the new one, with no socket closed;
their later connections wait for that confirmation and ``on_resubscribed`` starts the gap fill.
A user's messages come from one master at a time (only the slot's owner delivers), so each
channel stays in publish order.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

from redis.crc import key_slot
from redis.exceptions import RedisError

from gateway import keys
from gateway.broker import Broker, BrokerSetup, BrokerUnavailable, RedisHealth
from gateway.broker.commands import ignore
from gateway.broker.shard import Shard
from gateway.broker.shard_links import ShardHooks, ShardLinks
from gateway.broker.slot_map import Address, SlotMap, address_text, fetch
from gateway.tasks import cancel_and_wait
from gateway.telemetry import metrics
from gateway.topology.modes import Topology

log = logging.getLogger("gateway.subscriber")

_BACKOFF_FIRST = 0.1
# Capped low: while a master is dead, the map is read until it names the promoted replica.
_BACKOFF_CAP = 1.0
# The map is read at least this often (new masters, moved slots nobody told us about).
_REFRESH_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class ShardState:
    """One master as ``/healthz/redis`` reports it: no user ids, only counts."""

    index: int | None
    node: str
    slots: str
    channels: int
    pubsub: str  # "ready", "opening", "reconnecting", or "none" (no local user there)


def _pubsub_state(shard: Shard | None) -> str:
    if shard is None:
        return "none"
    return "ready" if shard.ready else "opening" if shard.opening else "reconnecting"


class ClusterBroker(Broker):
    def __init__(
        self,
        topology: Topology,
        setup: BrokerSetup,
    ) -> None:
        self._nodes: list[Address] = list(topology.cluster_nodes)
        self._node_options = topology.node_options()
        self._prefix = setup.prefix
        self._worker_id = setup.worker_id
        self._users = setup.users
        self._probe_interval = setup.probe_interval
        self._hooks = ShardHooks(
            on_message=setup.on_message,
            on_resubscribed=setup.on_resubscribed or ignore,
            displaced=self._displaced,
            trouble=self._trouble,
            control_channel=self._control_channel,
            label=self._label,
        )
        self._map: SlotMap | None = None
        self._map_ok = False
        self._shards: dict[Address, Shard] = {}
        self._shard_of: dict[str, Shard] = {}
        self._labels: dict[Address, str] = {}
        self._channels = 0
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """The slot map is known and every master holding a local user has its connection ready."""
        return self._map_ok and all(shard.ready or shard.opening for shard in self._shards.values())

    async def redis_health(self, timeout: float) -> RedisHealth:
        """Every master of the slot map with the state of this worker's pub/sub connection to it;
        503 when the slot map cannot be read, or a master holding a local user's channel is
        unreachable (those users hear nothing); a master with no local user does not count here."""
        shards = [
            {"shard": s.index, "node": s.node, "slots": s.slots, "channels": s.channels, "pubsub": s.pubsub}
            for s in self.shard_states()
        ]
        down = [shard["node"] for shard in shards if shard["pubsub"] == "reconnecting"]
        if not self._map_ok:
            return RedisHealth({"shards": shards}, "unavailable")
        if down:
            return RedisHealth({"unreachable": down, "shards": shards}, "reconnecting")
        return RedisHealth({"shards": shards}, "ok")

    @property
    def channel_count(self) -> int:
        return self._channels

    def shard_states(self) -> list[ShardState]:
        states = []
        masters = self._map.masters if self._map is not None else []
        for address in dict.fromkeys([*masters, *self._shards]):
            shard = self._shards.get(address)
            ranges = self._map.slots_of(address) if self._map is not None else []
            states.append(
                ShardState(
                    index=self._map.index(address) if self._map is not None else None,
                    node=address_text(address),
                    slots=",".join(f"{a}-{b}" for a, b in ranges),
                    channels=shard.channel_count if shard is not None else 0,
                    pubsub=_pubsub_state(shard),
                )
            )
        return states

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_map(), name="gateway-slot-map")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        shards = list(self._shards.values())
        self._shards.clear()
        await asyncio.gather(*(shard.stop() for shard in shards), *self._retiring)

    async def subscribe(self, user_id: str) -> None:
        self._channels += 1
        metrics.REDIS_SUBSCRIPTIONS.inc()
        shard = self._route(user_id)
        if shard is None:
            raise BrokerUnavailable("no master is known to serve this user's slot")
        self._shard_of[user_id] = shard
        await shard.subscribe(user_id)

    async def confirmed(self, user_id: str) -> None:
        shard = self._shard_of.get(user_id)
        if shard is None:
            raise BrokerUnavailable("the user's channel is not held")
        await shard.confirmed(user_id)

    def unsubscribe(self, user_id: str) -> None:
        self._channels -= 1
        metrics.REDIS_SUBSCRIPTIONS.dec()
        shard = self._shard_of.pop(user_id, None)
        if shard is not None:
            shard.unsubscribe(user_id)
            if not shard.channel_count:
                self._retire(shard)

    async def publish(self, channel: bytes, payload: bytes) -> int:
        address = self._map.owner(key_slot(channel)) if self._map is not None else None
        if address is None:
            raise BrokerUnavailable("no master is known to serve this channel's slot")
        shard = self._shards.get(address)
        if shard is not None:
            return int(str(await shard.links.spublish(channel, payload)))
        links = ShardLinks(address, self._worker_id, self._node_options, self._probe_interval)
        try:
            return int(str(await links.spublish(channel, payload)))
        finally:
            await links.close()

    def _route(self, user_id: str) -> Shard | None:
        return self._route_slot(keys.user_slot(self._prefix, user_id))

    def _route_slot(self, slot: int) -> Shard | None:
        address = self._map.owner(slot) if self._map is not None else None
        return None if address is None else self._shard(address)

    def _shard(self, address: Address) -> Shard:
        shard = self._shards.get(address)
        if shard is None:
            links = ShardLinks(address, self._worker_id, self._node_options, self._probe_interval)
            shard = self._shards[address] = Shard(address, links, self._prefix, self._hooks)
            shard.start()
        return shard

    def _retire(self, shard: Shard) -> None:
        """Close a shard no local user needs any more."""
        if self._shards.get(shard.address) is shard:
            del self._shards[shard.address]
        task = asyncio.create_task(shard.stop(), name="gateway-shard-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _displaced(self, address: Address, users: list[str]) -> None:
        log.info("%d user channels dropped by %s: reading the slot map", len(users), address_text(address))
        self._refresh.set()

    def _trouble(self, address: Address) -> None:
        self._refresh.set()

    async def _keep_map(self) -> None:
        delay = _BACKOFF_FIRST
        self._refresh.set()
        while True:
            try:
                async with asyncio.timeout(_REFRESH_EVERY):
                    await self._refresh.wait()
            except TimeoutError:
                pass
            self._refresh.clear()
            try:
                settled = await self._read_map()
            except Exception:
                # A bug, not Redis: the worker must not stop following the cluster for good.
                log.exception("applying the cluster slot map failed; reading it again")
                settled = False
            if settled:
                delay = _BACKOFF_FIRST
                continue
            # Something is still wrong (no node answers, a master is unreachable, a user has no
            # live owner): read the map again soon, until it names a live owner.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)
            self._refresh.set()

    async def _read_map(self) -> bool:
        """Read the slot map and route every local user by it; False while something is wrong."""
        try:
            new = await fetch(self._nodes, self._node_options)
        except (RedisError, OSError, TimeoutError, ValueError, IndexError, TypeError) as exc:
            if self._map_ok:
                log.warning("no cluster node answered CLUSTER SLOTS: %s", type(exc).__name__)
            self._map_ok = False
            return False
        changed = new != self._map
        self._map, self._map_ok = new, True
        self._learn(new)
        if changed or self._unsettled():
            self._rebalance(new)
        return not self._unsettled()

    def _unsettled(self) -> bool:
        return any(shard.has_displaced or not shard.ready for shard in self._shards.values())

    def _learn(self, new: SlotMap) -> None:
        # The node that answered stays first; masters learned are asked when it stops answering.
        for address in new.masters:
            if address not in self._nodes:
                self._nodes.append(address)
            index = new.index(address)
            self._labels[address] = str(index)

    def _rebalance(self, new: SlotMap) -> None:
        """Route every local user (the hub's list) to the master the map names for its slot."""
        for user_id in self._local_users():
            address = new.owner(keys.user_slot(self._prefix, user_id))
            current = self._shard_of.get(user_id)
            if address is None:
                continue  # nobody serves the slot yet: the next reading
            if current is not None and current.address == address:
                if current.displaced(user_id):
                    future, first = current.release(user_id)
                    current.adopt(user_id, future, first)
                continue
            future, first = current.release(user_id) if current is not None else (None, False)
            shard = self._shard(address)
            shard.adopt(user_id, future, first)
            self._shard_of[user_id] = shard
        for shard in list(self._shards.values()):
            if not shard.channel_count:
                self._retire(shard)

    def _local_users(self) -> Iterable[str]:
        return list(self._users())

    def _control_channel(self, address: Address) -> str | None:
        if self._map is None:
            return None
        return self._map.channel_in(address, keys.control_channel(self._prefix, self._worker_id))

    def _label(self, address: Address) -> str:
        # The master's number when last seen in the map: bounded by the number of masters.
        return self._labels.get(address, "unknown")
