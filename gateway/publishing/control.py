"""The backends' side of control, shared by ``Publisher`` and ``AsyncPublisher``: checks and script calls.

``disconnect`` is one script on the user's lease hash: it frees the live places of the connections
it names (tombstones, so nothing counts them any more), stamps the user's revocation (tokens issued
before it are refused: ``gateway/leases/revocation.py``) and publishes ``\\xffC disconnect [id]`` on the
user's channel in the same step; the workers holding the user close those sockets with 4003
(``gateway/control.py``). ``online`` is one read-only script per user, pipelined: one round trip
for many users, each script on one user's key (ready for Redis Cluster, where keys of different
users live on different nodes).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway import keys, wire
from gateway.topology.scripts import Call, LuaScript

DISCONNECT = "disconnect"
# One online() call answers at most this many users: a bounded pipeline, a bounded reply.
MAX_ONLINE_USERS = 1000
# How long a disconnected connection's place stays a tombstone, and its worker's note of it:
# longer than any beat (WEBSOCKET_LEASE_TTL is at most 3600 s), so a worker that missed the
# command finds it at its next beat. The socket's own release removes it as soon as it closes.
_TOMBSTONE_MS = 3_600_000

DISCONNECT_SCRIPT = LuaScript.load("disconnect.lua")
ONLINE_SCRIPT = LuaScript.load("online.lua")


def checked_user(user_id: str) -> str:
    return keys.checked_user_id(user_id)


def checked_connection_id(connection_id: str) -> str:
    """A lease's id as ``python -m gateway connections`` lists it: ``<worker id>:<sequence>``."""
    if (
        not isinstance(connection_id, str)
        or not 0 < len(connection_id) <= 256
        or not connection_id.isprintable()
        or any(c.isspace() for c in connection_id)
        or not connection_id.isascii()
    ):
        raise ValueError(f"connection id {connection_id!r}: as `python -m gateway connections USER` lists it")
    return connection_id


def disconnect_call(
    prefix: str, user_id: str, connection_id: str | None, sharded: bool, revocation_ms: int
) -> Call:
    """The disconnect script's call; ``sharded``: on a Redis Cluster (SPUBLISH); ``revocation_ms``:
    how long the user's older tokens stay refused."""
    checked_user(user_id)
    if connection_id is not None:
        checked_connection_id(connection_id)
    # Bytes, not str: redis-py would encode the 0xFF mark as UTF-8.
    message = wire.control_command(DISCONNECT, connection_id)
    channel = keys.user_channel(prefix, user_id)
    tag = keys.holder_tag(prefix, user_id, sharded)
    shard = "1" if sharded else ""
    args = ["", channel, message, connection_id or "", _TOMBSTONE_MS, shard, revocation_ms, tag]
    user_keys = [keys.connections_key(prefix, user_id), keys.revoked_key(prefix, user_id)]
    return Call(DISCONNECT_SCRIPT, user_keys, args)


def online_users(user_ids: Iterable[str]) -> list[str]:
    """The distinct users of one ``online`` call, in order, each checked."""
    if isinstance(user_ids, str):
        raise TypeError("online() takes a list of user ids, not one string")
    users = list(dict.fromkeys(user_ids))
    if len(users) > MAX_ONLINE_USERS:
        raise ValueError(f"online(): {len(users)} users in one call, at most {MAX_ONLINE_USERS}")
    for user_id in users:
        checked_user(user_id)
    return users


def online_calls(prefix: str, users: list[str], sharded: bool) -> list[Call]:
    """One read-only script call per user: each on the user's own slot; ``sharded``: on a Redis
    Cluster (the holder tags are per slot)."""
    calls = []
    for user_id in users:
        tag = keys.holder_tag(prefix, user_id, sharded)
        calls.append(Call(ONLINE_SCRIPT, [keys.connections_key(prefix, user_id)], ["", tag]))
    return calls
