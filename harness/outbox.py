"""Outbox: a local connection as the hub holds it (gateway.hub.Outbox), recording what it is given.

``frames`` are the payloads pushed to it, ``ended`` the refusals it was ended with; made with
``may_end=False`` an end raises instead, for a test where nothing may end a connection.
"""

from __future__ import annotations

from gateway.close_codes import Refusal
from gateway.history.cursor import Cursor, frame_for
from gateway.wire import HistoryMessage


class Outbox:
    def __init__(self, envelope: bool = False, connection_id: str = "", may_end: bool = True) -> None:
        self.envelope = envelope
        self.connection_id = connection_id
        # Envelope sockets: its cursor, as gateway/connection.py keeps one.
        self.cursor = Cursor(0)
        self.frames: list[bytes] = []
        self.ended: list[Refusal] = []
        self._may_end = may_end

    def push(self, payload: bytes, received_at: float) -> None:
        self.frames.append(payload)

    @property
    def composite(self) -> bool:
        return self.cursor.composite

    def push_history(
        self, group: str | None, message: HistoryMessage, shared: bytes | None, received_at: float
    ) -> None:
        frame = frame_for(self.cursor, group, message, shared)
        if frame is not None:
            self.frames.append(frame)

    def end(self, reason: Refusal) -> None:
        if not self._may_end:
            raise AssertionError(f"ended with {reason.reason}")
        self.ended.append(reason)

    @property
    def codes(self) -> list[int | None]:
        """The close codes it was ended with."""
        return [reason.close_code for reason in self.ended]
