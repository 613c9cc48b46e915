"""Every Redis channel and key name, shared by the gateway and the publisher.

A user's keys carry the user's channel as hash tag (``{ws:alice}:conns``): they share the slot of
the shard channel ``ws:alice`` on a Redis Cluster, so one script can touch them and publish to the
user. No script touches keys of two slots, in any mode.
"""

from __future__ import annotations

from redis.crc import key_slot


def user_channel(prefix: str, user_id: str) -> str:
    return f"{prefix}:{user_id}"


def user_slot(prefix: str, user_id: str) -> int:
    """The Redis Cluster slot of the user's channel and of every key of the user."""
    return key_slot(user_channel(prefix, user_id).encode())


def connections_key(prefix: str, user_id: str) -> str:
    """The user's leases: a hash, connection id -> deadline (gateway/leases/limiter.py)."""
    return f"{{{user_channel(prefix, user_id)}}}:conns"


def recovery_key(prefix: str, user_id: str) -> str:
    """For one lease time after Redis lost its data: the user's places restored by a renewal, and
    those ended for them as over the limit (gateway/lua/renew.lua)."""
    return f"{{{user_channel(prefix, user_id)}}}:recovery"


def worker_leases_key(worker_id: str, tag: str) -> str:
    """The set of "connection-id user" a worker holds in one slot, so its master can release them:
    ``tag`` is the channel of one user of that slot, the first the worker admitted there."""
    return f"{{{tag}}}:worker:{worker_id}"


def worker_tags_key(prefix: str, worker_id: str) -> str:
    """The set of the tags of a worker's ``worker_leases_key`` sets, one per slot it holds leases in."""
    return f"{prefix}:worker:{worker_id}"


def worker_id(instance_id: str, pid: int) -> str:
    """A worker's id: its gunicorn instance (host and start) and its pid, known to the master too."""
    return f"{instance_id}-{pid}"


def control_channel(prefix: str, worker_id: str) -> str:
    # No user can own it: is_valid_user_id refuses ids in the gateway's own namespaces.
    return f"{prefix}:ctl:{worker_id}"


def is_valid_user_id(user_id: str) -> bool:
    """User ids become channel names and hash tags: keep them printable, bounded, out of our
    namespace and free of braces (a brace would move the user's keys to another slot)."""
    return (
        0 < len(user_id) <= 256
        and user_id.isprintable()
        and "{" not in user_id
        and "}" not in user_id
        and not user_id.startswith(("conns:", "ctl:", "worker:"))
        and not any(c.isspace() for c in user_id)
    )


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
