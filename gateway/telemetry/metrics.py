"""Prometheus metrics, multiprocess-safe. No label may carry a user id or connection id."""

from __future__ import annotations

import os
import time

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

from gateway import close_codes, http_refusals
from gateway.telemetry.metrics_archive import scrape_lock

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
HTTP_REFUSALS = Counter(
    "websocket_http_refusals", "Requests refused before any app code ran, by reason.", ["reason"]
)
MESSAGES_DROPPED = Counter("websocket_messages_dropped", "Messages not delivered, by reason.", ["reason"])
REDIS_MESSAGES = Counter("websocket_redis_messages_received", "Messages read from Redis pub/sub.")
REDIS_SUBSCRIPTIONS = Gauge(
    "websocket_redis_subscriptions",
    "Channels this host's workers subscribe: users', groups' and the broadcast's.",
    multiprocess_mode="livesum",
)
REDIS_RECONNECTS = Counter(
    "websocket_redis_reconnects", "Times a worker lost its pub/sub connection and reconnected."
)
REDIS_DISCONNECTED = Counter(
    "websocket_redis_disconnected_seconds", "Time workers spent without a pub/sub connection (messages lost)."
)
# Redis Cluster: the same, per master (its number in the slot map, ordered by lowest slot; a
# promoted replica keeps it): bounded by the number of masters, never a node address or a user.
REDIS_SHARD_RECONNECTS = Counter(
    "websocket_redis_shard_reconnects",
    "Redis Cluster: times a worker lost its pub/sub connection to a master, by master number.",
    ["shard"],
)
REDIS_SHARD_DISCONNECTED = Counter(
    "websocket_redis_shard_disconnected_seconds",
    "Redis Cluster: time workers spent without their pub/sub connection to a master, by master number.",
    ["shard"],
)
DELIVERY_LATENCY = Histogram(
    "websocket_delivery_latency_seconds",
    "From reading a message off Redis to writing it to the socket, for the oldest frame of a write; "
    "sampled at most every millisecond per worker.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SEND_QUEUE_OVERFLOWS = Counter(
    "websocket_send_queue_overflows", "Connections closed because their queue overflowed."
)
DISCONNECTS = Counter(
    "websocket_disconnects",
    "Connections ended on a backend's request, by origin (command: Publisher.disconnect or the CLI).",
    ["origin"],
)
# History and recovery (gateway/history/). Publishes happen in the publisher library, outside
# the gateway: they are counted here as history messages read off Redis.
HISTORY_MESSAGES = Counter(
    "websocket_history_messages_received", "Messages published with history, read from Redis pub/sub."
)
RECOVERIES = Counter(
    "websocket_recoveries", "Resumes with ?since=, by result (recovered, or why not).", ["result"]
)
MESSAGES_REPLAYED = Counter(
    "websocket_messages_replayed", "History messages replayed to a resuming socket or after a gap."
)
GAP_FILLS = Counter(
    "websocket_gap_fills", "Users whose history was read after a pub/sub reconnect, by result.", ["result"]
)
# The HTTP API (gateway/api/): ``route`` is one of its paths, or "other" for any other path under
# /api; never a key, a user id or anything else from the request.
API_REQUESTS = Counter(
    "websocket_api_requests", "HTTP API requests by route and response status.", ["route", "status"]
)
API_LATENCY = Histogram(
    "websocket_api_request_duration_seconds",
    "HTTP API requests, from the request to the answer (its body read, Redis's replies in), by route.",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WORKER_CONNECTIONS = Gauge(
    "websocket_worker_connections",
    "Open WebSockets per live worker (label pid).",
    multiprocess_mode="liveall",
)


# The values each labelled counter's label takes (docs/reference.md lists them; a test keeps the
# two equal). Each is shown at 0 from a worker's start: a series that appears only at its first
# event leaves dashboards a gap, and rate() misses that first event.
_NOT_RECOVERED = ("invalid", "epoch", "lost", "future", "too_long", "trimmed", "expired")
KNOWN_LABEL_VALUES: dict[Counter, tuple[str, ...]] = {
    CONNECTIONS: ("accepted", "rejected", "closed"),
    REJECTIONS: tuple(refusal.reason for refusal in close_codes.ALL),
    HTTP_REFUSALS: tuple(refusal.reason for refusal in http_refusals.ALL),
    MESSAGES_DROPPED: (
        "slow_consumer",
        "admission_backlog",
        "closing",
        "no_connection",
        "invalid_utf8",
        "too_large",
        "send_failed",
        "duplicate",
        "malformed",
        "bad_control",
        "handler_failed",
    ),
    DISCONNECTS: ("command",),
    RECOVERIES: ("recovered", *_NOT_RECOVERED),
    GAP_FILLS: ("filled", "nothing_missed", "unavailable", "overflow", *_NOT_RECOVERED),
}


def show_known_label_values() -> None:
    """Create every known labelled series at 0 (in this worker's file in multiprocess mode)."""
    for counter, values in KNOWN_LABEL_VALUES.items():
        for value in values:
            counter.labels(value)


class _Tally:
    """Per-message counts kept as plain integers and added to the shared counters in batches:
    a multiprocess counter increment takes a lock and writes an mmap, too dear per frame."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.history = 0
        self.sampled_at = 0.0


_tally = _Tally()
# Latency is observed at most this often per worker; at lower rates, every flush is observed.
_LATENCY_SAMPLE_INTERVAL = 0.001


def count_received() -> None:
    _tally.received += 1


def count_history() -> None:
    _tally.history += 1


def count_sent(frames: int, oldest_received_at: float) -> None:
    """``frames`` written now, the oldest of them read off Redis at ``oldest_received_at``."""
    _tally.sent += frames
    now = time.monotonic()
    if now - _tally.sampled_at >= _LATENCY_SAMPLE_INTERVAL:
        _tally.sampled_at = now
        DELIVERY_LATENCY.observe(now - oldest_received_at)


def flush_tally() -> None:
    """Add what was counted since the last flush to the shared counters."""
    sent, received = _tally.sent, _tally.received
    _tally.sent = _tally.received = 0
    if sent:
        MESSAGES_SENT.inc(sent)
    if received:
        REDIS_MESSAGES.inc(received)
    history, _tally.history = _tally.history, 0
    if history:
        HISTORY_MESSAGES.inc(history)


def render() -> tuple[bytes, str]:
    """The exposition text: every live worker's metrics in multiprocess mode, else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        with scrape_lock(directory):
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
