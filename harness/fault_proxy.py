"""A TCP proxy that injects faults between the gateway and Redis (or between Redis nodes).

The proxy runs its own event loop in a thread, so sync and async tests drive it alike. Every
fault is bounded in time: it heals by itself after ``seconds`` even when a test forgets to, so a
failing test cannot leave a wedged proxy behind.

Faults, as a worker sees them:
- ``latency``: every chunk, both ways, waits before it is forwarded (a slow network or a busy Redis).
- ``pause``: nothing flows, connections stay open, bytes are held and delivered on heal (a Redis
  stopped by a planned failover, a stalled switch).
- ``blackhole``: the peer died without a FIN or RST (a host gone, a half-open connection): every
  connection open during the fault never carries a byte again and is never closed; connections
  opened during it go nowhere too. After the heal only new connections work, as when a host
  comes back with none of its old sockets.
- ``cut``: the next reply is cut after ``after_bytes`` and both ends are reset (a crash in the
  middle of a reply).
- ``reset``: every open connection is reset at once (a Redis restart, a load balancer's idle kill).
- ``refuse``: new connections are closed as soon as they are accepted (a Redis not yet listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from harness.ports import free_port

_CHUNK = 65536


class Fault(enum.Enum):
    LATENCY = "latency"
    PAUSE = "pause"
    BLACKHOLE = "blackhole"
    CUT = "cut"
    RESET = "reset"
    REFUSE = "refuse"


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Half-open for good: nothing it carries arrives, and nothing closes it.
    dead: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
                writer.close()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


class FaultProxy:
    """Listens on a free loopback port and forwards to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._pairs: set[_Pair] = set()
        self._fault: Fault | None = None
        self._latency = 0.0
        self._cut_after = 0
        self._flowing: asyncio.Event | None = None
        self._heal_handle: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault | None:
        return self._fault

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults, from any thread -------------------------------------------------------------

    def inject(self, fault: Fault, seconds: float, *, latency: float = 0.2, after_bytes: int = 1) -> None:
        """Start ``fault``; it heals by itself after ``seconds`` (or at ``heal()``)."""
        self._call(lambda: self._inject(fault, seconds, latency, after_bytes))

    def heal(self) -> None:
        self._call(self._heal)

    @contextlib.contextmanager
    def injected(self, fault: Fault, seconds: float = 30.0, **options: float) -> Iterator[None]:
        self.inject(fault, seconds, **options)  # type: ignore[arg-type]
        try:
            yield
        finally:
            self.heal()

    def open_connections(self) -> int:
        return self._call(lambda: len(self._pairs))

    # --- inside the proxy's loop -------------------------------------------------------------

    def _call(self, fn: Callable[[], object]) -> int:
        async def run() -> object:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        value = asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)
        return value if isinstance(value, int) else 0

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close(self) -> None:
        self._heal()
        if self._server is not None:
            self._server.close()
        tasks = [task for pair in self._pairs for task in pair.tasks]
        for pair in self._pairs:
            pair.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pairs.clear()
        if self._server is not None:
            await self._server.wait_closed()

    def _inject(self, fault: Fault, seconds: float, latency: float, after_bytes: int) -> None:
        assert self._flowing is not None
        self._heal()
        self._fault = fault
        self._latency = latency if fault is Fault.LATENCY else 0.0
        self._cut_after = after_bytes
        if fault is Fault.PAUSE:
            self._flowing.clear()
        if fault is Fault.BLACKHOLE:
            for pair in self._pairs:
                pair.dead = True
        if fault is Fault.RESET:
            for pair in list(self._pairs):
                pair.abort()
            self._fault = None
            return
        self._heal_handle = self._loop.call_later(seconds, self._heal)

    def _heal(self) -> None:
        assert self._flowing is not None
        if self._heal_handle is not None:
            self._heal_handle.cancel()
            self._heal_handle = None
        self._fault = None
        self._latency = 0.0
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        pair = _Pair(writer)
        if self._fault is Fault.REFUSE:
            pair.abort()
            return
        pair.dead = self._fault is Fault.BLACKHOLE
        self._pairs.add(pair)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._pairs.discard(pair)
            pair.abort()
            return
        pair.upstream = up_writer
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pair, replies=False)),
            asyncio.create_task(self._pump(up_reader, writer, pair, replies=True)),
        ]

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pair: _Pair, *, replies: bool
    ) -> None:
        assert self._flowing is not None
        try:
            while chunk := await source.read(_CHUNK):
                if pair.dead:
                    continue  # the peer is gone without a word: nothing arrives, ever
                await self._flowing.wait()
                if self._latency:
                    await asyncio.sleep(self._latency)
                if replies and self._fault is Fault.CUT:
                    sink.write(chunk[: self._cut_after])
                    await sink.drain()
                    self._heal()
                    pair.abort()
                    return
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end both (Redis and its clients never half-close).
            self._pairs.discard(pair)
            pair.close()
