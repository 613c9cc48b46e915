"""Handshakes still in admission (waiting on a paused Redis) when something else happens: the worker
is told to stop, or the client leaves. Each ends with a clear answer and is counted once, right."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, leases_key
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

HANDSHAKES = 6


def counter(gateway: Gateway, name: str, **labels: str) -> float:
    status, body = gateway.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def attempt(url: str, user: str) -> object:
    """What a client gets: ("http", status) for a refused handshake, ("served",) when its ping is
    answered, else the close code it received."""
    try:
        ws = await connect(f"{url}?token={make_token(user)}", open_timeout=20)
    except InvalidStatus as exc:
        return ("http", exc.response.status_code)
    try:
        await ws.send('{"type":"ping"}')
        if json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "pong"}:
            return ("served",)
        return ("unexpected frame",)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else ("no close frame",)
    finally:
        await ws.close()


async def handshakes_in_admission(gateway: Gateway) -> int:
    status, body = await asyncio.to_thread(gateway.get, "/healthz/websocket")
    return int(json.loads(body).get("handshakes", -1)) if status == 200 else -1


async def test_handshakes_waiting_on_redis_when_sigterm_arrives_are_closed_with_1012(
    own_redis: RedisServer,
) -> None:
    """Redis paused, handshakes wait in admission, SIGTERM to the worker, Redis resumes: each of
    them is upgraded and closed with 1012; none served, none HTTP 500, none counted accepted, and
    no lease is left behind."""
    with running_gateway(own_redis.url, workers=1, WEBSOCKET_DRAIN_WINDOW="1") as gateway:
        accepted = counter(gateway, "websocket_connections_total", status="accepted")
        drained = counter(gateway, "websocket_rejections_total", reason="draining")
        (worker,) = gateway.worker_pids()
        users = [f"drain-{uuid.uuid4().hex[:10]}" for _ in range(HANDSHAKES)]
        with own_redis.paused():
            clients = [asyncio.create_task(attempt(gateway.ws_url, user)) for user in users]

            async def all_waiting() -> bool:
                return await handshakes_in_admission(gateway) == HANDSHAKES

            async def drain_began() -> bool:
                # Or, where the drain does not wait for them, some handshake already got its answer.
                return "drain began" in gateway.log() or any(c.done() for c in clients)

            await eventually(all_waiting, timeout=10, what="every handshake to wait in admission")
            os.kill(worker, signal.SIGTERM)
            await eventually(drain_began, timeout=10, what="the worker to begin its drain")
        outcomes = await asyncio.wait_for(asyncio.gather(*clients), 30)
        assert outcomes == [1012] * HANDSHAKES

        await asyncio.to_thread(gateway.wait_all_workers_ready)
        assert counter(gateway, "websocket_connections_total", status="accepted") == accepted
        assert counter(gateway, "websocket_rejections_total", reason="draining") == drained + HANDSHAKES
        client = own_redis.client()
        assert [client.hlen(leases_key(user)) for user in users] == [0] * HANDSHAKES
        assert not list(client.scan_iter("{*}:worker:*"))
        client.close()


async def test_a_client_that_leaves_while_admission_waits_is_never_counted_accepted(
    own_redis: RedisServer,
) -> None:
    """Raw clients send the upgrade and hang up while their admission waits on Redis: when Redis
    answers, no accept goes out to them, none is counted accepted or closed, no lease stays."""
    with running_gateway(own_redis.url, workers=1) as gateway:
        accepted = counter(gateway, "websocket_connections_total", status="accepted")
        closed = counter(gateway, "websocket_connections_total", status="closed")
        users = [f"gone-{uuid.uuid4().hex[:10]}" for _ in range(HANDSHAKES)]
        with own_redis.paused():
            writers = []
            for user in users:
                _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
                writer.write(
                    f"GET /ws?token={make_token(user)} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                writers.append(writer)

            async def all_waiting() -> bool:
                return await handshakes_in_admission(gateway) == HANDSHAKES

            await eventually(all_waiting, timeout=10, what="every handshake to wait in admission")
            for writer in writers:
                writer.close()
            await asyncio.gather(*(writer.wait_closed() for writer in writers))

        async def all_done() -> bool:
            return await handshakes_in_admission(gateway) == 0

        await eventually(all_done, timeout=15, what="every admission to finish")
        client = own_redis.client()
        await eventually(
            in_thread(lambda: sum(int(client.hlen(leases_key(user))) for user in users) == 0),
            timeout=10,
            what="every lease to be released",
        )
        client.close()
        # The counters reach /metrics at once (no batching for connection outcomes).
        assert counter(gateway, "websocket_connections_total", status="accepted") == accepted
        assert counter(gateway, "websocket_connections_total", status="closed") == closed
        assert "Exception in ASGI application" not in gateway.log()
