"""The cluster-wide per-user connection limit: leases in the Redis hash ``{prefix}:conns:{user}``.

Each connection holds a lease (a field whose value is its deadline on the Redis clock). A worker
renews all its leases in one pipelined round trip per beat, so a killed worker's or host's places
come back once its leases lapse; gunicorn's master also releases a dead worker's leases at once,
from the set ``{prefix}:worker:{worker id}`` the worker keeps (see ``release_worker``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import keys
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.limiter")

# One renew script call covers this many connections; a beat pipelines as many calls as needed.
_RENEW_CHUNK = 500
# Admissions whose acquire may still run, to be released; past this many (a long Redis outage
# with a storm of retries) the oldest are left to lapse on their own, one lease time at most.
_MAX_UNSETTLED = 10_000


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

    @property
    def member(self) -> str:
        return f"{self.connection_id} {self.user_id}"


def load_script(name: str) -> str:
    """One of the lease scripts in gateway/lua, after the helpers they share."""
    lua = resources.files("gateway").joinpath("lua")
    return lua.joinpath("_prelude.lua").read_text() + lua.joinpath(name).read_text()


class Limiter:
    """``clock`` gives "now" in ms to the lease scripts; None (production) means the Redis server's
    clock, the one clock every host shares. Tests pass their own to move time without sleeping."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        worker_id: str,
        limit: int,
        lease_ttl: float,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._worker_key = keys.worker_leases_key(prefix, worker_id)
        self._worker_id = worker_id
        self._limit = limit
        self._lease_ms = int(lease_ttl * 1000)
        self._beat = lease_ttl / 3
        self._ids = itertools.count(1)
        self._acquire = client.register_script(load_script("acquire.lua"))
        self._renew = client.register_script(load_script("renew.lua"))
        self._release = client.register_script(load_script("release.lua"))
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

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="gateway-limiter")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.settle()  # a handshake the shutdown cancelled in its acquire
        except (RedisError, OSError) as exc:
            log.warning("unsettled admissions not released (%s); they lapse on their own", type(exc).__name__)

    async def acquire(
        self, user_id: str, on_lost: Callable[[], None], on_revoked: Callable[[], None] | None = None
    ) -> Lease | None:
        """Take a place for a new connection; None when the user is at the limit.

        ``on_lost``: the lease lapsed and the user is at the limit, or it was ended as over the
        limit after Redis lost its data (4029); ``on_revoked``: a disconnect freed the place and
        the command did not reach this worker (found at the next renewal).

        Redis out of reach raises LimiterUnavailable: admission fails closed.
        """
        lease = Lease(user_id, f"{self._worker_id}:{next(self._ids)}", on_lost, on_revoked)
        conns_key = keys.connections_key(self._prefix, user_id)
        args = [self._now(), lease.connection_id, user_id, self._limit, self._lease_ms]
        try:
            if self.unsettled:
                taken, _, now = await self._acquire_after_settling(conns_key, args)
            else:
                taken, _, now = await self._acquire(keys=[conns_key, self._worker_key], args=args)
        except (RedisError, OSError) as exc:
            self._unsettle(lease)
            raise LimiterUnavailable(type(exc).__name__) from exc
        except asyncio.CancelledError:
            self._unsettle(lease)
            raise
        if not taken:
            return None
        lease.until = now + self._lease_ms
        self.leases[lease.connection_id] = lease
        return lease

    async def _acquire_after_settling(self, conns_key: str, args: list[Any]) -> Any:
        """The unsettled releases, then the acquire, in one round trip: this worker's next
        admission of that user never finds the place an abandoned acquire took."""
        results = await self._settle_then(
            lambda pipe: self._acquire(keys=[conns_key, self._worker_key], args=args, client=pipe)
        )
        return results[-1]

    async def _settle_then(self, then: Callable[[Any], Awaitable[Any]] | None = None) -> list[Any]:
        """One pipeline: release the unsettled admissions' places, then ``then``'s command. If
        Redis does not answer, the batch stays unsettled and the error is raised."""
        batch, self.unsettled = self.unsettled, {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for connection_id, user_id in batch.items():
                    await self._release(
                        keys=[keys.connections_key(self._prefix, user_id), self._worker_key],
                        args=[self._now(), connection_id, user_id, self._lease_ms],
                        client=pipe,
                    )
                if then is not None:
                    await then(pipe)
                results: list[Any] = await pipe.execute()
        except BaseException:
            self.unsettled = {**batch, **self.unsettled}
            raise
        return results

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
        conns_key = keys.connections_key(self._prefix, lease.user_id)
        tombstone_ms = self._lease_ms if self._renewal_unsettled else 0
        try:
            await self._release(
                keys=[conns_key, self._worker_key],
                args=[self._now(), lease.connection_id, lease.user_id, tombstone_ms],
            )
        except (RedisError, OSError) as exc:
            log.warning("lease release failed (%s); it lapses on its own", type(exc).__name__)

    async def renew(self) -> None:
        """Extend every lease in one round trip; end the connections whose place was lost."""
        leases = list(self.leases.values())
        if not leases:
            return
        chunks = [leases[i : i + _RENEW_CHUNK] for i in range(0, len(leases), _RENEW_CHUNK)]
        self._renewal_unsettled = True
        now_arg = self._now()
        async with self._client.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                user_keys = [
                    key
                    for lease in chunk
                    for key in (
                        keys.connections_key(self._prefix, lease.user_id),
                        keys.recovery_key(self._prefix, lease.user_id),
                    )
                ]
                await self._renew(
                    keys=[self._worker_key, *user_keys],
                    args=[
                        now_arg,
                        self._limit,
                        self._lease_ms,
                        min(lease.until for lease in chunk),
                        *(lease.member for lease in chunk),
                    ],
                    client=pipe,
                )
            results: list[Any] = await pipe.execute()
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

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat)
            try:
                await self.settle()
            except (RedisError, OSError) as exc:
                log.warning("unsettled admissions not released (%s); retrying next beat", type(exc).__name__)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (%s); retrying next beat", type(exc).__name__)


def release_worker(client: redis.Redis, prefix: str, worker_id: str) -> int:
    """Release every lease a dead worker held; gunicorn's master calls it in ``child_exit``."""
    worker_key = keys.worker_leases_key(prefix, worker_id)
    members: set[bytes] = client.smembers(worker_key)  # type: ignore[assignment]
    with client.pipeline(transaction=False) as pipe:
        for member in members:
            connection_id, _, user_id = member.decode().partition(" ")
            pipe.hdel(keys.connections_key(prefix, user_id), connection_id)
        pipe.delete(worker_key)
        pipe.execute()
    return len(members)
