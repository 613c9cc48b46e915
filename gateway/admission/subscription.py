"""A local connection joins its user's channel: the hub, then the broker, in one place.

The hub is the registry of local users (gateway/hub.py): the first connection of a user here
subscribes the user's channel, a later one shares the wait for the same confirmation, and the last
one out unsubscribes it. A connection is in the hub before the subscription is asked for, so a
message published after the confirmation finds it.
"""

from __future__ import annotations

from gateway.broker import Broker
from gateway.hub import Hub, Outbox


async def join(hub: Hub, broker: Broker, user_id: str, outbox: Outbox) -> None:
    """Register ``outbox`` and return once the user's channel is confirmed. ``BrokerUnavailable``
    (or a cancellation) propagates with the registration rolled back."""
    first = hub.add(user_id, outbox)
    try:
        if first:
            await broker.subscribe(user_id)
        else:
            await broker.confirmed(user_id)
    except BaseException:
        leave(hub, broker, user_id, outbox)
        raise


def leave(hub: Hub, broker: Broker, user_id: str, outbox: Outbox) -> None:
    """Forget ``outbox``; after the user's last connection here the channel is dropped."""
    if hub.remove(user_id, outbox):
        broker.unsubscribe(user_id)
