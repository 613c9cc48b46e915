"""A local cluster from the deployment's own files: one Redis, two gunicorn "hosts", and Debian's
nginx running deploy/nginx.conf in front of them. Clients only ever talk to nginx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.nginx import Nginx, running_nginx
from harness.redis_server import RedisServer, live_leases
from harness.waiting import eventually, in_thread

LIMIT = 5
# A small drain window, so a stopping host is done within the test's patience; nginx is on 127.0.0.1.
HOST_ENV = {"WEBSOCKET_DRAIN_WINDOW": "1", "FORWARDED_ALLOW_IPS": "127.0.0.1"}


@dataclass
class Cluster:
    hosts: tuple[Gateway, Gateway]
    nginx: Nginx
    redis: RedisServer

    def host_of(self, ws: ClientConnection) -> Gateway:
        """The host whose worker holds the socket, from the accept response's x-gateway-worker."""
        pid = int(ws.response.headers["x-gateway-worker"].rsplit("-", 1)[1])
        for host in self.hosts:
            if host.process is not None and pid in host.worker_pids():
                return host
        raise AssertionError(f"worker {pid} belongs to neither running host")


@contextlib.contextmanager
def local_cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    with (
        running_gateway(redis_server.url, workers=2, **HOST_ENV) as a,
        running_gateway(redis_server.url, workers=2, **HOST_ENV) as b,
        running_nginx([a.port, b.port]) as nginx,
    ):
        yield Cluster((a, b), nginx, redis_server)


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    with local_cluster(redis_server) as cluster:
        yield cluster


def fresh_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def reconnect(url: str, user: str, attempts: int = 10) -> ClientConnection:
    """A client following the 1012 rule: retry after a short random delay, a bounded number of times."""
    outcomes: list[object] = []
    for _ in range(attempts):
        try:
            result = await admit(url, user)
        except (OSError, InvalidStatus, TimeoutError) as exc:
            result = exc
        if isinstance(result, ClientConnection):
            return result
        outcomes.append(result)
        assert result in (1012, 1013) or not isinstance(result, int), f"refused for good with {result}"
        # The close-code table says 0-2 s; scaled down, like everything in this test.
        await asyncio.sleep(random.uniform(0, 0.2))
    raise AssertionError(f"no admission after {attempts} attempts: {outcomes}")


