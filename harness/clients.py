"""WebSocket clients through the gateway's admission."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.tokens import make_token


async def admit(url: str, user: str) -> ClientConnection | int:
    """Open a connection for ``user``: the open socket when admitted, else the close code it got."""
    result = await admit_or_refusal(url, user)
    return result if isinstance(result, ClientConnection) else result[0]


async def admit_or_refusal(url: str, user: str) -> ClientConnection | tuple[int, str]:
    """Open a connection for ``user``: the open socket when admitted, else the close code and
    reason it got.

    Admission is read from the first frame: a pong for an admitted socket, or the close frame
    a refused one gets right after the upgrade.
    """
    ws = await connect(f"{url}?token={make_token(user)}", open_timeout=10)
    try:
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    return ws
