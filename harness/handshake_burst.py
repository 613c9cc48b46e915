"""A burst of raw WebSocket handshakes at once: an attacker holding valid tokens.

``python -m harness.handshake_burst`` connects ``handshakes`` sockets (from ``source``, a
loopback address of its own if asked), then, on a line on stdin, sends every upgrade at once (the
token in the ``Authorization`` header), reads the answers and resets the sockets. It prints what
came back, counted: the close code after a 101 ("accepted" when no close frame followed at once),
or "http <status>". ``Burster`` runs it as a child process, so that a test's own clients and
bystander, on the test's event loop, measure the gateway and not the attacker's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
from collections import Counter

from harness.tokens import make_token

_ACCEPT_WAIT = 0.3


def _request(port: int, token: str) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    # A reset, not a FIN, at the end: thousands of sockets leave no TIME_WAIT behind on this side.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> str:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = head.split(b" ", 2)[1].decode()
    if status != "101":
        return f"http {status}"
    try:
        frame = await asyncio.wait_for(reader.readexactly(4), _ACCEPT_WAIT)
    except TimeoutError:
        return "accepted"
    if frame[0] != 0x88 or frame[1] < 2:
        return "accepted"
    return str(struct.unpack("!H", frame[2:4])[0])


class Burster:
    """``python -m harness.handshake_burst`` as a child process: ``ready`` connects its sockets,
    ``fire`` sends every request at once, ``answers`` waits for what came back. ``users`` users
    (named ``user``-0, -1, ... when more than one) take turns."""

    def __init__(self, port: int, user: str, handshakes: int, users: int = 1, source: str = "127.0.0.1"):
        self._args = [str(port), user, str(handshakes), str(users), source]
        self._process: asyncio.subprocess.Process | None = None

    async def ready(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harness.handshake_burst",
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 60)
        assert line == b"connected\n", line

    def fire(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(b"go\n")

    async def answers(self) -> Counter[str]:
        process = self._process
        assert process is not None and process.stdout is not None
        out = await asyncio.wait_for(process.stdout.read(), 60)
        await process.wait()
        return Counter(json.loads(out))


async def _main(port: int, user: str, handshakes: int, users: int, source: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, handshakes + 256)), hard))
    tokens = [make_token(f"{user}-{i % users}" if users > 1 else user) for i in range(handshakes)]
    connected = await asyncio.gather(*(_connect(port, source) for _ in tokens), return_exceptions=True)
    streams = [c for c in connected if not isinstance(c, BaseException)]
    answers: Counter[str] = Counter()
    answers["connect failed"] += len(connected) - len(streams)
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # Every request in one go: the server reads them in one pass, and all wait on Redis at once.
    for (_, writer), token in zip(streams, tokens, strict=False):
        writer.write(_request(port, token))
    try:
        for result in await asyncio.gather(*(_answer(r) for r, _ in streams), return_exceptions=True):
            answers[result if isinstance(result, str) else type(result).__name__] += 1
    finally:
        for _, writer in streams:
            writer.transport.abort()
    print(json.dumps(answers), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name, kind in (("port", int), ("user", str), ("handshakes", int), ("users", int), ("source", str)):
        parser.add_argument(name, type=kind)
    ns = parser.parse_args()
    asyncio.run(_main(ns.port, ns.user, ns.handshakes, ns.users, ns.source))
