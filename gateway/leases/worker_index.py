"""Where a worker lists its leases, so gunicorn's master can release them when the worker dies
(gateway/leases/dead_workers.py reads what this writes), and whose life is their life.

Per holder tag (gateway/keys.py ``holder_tag``: on a Redis Cluster one per slot, else one), the
worker lists its leases in ``{tag}:worker:{worker id}``: the lease scripts write the list together
with the user's leases, and while it exists the leases it lists are alive (docs/limits.md). The
tags themselves go in the set ``{prefix}:worker:{worker id}``, added before the first lease of a
slot is taken and again every beat; the set expires with the leases, so an idle or dead worker's
set lapses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from gateway import keys
from gateway.topology.modes import AsyncClient, is_cluster

Command = tuple[Any, ...]


class WorkerIndex:
    def __init__(self, client: AsyncClient, prefix: str, worker_id: str, lease_ms: int) -> None:
        self._client = client
        self._prefix = prefix
        self._worker_id = worker_id
        self._lease_ms = lease_ms
        self._tags_key = keys.worker_tags_key(prefix, worker_id)
        self._cluster = is_cluster(client)
        if self._cluster:
            keys.slot_tag(prefix, 0)  # the table of slot tags, made at start rather than at an admission
        # The tags Redis has confirmed in the worker's tag set.
        self._announced: set[str] = set()
        # Until then (monotonic) the tag set lives: an idle worker stops renewing it, and it lapses.
        self._announced_until = 0.0

    def tag(self, user_id: str) -> str:
        """The holder tag of the user's slot."""
        return keys.holder_tag(self._prefix, user_id, self._cluster)

    def list_key(self, tag: str) -> str:
        """This worker's list of its leases under ``tag``: while it lives, so do they."""
        return keys.worker_leases_key(self._worker_id, tag)

    def ended_key(self, tag: str) -> str:
        """What scripts ended of this worker's leases under ``tag`` while it was not told."""
        return keys.worker_ended_key(self._worker_id, tag)

    def unnamed(self, tag: str, held: Iterable[str], now: float) -> set[str]:
        """The tags to add before a lease under ``tag`` is taken (``held``: the tags this worker
        holds leases under): ``tag`` if new, every one held once the set may have lapsed."""
        if now >= self._announced_until:
            return {tag, *held}
        return set() if tag in self._announced else {tag}  # only a new slot: O(1)

    def naming(self, tags: set[str]) -> list[Command]:
        """The commands that add tags to the worker's tag set: before the first lease of their
        slot (so the master finds every lease the worker may hold) and every beat (Redis may
        have lost the set)."""
        return [("SADD", self._tags_key, *tags), ("PEXPIRE", self._tags_key, self._lease_ms)]

    def named(self, tags: set[str], sent: float) -> None:
        """Redis confirmed ``tags``, sent at ``sent`` (monotonic)."""
        # Once it may have lapsed, only these are known in it; half a lease time is a safe margin.
        # In place: an admission must not copy every tag.
        self._announced = self._announced if sent < self._announced_until else set()
        self._announced |= tags
        self._announced_until = sent + self._lease_ms / 2000

    async def name(self, tags: set[str], client: AsyncClient | None = None) -> None:
        """Add ``tags`` in a round trip of their own (on a cluster the set lives on another node),
        through ``client`` if given (the limiter's background client)."""
        sent = time.monotonic()
        async with (client or self._client).pipeline(transaction=False) as pipe:
            for command in self.naming(tags):
                pipe.execute_command(*command)
            await pipe.execute()
        self.named(tags, sent)
