"""Django Channels on uvicorn with the Redis pub/sub channel layer of channels_redis.

As its documentation sets it up: an ``AsyncWebsocketConsumer`` routed by ``ProtocolTypeRouter`` and
``URLRouter``, ``group_add`` on connect and ``group_discard`` on disconnect, one group per user,
``RedisPubSubChannelLayer`` as the channel layer; backends call ``group_send`` with a ``type``
that names the consumer's handler.
"""

from __future__ import annotations

from typing import Any


def create_app() -> Any:
    import django
    from django.conf import settings

    from loadtest.bench.alternatives._auth import redis_url

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench-only",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={
                "default": {
                    "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "CONFIG": {"hosts": [redis_url()]},
                }
            },
        )
        django.setup()
    # Imported after setup: Channels' modules read the settings.
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from loadtest.bench.alternatives._channels_consumer import NotificationConsumer

    return ProtocolTypeRouter({"websocket": URLRouter([path("ws", NotificationConsumer.as_asgi())])})
