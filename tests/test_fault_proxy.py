"""The fault proxy does what each fault promises, against a real redis-server, and heals by itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.fault_proxy import Fault, FaultProxy
from harness.redis_server import RedisServer


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(redis_server.port) as p:
        yield p


def client(proxy: FaultProxy, timeout: float = 5.0) -> redis.Redis:
    # No retries: each test sees what one command meets.
    return redis.Redis(
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def timed_ping(r: redis.Redis) -> float:
    started = time.monotonic()
    assert r.ping()
    return time.monotonic() - started


def test_without_a_fault_it_forwards(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        r.set("fault-proxy:k", "v")
        assert r.get("fault-proxy:k") == b"v"


def test_latency_delays_every_round_trip(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        r.ping()
        with proxy.injected(Fault.LATENCY, latency=0.3):
            # Both ways wait: at least twice the latency per round trip.
            assert timed_ping(r) >= 0.55
        assert timed_ping(r) < 0.5


def test_a_pause_holds_the_reply_until_it_heals(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        r.ping()
        # Timed from before the fault (a late ping would otherwise wait less): healed by its own
        # deadline, the command waited and then got its answer.
        started = time.monotonic()
        proxy.inject(Fault.PAUSE, seconds=1.0)
        assert r.ping()
        assert time.monotonic() - started >= 0.95
        assert proxy.fault is None


def raw_ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def test_a_blackhole_leaves_connections_half_open_for_good(proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as old:
        assert raw_ping(old) == b"+PONG\r\n"
        with proxy.injected(Fault.BLACKHOLE):
            with pytest.raises(TimeoutError):
                raw_ping(old)
            assert proxy.open_connections() == 1
        # Healed, the old connection is still dead (its peer is gone) and still open; a new one works.
        with pytest.raises(TimeoutError):
            raw_ping(old)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as new:
            assert raw_ping(new) == b"+PONG\r\n"


def test_a_cut_resets_in_the_middle_of_a_reply(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        r.set("fault-proxy:big", "x" * 10_000)
        proxy.inject(Fault.CUT, seconds=5.0, after_bytes=100)
        with pytest.raises(redis.ConnectionError):
            r.get("fault-proxy:big")
        assert proxy.fault is None
        # redis-py reconnects on the next command, through the healed proxy.
        assert r.get("fault-proxy:big") == b"x" * 10_000


def test_reset_ends_every_open_connection(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        r.ping()
        assert proxy.connections_accepted == 1
        proxy.inject(Fault.RESET, seconds=1.0)
        # The client finds its connection dead and opens a new one.
        assert r.ping()
        assert proxy.connections_accepted == 2


def test_refuse_closes_new_connections_until_healed(proxy: FaultProxy) -> None:
    with proxy.injected(Fault.REFUSE):
        with pytest.raises(redis.ConnectionError), client(proxy) as r:
            r.ping()
    with client(proxy) as r:
        assert r.ping()
