"""kill -HUP: gunicorn.conf.py runs again and new workers replace the old ones; the master still
knows every old worker by the id it had, so it releases their leases when they die."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid

from websockets.asyncio.client import ClientConnection

from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, leases_key
from harness.waiting import eventually, in_thread

WORKERS = 2


def ready_workers_other_than(gateway: Gateway, old: set[int]) -> set[int]:
    """The new workers that answer /healthz/websocket ready, once all of them have."""
    seen: set[int] = set()
    for _ in range(20):
        with contextlib.suppress(OSError):
            status, body = gateway.get("/healthz/websocket", timeout=2)
            state = json.loads(body)
            if status == 200 and state["subscriber_ready"] and state["pid"] not in old:
                seen.add(state["pid"])
    return seen if len(seen) == WORKERS else set()


async def test_after_hup_a_dying_old_worker_has_its_leases_released_at_once(
    redis_server: RedisServer,
) -> None:
    """Sockets on the old workers, HUP, the old workers die mid-drain: child_exit frees their
    places at once (not after the lease time), their ws:worker sets are gone, and new workers serve."""
    with running_gateway(redis_server.url, workers=WORKERS, WEBSOCKET_DRAIN_WINDOW="30") as gateway:
        users = [f"reload-{uuid.uuid4().hex[:10]}" for _ in range(10)]
        sockets = [await admit(gateway.ws_url, user) for user in users]
        assert all(isinstance(ws, ClientConnection) for ws in sockets), sockets
        old_ids = {
            ws.response.headers["x-gateway-worker"] for ws in sockets if isinstance(ws, ClientConnection)
        }
        old_pids = set(gateway.worker_pids())
        assert gateway.process is not None

        gateway.process.send_signal(signal.SIGHUP)
        new_pids = await eventually(
            in_thread(lambda: ready_workers_other_than(gateway, old_pids)),
            timeout=30,
            what="the new workers to be ready",
        )
        client = redis_server.client()

        def places_held() -> int:
            return sum(int(client.hlen(leases_key(user))) for user in users)

        # The drain spreads the closes over 30 s: most sockets still hold their place.
        assert places_held() > 0
        for pid in old_pids:
            os.kill(pid, signal.SIGKILL)
        await eventually(
            in_thread(
                lambda: places_held() == 0 and not any(client.exists(f"ws:worker:{w}") for w in old_ids)
            ),
            timeout=5,
            what="the master to release the dead old workers' leases",
        )
        # The master logs the release once Redis has answered it: the places may be free first.
        await eventually(in_thread(lambda: "released" in gateway.log()), timeout=5, what="the release's line")

        user = f"reload-{uuid.uuid4().hex[:10]}"
        ws = await admit(gateway.ws_url, user)
        assert isinstance(ws, ClientConnection), ws
        assert int(ws.response.headers["x-gateway-worker"].rsplit("-", 1)[1]) in new_pids
        assert client.publish(f"ws:{user}", "after the reload") == 1
        assert await asyncio.wait_for(ws.recv(), 10) == "after the reload"
        await ws.close()
        await asyncio.gather(*(s.close() for s in sockets if isinstance(s, ClientConnection)))
        client.close()
