"""The channel's wire format: the gateway's own messages can never be mistaken for plain ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway import wire


@given(st.text())
def test_no_plain_payload_is_the_gateways_own(text: str) -> None:
    """Plain payloads are valid UTF-8, which never contains the byte 0xFF."""
    assert not wire.is_own(text.encode())


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1), st.integers(0, 2**53), st.binary()
)
def test_a_history_message_reads_back(epoch: str, offset: int, data: bytes) -> None:
    payload = wire.history_message(epoch, offset, data)
    assert wire.is_own(payload)
    assert wire.parse_history(payload) == (epoch, offset, data)
    assert wire.parse_control(payload) is None


def test_malformed_history_messages_are_refused() -> None:
    for payload in (b"\xffH", b"\xffHe", b"\xffHe x data", b"\xffH 1 data", b"\xffH\xff 1 d", b"plain"):
        assert wire.parse_history(payload) is None


def test_a_control_command_reads_back() -> None:
    assert wire.parse_control(wire.control_command("disconnect")) == ("disconnect", None)
    assert wire.parse_control(wire.control_command("disconnect", "w1:7")) == ("disconnect", "w1:7")
    assert wire.parse_control(b"\xffC") is None
    assert wire.parse_history(wire.control_command("disconnect")) is None
