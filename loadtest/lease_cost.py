"""What idle sockets cost Redis: N idle sockets held on a gateway for a while, Redis's own count
of the commands it ran meanwhile (INFO commandstats: commands run inside scripts included) and
its CPU, per socket per second.

    python -m loadtest.lease_cost [--sockets 2000] [--workers 2] [--seconds 60] [--cluster]

With ``--cluster``, on a Redis Cluster of three masters: the figures are summed over them, and
each master's share is listed.

A quick check of the lease model's idle cost (docs/limits.md); the full idle scenario, with the
gateway's CPU and memory, is the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import resource
import time
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from harness.gateway_process import Gateway, running_gateway
from harness.redis_cluster import running_cluster
from harness.redis_server import RedisServer, command_calls
from harness.tokens import make_token


def _redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _open(url: str, sockets: int) -> list[ClientConnection]:
    # Two sockets per user, as the gateway's default limit allows and users with tabs do.
    users = [f"idle-{i // 2}" for i in range(sockets)]
    opened: list[ClientConnection] = []
    # Below WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS: every client here shares one address.
    for start in range(0, sockets, 50):
        batch = users[start : start + 50]
        opened += await asyncio.gather(
            *(connect(f"{url}?token={make_token(user, ttl=3600)}", open_timeout=30) for user in batch)
        )
    return opened


@contextlib.contextmanager
def _gateway(workers: int, cluster: bool) -> Iterator[tuple[Gateway, list[RedisServer]]]:
    """A gateway and the Redis servers it uses (the masters, on a cluster)."""
    if cluster:
        with (
            running_cluster(masters=3) as nodes,
            running_gateway("redis://", workers, REDIS_CLUSTER_NODES=nodes.startup_nodes) as gateway,
        ):
            yield gateway, nodes.live_nodes()
        return
    server = RedisServer()
    server.start()
    try:
        with running_gateway(server.url, workers=workers) as gateway:
            yield gateway, [server]
    finally:
        server.close()


def _snapshot(servers: list[RedisServer]) -> tuple[list[dict[str, int]], list[float]]:
    calls, cpu = [], []
    for server in servers:
        with server.client() as client:
            calls.append(command_calls(client))
            cpu.append(_redis_cpu(client))
    return calls, cpu


async def measure(sockets: int, workers: int, seconds: float, cluster: bool = False) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, sockets + 1024)), hard))
    with _gateway(workers, cluster) as (gateway, servers):
        opened = await _open(gateway.ws_url, sockets)
        await asyncio.sleep(2)  # the admissions' own commands settle
        held = sum(1 for ws in opened if ws.close_code is None)
        (before, cpu_before), started = _snapshot(servers), time.monotonic()
        await asyncio.sleep(seconds)
        after, cpu_after = _snapshot(servers)
        elapsed = time.monotonic() - started
        closed = collections.Counter(ws.close_code for ws in opened if ws.close_code is not None)
        open_at_end = len(opened) - sum(closed.values())
        await asyncio.gather(*(ws.close() for ws in opened))
    per_master = [
        sum(calls_after.values()) - sum(calls_before.values())
        for calls_before, calls_after in zip(before, after, strict=True)
    ]
    after_total: collections.Counter[str] = collections.Counter()
    before_total: collections.Counter[str] = collections.Counter()
    for calls in after:
        after_total.update(calls)
    for calls in before:
        before_total.update(calls)
    per_command = {name: after_total[name] - before_total[name] for name in after_total}
    per_command = {name: calls for name, calls in sorted(per_command.items()) if calls}
    total = sum(per_command.values())
    return {
        "sockets": held,
        "open_at_end": open_at_end,
        "closed": dict(closed),
        "workers": workers,
        "seconds": round(elapsed, 1),
        "commands": per_command,
        "commands_per_socket_second": total / held / elapsed,
        "redis_cpu_us_per_socket_second": (sum(cpu_after) - sum(cpu_before)) * 1e6 / held / elapsed,
        "commands_per_socket_second_per_master": [calls / held / elapsed for calls in per_master],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cluster", action="store_true", help="on a Redis Cluster of three masters")
    args = parser.parse_args()
    result = asyncio.run(measure(args.sockets, args.workers, args.seconds, args.cluster))
    print(f"{result['sockets']} idle sockets, {result['workers']} workers, {result['seconds']} s")
    print(f"open at the end: {result['open_at_end']}, closed by code: {result['closed']}")
    print(f"Redis commands per socket per second: {result['commands_per_socket_second']:.5f}")
    print(f"Redis CPU per socket per second: {result['redis_cpu_us_per_socket_second']:.3f} us")
    shares = ", ".join(f"{share:.5f}" for share in result["commands_per_socket_second_per_master"])
    print(f"per master: {shares}")
    for name, calls in result["commands"].items():
        print(f"  {name:<12} {calls / result['seconds']:10.2f}/s")


if __name__ == "__main__":
    main()
