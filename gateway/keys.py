"""Every Redis channel and key name, shared by the gateway and the publisher.

A user's keys carry the user's channel as hash tag (``{ws:alice}:conns``): they share the slot of
the shard channel ``ws:alice`` on a Redis Cluster, so one script can touch them and publish to the
user. No script touches keys of two slots, in any mode.
"""

from __future__ import annotations

import functools

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


def user_channel(prefix: str, user_id: str) -> str:
    return f"{prefix}:{user_id}"


def user_slot(prefix: str, user_id: str) -> int:
    """The Redis Cluster slot of the user's channel and of every key of the user."""
    return key_slot(user_channel(prefix, user_id).encode())


# A lease's value from HELD up is HELD + the time (ms) it was taken: held while its worker's key
# lives (gateway/lua/_prelude.lua); below HELD, a deadline written by the previous release.
HELD = 2**52


def connections_key(prefix: str, user_id: str) -> str:
    """The user's leases: a hash, connection id -> its holder's mark, or a deadline written by
    the previous release, or a tombstone (docs/limits.md)."""
    return f"{{{user_channel(prefix, user_id)}}}:conns"


def holder_tag(prefix: str, user_id: str, cluster: bool) -> str:
    """The tag of the worker keys that say whether a lease of ``user_id`` is alive: on a Redis
    Cluster one per slot (a tag in the user's slot, so one script reads both), else the prefix
    (one key per worker)."""
    if not cluster:
        return prefix
    return slot_tag(prefix, user_slot(prefix, user_id))


def slot_tag(prefix: str, slot: int) -> str:
    """The first ``{prefix}:{n}`` in ``slot``: every worker names its keys in that slot alike."""
    return _slot_tags(prefix)[slot]


@functools.cache
def _slot_tags(prefix: str) -> list[str]:
    # About 150,000 CRCs (a fifth of a second), once per process in Cluster mode.
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    left, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while left:
        tag = f"{prefix}:{n}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        n += 1
    return [tag for tag in tags if tag is not None]


def recovery_key(prefix: str, user_id: str) -> str:
    """For one lease time after Redis lost its data: the user's places restored by a worker's
    re-assertion, and those ended for them as over the limit (gateway/lua/reassert.lua)."""
    return f"{{{user_channel(prefix, user_id)}}}:recovery"


def worker_leases_key(worker_id: str, tag: str) -> str:
    """The set of "connection-id user" a worker holds in one slot (``tag``: ``holder_tag``; a
    worker of the previous release used the channel of its first user there), so its master can
    release them. While it exists the worker's leases there are alive: the worker's beat keeps it."""
    return f"{{{tag}}}:worker:{worker_id}"


def worker_ended_key(worker_id: str, tag: str) -> str:
    """A worker's leases in one slot that a script ended while the worker was not told (a
    disconnect it missed: "revoked"; given way after Redis lost its data: "lost"); read each beat."""
    return f"{{{tag}}}:worker:{worker_id}:ended"


def worker_tags_key(prefix: str, worker_id: str) -> str:
    """The set of the tags of a worker's ``worker_leases_key`` sets, one per slot it holds leases in."""
    return f"{prefix}:worker:{worker_id}"


def worker_id(instance_id: str, pid: int) -> str:
    """A worker's id: its gunicorn instance (host and start) and its pid, known to the master too."""
    return f"{instance_id}-{pid}"


def control_channel(prefix: str, worker_id: str) -> str:
    # No user can own it: is_valid_user_id refuses ids in the gateway's own namespaces.
    return f"{prefix}:ctl:{worker_id}"


# Ids the gateway's own keys and channels start with (``{prefix}:ctl:...``, ``conns:``, ``worker:``).
RESERVED_USER_ID_PREFIXES = ("conns:", "ctl:", "worker:")


def user_id_problem(user_id: str) -> str | None:
    """Why a user id cannot be one (None: it can). User ids become channel names and hash tags:
    printable, bounded, out of our namespace and free of braces (a brace would move the user's
    keys to another slot). The gateway refuses such a token's ``sub``; the publisher, the CLI and
    ``token`` say this reason."""
    if not 0 < len(user_id) <= 256:
        return f"1 to 256 characters, got {len(user_id)}"
    if not user_id.isprintable() or any(c.isspace() for c in user_id):
        return "printable characters only, no spaces"
    if "{" in user_id or "}" in user_id:
        return "no braces: { and } would move the user's keys to another Redis Cluster slot"
    for prefix in RESERVED_USER_ID_PREFIXES:
        if user_id.startswith(prefix):
            return f"{prefix!r} is reserved: the gateway's own keys and channels start with it"
    return None


def is_valid_user_id(user_id: str) -> bool:
    return user_id_problem(user_id) is None


def checked_user_id(user_id: str) -> str:
    """``user_id``, or ValueError with the reason it cannot be one."""
    if not isinstance(user_id, str):
        raise ValueError(f"user id: a string, got {type(user_id).__name__}")
    problem = user_id_problem(user_id)
    if problem is not None:
        raise ValueError(f"user id {user_id!r}: {problem}")
    return user_id


# A connection's groups come from its token's ``groups`` claim, at most this many.
MAX_GROUPS = 64
# What a broadcast is called where a group id would stand (the envelope's ``"group":"*"``).
BROADCAST = "*"


def group_id_problem(group_id: str) -> str | None:
    """Why a group id cannot be one (None: it can): the user-id rules, and not the broadcast's name."""
    if group_id == BROADCAST:
        return f"{BROADCAST!r} is the broadcast's name"
    return user_id_problem(group_id)


def is_valid_group_id(group_id: str) -> bool:
    """A group id follows the user-id rules (a valid user id), and is not the broadcast's name."""
    return group_id_problem(group_id) is None


def group_source(group_id: str) -> str:
    """What stands for a group (``BROADCAST``: for the broadcast) where a user id would, in the hub,
    the broker and the history: ``{`` and the id. No user id holds a brace, so a group's channel
    (``ws:{team``) is no user's; and as the brace stays unmatched, the channel hashes whole on a
    Redis Cluster, in the slot of the group's keys' tag (``{ws:{team}:history``): one script can
    write them and SPUBLISH to the group's shard channel."""
    return "{" + group_id


def group_of(source: str) -> str | None:
    """The group id (or ``BROADCAST``) a hub source stands for; None for a user."""
    return source[1:] if source[:1] == "{" else None


def group_channel(prefix: str, group_id: str) -> str:
    """A group's channel (``group_id`` ``BROADCAST``: the broadcast channel, ``ws:{*``)."""
    return user_channel(prefix, group_source(group_id))


def history_key(prefix: str, user_id: str) -> str:
    """A user's bounded history (a stream); the channel as hash tag keeps the user's keys in one
    Redis Cluster slot, so one script can write them and publish."""
    return f"{{{user_channel(prefix, user_id)}}}:history"


def revoked_key(prefix: str, user_id: str) -> str:
    """When the user's last disconnect happened (ms, Redis clock): tokens issued before it are
    refused (gateway/leases/revocation.py)."""
    return f"{{{user_channel(prefix, user_id)}}}:revoked"


def history_meta_key(prefix: str, user_id: str) -> str:
    """A hash: the history's ``epoch`` and last ``offset``, and its ``age`` cap in ms."""
    return f"{{{user_channel(prefix, user_id)}}}:meta"


def idempotency_key(prefix: str, user_id: str, key: str) -> str:
    """The first publish to the user under an idempotency key (gateway/lua/publish.lua); in the
    user's slot, beside its history, so the publish script decides on it in the same step."""
    return f"{{{user_channel(prefix, user_id)}}}:idem:{key}"
