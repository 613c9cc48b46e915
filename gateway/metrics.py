"""Prometheus metrics, multiprocess-safe. No label may carry a user id or connection id."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.metrics_archive import scrape_lock

CONNECTIONS = Counter(
    "websocket_connections", "WebSocket connections by outcome: accepted, rejected, closed.", ["status"]
)
ACTIVE_CONNECTIONS = Gauge(
    "websocket_active_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
MESSAGES_SENT = Counter("websocket_messages_sent", "Frames written to clients.")
CONNECTION_DURATION = Histogram(
    "websocket_connection_duration_seconds",
    "How long accepted connections lasted.",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
REJECTIONS = Counter("websocket_rejections", "Refused or ended connections by reason.", ["reason"])
MESSAGES_DROPPED = Counter("websocket_messages_dropped", "Messages not delivered, by reason.", ["reason"])
REDIS_MESSAGES = Counter("websocket_redis_messages_received", "Messages read from Redis pub/sub.")
REDIS_SUBSCRIPTIONS = Gauge(
    "websocket_redis_subscriptions",
    "User channels this host's workers subscribe.",
    multiprocess_mode="livesum",
)
REDIS_RECONNECTS = Counter(
    "websocket_redis_reconnects", "Times a worker lost its pub/sub connection and reconnected."
)
REDIS_DISCONNECTED = Counter(
    "websocket_redis_disconnected_seconds", "Time workers spent without a pub/sub connection (messages lost)."
)
DELIVERY_LATENCY = Histogram(
    "websocket_delivery_latency_seconds",
    "From reading a message off Redis to writing it to the socket; observed once per write burst, "
    "for its oldest frame.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SEND_QUEUE_OVERFLOWS = Counter(
    "websocket_send_queue_overflows", "Connections closed because their queue overflowed."
)
WORKER_CONNECTIONS = Gauge(
    "websocket_worker_connections",
    "Open WebSockets per live worker (label pid).",
    multiprocess_mode="liveall",
)


def render() -> tuple[bytes, str]:
    """The exposition text: every live worker's metrics in multiprocess mode, else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        with scrape_lock(directory):
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
