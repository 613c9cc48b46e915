"""The cluster-wide per-user connection limit: leases in the Redis hash ``{prefix:user}:conns``.

Each connection holds a lease (a field whose value is its deadline on the Redis clock). A worker
renews all its leases every beat, one script call per hash slot its users live in, pipelined (on
a Redis Cluster the client sends each call to the node of its slot), so a killed worker's or
host's places come back once its leases lapse. gunicorn's master also releases a dead worker's
leases at once (gateway/leases/dead_workers.py), from the lists the worker keeps of them
(gateway/leases/worker_index.py; on a Redis Cluster, whose master of the worker's tag set may be
down, an admission does not wait for it: the beat names the tags again).

What it gives back and Redis did not confirm is sent again until Redis does
(gateway/leases/releases.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import keys
from gateway.leases.releases import Releases
from gateway.leases.revocation import TokenRevoked, issued_ms
from gateway.leases.worker_index import WorkerIndex
from gateway.tasks import cancel_and_wait
from gateway.topology import scripts
from gateway.topology.modes import UNAVAILABLE, AsyncClient, is_cluster
from gateway.topology.scripts import Call, LuaScript

log = logging.getLogger("gateway.limiter")

# One renew script call covers this many connections; a beat pipelines as many calls as needed.
_RENEW_CHUNK = 500
# How long a closing connection waits for Redis to confirm its release before its close frame
# goes out anyway (the release goes on behind it).
_RELEASE_WAIT = 1.0
# At shutdown, how long releases still unconfirmed get.
_STOP_WAIT = 1.0

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
    """``client``: one Redis, a Redis Cluster or Sentinel's master (gateway/topology/modes.py);
    ``background``, if given, a client of its own for renewals and releases (gateway/redis_wiring.py
    says why). ``clock`` gives "now" in ms to the lease scripts; None (production) means the Redis
    server's clock, the one clock every host shares. Tests pass their own to move time."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        worker_id: str,
        limit: int,
        lease_ttl: float,
        clock: Callable[[], int] | None = None,
        background: AsyncClient | None = None,
    ) -> None:
        self._client, self._background = client, background or client
        self._cluster = is_cluster(client)
        self._clock = clock
        self._prefix = prefix
        self._worker_id = worker_id
        self._limit = limit
        self._lease_ms = int(lease_ttl * 1000)
        self._beat = lease_ttl / 3
        self._ids = itertools.count(1)
        self._index = WorkerIndex(client, prefix, worker_id, self._lease_ms)
        # An admission on a cluster whose tag set's master did not answer: until a beat names
        # the tags again, admissions do not wait on that master.
        self._naming_failed = False
        self.leases: dict[str, Lease] = {}
        self.releases = Releases(self._background, self._release_call)
        # A renewal was sent and has not come back: Redis may still run it after a release.
        self._renewal_unsettled = False
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> int | str:
        """The scripts' ARGV[1]: "" lets Redis read its own clock."""
        return "" if self._clock is None else self._clock()

    def _lease_keys(self, user_id: str) -> list[str]:
        """The user's leases and this worker's list of its leases in the user's slot."""
        return [keys.connections_key(self._prefix, user_id), self._index.list_key(user_id)]

    def _release_call(self, connection_id: str, user_id: str, keep_ms: int) -> Call:
        return Call(RELEASE, self._lease_keys(user_id), [self._now(), connection_id, user_id, keep_ms])

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="gateway-limiter")
        self.releases.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.releases.stop(_STOP_WAIT)  # a handshake the shutdown cancelled in its acquire too

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
        if tags and self._cluster and not self._naming_failed:
            try:
                await self._index.name(tags)
            except UNAVAILABLE as exc:
                # Its master is out of reach, and so out of reach of gunicorn's master too: that
                # master's failure must cost no other user an admission.
                self._naming_failed = True
                log.warning("worker tag set out of reach (%s): admitting without", type(exc).__name__)
        # The user's unconfirmed releases go first, in the same round trip (one slot, one node,
        # in this order): this admission never finds the place an abandoned acquire took.
        ahead = self.releases.ahead_of(user_id)
        calls = [call for _, call in ahead] + [acquire]
        try:
            replies = await scripts.run(self._client, calls, raise_on_error=False, first=first)
            self.releases.judge([connection_id for connection_id, _ in ahead], replies[:-1])
            if isinstance(replies[-1], Exception):
                raise replies[-1]
            if first:
                self._index.named(tags, sent)
            taken, _, now, revoked_at = replies[-1]
        except UNAVAILABLE as exc:
            # Redis may run the acquire still: its place is released (as a tombstone, which
            # that acquire will not overwrite) until Redis confirms it.
            self.releases.add(lease.connection_id, user_id, self._lease_ms)
            raise LimiterUnavailable(type(exc).__name__) from exc
        except asyncio.CancelledError:
            self.releases.add(lease.connection_id, user_id, self._lease_ms)
            raise
        if taken < 0:
            raise TokenRevoked()
        if not taken:
            return None
        lease.until, lease.revoked_at = now + self._lease_ms, revoked_at
        self.leases[lease.connection_id] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        """Give the place back; returns once Redis confirmed it, or after a second at most (it
        is sent until Redis confirms it). While a renewal is unsettled the place is left as a
        tombstone for one lease time, so that renewal cannot take it again when Redis runs it
        after this release."""
        if self.leases.pop(lease.connection_id, None) is None:
            return
        tombstone_ms = self._lease_ms if self._renewal_unsettled else 0
        await self.releases.release(lease.connection_id, lease.user_id, tombstone_ms, _RELEASE_WAIT)

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
        place was lost; then the worker's tag set. Each slot's reply counts alone (on a cluster, a
        dead master holds back only its own users'); the first error is raised after the rest."""
        leases = list(self.leases.values())
        if not leases:
            return
        chunks, calls = self._renew_calls(leases)
        self._renewal_unsettled = True
        results = await scripts.run_apart(self._background, calls)
        errors = [result for result in results if isinstance(result, Exception)]
        self._renewal_unsettled = bool(errors)
        for chunk, result in zip(chunks, results, strict=True):
            if not isinstance(result, Exception):
                self._renewed(chunk, *result)
        await self._name_held()  # even when a slot failed: the others' leases stay findable
        if errors:
            raise errors[0]

    def _renewed(self, chunk: list[Lease], now: int, lost_ids: list[bytes], revoked_ids: list[bytes]) -> None:
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

    async def _name_held(self) -> None:
        """The worker's tag set, which Redis may have lost with the rest (or, on a cluster,
        whose master admissions stopped waiting for)."""
        tags = {self._index.tag(lease.user_id) for lease in self.leases.values()}
        if tags:
            await self._index.name(tags, self._background)
        self._naming_failed = False

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat)
            try:
                await self.renew()
            except UNAVAILABLE as exc:
                log.warning("lease renewal failed (%s); retrying next beat", type(exc).__name__)
