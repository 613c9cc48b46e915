"""The cluster-wide per-user connection limit: leases in the Redis hash ``{prefix:user}:conns``.

Each connection holds a lease: a field named by its connection id, whose value says it is held
while its worker lives. A worker keeps one key alive per holder tag (one on a single Redis, one
per slot it uses on a Redis Cluster: gateway/leases/keeper.py), so keeping places costs Redis work
per worker, not per socket; a killed worker's or host's places stop counting once that key
lapses. gunicorn's master also releases a dead worker's leases at once
(gateway/leases/dead_workers.py), from the lists the worker keeps of them, which are those keys
(gateway/leases/worker_index.py; on a Redis Cluster, whose master of the worker's tag set may be
down, an admission does not wait for it: the beat names the tags again). docs/limits.md has the
model, its bounds and the rolling upgrade from per-lease deadlines.

What it gives back and Redis did not confirm is sent again until Redis does
(gateway/leases/releases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import keys
from gateway.leases.keeper import Keeper, Terms
from gateway.leases.releases import Releases
from gateway.leases.revocation import TokenRevoked, issued_ms
from gateway.leases.worker_index import WorkerIndex
from gateway.tasks import cancel_and_wait
from gateway.topology import scripts
from gateway.topology.modes import UNAVAILABLE, AsyncClient, is_cluster
from gateway.topology.scripts import Call, LuaScript

log = logging.getLogger("gateway.limiter")

# A user's hash lives at least this long from each extension (and four lease times): extended
# at half of it, it outlives the worker's keys whenever the worker cannot reach Redis.
_HOLD_MIN = 3600.0
# How long a closing connection waits for Redis to confirm its release before its close frame
# goes out anyway (the release goes on behind it).
_RELEASE_WAIT = 1.0
# At the limit with no release of the user on its way from this worker, an admission asks again
# after these pauses before it refuses: a release from another worker or host may be on its way
# (a page reload whose new socket reached another worker as the old one's close was answered).
# A quarter of a second, three scripts, only for an admission that would otherwise be refused.
_AT_LIMIT_PAUSES = (0.025, 0.075, 0.15)
# At shutdown, how long releases still unconfirmed get.
_STOP_WAIT = 1.0

ACQUIRE = LuaScript.load("acquire.lua")
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
    # The holder tag of the user's slot (gateway/keys.py holder_tag).
    tag: str = ""
    # When (monotonic) the user's hash is due to be extended (gateway/leases/keeper.py).
    extend_at: float = 0.0
    # The user's last disconnect (ms) as admission saw it, 0 if none: a refresh's token must be newer.
    revoked_at: int = 0

    @property
    def member(self) -> str:
        return f"{self.connection_id} {self.user_id}"

    def lost(self) -> None:
        self.on_lost()

    def revoked(self) -> None:
        if self.on_revoked is not None:
            self.on_revoked()


class Limiter:
    """``client``: one Redis, a Redis Cluster or Sentinel's master (gateway/topology/modes.py);
    ``background``, if given, a client of its own for beats and releases (gateway/redis_wiring.py
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
        self._hold_ms = int(max(_HOLD_MIN, 4 * lease_ttl) * 1000)
        # An admission on a cluster whose tag set's master did not answer: until a beat names
        # the tags again, admissions do not wait on that master.
        self._naming_failed = False
        self.leases: dict[str, Lease] = {}
        self.releases = Releases(self._background, self._release_call)
        terms = Terms(prefix, limit, self._lease_ms, self._hold_ms)
        self._keeper = Keeper(self._background, self._index, terms, self.leases, self._now)
        # Set when an admission found the worker's key gone: the beat re-asserts at once.
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> int | str:
        """The scripts' ARGV[1]: "" lets Redis read its own clock."""
        return "" if self._clock is None else self._clock()

    def _lease_keys(self, user_id: str) -> list[str]:
        """The user's leases and this worker's list of its leases in the user's slot."""
        return [keys.connections_key(self._prefix, user_id), self._index.list_key(self._index.tag(user_id))]

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

        ``on_lost``: the place was lost and the user is at the limit (the worker could not reach
        Redis for a lease time), or it was ended as over the limit after Redis lost its data
        (4029); ``on_revoked``: a disconnect freed the place and the command did not reach this
        worker (found at the next beat).

        At the limit while a release of the same user is on its way from this worker (a client
        that dropped its socket and reconnects at once), it waits for that release, a second at
        most, and asks again: a refusal the release would have spared is never sent. With none
        on its way here, it asks again after ``_AT_LIMIT_PAUSES``: the release may be on its way
        from another worker, whose close answer reached the client before its release reached
        Redis.

        Redis out of reach raises LimiterUnavailable: admission fails closed.
        """
        lease = await self._acquire(user_id, on_lost, on_revoked, issued_at)
        if lease is None and await self.releases.settled(user_id, _RELEASE_WAIT):
            lease = await self._acquire(user_id, on_lost, on_revoked, issued_at)
        for pause in _AT_LIMIT_PAUSES:
            if lease is not None:
                break
            await asyncio.sleep(pause)
            lease = await self._acquire(user_id, on_lost, on_revoked, issued_at)
        return lease

    async def _acquire(
        self,
        user_id: str,
        on_lost: Callable[[], None],
        on_revoked: Callable[[], None] | None,
        issued_at: float | None,
    ) -> Lease | None:
        tag = self._index.tag(user_id)
        lease = Lease(user_id, f"{self._worker_id}:{next(self._ids)}", on_lost, on_revoked, tag)
        args = [
            self._now(),
            lease.connection_id,
            user_id,
            self._limit,
            self._lease_ms,
            issued_ms(issued_at),
            self._hold_ms,
            tag,
        ]
        acquire = Call(ACQUIRE, [*self._lease_keys(user_id), keys.revoked_key(self._prefix, user_id)], args)
        sent = time.monotonic()
        tags = self._index.unnamed(tag, self._keeper.held.keys(), sent)
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
            taken, _, _, revoked_at, created = replies[-1]
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
        lease.revoked_at = revoked_at
        self.leases[lease.connection_id] = lease
        self._keeper.took(lease, sent, bool(created))
        if self._keeper.lost_keys:
            self._wake.set()
        return lease

    async def release(self, lease: Lease) -> None:
        """Give the place back; returns once Redis confirmed it, or after a second at most (it
        is sent until Redis confirms it). While a re-assertion is unsettled the place is left as
        a tombstone for one lease time, so that call cannot take it again when Redis runs it
        after this release."""
        if self.leases.pop(lease.connection_id, None) is None:
            return
        self._keeper.gave_back(lease)
        tombstone_ms = self._lease_ms if self._keeper.unsettled else 0
        await self.releases.release(lease.connection_id, lease.user_id, tombstone_ms, _RELEASE_WAIT)

    async def beat(self) -> None:
        """Keep every lease alive, a few commands per holder tag; re-assert the leases whose
        worker key was gone; then the worker's tag set. Each tag's reply counts alone (on a
        cluster, a dead master holds back only its own users'); the first error is raised after
        the rest."""
        errors = await self._keeper.beat()
        await self._name_held()  # even when a slot failed: the others' leases stay findable
        if errors:
            raise errors[0]

    async def _name_held(self) -> None:
        """The worker's tag set, which Redis may have lost with the rest (or, on a cluster,
        whose master admissions stopped waiting for)."""
        tags = set(self._keeper.held)
        if tags:
            await self._index.name(tags, self._background)
        self._naming_failed = False

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._beat):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.beat()
            except UNAVAILABLE as exc:
                log.warning("lease beat failed (%s); retrying next beat", type(exc).__name__)
