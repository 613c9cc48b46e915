"""What gunicorn's master does with a dead worker's leases (``child_exit`` and ``on_exit`` in
gunicorn.conf.py): release them at once rather than let them lapse, from the lists the worker kept
in Redis (gateway/leases/limiter.py writes them).

The master never waits on Redis for it: a ``LeaseReleaser`` thread takes every dead worker queued
so far and releases them all in one batch, three round trips whatever their number. A stop gives
it a few seconds (``finish``); what Redis has not answered by then is left to lapse, with one log
line. Without that, a hung Redis cost gunicorn's stop one socket timeout per worker, in turn, and
an orchestrator killed the replica at its grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway import keys
from gateway.topology.modes import UNAVAILABLE, SyncClient

# Between tries while Redis does not answer (the master is running on).
_RETRY_AFTER = 1.0


def release_workers(client: SyncClient, prefix: str, worker_ids: Iterable[str]) -> int:
    """Release every lease the dead workers held, in three round trips (per node on a cluster):
    the tags, the lists, the releases. Returns how many were released."""
    ids = list(worker_ids)
    tags_keys = [keys.worker_tags_key(prefix, worker_id) for worker_id in ids]
    pipe: Any = client.pipeline(transaction=False)
    for tags_key in tags_keys:
        pipe.smembers(tags_key)
    tag_sets: list[set[bytes]] = pipe.execute() if ids else []
    # A tag is a channel, with no space; a worker of the previous release kept its leases,
    # "connection-id user", in this same set.
    listed = [tag for tags in tag_sets for tag in tags if b" " in tag]
    index_keys = [
        keys.worker_leases_key(worker_id, tag.decode())
        for worker_id, tags in zip(ids, tag_sets, strict=True)
        for tag in tags
        if b" " not in tag
    ]
    pipe = client.pipeline(transaction=False)
    for index_key in index_keys:
        pipe.smembers(index_key)
    lists: list[set[bytes]] = [set(listed), *(pipe.execute() if index_keys else [])]
    pipe = client.pipeline(transaction=False)
    released = 0
    for members in lists:
        for member in members:
            connection_id, _, user_id = member.decode().partition(" ")
            pipe.hdel(keys.connections_key(prefix, user_id), connection_id)
            released += 1
    for key in [*index_keys, *tags_keys]:
        pipe.delete(key)
    if released or index_keys or tags_keys:
        pipe.execute()
    return released


def release_worker(client: SyncClient, prefix: str, worker_id: str) -> int:
    """Release every lease one dead worker held."""
    return release_workers(client, prefix, [worker_id])


class LeaseReleaser:
    """The master's: ``add`` queues a dead worker and returns at once; one thread releases what is
    queued, in batches. While Redis does not answer it retries, and gives a worker up (one line)
    once its leases would have lapsed anyway. ``finish`` bounds the wait at the master's exit."""

    def __init__(
        self,
        connect: Callable[[], SyncClient],
        prefix: str,
        lease_ttl: float,
        log: logging.Logger,
    ) -> None:
        self._connect = connect
        self._prefix = prefix
        self._lease_ttl = lease_ttl
        self._log = log
        self._wake = threading.Condition()
        # Worker id -> (pid, when it was queued): the pid names it in log lines.
        self._pending: dict[str, tuple[int, float]] = {}
        self._thread: threading.Thread | None = None
        self._finishing = False

    def add(self, worker_id: str, pid: int) -> None:
        with self._wake:
            self._pending[worker_id] = (pid, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                # A daemon: a thread stuck on Redis never holds the master's exit up.
                self._thread = threading.Thread(target=self._run, name="lease-releaser", daemon=True)
                self._thread.start()

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for what is queued; leave the rest to lapse, with one line."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._finishing = True
            self._wake.notify_all()
            while self._pending and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            given_up, self._pending = self._pending, {}
        if given_up:
            self._give_up(given_up, f"Redis did not answer in the {timeout:g}s a stop waits")

    def _run(self) -> None:
        while True:
            with self._wake:
                batch = dict(self._pending)
                if not batch:
                    self._thread = None
                    self._wake.notify_all()
                    return
            try:
                with self._connect() as client:
                    released = release_workers(client, self._prefix, batch)
            except UNAVAILABLE as exc:
                if self._failed(batch, type(exc).__name__):
                    continue
                return
            with self._wake:
                for worker_id in batch:
                    self._pending.pop(worker_id, None)
                self._wake.notify_all()
            if released:
                self._log.info("released %d leases of workers %s", released, _pids(batch))

    def _failed(self, batch: dict[str, tuple[int, float]], reason: str) -> bool:
        """Keep the batch for the next try, unless its leases have lapsed by now; after a stop's
        try there is none (False: the thread ends, and ``finish`` says what is left)."""
        lapsed_before = time.monotonic() - self._lease_ttl
        with self._wake:
            if self._finishing:
                self._thread = None
                self._wake.notify_all()
                return False
            lapsed = {
                worker_id: entry
                for worker_id, entry in batch.items()
                if entry[1] < lapsed_before and self._pending.pop(worker_id, None) is not None
            }
            if not self._finishing and self._pending:
                self._wake.wait(_RETRY_AFTER)
        if lapsed:
            self._give_up(lapsed, f"Redis did not answer for the lease time ({reason})")
        return True

    def _give_up(self, workers: dict[str, tuple[int, float]], why: str) -> None:
        self._log.warning(
            "could not release the leases of %d workers (%s): %s; they lapse on their own",
            len(workers),
            _pids(workers),
            why,
        )


def _pids(workers: dict[str, tuple[int, float]]) -> str:
    return ", ".join(str(pid) for pid, _ in workers.values())
