"""What arrives for a socket before it is served waits in its outbox; more than the outbox holds
ends it (``admission_backlog``), counted and logged, instead of a silent drop."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from gateway import close_codes
from gateway.admission.auth import Authenticator, Identity
from gateway.clock import SYSTEM_CLOCK
from gateway.config.settings import Settings
from gateway.connection import Connection, ConnectionLimits
from harness.tokens import SECRET

QUEUE_SIZE = 8


class UnacceptedLink:
    """A socket in admission, as the server's protocol reports it: not writable, and closing
    (its WebSocket state is not OPEN before the accept)."""

    last_activity = 0.0
    on_writable = None
    on_control = None

    def can_write(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return True

    def write_frames(self, payloads: list[bytes]) -> None:
        raise AssertionError("written before the accept")


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": reason}) or 0.0


def _connection() -> Connection:
    settings = Settings.from_environ({"JWT_SECRET_KEY": SECRET})
    return Connection(
        Identity("alice", time.time() + 3600),
        UnacceptedLink(),
        limits=ConnectionLimits(queue_size=QUEUE_SIZE, idle_timeout=3600.0, messages_per_second=10.0),
        authenticator=Authenticator(settings),
        clock=SYSTEM_CLOCK,
    )


async def test_a_full_outbox_before_the_accept_ends_the_socket_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One frame more than the outbox holds, before the accept: the socket is ended with
    1013 admission_backlog, every frame it held counted as dropped, one log line."""
    connection = _connection()
    before = _dropped("admission_backlog"), _dropped("closing")
    with caplog.at_level(logging.WARNING, logger="gateway.connection"):
        for n in range(QUEUE_SIZE + 1):
            connection.push(b"%d" % n, time.monotonic())
    assert connection.end_reason is close_codes.ADMISSION_BACKLOG
    assert connection.end_reason.close_code == 1013
    assert _dropped("admission_backlog") - before[0] == QUEUE_SIZE + 1
    assert _dropped("closing") == before[1]
    assert [r.getMessage() for r in caplog.records] == [
        f"send queue full: {QUEUE_SIZE + 1} messages dropped, closing it (admission_backlog)"
    ]


async def test_what_fits_before_the_accept_waits_for_it() -> None:
    """Up to the outbox's size, frames before the accept wait; nothing ends the socket."""
    connection = _connection()
    for n in range(QUEUE_SIZE):
        connection.push(b"%d" % n, time.monotonic())
    assert connection.end_reason is None
