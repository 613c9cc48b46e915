"""Locust load test: WebSocket users who hold a connection, and backends who publish to them.

``GatewayUser`` connects with a JWT and keeps the socket; every notification it receives becomes a
locust request event ``WS notification`` whose response time is the publish-to-receive latency,
so locust's statistics, percentiles and charts show delivery latency. ``PublisherUser`` publishes
through ``gateway.Publisher`` to random connected users (``PUBLISH ws:{user}`` events).

Environment: ``TARGET_URL`` (the gateway's ws:// URL; ``--host`` also works), ``REDIS_URL``,
``JWT_SECRET_KEY``, ``PUBLISH_RATE`` (messages/s per publisher user, default 20).
``python -m loadtest.run`` starts a private Redis and gateway and runs this file headless.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

import gevent
import jwt
from locust import User, constant, constant_throughput, events, task
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway import Publisher

# Users connected in this locust process: the publishers pick their targets here.
CONNECTED: set[str] = set()


def _token(user_id: str) -> str:
    claims = {"sub": user_id, "exp": int(time.time()) + 3600}
    return jwt.encode(
        claims, os.environ["JWT_SECRET_KEY"], algorithm=os.environ.get("JWT_ALGORITHM", "HS256")
    )


class GatewayUser(User):
    """One browser tab: connect, then receive until the test stops."""

    weight = 20
    wait_time = constant(1)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.user_id = f"lt-{uuid.uuid4().hex[:12]}"
        self.socket: ClientConnection | None = None
        self.reader: gevent.Greenlet | None = None

    def _url(self) -> str:
        base = os.environ.get("TARGET_URL") or self.host or "ws://127.0.0.1:8080/ws"
        return f"{base}?token={_token(self.user_id)}"

    def on_start(self) -> None:
        started = time.perf_counter()
        try:
            self.socket = connect(self._url(), open_timeout=10, max_size=2**20)
        except Exception as exc:
            self._fire("WS", "connect", started, 0, exc)
            raise
        self._fire("WS", "connect", started, 0, None)
        CONNECTED.add(self.user_id)
        self.reader = gevent.spawn(self._receive)

    def _receive(self) -> None:
        assert self.socket is not None
        try:
            for message in self.socket:
                received_ns = time.time_ns()
                try:
                    sent_ns = int(json.loads(message)["sent_ns"])
                except (ValueError, KeyError, TypeError):
                    continue
                events.request.fire(
                    request_type="WS",
                    name="notification",
                    response_time=(received_ns - sent_ns) / 1e6,
                    response_length=len(message),
                    exception=None,
                    context={},
                )
        except ConnectionClosed as exc:
            if self.user_id in CONNECTED:
                self._fire("WS", "closed", time.perf_counter(), 0, exc)
        finally:
            CONNECTED.discard(self.user_id)

    @task
    def hold(self) -> None:
        """The connection is the work; pings are answered by the websockets library."""

    def on_stop(self) -> None:
        CONNECTED.discard(self.user_id)
        if self.socket is not None:
            self.socket.close()
        if self.reader is not None:
            self.reader.join(timeout=5)

    def _fire(self, kind: str, name: str, started: float, length: int, exc: Exception | None) -> None:
        events.request.fire(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )


class PublisherUser(User):
    """A backend service publishing notifications to random connected users."""

    weight = 1
    wait_time = constant_throughput(float(os.environ.get("PUBLISH_RATE", "20")))

    def on_start(self) -> None:
        self.publisher = Publisher(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
        self.sequence = 0

    @task
    def publish(self) -> None:
        if not CONNECTED:
            return
        user_id = random.choice(tuple(CONNECTED))
        self.sequence += 1
        started = time.perf_counter()
        payload = {"type": "loadtest", "seq": self.sequence, "sent_ns": time.time_ns()}
        exception: Exception | None = None
        receivers = 0
        try:
            receivers = self.publisher.publish(user_id, payload)
        except Exception as exc:
            exception = exc
        events.request.fire(
            request_type="PUBLISH",
            name="ws:{user}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=receivers,
            exception=exception,
            context={},
        )

    def on_stop(self) -> None:
        self.publisher.close()
