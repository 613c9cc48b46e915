"""Client and publisher processes: uvloop event loops driven over a pipe by the benchmark.

Each client process holds a share of the sockets and answers commands: connect a list of
(user, token) pairs, reset its counters, report what it received, close. A message carries
``seq|t`` with ``t`` the publisher's ``time.monotonic_ns()`` (one clock for every process on
the machine), so each receipt gives a publish-to-receive latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from loadtest.bench.targets import Publisher, connect_path, make_publisher, raise_file_limit
from loadtest.bench.wsclient import WsClient

_STAMP = re.compile(rb"\|(\d+)")
_CONNECT_TIMEOUT = 15.0
_CTX = multiprocessing.get_context("spawn")


class _ClientState:
    def __init__(self, target: str, port: int) -> None:
        self.target = target
        self.port = port
        self.clients: list[WsClient] = []
        self.received = 0
        self.last_ns = 0
        self.latencies = array("q")
        self.record = True

    def on_message(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.received += 1
        self.last_ns = now
        if self.record:
            match = _STAMP.search(data)
            if match is not None:
                self.latencies.append(now - int(match[1]))

    async def connect(self, pairs: list[tuple[str, str]], concurrency: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()

        async def one(token: str) -> bool:
            path, dialect = connect_path(self.target, token)
            async with gate:
                client: WsClient | None = None
                try:
                    async with asyncio.timeout(_CONNECT_TIMEOUT):
                        _, client = await loop.create_connection(
                            lambda: WsClient("127.0.0.1", self.port, path, dialect, self.on_message),
                            "127.0.0.1",
                            self.port,
                        )
                        await client.ready
                    self.clients.append(client)
                    return True
                except (OSError, ConnectionError, TimeoutError) as exc:
                    if client is not None:
                        client.abort()
                    errors[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                    return False

        started = time.monotonic()
        results = await asyncio.gather(*(one(token) for _, token in pairs))
        return {
            "opened": sum(results),
            "failed": len(results) - sum(results),
            "seconds": time.monotonic() - started,
            "errors": dict(errors.most_common(5)),
        }

    def open_count(self) -> int:
        return sum(1 for c in self.clients if c.is_open)

    async def close(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        await asyncio.sleep(0.2)


async def _serve(pipe: Connection, target: str, port: int) -> None:
    state = _ClientState(target, port)
    while True:
        # A blocking read in a thread: add_reader would make the pipe non-blocking, and a long
        # command (thousands of tokens) would then arrive in pieces that recv() cannot take.
        command: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
        name = command[0]
        reply: Any = None
        if name == "connect":
            reply = await state.connect(command[1], command[2])
        elif name == "reset":
            state.received, state.last_ns, state.record = 0, 0, bool(command[1])
            state.latencies = array("q")
        elif name == "stats":
            reply = {"received": state.received, "last_ns": state.last_ns, "open": state.open_count()}
        elif name == "latencies":
            reply = state.latencies.tobytes()
        elif name == "close":
            await state.close()
        elif name == "exit":
            await state.close()
            pipe.send(None)
            return
        pipe.send(reply)


def _client_main(pipe: Connection, target: str, port: int) -> None:
    import uvloop

    raise_file_limit()
    uvloop.run(_serve(pipe, target, port))


class ClientPool:
    """Several client processes for one target; each call goes to all and gathers the replies."""

    def __init__(self, target: str, port: int, processes: int) -> None:
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []
        for _ in range(processes):
            ours, theirs = _CTX.Pipe()
            process = _CTX.Process(target=_client_main, args=(theirs, target, port), daemon=True)
            process.start()
            self._pipes.append(ours)
            self._processes.append(process)

    def _call(self, commands: list[tuple[Any, ...]], timeout: float = 120.0) -> list[Any]:
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        replies = []
        for pipe in self._pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"client process did not answer {commands[0][0]} in {timeout}s")
            replies.append(pipe.recv())
        return replies

    def broadcast(self, *command: Any, timeout: float = 120.0) -> list[Any]:
        return self._call([command] * len(self._pipes), timeout)

    def connect(self, pairs: list[tuple[str, str]], concurrency: int) -> dict[str, Any]:
        """Open one socket per pair, spread over the processes; connect rate is over the slowest."""
        shares = [pairs[i :: len(self._pipes)] for i in range(len(self._pipes))]
        per = max(1, concurrency // len(self._pipes))
        started = time.monotonic()
        replies = self._call([("connect", share, per) for share in shares], timeout=300)
        errors: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "seconds": time.monotonic() - started,
            "errors": dict(errors.most_common(5)),
        }

    def stats(self) -> dict[str, int]:
        replies = self.broadcast("stats")
        return {
            "received": sum(r["received"] for r in replies),
            "last_ns": max(r["last_ns"] for r in replies),
            "open": sum(r["open"] for r in replies),
        }

    def latencies_ns(self) -> list[int]:
        values: list[int] = []
        for blob in self.broadcast("latencies"):
            values.extend(array("q", blob))
        return values

    def wait_quiet(
        self, expected: int, idle: float, limit: float, probe: Callable[[], float] | None = None
    ) -> dict[str, Any]:
        """Poll until ``expected`` messages arrived, or none arrived for ``idle`` s, or ``limit`` s passed.

        ``probe``, when given, is read at each poll that saw new messages; its last reading is
        returned as ``probe``, so a quiet tail after lost messages is not in it.
        """
        deadline = time.monotonic() + limit
        stats: dict[str, Any] = dict(self.stats())
        last_change = time.monotonic()
        reading = probe() if probe is not None else None
        while stats["received"] < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.stats()
            if now["received"] != stats["received"]:
                last_change = time.monotonic()
                reading = probe() if probe is not None else None
            elif time.monotonic() - last_change > idle:
                return now | {"probe": reading}
            stats = dict(now)
        if probe is not None and stats["received"] >= expected:
            reading = probe()
        return stats | {"probe": reading}

    def close(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("exit",))
                pipe.poll(10) and pipe.recv()
            except (OSError, EOFError):
                pass
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)


async def _publish(job: dict[str, Any]) -> dict[str, Any]:
    publisher = make_publisher(job["target"], job["redis_url"])
    try:
        # One warm-up publish to nobody, so connection set-up is not in the measurement (not on a
        # cluster: the pipelined publishes there never use the library's connection).
        if not job.get("slots"):
            await publisher.publish("bench-nobody", "0|0")
        if job.get("batch"):
            return await _publish_pipelined(publisher, job)
        return await _publish_one_by_one(publisher, job)
    finally:
        await publisher.aclose()


async def _publish_one_by_one(publisher: Publisher, job: dict[str, Any]) -> dict[str, Any]:
    """Each message through the target's own publish call, at ``rate`` or as fast as it goes."""
    users: list[str] = job["users"]
    rng = random.Random(job.get("seed", 7))
    count: int = job["count"]
    rate: float | None = job.get("rate")
    errors = 0
    gate = asyncio.Semaphore(job.get("concurrency", 64))
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, user_id: str) -> None:
        nonlocal errors
        try:
            await publisher.publish(user_id, f"{seq}|{time.monotonic_ns()}")
        except Exception:
            errors += 1
        finally:
            gate.release()

    started = time.monotonic()
    started_ns = time.monotonic_ns()
    for seq in range(count):
        if rate is not None:
            delay = started + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(one(seq, rng.choice(users)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    seconds = time.monotonic() - started
    return {"sent": count - errors, "errors": errors, "seconds": seconds, "started_ns": started_ns}


def _resp_publish(channel: str, data: bytes, command: bytes = b"PUBLISH") -> bytes:
    name = channel.encode()
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(command),
        command,
        len(name),
        name,
        len(data),
        data,
    )


def _node_of(channel: str, slots: list[list[Any]]) -> str:
    """The "host:port" serving a shard channel, from ``CLUSTER SLOTS`` ranges [start, end, address]."""
    from redis.crc import key_slot

    slot = key_slot(channel.encode())
    return next(str(address) for start, end, address in slots if start <= slot <= end)


async def _publish_pipelined(publisher: Publisher, job: dict[str, Any]) -> dict[str, Any]:
    """As fast as Redis takes them, so the publisher is not what limits a fan-out.

    Every message is encoded beforehand the way the target's library encodes it (the stamps are
    not read in a fan-out), then the PUBLISH commands go out ``batch`` per write on one
    connection, with at most ``concurrency`` batches awaiting their replies. With ``slots`` (a
    Redis Cluster's slot ranges) each message is an SPUBLISH (or ``command``) to the master serving
    its channel's slot, one connection and one such window per master, all masters at once.
    """
    from urllib.parse import urlsplit

    users: list[str] = job["users"]
    rng = random.Random(job.get("seed", 7))
    count: int = job["count"]
    batch: int = job["batch"]
    slots: list[list[Any]] | None = job.get("slots")
    where = urlsplit(job["redis_url"])
    single = f"{where.hostname}:{where.port or 6379}"
    per_node: dict[str, list[bytes]] = {}
    for seq in range(count):
        channel, data = await publisher.encode(rng.choice(users), f"{seq}|{time.monotonic_ns()}")
        if slots is None:
            per_node.setdefault(single, []).append(_resp_publish(channel, data))
        else:
            per_node.setdefault(_node_of(channel, slots), []).append(
                _resp_publish(channel, data, job.get("command", "SPUBLISH").encode())
            )
    lanes = [
        _Lane(address, [(len(c[i : i + batch]), b"".join(c[i : i + batch])) for i in range(0, len(c), batch)])
        for address, c in per_node.items()
    ]
    try:
        for lane in lanes:
            await lane.open(where.path.strip("/"))
        started = time.monotonic()
        started_ns = time.monotonic_ns()
        await asyncio.wait_for(asyncio.gather(*(lane.run(job.get("concurrency", 4)) for lane in lanes)), 60)
        seconds = time.monotonic() - started
    finally:
        for lane in lanes:
            lane.close()
    errors = sum(lane.errors for lane in lanes)
    by_node = {lane.address: lane.redis_before for lane in lanes}
    return {
        "sent": count - errors,
        "errors": errors,
        "seconds": seconds,
        "started_ns": started_ns,
        "redis_before": by_node.get(single, {}),
        "redis_before_by_node": by_node,
        "sent_by_node": {lane.address: sum(size for size, _ in lane.batches) for lane in lanes},
    }


class _Lane:
    """One Redis connection carrying its share of the publishes, ``batch`` commands per write."""

    def __init__(self, address: str, batches: list[tuple[int, bytes]]) -> None:
        self.address = address
        self.batches = batches
        self.errors = 0
        self.redis_before: dict[str, int] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, database: str) -> None:
        host, _, port = self.address.rpartition(":")
        self._reader, self._writer = await asyncio.open_connection(host, int(port))
        if database not in ("", "0"):
            self._writer.write(b"SELECT %s\r\n" % database.encode())
            await self._reader.readline()
        # Redis's counters at the start, so the Redis cost is over the fan-out alone.
        self._writer.write(b"INFO stats\r\n")
        size = int((await self._reader.readline())[1:])
        info = (await self._reader.readexactly(size + 2)).decode()
        self.redis_before = {
            key: int(value)
            for key, _, value in (line.partition(":") for line in info.split("\r\n"))
            if key in ("total_commands_processed", "total_net_output_bytes")
        }

    async def run(self, concurrency: int) -> None:
        assert self._reader is not None and self._writer is not None
        reader, writer = self._reader, self._writer
        window = asyncio.Semaphore(concurrency)

        async def read_replies() -> None:
            # Each reply to (S)PUBLISH is one line: ":<receivers>" or "-<error>".
            for size, _ in self.batches:
                for _ in range(size):
                    if not (await reader.readline()).startswith(b":"):
                        self.errors += 1
                window.release()

        replies = asyncio.create_task(read_replies())
        for _, pipelined in self.batches:
            await window.acquire()
            writer.write(pipelined)
        await replies

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _publisher_main(pipe: Connection, job: dict[str, Any]) -> None:
    import uvloop

    pipe.send(uvloop.run(_publish(job)))


def run_publisher(job: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """Publish in a process of its own (uvloop) and return what it sent and when it started."""
    ours, theirs = _CTX.Pipe()
    process = _CTX.Process(target=_publisher_main, args=(theirs, job), daemon=True)
    process.start()
    try:
        if not ours.poll(timeout):
            raise TimeoutError("publisher did not finish in time")
        result: dict[str, Any] = ours.recv()
        return result
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return float(sorted_values[index])
