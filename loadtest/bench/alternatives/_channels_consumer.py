"""The Channels consumer: one group per user, a ``notify`` handler that forwards the text."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from loadtest.bench.alternatives._auth import user_from_query


class NotificationConsumer(AsyncWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user_id = user_from_query(self.scope["query_string"])
        if user_id is None:
            await self.close()  # before accept: the handshake is refused with 403
            return
        self.group = f"user_{user_id}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
