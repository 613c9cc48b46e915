"""python-socketio on uvicorn, several workers sharing rooms through ``AsyncRedisManager``.

As its documentation sets it up: ``AsyncServer(async_mode="asgi", client_manager=AsyncRedisManager)``
wrapped in ``ASGIApp``; the client authenticates with the ``auth`` payload of the connect packet,
and each user joins a room named after its id. Backends emit to that room from another process
with a write-only ``AsyncRedisManager``. Clients use the WebSocket transport only, so no sticky
sessions are needed between the workers.
"""

from __future__ import annotations

from typing import Any

import socketio

from loadtest.bench.alternatives._auth import redis_url, user_from_token


def create_app() -> socketio.ASGIApp:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url()),
        transports=["websocket"],
        cors_allowed_origins="*",
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> None:
        user_id = user_from_token((auth or {}).get("token"))
        if user_id is None:
            raise socketio.exceptions.ConnectionRefusedError("authentication failed")
        await sio.enter_room(sid, user_id)

    return socketio.ASGIApp(sio)
