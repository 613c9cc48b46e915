"""/healthz/websocket names the worker that answered: its id (as in x-gateway-worker, the lease
fields and CLIENT LIST) and its pid, one of gunicorn's live workers."""

from __future__ import annotations

import json

from websockets.asyncio.client import connect

from harness.gateway_process import Gateway
from harness.tokens import make_token


async def test_healthz_websocket_names_the_worker_that_answered(gateway_one: Gateway, user: str) -> None:
    status, body = gateway_one.get("/healthz/websocket")
    assert status == 200
    state = json.loads(body)
    assert gateway_one.worker_pids() == [state["pid"]]
    assert state["worker"].endswith(f"-{state['pid']}")
    # One worker: the socket is held by the worker that answered.
    async with connect(f"{gateway_one.ws_url}?token={make_token(user)}") as ws:
        assert ws.response is not None
        assert ws.response.headers["x-gateway-worker"] == state["worker"]
