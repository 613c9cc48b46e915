"""Every Redis channel and key name, shared by the gateway and the publisher."""

from __future__ import annotations


def user_channel(prefix: str, user_id: str) -> str:
    return f"{prefix}:{user_id}"


def connections_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:conns:{user_id}"


def recovery_key(prefix: str, user_id: str) -> str:
    """For one lease time after Redis lost its data: the user's places restored by a renewal, and
    those ended for them as over the limit (gateway/lua/renew.lua)."""
    return f"{prefix}:recovery:{user_id}"


def worker_leases_key(prefix: str, worker_id: str) -> str:
    """The set of "connection-id user" a worker holds, so its master can release them."""
    return f"{prefix}:worker:{worker_id}"


def worker_id(instance_id: str, pid: int) -> str:
    """A worker's id: its gunicorn instance (host and start) and its pid, known to the master too."""
    return f"{instance_id}-{pid}"


def control_channel(prefix: str, worker_id: str) -> str:
    # No user can own it: is_valid_user_id refuses ids in the gateway's own namespaces.
    return f"{prefix}:ctl:{worker_id}"


def is_valid_user_id(user_id: str) -> bool:
    """User ids become channel names: keep them printable, bounded and out of our namespace."""
    return (
        0 < len(user_id) <= 256
        and user_id.isprintable()
        and not user_id.startswith(("conns:", "ctl:", "worker:"))
        and not any(c.isspace() for c in user_id)
    )


def history_key(prefix: str, user_id: str) -> str:
    """A user's bounded history (a stream); the channel as hash tag keeps the user's keys in one
    Redis Cluster slot, so one script can write them and publish."""
    return f"{{{user_channel(prefix, user_id)}}}:history"


def history_meta_key(prefix: str, user_id: str) -> str:
    """A hash: the history's ``epoch`` and last ``offset``, and its ``age`` cap in ms."""
    return f"{{{user_channel(prefix, user_id)}}}:meta"
