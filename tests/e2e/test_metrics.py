"""/metrics in multiprocess mode on a real gunicorn with 3 workers: aggregates, totals, hygiene."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.telemetry import metrics
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

WORKERS = 3


async def open_for(gateway: Gateway, user: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}")


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=WORKERS) as gw:
        yield gw


def active(gateway: Gateway) -> float | None:
    try:
        return value(scrape(gateway), "websocket_active_connections")
    except ConnectionResetError:
        # Each worker listens on its own socket: a scrape the kernel had queued on the socket of
        # a worker just killed is reset (gateway/listeners.py).
        return None


async def wait_for_active(gateway: Gateway, expected: int) -> None:
    await eventually(
        in_thread(lambda: active(gateway) == expected),
        timeout=10,
        what=f"websocket_active_connections == {expected}",
    )


async def test_every_worker_serves_the_same_aggregate(gateway: Gateway) -> None:
    """N connections spread over workers: any worker's /metrics reports N active connections."""
    sockets = [await open_for(gateway, f"agg-{uuid.uuid4().hex[:8]}") for _ in range(30)]
    try:
        assert len({ws.response.headers["x-gateway-worker"] for ws in sockets}) > 1
        answered_by = set()
        for _ in range(30):
            samples = scrape(gateway)
            assert value(samples, "websocket_active_connections") == 30
            answered_by |= {
                dict(labels)["pid"] for name, labels in samples if name == "websocket_worker_connections"
            }
        assert len(answered_by) == WORKERS
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    await wait_for_active(gateway, 0)


async def test_counters_equal_what_happened(gateway: Gateway, redis_server: RedisServer, user: str) -> None:
    """Accepted, rejected by reason, closed, messages received and sent: exact deltas."""
    before = scrape(gateway)
    sockets = [await open_for(gateway, user) for _ in range(5)]
    workers_of_user = {ws.response.headers["x-gateway-worker"] for ws in sockets}
    refused = await open_for(gateway, user)  # the sixth: over the limit of 5
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(refused.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029
    for token in ("bad", "worse", "still.bad"):
        with pytest.raises(InvalidStatus):
            await connect(f"{gateway.ws_url}?token={token}")
    with pytest.raises(InvalidStatus):
        await connect(gateway.ws_url)
    publisher = redis_server.client()
    for i in range(10):
        publisher.publish(f"ws:{user}", f'{{"i":{i}}}')
    for ws in sockets:
        for _ in range(10):
            await asyncio.wait_for(ws.recv(), 5)
    await asyncio.gather(*(ws.close() for ws in sockets))
    publisher.close()

    def delta(name: str, **labels: str) -> float:
        return value(scrape(gateway), name, **labels) - value(before, name, **labels)

    await eventually(
        in_thread(lambda: delta("websocket_connections_total", status="closed") == 5),
        timeout=10,
        what="5 closes counted",
    )
    await eventually(
        in_thread(lambda: delta("websocket_messages_sent_total") == 50), timeout=10, what="50 frames counted"
    )
    assert delta("websocket_connections_total", status="accepted") == 5
    assert delta("websocket_connections_total", status="rejected") == 5
    assert delta("websocket_rejections_total", reason="token_invalid") == 3
    assert delta("websocket_rejections_total", reason="token_missing") == 1
    assert delta("websocket_rejections_total", reason="user_limit") == 1
    # Per-message counts reach the shared counters in batches, twice a second.
    await eventually(
        in_thread(lambda: delta("websocket_redis_messages_received_total") == 10 * len(workers_of_user)),
        timeout=10,
        what="messages received counted",
    )
    assert delta("websocket_connection_duration_seconds_count") == 5
    assert delta("websocket_delivery_latency_seconds_count") >= 1


async def test_a_killed_workers_gauges_leave_and_its_counters_stay(gateway: Gateway) -> None:
    """kill -9 of a worker: its connections leave the live gauge; the totals do not go back."""
    sockets = [await open_for(gateway, f"kill-{uuid.uuid4().hex[:8]}") for _ in range(24)]
    try:
        await wait_for_active(gateway, 24)
        accepted = value(scrape(gateway), "websocket_connections_total", status="accepted")
        victim_id = sockets[0].response.headers["x-gateway-worker"]
        on_victim = sum(ws.response.headers["x-gateway-worker"] == victim_id for ws in sockets)
        os.kill(int(victim_id.rsplit("-", 1)[1]), signal.SIGKILL)
        await wait_for_active(gateway, 24 - on_victim)
        assert value(scrape(gateway), "websocket_connections_total", status="accepted") == accepted
        await asyncio.to_thread(gateway.wait_all_workers_ready)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    await wait_for_active(gateway, 0)


def test_labels_never_grow_with_users_or_connections(gateway: Gateway) -> None:
    """Every label is from a small fixed set, the metric's own (gateway/telemetry/metrics.py
    KNOWN_LABEL_VALUES) or a live worker's pid: no user id, connection id or token can appear."""
    known = {
        (f"{counter._name}_total", counter._labelnames[0]): set(values)  # type: ignore[attr-defined]
        for counter, values in metrics.KNOWN_LABEL_VALUES.items()
    }
    pids = {str(pid) for pid in gateway.worker_pids()}
    for (name, labels), _ in scrape(gateway).items():
        for label, label_value in labels:
            if label == "le":
                continue
            allowed = pids if label == "pid" else known.get((name, label))
            assert allowed is not None, f"{name} has an unexpected label {label}"
            assert label_value in allowed, f"{name}{{{label}={label_value!r}}}"


def test_the_metrics_directory_is_emptied_at_master_start(redis_server: RedisServer) -> None:
    """A stale file from an earlier run does not count."""
    directory = tempfile.mkdtemp(prefix="gateway-stale-metrics-")
    stale = MmapedDict(os.path.join(directory, "counter_999999.db"))
    key = mmap_key("websocket_connections", "websocket_connections_total", ["status"], ["accepted"], "stale")
    stale.write_value(key, 12345.0, 0.0)
    stale.close()
    try:
        with running_gateway(redis_server.url, workers=1, PROMETHEUS_MULTIPROC_DIR=directory) as gw:
            assert not os.path.exists(os.path.join(directory, "counter_999999.db"))
            assert value(scrape(gw), "websocket_connections_total", status="accepted") < 12345
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_fifty_worker_replacements_keep_totals_and_bound_the_files(redis_server: RedisServer) -> None:
    """Each replaced worker's counters fold into an archive: totals kept, files bounded."""
    rng = random.Random(5)
    with running_gateway(redis_server.url, workers=2) as gw:
        for i in range(50):
            ws = await open_for(gw, f"replace-{i}")
            await ws.close()
            await eventually(
                in_thread(
                    lambda closes=i + 1: (
                        value(scrape(gw), "websocket_connections_total", status="closed") == closes
                    )
                ),
                timeout=10,
                what="the close to be counted",
            )
            os.kill(rng.choice(gw.worker_pids()), signal.SIGKILL)
            await asyncio.to_thread(gw.wait_all_workers_ready)
        samples = scrape(gw)
        assert value(samples, "websocket_connections_total", status="accepted") == 50
        assert value(samples, "websocket_connections_total", status="closed") == 50
        files = [f for f in os.listdir(gw.metrics_dir) if f.endswith(".db")]
        # Per live worker: counters, histograms and two live gauges; plus the two archives.
        assert len(files) <= 2 * 4 + 2, sorted(files)
