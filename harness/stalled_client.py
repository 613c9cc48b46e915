"""A raw WebSocket client that stops reading, and what the server's side of it looks like."""

from __future__ import annotations

import socket
import time

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class StalledClient:
    """A real WebSocket client that completes the handshake, then never reads again."""

    def __init__(self, url: str, subprotocols: list[str] | None = None) -> None:
        self.protocol = ClientProtocol(parse_uri(url), subprotocols=subprotocols)  # type: ignore[arg-type]
        self.sock = socket.socket()
        # A tiny receive window, so the server's buffers fill quickly.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        uri = parse_uri(url)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        self.sock.settimeout(10)
        # Frames that came in the same read as the response (a close at once) are kept for later.
        self._pending: list[object] = []
        while True:
            events = self._read_some()
            if any(isinstance(e, Response) for e in events):
                self._pending = [e for e in events if not isinstance(e, Response)]
                break

    @property
    def port(self) -> int:
        """The client's local port: the server's socket for it is (gateway port, this port)."""
        return int(self.sock.getsockname()[1])

    def _read_some(self) -> list[object]:
        if self._pending:
            events, self._pending = self._pending, []
            return events
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""  # the server aborted: what it had not sent is lost
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    def close_frame(self) -> Close | None:
        """Read everything the server sent; its close frame, if one came before the end."""
        while True:
            for event in self._read_some():
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    return Close.parse(event.data)
            if self.protocol.state.name == "CLOSED":
                return None

    def frames_until(self, opcode: Opcode, data: bytes) -> list[Frame]:
        """Read frames (as a client that starts reading again) up to one with ``opcode`` and
        ``data``; every frame read, that one included."""
        frames: list[Frame] = []
        while True:
            for event in self._read_some():
                if isinstance(event, Frame):
                    frames.append(event)
                    if event.opcode is opcode and event.data == data:
                        return frames
            if self.protocol.state.name == "CLOSED":
                raise AssertionError("the server closed the connection")

    def close_code(self) -> int | None:
        close = self.close_frame()
        return close.code if close is not None else None

    def flood(self, frame: bytes, seconds: float) -> float | None:
        """Send ``frame`` over and over for up to ``seconds``, never reading; how long it took the
        server to cut the socket off (a reset or a broken pipe), or None if it never did."""
        chunk = memoryview(frame * max(1, 65536 // len(frame)))
        sent = 0  # into chunk: a partial send resumes mid-frame, so the stream stays well-formed
        self.sock.settimeout(0.2)
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                try:
                    sent = (sent + self.sock.send(chunk[sent:])) % len(chunk)
                except TimeoutError:
                    pass  # the server is not reading (any more): keep trying until it hangs up
        except OSError:
            return time.monotonic() - started
        return None

    def close(self) -> None:
        self.sock.close()


def masked_frame(opcode: Opcode, payload: bytes) -> bytes:
    """One frame as a client sends it."""
    return Frame(opcode, payload).serialize(mask=True)


def worker_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _server_socket(server_port: int, client_port: int) -> list[str] | None:
    """The /proc/net/tcp row of the server's end of the connection to ``client_port``, while a
    process holds it (a socket closed or aborted is gone, or an orphan with inode 0)."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                if inode != "0":
                    return fields
    return None


def server_held_ports(server_port: int) -> set[int]:
    """The client ports of every connection the server's process still holds, in one read."""
    held: set[int] = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == server_port and fields[9] != "0":
                held.add(int(fields[2].split(":")[1], 16))
    return held


def server_holds_socket(server_port: int, client_port: int) -> bool:
    return _server_socket(server_port, client_port) is not None


def server_read_everything(server_port: int, client_port: int) -> bool:
    """Whether the server has read all the client sent (its socket's receive queue is empty)."""
    fields = _server_socket(server_port, client_port)
    return fields is not None and int(fields[4].split(":")[1], 16) == 0
