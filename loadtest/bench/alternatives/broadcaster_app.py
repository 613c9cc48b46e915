"""Starlette with encode/broadcaster on uvicorn: one ``Broadcast`` per worker, a channel per user.

As its documentation sets it up: ``Broadcast(redis_url)`` connected in the lifespan, the endpoint
runs the receiver and the sender side by side, and the sender iterates
``broadcast.subscribe(channel=...)``. Backends call ``broadcast.publish(channel, message)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from loadtest.bench.alternatives._auth import redis_url, user_from_token


def create_app() -> Starlette:
    broadcast = Broadcast(redis_url())

    async def receiver(websocket: WebSocket, cancel: anyio.CancelScope) -> None:
        try:
            async for _ in websocket.iter_text():
                pass
        except WebSocketDisconnect:
            pass
        cancel.cancel()

    async def sender(websocket: WebSocket, channel: str, cancel: anyio.CancelScope) -> None:
        async with broadcast.subscribe(channel=channel) as subscriber:
            async for event in subscriber:  # type: ignore[union-attr]
                assert event is not None  # typed Event | None; broadcaster never yields None
                await websocket.send_text(event.message)
        cancel.cancel()

    async def notifications(websocket: WebSocket) -> None:
        user_id = user_from_token(websocket.query_params.get("token"))
        if user_id is None:
            await websocket.close(code=1008)  # before accept: the handshake is refused with 403
            return
        await websocket.accept()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receiver, websocket, tasks.cancel_scope)
            tasks.start_soon(sender, websocket, f"user:{user_id}", tasks.cancel_scope)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        try:
            yield
        finally:
            await broadcast.disconnect()

    return Starlette(routes=[WebSocketRoute("/ws", notifications)], lifespan=lifespan)
