"""python -m loadtest.bench.groups: what groups and broadcast cost, against per-user fan-out.

One gateway host of two workers, one private Redis, raw sockets, all in the same run:

- fan-out to one group of N sockets (each its own user) with ``publish_group``, against
  ``publish_many`` to every member's user channel, messages sent back to back: deliveries per
  second, and Redis commands per message sent (INFO commandstats, the script's inner calls
  included);
- broadcast to the same N sockets, likewise;
- for each of the three, the latency from the publish to the last socket, one message at a time
  (the next published once every socket got the previous one): median and p99;
- admission of a connection whose token names 64 groups, against one with none: the handshake's
  time (median, p99) and the workers' CPU per admission (``/proc``), the groups already held by
  another connection (the common case) and new to the worker (the first member's).

Writes groups.json and groups.md to --out (default: a scratch directory, loadtest/bench/output.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from websockets.asyncio.client import ClientConnection, connect

from gateway import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench.output import add_out_argument, write_results


def _commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _worker_cpu(gateway: Gateway) -> float:
    """CPU seconds (user and system) the host's workers used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in gateway.worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


async def _open(gateway: Gateway, user: str, groups: list[str] | None) -> ClientConnection:
    token = make_token(user, groups=groups)
    return await connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"})


async def _members(gateway: Gateway, team: str, count: int) -> list[tuple[str, ClientConnection]]:
    users = [f"member-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    return [(user, await _open(gateway, user, [team])) for user in users]


async def _receive_all(sockets: list[ClientConnection], messages: int) -> list[list[float]]:
    """Per socket, when each message arrived (perf_counter)."""

    async def drain(ws: ClientConnection) -> list[float]:
        times: list[float] = []
        while len(times) < messages:
            await asyncio.wait_for(ws.recv(), 60)
            times.append(time.perf_counter())
        return times

    return list(await asyncio.gather(*(drain(ws) for ws in sockets)))


async def _fan_out(
    url: str, members: list[tuple[str, ClientConnection]], team: str, messages: int, mode: str
) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    sockets = [ws for _, ws in members]
    async with AsyncPublisher(url) as publisher:
        await publisher.publish("warm-up", "x")
        commands = _commands(client)
        readers = asyncio.create_task(_receive_all(sockets, messages))
        started = time.perf_counter()
        for n in range(messages):
            await _send(publisher, mode, members, team, n)
        await readers
        seconds = time.perf_counter() - started
        spent = _commands(client) - commands
        # Latency, one message at a time: the next is published once the last socket got this one.
        last = []
        for n in range(messages):
            readers = asyncio.create_task(_receive_all(sockets, 1))
            sent = time.perf_counter()
            await _send(publisher, mode, members, team, n)
            arrivals = await readers
            last.append(max(times[0] for times in arrivals) - sent)
    client.close()
    return {
        "deliveries": messages * len(sockets),
        "deliveries_per_second": messages * len(sockets) / seconds,
        "redis_commands_per_message": spent / messages,
        "to_last_socket_median_ms": statistics.median(last) * 1000,
        "to_last_socket_p99_ms": statistics.quantiles(last, n=100)[98] * 1000,
    }


async def _send(
    publisher: AsyncPublisher, mode: str, members: list[tuple[str, ClientConnection]], team: str, n: int
) -> None:
    if mode == "group":
        await publisher.publish_group(team, f'{{"n":{n}}}')
    elif mode == "broadcast":
        await publisher.broadcast(f'{{"n":{n}}}')
    else:
        await publisher.publish_many([(user, f'{{"n":{n}}}') for user, _ in members])


async def _admission(gateway: Gateway, groups: list[str] | None, count: int) -> dict[str, float]:
    durations = []
    cpu = _worker_cpu(gateway)
    for _ in range(count):
        started = time.perf_counter()
        ws = await _open(gateway, f"adm-{uuid.uuid4().hex[:10]}", groups)
        durations.append(time.perf_counter() - started)
        await ws.close()
    return {
        "median_ms": statistics.median(durations) * 1000,
        "p99_ms": statistics.quantiles(durations, n=100)[98] * 1000,
        "worker_cpu_ms_per_admission": (_worker_cpu(gateway) - cpu) * 1000 / count,
    }


async def run(sockets: int, messages: int, admissions: int) -> dict[str, Any]:
    server = RedisServer()
    server.start()
    try:
        results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
            "sizes": {"sockets": sockets, "messages": messages, "admissions": admissions},
        }
        with running_gateway(server.url, workers=2) as gateway:
            team = f"team-{uuid.uuid4().hex[:8]}"
            members = await _members(gateway, team, sockets)
            results["fan_out"] = {
                mode: await _fan_out(server.url, members, team, messages, mode)
                for mode in ("per_user", "group", "broadcast")
            }
            for _, ws in members:
                await ws.close()
            many = [f"g{i}-{uuid.uuid4().hex[:6]}" for i in range(64)]
            holders = await _holders(gateway, many)
            results["admission"] = {
                "no_groups": await _admission(gateway, None, admissions),
                "64_groups_held": await _admission(gateway, many, admissions),
            }
            for ws in holders:
                await ws.close()
            fresh = [[f"n{i}-{uuid.uuid4().hex[:8]}" for i in range(64)] for _ in range(admissions)]
            results["admission"]["64_groups_new"] = await _admission_fresh(gateway, fresh)
        return results
    finally:
        server.close()


