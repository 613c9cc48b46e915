"""python -m loadtest.bench.history: what history costs, against plain publishes.

Per publish, plain (``history=False``) against history (the default): Redis commands (INFO
commandstats, the script's inner calls included), Redis CPU (INFO cpu), and the publisher's round
trip (one ``publish`` awaited at a time: median and p99). Then fan-out through one gateway worker,
plain and with history, to envelope-free (raw) sockets: messages delivered per second.
Writes history.json and history.md to --out (default: a scratch directory, loadtest/bench/output.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from typing import Any

import redis
from websockets.asyncio.client import connect

from gateway import AsyncPublisher
from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench.output import add_out_argument, write_results


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def _cpu(client: redis.Redis) -> float:
    cpu: dict[str, Any] = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _publish_cost(url: str, history: bool, count: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    publisher = AsyncPublisher(url, history=history)
    await publisher.publish("warm-up", "x")  # connect, load the script
    commands, cpu = _commands(client), _cpu(client)
    round_trips = []
    for i in range(count):
        started = time.perf_counter()
        await publisher.publish(f"bench-{i % 100}", '{"n":1}')
        round_trips.append(time.perf_counter() - started)
    result = {
        "redis_commands_per_publish": (_commands(client) - commands) / count,  # INFO is not counted
        "redis_cpu_us_per_publish": (_cpu(client) - cpu) * 1e6 / count,
        "round_trip_median_us": statistics.median(round_trips) * 1e6,
        "round_trip_p99_us": statistics.quantiles(round_trips, n=100)[98] * 1e6,
    }
    await publisher.aclose()
    client.close()
    return result


async def _fan_out(ws_url: str, url: str, history: bool, users: int, messages: int) -> dict[str, float]:
    sockets = [
        await connect(f"{ws_url}?token={make_token(f'fan-{u}')}", open_timeout=10) for u in range(users)
    ]
    publisher = AsyncPublisher(url, history=history)
    expected = messages * users

    async def drain(ws: Any) -> int:
        got = 0
        while got < messages:
            await asyncio.wait_for(ws.recv(), 30)
            got += 1
        return got

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    started = time.perf_counter()
    for first in range(0, messages, 100):
        batch = range(first, min(first + 100, messages))
        await publisher.publish_many([(f"fan-{u}", f'{{"n":{n}}}') for n in batch for u in range(users)])
    received = sum(await asyncio.gather(*readers))
    seconds = time.perf_counter() - started
    for ws in sockets:
        await ws.close()
    await publisher.aclose()
    assert received == expected
    return {"messages": expected, "seconds": seconds, "messages_per_second": expected / seconds}


async def run(count: int, users: int, messages: int) -> dict[str, Any]:
    server = RedisServer()
    server.start()
    try:
        results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
            "publish": {
                "plain": await _publish_cost(server.url, False, count),
                "history": await _publish_cost(server.url, True, count),
            },
        }
        with running_gateway(server.url, workers=1) as gateway:
            results["fan_out"] = {
                "plain": await _fan_out(gateway.ws_url, server.url, False, users, messages),
                "history": await _fan_out(gateway.ws_url, server.url, True, users, messages),
            }
        return results
    finally:
        server.close()


def markdown(results: dict[str, Any]) -> str:
    plain, history = results["publish"]["plain"], results["publish"]["history"]
    rows = [f"Run {results['started']} on {results['machine']}: `python -m loadtest.bench.history`.", ""]
    rows += ["| per publish | plain | history |", "|---|---|---|"]
    for key, label in [
        ("redis_commands_per_publish", "Redis commands"),
        ("redis_cpu_us_per_publish", "Redis CPU (µs)"),
        ("round_trip_median_us", "round trip, median (µs)"),
        ("round_trip_p99_us", "round trip, p99 (µs)"),
    ]:
        rows.append(f"| {label} | {plain[key]:.1f} | {history[key]:.1f} |")
    fan = results["fan_out"]
    rows += ["", "| fan-out, one worker | plain | history |", "|---|---|---|"]
    rows.append(
        f"| messages/s delivered | {fan['plain']['messages_per_second']:.0f} |"
        f" {fan['history']['messages_per_second']:.0f} |"
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.history", description=__doc__)
    parser.add_argument("--publishes", type=int, default=2000, help="publishes timed one by one, per mode")
    parser.add_argument("--users", type=int, default=50, help="users (one raw socket each) for fan-out")
    parser.add_argument("--messages", type=int, default=400, help="messages per user for fan-out")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.publishes, args.users, args.messages))
    write_results(args.out, "history", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
