"""What keeps a worker's leases alive: one key per worker and holder tag, not one deadline per lease.

Every beat, one script call per holder tag the worker holds leases under (one on a single Redis,
one per slot on a Redis Cluster), pipelined: ``lua/beat.lua`` extends the worker's key there, the
user hashes due for it (each once per half of its life), and reads what scripts ended of the
worker's leases while it was not told. When the key was gone (Redis lost its data, or it lapsed
while the worker could not reach Redis), the worker re-asserts every lease it holds under that
tag (``lua/reassert.lua``): the only call whose cost grows with leases, and it runs only then.
docs/limits.md has the model, its bounds and its reasoning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import keys
from gateway.leases.worker_index import WorkerIndex
from gateway.topology import scripts
from gateway.topology.modes import AsyncClient
from gateway.topology.scripts import Call, LuaScript

log = logging.getLogger("gateway.limiter")

# One re-assertion call covers this many leases; as many calls as needed go in one pipeline.
_REASSERT_CHUNK = 500
# A beat extends this many user hashes per tag at most; the rest wait for the next beat (they
# are due at half their life, so a few beats late costs nothing).
_EXTEND_CHUNK = 1000

BEAT = LuaScript.load("beat.lua")
REASSERT = LuaScript.load("reassert.lua")


class Held(Protocol):
    """A lease as the keeper sees it (gateway/leases/limiter.py ``Lease``)."""

    user_id: str
    connection_id: str
    tag: str
    extend_at: float

    @property
    def member(self) -> str: ...

    def lost(self) -> None: ...

    def revoked(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Terms:
    prefix: str
    limit: int
    lease_ms: int
    # How long a user's hash lives from each extension; extended at half of it.
    hold_ms: int


class Keeper:
    def __init__(
        self,
        client: AsyncClient,
        index: WorkerIndex,
        terms: Terms,
        leases: dict[str, Any],
        now: Callable[[], int | str],
    ) -> None:
        self._client = client
        self._now = now
        self._index = index
        self._terms = terms
        self._leases: dict[str, Held] = leases
        # Tag -> how many leases this worker holds under it.
        self.held: dict[str, int] = {}
        # Tag -> until when (monotonic) the worker's key there cannot have lapsed: the send time
        # of the last call that found it (or made it) plus a lease time.
        self._alive_until: dict[str, float] = {}
        # Tag -> when (monotonic) a reply first showed the worker's key there (it existed then),
        # and how many acquires said they created it since: a key has one creator, so a second
        # means it was lost in between, whatever order the replies came back in.
        self._seen_at: dict[str, float] = {}
        self._created: dict[str, int] = {}
        # Tags whose key was found gone -> "1" if it cannot have lapsed then (Redis lost it).
        self.lost_keys: dict[str, str] = {}
        # A re-assertion was sent and has not come back: Redis may still run it after a release.
        self.unsettled = False

    def took(self, lease: Held, sent: float, created: bool) -> None:
        """An admission took ``lease`` (sent at ``sent``, monotonic); ``created``: the worker's
        key under its tag did not exist before it.

        A created key means the others' key was gone only if a reply had shown it before this
        call was sent: acquires sent together (a burst after a Redis pause) may come back in
        another order than Redis ran them, and the first one Redis ran created the key."""
        tag = lease.tag
        seen_at = self._seen_at.get(tag)
        shown_before = seen_at is not None and seen_at <= sent
        if created and self.held.get(tag) and (shown_before or self._created.get(tag, 0)):
            self._found_gone(tag, sent)  # its other leases there went with it
        else:
            self._alive_until[tag] = sent + self._terms.lease_ms / 1000
        if seen_at is None:
            self._seen_at[tag] = time.monotonic()
        self._created[tag] = self._created.get(tag, 0) + created
        self.held[tag] = self.held.get(tag, 0) + 1
        lease.extend_at = sent + self._terms.hold_ms / 2000

    def gave_back(self, lease: Held) -> None:
        left = self.held.get(lease.tag, 0) - 1
        if left > 0:
            self.held[lease.tag] = left
        else:
            self.held.pop(lease.tag, None)
            self._alive_until.pop(lease.tag, None)
            self._seen_at.pop(lease.tag, None)
            self._created.pop(lease.tag, None)

    def _found_gone(self, tag: str, found_at: float) -> None:
        if self.lost_keys.get(tag) == "":
            return  # it may have lapsed: a later reply must not make it "lost by Redis"
        self.lost_keys[tag] = "1" if found_at < self._alive_until.get(tag, 0.0) else ""

    async def beat(self) -> list[Exception]:
        """Keep every tag's leases alive; re-assert those whose key was gone. Returns the errors
        (each tag's reply counts alone: on a cluster, a dead master holds back only its own)."""
        tags = list(self.held)
        if not tags:
            self.lost_keys.clear()  # nothing held: nothing to take back
            return []
        sent = time.monotonic()
        due: dict[str, dict[str, list[Held]]] = {}
        for lease in self._leases.values():
            if lease.extend_at <= sent:
                due.setdefault(lease.tag, {}).setdefault(lease.user_id, []).append(lease)
        calls, extending = [], []
        for tag in tags:
            users = list(due.get(tag, {}).items())[:_EXTEND_CHUNK]
            hashes = [keys.connections_key(self._terms.prefix, user) for user, _ in users]
            keys_ = [self._index.list_key(tag), self._index.ended_key(tag), *hashes]
            calls.append(Call(BEAT, keys_, [self._terms.lease_ms, self._terms.hold_ms]))
            extending.append([lease for _, leases in users for lease in leases])
        results = await scripts.run_apart(self._client, calls)
        errors = [result for result in results if isinstance(result, Exception)]
        for tag, extended, result in zip(tags, extending, results, strict=True):
            if not isinstance(result, Exception):
                self._beaten(tag, extended, sent, *result)
        if self.lost_keys:
            errors += await self.reassert()
        return errors

    def _beaten(
        self, tag: str, extended: list[Held], sent: float, alive: int, missing: int, ended: list[bytes]
    ) -> None:
        if not alive or missing:
            self._found_gone(tag, sent)
        if alive:
            self._alive_until[tag] = sent + self._terms.lease_ms / 1000
            for lease in extended:
                lease.extend_at = sent + self._terms.hold_ms / 2000
        for raw_id, why in zip(ended[::2], ended[1::2], strict=True):
            # Still held: its connection ends, and its release takes the tombstone away.
            ended_lease = self._leases.get(raw_id.decode())
            if ended_lease is not None:
                _end(ended_lease, lost=why == b"lost")

    async def reassert(self) -> list[Exception]:
        """Take every lease back under the tags whose key was gone (lua/reassert.lua)."""
        lost_keys = dict(self.lost_keys)
        by_tag: dict[str, list[Held]] = {}
        for lease in self._leases.values():
            if lease.tag in lost_keys:
                by_tag.setdefault(lease.tag, []).append(lease)
        for tag in set(lost_keys) - set(by_tag):
            del self.lost_keys[tag]  # nothing held there any more
        chunks, calls = self._reassert_calls(by_tag, lost_keys)
        if not calls:
            return []
        log.warning(
            "the worker's key was gone under %d tags: re-asserting %d leases",
            len(by_tag),
            sum(map(len, chunks)),
        )
        sent = time.monotonic()
        self.unsettled = True
        results = await scripts.run_apart(self._client, calls)
        self.unsettled = any(isinstance(result, Exception) for result in results)
        failed = {
            chunk[0].tag
            for chunk, result in zip(chunks, results, strict=True)
            if isinstance(result, Exception)
        }
        for chunk, result in zip(chunks, results, strict=True):
            if not isinstance(result, Exception):
                self._reasserted(chunk, sent, *result)
        for tag in by_tag.keys() - failed:
            self.lost_keys.pop(tag, None)
            self._alive_until[tag] = sent + self._terms.lease_ms / 1000
            if tag in self.held:
                # The re-assertion made the key anew: an acquire that ran before it and says it
                # created the key, its reply read after this one, found nothing gone.
                self._seen_at[tag] = time.monotonic()
                self._created[tag] = 0
        return [result for result in results if isinstance(result, Exception)]

    def _reassert_calls(
        self, by_tag: dict[str, list[Held]], lost_keys: dict[str, str]
    ) -> tuple[list[list[Held]], list[Call]]:
        terms = self._terms
        chunks: list[list[Held]] = []
        calls: list[Call] = []
        for tag, leases in by_tag.items():
            for i in range(0, len(leases), _REASSERT_CHUNK):
                chunk = leases[i : i + _REASSERT_CHUNK]
                user_keys = [
                    key
                    for user in (lease.user_id for lease in chunk)
                    for key in (
                        keys.connections_key(terms.prefix, user),
                        keys.recovery_key(terms.prefix, user),
                    )
                ]
                args = [self._now(), terms.limit, terms.lease_ms, lost_keys[tag], terms.hold_ms, tag]
                chunks.append(chunk)
                calls.append(
                    Call(REASSERT, [self._index.list_key(tag), *user_keys], [*args, *_members(chunk)])
                )
        return chunks, calls

    def _reasserted(
        self, chunk: list[Held], sent: float, now: int, lost_ids: list[bytes], revoked_ids: list[bytes]
    ) -> None:
        for lease in chunk:
            lease.extend_at = sent + self._terms.hold_ms / 2000
        for raws, lost in ((lost_ids, True), (revoked_ids, False)):
            for raw in raws:
                # Ids of leases released while this call was on its way are no longer held.
                ended = self._leases.pop(raw.decode(), None)
                if ended is not None:
                    self.gave_back(ended)  # the script took it off the worker's list
                    _end(ended, lost)


def _end(lease: Held, lost: bool) -> None:
    """A script ended the lease: its place was lost, the user at the limit (4029), or a disconnect
    this worker missed freed it (4003)."""
    if lost:
        log.warning("a place was lost and the user is at the limit: closing that connection")
        lease.lost()
    else:
        log.warning("a disconnect's command missed this worker: closing that connection now")
        lease.revoked()


def _members(leases: Iterable[Held]) -> list[str]:
    return [lease.member for lease in leases]
