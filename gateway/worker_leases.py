"""What gunicorn's master does with a dead worker's leases (``child_exit`` in gunicorn.conf.py):
release them at once rather than let them lapse, from the lists the worker kept in Redis
(gateway/limiter.py writes them).
"""

from __future__ import annotations

from typing import Any

from gateway import keys
from gateway.redis_topology import SyncClient


def release_worker(client: SyncClient, prefix: str, worker_id: str) -> int:
    """Release every lease a dead worker held; gunicorn's master calls it in ``child_exit``.
    Three round trips (per node on a cluster): the tags, the lists, the releases."""
    tags_key = keys.worker_tags_key(prefix, worker_id)
    tags: set[bytes] = client.smembers(tags_key)  # type: ignore[assignment]
    # A tag is a channel, with no space; a worker of the previous release kept its leases,
    # "connection-id user", in this same set.
    listed = {tag for tag in tags if b" " in tag}
    index_keys = [keys.worker_leases_key(worker_id, tag.decode()) for tag in tags - listed]
    pipe: Any = client.pipeline(transaction=False)
    for index_key in index_keys:
        pipe.smembers(index_key)
    lists: list[set[bytes]] = [listed, *(pipe.execute() if index_keys else [])]
    pipe = client.pipeline(transaction=False)
    released = 0
    for members in lists:
        for member in members:
            connection_id, _, user_id = member.decode().partition(" ")
            pipe.hdel(keys.connections_key(prefix, user_id), connection_id)
            released += 1
    for key in [*index_keys, tags_key]:
        pipe.delete(key)
    pipe.execute()
    return released
