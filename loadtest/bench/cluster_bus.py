"""What each Redis Cluster node sends for a fan-out: sharded pub/sub against a plain PUBLISH broadcast.

A cluster forwards every plain PUBLISH over its bus to every other node (any node may have a
SUBSCRIBE client for the channel); an SPUBLISH stays on the master serving the channel's slot (and
its replicas). ``compare_broadcast`` measures both on the same cluster without a gateway: per
master, one subscriber connection for the users whose slots it serves (SUBSCRIBE or SSUBSCRIBE),
the same messages published to the master serving each channel (PUBLISH or SPUBLISH); per node,
the bytes it wrote to its sockets (/proc/PID/io wchar: its clients and its cluster bus), the
bytes it sent its clients (INFO stats) and the publish messages its bus received (CLUSTER INFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from loadtest.bench.clients import run_publisher

BUS_KEYS = ("publish_received", "publishshard_received", "written")


def _command(client: redis.Redis, *args: str) -> Any:
    untyped: Any = client  # execute_command is untyped in redis-py
    return untyped.execute_command(*args)


def slot_ranges(client: redis.Redis) -> list[list[Any]]:
    """CLUSTER SLOTS as [start, end, "host:port" of the master] (the pipelined publisher's ``slots``)."""
    ranges: list[list[Any]] = []
    for start, end, master, *_ in _command(client, "CLUSTER", "SLOTS"):
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ranges.append([int(start), int(end), f"{host}:{int(master[1])}"])
    return ranges


def bus_counters(client: redis.Redis) -> dict[str, int]:
    """Publish messages the node's bus received (CLUSTER INFO lists a type once it is non-zero; none
    on a Redis without cluster mode) and the bytes the node's process wrote (-1 where /proc/PID/io
    cannot be read)."""
    text = ""
    if int(client.info("cluster")["cluster_enabled"]):
        info = _command(client, "CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    pid = int(client.info("server")["process_id"])
    written = -1
    with contextlib.suppress(OSError, ValueError):
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        written = int(io["wchar"])
    return {
        "publish_received": int(fields.get("cluster_stats_messages_publish_received", 0)),
        "publishshard_received": int(fields.get("cluster_stats_messages_publishshard_received", 0)),
        "written": written,
    }


def compare_broadcast(masters: dict[str, redis.Redis], users: int, messages: int) -> dict[str, Any]:
    """The same messages as a plain PUBLISH broadcast and as SPUBLISH; per node what each cost.

    Its users are its own (``bus0``...), so a gateway still subscribed to the cluster's ``u0``...
    receives none of them."""
    slots = slot_ranges(next(iter(masters.values())))
    return {
        mode: asyncio.run(_measure(mode, masters, slots, [f"bus{i}" for i in range(users)], messages))
        for mode in ("broadcast", "sharded")
    }


def _owner(user: str, slots: list[list[Any]]) -> str:
    slot = key_slot(f"ws:{user}".encode())
    return next(str(address) for start, end, address in slots if start <= slot <= end)


class _Subscriber:
    """One connection to one node, subscribed to some channels, counting the messages it reads."""

    def __init__(self) -> None:
        self.subscribed = 0
        self.messages = 0
        self._tail = b""

    async def run(self, address: str, channels: list[str], command: bytes) -> None:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for channel in channels:
                name = channel.encode()
                writer.write(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(command), command, len(name), name))
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                # "subscribe"/"ssubscribe" confirmations and "message"/"smessage" pushes, whole
                # or split across reads (a payload here never holds either word).
                text = self._tail + chunk
                self.subscribed += text.count(b"subscribe\r\n") - self._tail.count(b"subscribe\r\n")
                self.messages += text.count(b"message\r\n") - self._tail.count(b"message\r\n")
                self._tail = text[-16:]
        finally:
            writer.close()


async def _measure(
    mode: str, masters: dict[str, redis.Redis], slots: list[list[Any]], users: list[str], messages: int
) -> dict[str, Any]:
    subscribe, publish = (b"SUBSCRIBE", "PUBLISH") if mode == "broadcast" else (b"SSUBSCRIBE", "SPUBLISH")
    subscribers = {address: _Subscriber() for address in masters}
    tasks = []
    for address, subscriber in subscribers.items():
        channels = [f"ws:{u}" for u in users if _owner(u, slots) == address]
        tasks.append(asyncio.create_task(subscriber.run(address, channels, subscribe)))
    try:
        await _until(lambda: sum(s.subscribed for s in subscribers.values()) >= len(users), "subscriptions")
        before = {address: _counters(client) for address, client in masters.items()}
        first = next(iter(masters))
        job = {"target": "gateway", "redis_url": f"redis://{first}", "users": users, "count": messages}
        job |= {"batch": 100, "concurrency": 4, "seed": 0, "slots": slots, "command": publish}
        sent = await asyncio.to_thread(run_publisher, job)
        await _until(lambda: sum(s.messages for s in subscribers.values()) >= sent["sent"], "deliveries")
        # The bus is asynchronous: wait until every node has received what it will receive.
        expected_bus = sent["sent"] * (len(masters) - 1) if mode == "broadcast" else 0
        await _until(
            lambda: (
                sum(_counters(c)["publish_received"] for c in masters.values())
                - sum(b["publish_received"] for b in before.values())
                >= expected_bus
            ),
            "the cluster bus",
        )
        after = {address: _counters(client) for address, client in masters.items()}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "published": sent["sent"],
        "delivered": sum(s.messages for s in subscribers.values()),
        "nodes": {
            address: {key: after[address][key] - before[address][key] for key in after[address]}
            | {"published_here": sent["sent_by_node"].get(address, 0)}
            for address in masters
        },
    }


def _counters(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("stats")
    return bus_counters(client) | {"out": int(stats["total_net_output_bytes"])}


async def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)


def markdown(results: dict[str, Any]) -> str:
    """Per node: bytes to clients, bytes written in all (bus included), bus publish messages in."""
    lines = [
        "The same messages on the same cluster without a gateway, one subscriber per master for the",
        "users whose slots it serves: a plain PUBLISH broadcast against SPUBLISH (written = the",
        "node's socket writes, clients and cluster bus, from /proc/PID/io):",
        "",
        "| master | published to it | PUBLISH: out to clients | PUBLISH: written | PUBLISH: bus messages in "
        "| SPUBLISH: out to clients | SPUBLISH: written | SPUBLISH: bus messages in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    broadcast, sharded = results["broadcast"]["nodes"], results["sharded"]["nodes"]
    for address in broadcast:
        b, s = broadcast[address], sharded[address]
        lines.append(
            f"| {address.rpartition(':')[2]} | {b['published_here']} | {b['out']} | {b['written']} | "
            f"{b['publish_received']} | {s['out']} | {s['written']} | {s['publishshard_received']} |"
        )
    return "\n".join(lines) + "\n"
