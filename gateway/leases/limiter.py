"""The cluster-wide per-user connection limit: leases in the Redis hash ``{prefix:user}:conns``.

Each connection holds a lease (a field whose value is its deadline on the Redis clock). A worker
renews all its leases every beat, one script call per hash slot its users live in, pipelined (on
a Redis Cluster the client sends each call to the node of its slot), so a killed worker's or
host's places come back once its leases lapse. gunicorn's master also releases a dead worker's
leases at once (gateway/leases/dead_workers.py), from the lists the worker keeps of them
(gateway/leases/worker_index.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import keys
from gateway.leases.revocation import TokenRevoked, issued_ms
from gateway.leases.worker_index import WorkerIndex
from gateway.tasks import cancel_and_wait
from gateway.topology import scripts
from gateway.topology.modes import UNAVAILABLE, AsyncClient, is_cluster
from gateway.topology.scripts import Call, LuaScript

log = logging.getLogger("gateway.limiter")

# One renew script call covers this many connections; a beat pipelines as many calls as needed.
_RENEW_CHUNK = 500
# Admissions whose acquire may still run, to be released; past this many (a long Redis outage
# with a storm of retries) the oldest are left to lapse on their own, one lease time at most.
_MAX_UNSETTLED = 10_000

ACQUIRE = LuaScript.load("acquire.lua")
RENEW = LuaScript.load("renew.lua")
RELEASE = LuaScript.load("release.lua")


class LimiterUnavailable(Exception):
    """Redis did not answer the admission check."""


@dataclass(eq=False, slots=True)
class Lease:
    user_id: str
    connection_id: str
    on_lost: Callable[[], None]
    # Its place was freed by a disconnect (lua/disconnect.lua) whose command this worker missed.
    on_revoked: Callable[[], None] | None = None
    # The deadline (ms, Redis clock) Redis last confirmed: until then the place cannot lapse.
    until: int = 0
    # The user's last disconnect (ms) as admission saw it, 0 if none: a refresh's token must be newer.
    revoked_at: int = 0

    @property
    def member(self) -> str:
        return f"{self.connection_id} {self.user_id}"


class Limiter:
    """``client``: one Redis, a Redis Cluster or Sentinel's master (gateway/topology/modes.py).
    ``clock`` gives "now" in ms to the lease scripts; None (production) means the Redis server's
    clock, the one clock every host shares. Tests pass their own to move time without sleeping."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        worker_id: str,
        limit: int,
        lease_ttl: float,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._cluster = is_cluster(client)
        self._clock = clock
        self._prefix = prefix
        self._worker_id = worker_id
        self._limit = limit
        self._lease_ms = int(lease_ttl * 1000)
        self._beat = lease_ttl / 3
        self._ids = itertools.count(1)
        self._index = WorkerIndex(client, prefix, worker_id, self._lease_ms)
        self.leases: dict[str, Lease] = {}
        # Connection id -> user id of admissions whose acquire went out and whose answer never
        # came back (a timeout, a broken connection, a cancelled handshake): Redis may run it
        # still, so each is released (as a tombstone, which that acquire will not overwrite)
        # until Redis confirms it.
        self.unsettled: dict[str, str] = {}
        self._dropping = False
        # A renewal was sent and has not come back: Redis may still run it after a release.
        self._renewal_unsettled = False
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> int | str:
        """The scripts' ARGV[1]: "" lets Redis read its own clock."""
        return "" if self._clock is None else self._clock()

    def _lease_keys(self, user_id: str) -> list[str]:
        """The user's leases and this worker's list of its leases in the user's slot."""
        return [keys.connections_key(self._prefix, user_id), self._index.list_key(user_id)]

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="gateway-limiter")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.settle()  # a handshake the shutdown cancelled in its acquire
        except UNAVAILABLE as exc:
            log.warning("unsettled admissions not released (%s); they lapse on their own", type(exc).__name__)

    async def acquire(
        self,
        user_id: str,
        on_lost: Callable[[], None],
        on_revoked: Callable[[], None] | None = None,
        issued_at: float | None = None,
    ) -> Lease | None:
        """Take a place for a new connection; None when the user is at the limit; TokenRevoked when
        the token (its ``iat``: ``issued_at``, None if it has none) predates a disconnect of the user.

        ``on_lost``: the lease lapsed and the user is at the limit, or it was ended as over the
        limit after Redis lost its data (4029); ``on_revoked``: a disconnect freed the place and
        the command did not reach this worker (found at the next renewal).

        Redis out of reach raises LimiterUnavailable: admission fails closed.
        """
        lease = Lease(user_id, f"{self._worker_id}:{next(self._ids)}", on_lost, on_revoked)
        args = [self._now(), lease.connection_id, user_id, self._limit, self._lease_ms, issued_ms(issued_at)]
        acquire = Call(ACQUIRE, [*self._lease_keys(user_id), keys.revoked_key(self._prefix, user_id)], args)
        sent = time.monotonic()
        tags = self._index.unnamed(user_id, (held.user_id for held in self.leases.values()), sent)
        # On one connection the tags go ahead of the acquire in its round trip; a cluster sends
        # them to another node, so they must be confirmed first.
        first = self._index.naming(tags) if tags and not self._cluster else []
        if tags and self._cluster:
            try:
                await self._index.name(tags)
            except UNAVAILABLE as exc:
                raise LimiterUnavailable(type(exc).__name__) from exc
        try:
            # The unsettled releases go first, in the same round trip: this worker's next
            # admission of that user never finds the place an abandoned acquire took.
            replies = await self._settle_then(acquire, first)
            if first:
                self._index.named(tags, sent)
            taken, _, now, revoked_at = replies[-1]
        except UNAVAILABLE as exc:
            self._unsettle(lease)
            raise LimiterUnavailable(type(exc).__name__) from exc
        except asyncio.CancelledError:
            self._unsettle(lease)
            raise
        if taken < 0:
            raise TokenRevoked()
        if not taken:
            return None
        lease.until, lease.revoked_at = now + self._lease_ms, revoked_at
        self.leases[lease.connection_id] = lease
        return lease

    async def _settle_then(
        self, then: Call | None = None, first: Sequence[tuple[Any, ...]] = ()
    ) -> list[Any]:
        """One pipeline: release the unsettled admissions' places, then ``then``. A user's calls
        share a slot, so they reach one node in this order. If Redis does not answer, the batch
        stays unsettled and the error is raised."""
        batch, self.unsettled = self.unsettled, {}
        calls = [
            Call(RELEASE, self._lease_keys(user_id), [self._now(), connection_id, user_id, self._lease_ms])
            for connection_id, user_id in batch.items()
        ]
        try:
            return await scripts.run(self._client, calls + ([then] if then else []), first=first)
        except BaseException:
            self.unsettled = {**batch, **self.unsettled}
            raise

    def _unsettle(self, lease: Lease) -> None:
        if len(self.unsettled) >= _MAX_UNSETTLED:
            del self.unsettled[next(iter(self.unsettled))]
            if not self._dropping:  # once per outage, not once per refused admission
                self._dropping = True
                log.warning("too many unsettled admissions: the oldest ones' places lapse on their own")
        self.unsettled[lease.connection_id] = lease.user_id

    async def settle(self) -> None:
        """Release the unsettled admissions' places; raises if Redis does not answer (they stay)."""
        if not self.unsettled:
            return
        await self._settle_then()
        self._dropping = False

    async def release(self, lease: Lease) -> None:
        """Give the place back; if Redis is out of reach the lease lapses on its own.

        While a renewal is unsettled the place is left as a tombstone for one lease time, so
        that renewal cannot take it again when Redis runs it after this release.
        """
        if self.leases.pop(lease.connection_id, None) is None:
            return
        tombstone_ms = self._lease_ms if self._renewal_unsettled else 0
        args = [self._now(), lease.connection_id, lease.user_id, tombstone_ms]
        try:
            await scripts.run(self._client, [Call(RELEASE, self._lease_keys(lease.user_id), args)])
        except UNAVAILABLE as exc:
            log.warning("lease release failed (%s); it lapses on its own", type(exc).__name__)

    def _renew_calls(self, leases: list[Lease]) -> tuple[list[list[Lease]], list[Call]]:
        """One call per slot (per chunk of a crowded slot): a script touches one slot only."""
        by_slot: dict[str, list[Lease]] = {}
        for lease in leases:
            by_slot.setdefault(self._index.list_key(lease.user_id), []).append(lease)
        chunks: list[list[Lease]] = []
        calls: list[Call] = []
        now_arg = self._now()
        for index_key, group in by_slot.items():
            for i in range(0, len(group), _RENEW_CHUNK):
                chunk = group[i : i + _RENEW_CHUNK]
                user_keys = [
                    key
                    for user in (lease.user_id for lease in chunk)
                    for key in (
                        keys.connections_key(self._prefix, user),
                        keys.recovery_key(self._prefix, user),
                    )
                ]
                first = min(lease.until for lease in chunk)
                args = [now_arg, self._limit, self._lease_ms, first, *(lease.member for lease in chunk)]
                chunks.append(chunk)
                calls.append(Call(RENEW, [index_key, *user_keys], args))
        return chunks, calls

    async def renew(self) -> None:
        """Extend every lease, one pipelined round trip per node; end the connections whose
        place was lost. Then the worker's tag set, which Redis may have lost with the rest."""
        leases = list(self.leases.values())
        if not leases:
            return
        chunks, calls = self._renew_calls(leases)
        self._renewal_unsettled = True
        results = await scripts.run(self._client, calls)
        self._renewal_unsettled = False
        for chunk, (now, lost_ids, revoked_ids) in zip(chunks, results, strict=True):
            until = now + self._lease_ms
            for lease in chunk:
                lease.until = until
            for raw in lost_ids:
                lost = self.leases.pop(raw.decode(), None)
                if lost is not None:
                    log.warning("a lease was lost and the user is at the limit: closing that connection")
                    lost.on_lost()
            for raw in revoked_ids:
                # Ids of leases released while this renewal was on its way are no longer held.
                revoked = self.leases.pop(raw.decode(), None)
                if revoked is not None and revoked.on_revoked is not None:
                    log.warning("a disconnect's command missed this worker: closing that connection now")
                    revoked.on_revoked()
        await self._index.name({self._index.tag(lease.user_id) for lease in leases})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat)
            try:
                await self.settle()
            except UNAVAILABLE as exc:
                log.warning("unsettled admissions not released (%s); retrying next beat", type(exc).__name__)
            try:
                await self.renew()
            except UNAVAILABLE as exc:
                log.warning("lease renewal failed (%s); retrying next beat", type(exc).__name__)
