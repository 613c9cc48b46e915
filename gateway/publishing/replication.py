"""Script calls confirmed by replicas: ``WAIT`` in the same round trip, on the connection that ran them.

Redis replicates asynchronously: a master answers a write before any replica has it, and a failover
promotes a replica that may lack it. ``WAIT n timeout`` blocks one connection until ``n`` replicas
have acknowledged every write that connection sent before it, or the timeout passes, and answers how
many did. So it must follow the writes on the same connection: each node gets one pipeline,
``[EVALSHA ..., WAIT]``, through a plain client of that node (on a cluster, the master that owns the
calls' slots as the client's slot map says), which sends a pipeline on one connection and follows
no redirection. A call that did not run in such a pipeline (a node it could not connect to, a slot
that moved) is run again through ``scripts`` as usual and counts as acknowledged by no replica: its
WAIT, if any, covered another connection. A connection lost once the pipeline was sent (a reply
cut off, a timeout while WAIT waits) leaves its calls run or not: the error is raised, as a plain
publish raises it, never run twice. Scripts missing on a node are loaded and their calls sent in a
second pipeline with its own WAIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.topology import scripts
from gateway.topology.modes import AsyncClient, SyncClient
from gateway.topology.scripts import Call


class NotReplicated(Exception):
    """Done, but fewer replicas than asked acknowledged it within the timeout, so a failover now
    may lose it. ``results``: what each call answered (a publish's ``Published``, a disconnect's
    count); ``acknowledged``: how many replicas acknowledged each."""

    def __init__(self, results: list[Any], acknowledged: list[int], wanted: int) -> None:
        super().__init__(f"acknowledged by {min(acknowledged)} replicas of the {wanted} asked")
        self.results = results
        self.acknowledged = acknowledged


def confirmed(results: list[Any], acknowledged: list[int], wanted: int) -> list[Any]:
    """``results``, or NotReplicated if any of them lacks its replicas."""
    if any(n < wanted for n in acknowledged):
        raise NotReplicated(results, acknowledged, wanted)
    return results


@dataclass(frozen=True, slots=True)
class Wait:
    """``replicas`` must acknowledge within ``timeout_ms`` (WAIT's own arguments)."""

    replicas: int
    timeout_ms: int


@dataclass(slots=True)
class _Outcome:
    replies: list[Any]
    acks: list[int]
    # Calls to send again through the ordinary path: not run in a pipeline that WAIT covered.
    again: list[int] = field(default_factory=list)


def _by_node(client: Any, calls: Sequence[Call], outcome: _Outcome) -> list[tuple[Any, list[int]]]:
    """(node, the indices of its calls) per node; one (None, all) for one Redis or Sentinel. A call
    of a slot the client knows no master for (a failover under way) goes the ordinary way."""
    if not isinstance(client, redis.RedisCluster | aioredis.RedisCluster):
        return [(None, list(range(len(calls))))]
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, call in enumerate(calls):
        try:
            node: Any = client.get_node_from_key(call.keys[0])
        except RedisError:
            outcome.again.append(i)
            continue
        groups.setdefault(node.name, (node, []))[1].append(i)
    return list(groups.values())


def _queue(pipeline: Any, calls: Sequence[Call], indices: list[int], wait: Wait) -> None:
    for script, keys, args in (calls[i] for i in indices):
        pipeline.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    pipeline.execute_command("WAIT", wait.replicas, wait.timeout_ms)


def _settle(outcome: _Outcome, indices: list[int], replies: Sequence[Any]) -> list[int]:
    """Record one pipeline's replies (its calls', then WAIT's); the indices NOSCRIPT refused."""
    acked = replies[-1]
    missing = []
    for i, reply in zip(indices, replies[:-1], strict=True):
        if isinstance(reply, NoScriptError):
            missing.append(i)
        elif isinstance(reply, RedisError):
            outcome.again.append(i)
        else:
            outcome.replies[i] = reply
            outcome.acks[i] = acked if isinstance(acked, int) else 0
    return missing


def _sync_node_client(client: Any, node: Any) -> Any:
    return client if node is None else client.get_redis_connection(node)


def run_sync(client: SyncClient, calls: Sequence[Call], wait: Wait) -> tuple[list[Any], list[int]]:
    """The replies of ``calls`` and, per call, how many replicas acknowledged it; errors raised."""
    outcome = _Outcome([None] * len(calls), [0] * len(calls))
    for node, indices in _by_node(client, calls, outcome):
        target = _sync_node_client(client, node)
        for _ in range(2):  # the second time, after loading the scripts NOSCRIPT named
            pipeline = target.pipeline(transaction=False)
            _queue(pipeline, calls, indices, wait)
            try:
                replies = pipeline.execute(raise_on_error=False)
            except RedisError as error:
                if not scripts.never_sent(error):
                    raise
                outcome.again.extend(indices)
                break
            missing = _settle(outcome, indices, replies)
            for script in {calls[i].script for i in missing}:
                target.script_load(script.text)
            indices = missing
            if not indices:
                break
        outcome.again.extend(indices)
    _again_sync(client, calls, outcome)
    return outcome.replies, outcome.acks


def _again_sync(client: SyncClient, calls: Sequence[Call], outcome: _Outcome) -> None:
    again = sorted(set(outcome.again))
    for i, reply in zip(again, scripts.run_sync(client, [calls[i] for i in again]), strict=True):
        outcome.replies[i] = reply


class NodeClients:
    """asyncio: a plain client per cluster node, made on first use (redis-py's asyncio cluster has
    no public one), closed with ``aclose``."""

    def __init__(self) -> None:
        self._clients: dict[str, aioredis.Redis] = {}

    def of(self, client: AsyncClient, node: Any) -> Any:
        if node is None:
            return client
        known = self._clients.get(node.name)
        if known is None:
            pool = aioredis.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            known = self._clients[node.name] = aioredis.Redis.from_pool(pool)  # closes its pool
        return known

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


async def run(
    client: AsyncClient, calls: Sequence[Call], wait: Wait, nodes: NodeClients
) -> tuple[list[Any], list[int]]:
    """``run_sync`` for an asyncio client; the nodes' pipelines go at once."""
    outcome = _Outcome([None] * len(calls), [0] * len(calls))

    async def on_node(node: Any, indices: list[int]) -> None:
        target = nodes.of(client, node)
        for _ in range(2):
            try:
                async with target.pipeline(transaction=False) as pipeline:
                    _queue(pipeline, calls, indices, wait)
                    replies = await pipeline.execute(raise_on_error=False)
            except RedisError as error:
                if not scripts.never_sent(error):
                    raise
                outcome.again.extend(indices)
                return
            missing = _settle(outcome, indices, replies)
            for script in {calls[i].script for i in missing}:
                await target.script_load(script.text)
            indices = missing
            if not indices:
                return
        outcome.again.extend(indices)

    if isinstance(client, aioredis.RedisCluster):
        await client.initialize()  # the slot map, before the first command would load it
    await asyncio.gather(*(on_node(node, indices) for node, indices in _by_node(client, calls, outcome)))
    again = sorted(set(outcome.again))
    for i, reply in zip(again, await scripts.run(client, [calls[i] for i in again]), strict=True):
        outcome.replies[i] = reply
    return outcome.replies, outcome.acks
