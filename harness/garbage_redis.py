"""A TCP server on a free port that reads RESP commands and answers each one with the same fixed
reply, whatever it was: a hostile or broken peer where a sentinel (or a Redis) is expected."""

from __future__ import annotations

import asyncio

from harness.ports import free_port


class GarbageRedis:
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.commands = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> GarbageRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readline()  # "*<n>": then n "$<len>" lines, each with its data
                if not header.startswith(b"*"):
                    return
                for _ in range(int(header[1:])):
                    length = int((await reader.readline())[1:])
                    await reader.readexactly(length + 2)
                self.commands += 1
                writer.write(self.reply)
                await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