async def _holders(gateway: Gateway, groups: list[str]) -> list[ClientConnection]:
    """Connections holding ``groups`` until every worker has one: a later member's are all held."""
    holders: list[ClientConnection] = []
    workers: set[str] = set()
    while len(workers) < 2:
        assert len(holders) < 40, "the listener never spread the holders over both workers"
        ws = await _open(gateway, f"holder-{len(holders)}", groups)
        holders.append(ws)
        assert ws.response is not None
        workers.add(ws.response.headers["x-gateway-worker"])
    return holders


async def _admission_fresh(gateway: Gateway, groups: list[list[str]]) -> dict[str, float]:
    """Each connection the first member of 64 groups: 64 subscriptions in its admission."""
    durations = []
    cpu = _worker_cpu(gateway)
    for names in groups:
        started = time.perf_counter()
        ws = await _open(gateway, f"adm-{uuid.uuid4().hex[:10]}", names)
        durations.append(time.perf_counter() - started)
        await ws.close()
    return {
        "median_ms": statistics.median(durations) * 1000,
        "p99_ms": statistics.quantiles(durations, n=100)[98] * 1000,
        "worker_cpu_ms_per_admission": (_worker_cpu(gateway) - cpu) * 1000 / len(groups),
    }


def markdown(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    rows = [
        f"Run {results['started']} on {results['machine']}: `python -m loadtest.bench.groups"
        f" --sockets {sizes['sockets']} --messages {sizes['messages']} --admissions {sizes['admissions']}`"
        " (one host, 2 workers, raw sockets).",
        "",
        "| fan-out to one group's sockets | per-user (`publish_many`) | group | broadcast |",
        "|---|---|---|---|",
    ]
    fan = results["fan_out"]
    base = fan["per_user"]["deliveries_per_second"]
    for key, label, unit in [
        ("deliveries_per_second", "deliveries/s", "{:.0f}"),
        ("redis_commands_per_message", "Redis commands per message", "{:.1f}"),
        ("to_last_socket_median_ms", "publish to last socket, median (ms)", "{:.1f}"),
        ("to_last_socket_p99_ms", "publish to last socket, p99 (ms)", "{:.1f}"),
    ]:
        cells = [unit.format(fan[mode][key]) for mode in ("per_user", "group", "broadcast")]
        if key == "deliveries_per_second":
            cells = [f"{cell} ({fan[mode][key] / base:.2f}x)" for cell, mode in zip(cells, fan, strict=True)]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    adm = results["admission"]
    rows += ["", "| admission | none | 64 groups, held | 64 groups, new |", "|---|---|---|---|"]
    for key, label in [
        ("median_ms", "handshake, median (ms)"),
        ("p99_ms", "handshake, p99 (ms)"),
        ("worker_cpu_ms_per_admission", "worker CPU per admission (ms)"),
    ]:
        cells = [f"{adm[k][key]:.2f}" for k in ("no_groups", "64_groups_held", "64_groups_new")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.groups", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000, help="the group's members (one user each)")
    parser.add_argument("--messages", type=int, default=50, help="messages per mode")
    parser.add_argument("--admissions", type=int, default=100, help="admissions timed per kind")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.sockets, args.messages, args.admissions))
    write_results(args.out, "groups", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
