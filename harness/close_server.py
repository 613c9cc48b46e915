"""A WebSocket server that accepts the ``bearer`` subprotocol, as the gateway does, and closes
every connection with the close code its path names: ``/close/4008`` closes with 4008, and
``/close/abort`` drops the TCP connection with no close frame (the client sees 1006). Before
that it sends the text frames of the ``frames`` query parameter (a JSON list of strings).

It sends close codes a real gateway cannot be made to send on demand (1007 to a browser, 1011,
4008 to a reading client), so a client's handling of every code can be tested in one place.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from harness.ports import free_port


@dataclass(frozen=True, slots=True)
class Handshake:
    path: str
    query: str
    subprotocols: str


class CloseServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.handshakes: list[Handshake] = []
        self._lock = threading.Lock()
        bearer = [Subprotocol("bearer")]
        self._server: Server = serve(self._handle, "127.0.0.1", self.port, subprotocols=bearer)
        self._thread = threading.Thread(target=self._server.serve_forever, name="close-server", daemon=True)

    def url(self, code: int | str, frames: list[str] | None = None) -> str:
        query = f"?{urlencode({'frames': json.dumps(frames)})}" if frames else ""
        return f"ws://127.0.0.1:{self.port}/close/{code}{query}"

    def count(self, code: int | str) -> int:
        with self._lock:
            return sum(1 for h in self.handshakes if h.path == f"/close/{code}")

    def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request is not None else "")
        offered = ws.request.headers.get("Sec-WebSocket-Protocol", "") if ws.request is not None else ""
        with self._lock:
            self.handshakes.append(Handshake(url.path, url.query, offered))
        for frame in json.loads(parse_qs(url.query).get("frames", ["[]"])[0]):
            ws.send(frame)
        code = url.path.rsplit("/", 1)[-1]
        if code == "abort":
            with contextlib.suppress(OSError):
                ws.socket.shutdown(socket.SHUT_RDWR)
            ws.socket.close()
        else:
            ws.close(int(code), "scripted")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@contextlib.contextmanager
def running_close_server() -> Iterator[CloseServer]:
    server = CloseServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