async def receive(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(message, str)
    return message


async def test_clients_through_nginx_land_on_both_hosts_and_get_their_messages(cluster: Cluster) -> None:
    """Round robin spreads connections over both hosts; each client gets exactly its own messages."""
    users = [fresh_user() for _ in range(6)]
    sockets = [await admit(cluster.nginx.ws_url, user) for user in users]
    admitted = [ws for ws in sockets if isinstance(ws, ClientConnection)]
    assert len(admitted) == len(users), f"refused: {sockets}"
    assert {cluster.host_of(ws).port for ws in admitted} == {host.port for host in cluster.hosts}
    client = cluster.redis.client()
    for user in users:
        # One pub/sub connection, of the one worker that holds this user's socket, receives it.
        assert client.publish(f"ws:{user}", json.dumps({"for": user})) == 1
    for user, ws in zip(users, admitted, strict=True):
        assert json.loads(await receive(ws)) == {"for": user}
    client.close()
    await asyncio.gather(*(ws.close() for ws in admitted))


async def test_the_per_user_limit_holds_across_hosts_behind_nginx(cluster: Cluster) -> None:
    """The limit's connections sit on both hosts; more attempts are refused (4029) whichever host."""
    user = fresh_user()
    admitted: list[ClientConnection] = []
    for i in range(LIMIT):
        result = await admit(cluster.nginx.ws_url, user)
        assert isinstance(result, ClientConnection), f"connection {i} refused with {result}"
        admitted.append(result)
    assert {cluster.host_of(ws).port for ws in admitted} == {host.port for host in cluster.hosts}
    # Round robin: four attempts reach each host at least once.
    assert [await admit(cluster.nginx.ws_url, user) for _ in range(4)] == [4029] * 4
    client = cluster.redis.client()
    assert live_leases(client, user) == LIMIT
    client.publish(f"ws:{user}", "to all five")
    assert [await receive(ws) for ws in admitted] == ["to all five"] * LIMIT
    await admitted.pop().close()
    replacement = await reconnect(cluster.nginx.ws_url, user, attempts=1)
    assert await admit(cluster.nginx.ws_url, user) == 4029
    client.close()
    await asyncio.gather(*(ws.close() for ws in [*admitted, replacement]))


async def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
    cluster: Cluster,
) -> None:
    """Via nginx (trusted) the gateway sees the real client; straight from elsewhere, a forged header is
    ignored."""
    with pytest.raises(InvalidStatus) as via_nginx:
        await connect(cluster.nginx.ws_url, local_addr=("127.0.0.2", 0), open_timeout=10)
    assert via_nginx.value.response.status_code == 401

    def logged(address: str) -> bool:
        return any(
            f"refused token_missing: no token (client {address})" in host.log() for host in cluster.hosts
        )

    await eventually(
        in_thread(lambda: logged("127.0.0.2")), timeout=5, what="the refusal logged with the client's address"
    )

    a = cluster.hosts[0]
    with pytest.raises(InvalidStatus) as direct:
        await connect(
            a.ws_url,
            local_addr=("127.0.0.3", 0),
            additional_headers={"X-Forwarded-For": "127.0.0.9"},
            open_timeout=10,
        )
    assert direct.value.response.status_code == 401
    await eventually(
        in_thread(lambda: logged("127.0.0.3")), timeout=5, what="the refusal logged with the peer's address"
    )
    assert not logged("127.0.0.9")


async def test_a_host_stopped_with_sigterm_drains_and_its_clients_reconnect_to_the_other(
    redis_server: RedisServer,
) -> None:
    """SIGTERM: the host's clients get 1012, come back through nginx to the other host, and receive;
    the other host's clients never notice, and no place in the limit is left behind."""
    with local_cluster(redis_server) as cluster:
        a, b = cluster.hosts
        users = [fresh_user() for _ in range(4)]
        held: dict[str, list[ClientConnection]] = {user: [] for user in users}
        for user in [*users, *users]:
            ws = await admit(cluster.nginx.ws_url, user)
            assert isinstance(ws, ClientConnection), f"refused with {ws}"
            held[user].append(ws)
        on_a = [(user, ws) for user in users for ws in held[user] if cluster.host_of(ws) is a]
        on_b = [(user, ws) for user in users for ws in held[user] if cluster.host_of(ws) is b]
        assert on_a and on_b
        b_workers = set(b.worker_pids())

        assert a.process is not None
        stopping = a.process
        stopping.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(ws.wait_closed() for _, ws in on_a)), 15)
        # The reason too: a drain that stopped waiting once the hub was empty let uvicorn's
        # shutdown close sockets whose own close frame had not gone out yet.
        assert {(ws.close_code, ws.close_reason) for _, ws in on_a} == {(1012, "draining")}

        for user, old in on_a:
            new = await reconnect(cluster.nginx.ws_url, user)
            assert int(new.response.headers["x-gateway-worker"].rsplit("-", 1)[1]) in b_workers
            held[user][held[user].index(old)] = new
        # Within gunicorn's graceful_timeout (the drain window plus a margin), and cleanly.
        assert await asyncio.to_thread(stopping.wait, 20) == 0

        assert all(ws.close_code is None for _, ws in on_b)
        client = redis_server.client()
        for user in users:
            assert live_leases(client, user) == 2
            client.publish(f"ws:{user}", f"after the drain, {user}")
        for user in users:
            assert [await receive(ws) for ws in held[user]] == [f"after the drain, {user}"] * 2
        client.close()
        await asyncio.gather(*(ws.close() for sockets in held.values() for ws in sockets))
