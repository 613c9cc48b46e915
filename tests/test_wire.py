"""The channel's wire format: the gateway's own messages can never be mistaken for plain ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway import wire
from gateway.history.position import format_position, parse_position


@given(st.text())
def test_no_plain_payload_is_the_gateways_own(text: str) -> None:
    """Plain payloads are valid UTF-8, which never contains the byte 0xFF."""
    assert wire.MARK not in text.encode()


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=wire.MAX_EPOCH_LENGTH),
    st.integers(0, 10**wire.MAX_OFFSET_DIGITS - 1),
    st.binary(),
)
def test_a_history_message_reads_back(epoch: str, offset: int, data: bytes) -> None:
    payload = wire.history_message(epoch, offset, data)
    assert payload[0] == wire.MARK
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


def test_an_offset_longer_than_an_exact_integer_is_refused_not_raised() -> None:
    """``int()`` refuses 4,300 digits and more with a ValueError; Lua counts exactly to 15."""
    assert wire.parse_history(b"\xffHe " + b"9" * 5000 + b" x") is None
    assert wire.parse_history(b"\xffHe " + b"9" * 16 + b" x") is None
    assert wire.parse_history(b"\xffHe " + b"9" * 15 + b" x") == ("e", 10**15 - 1, b"x")


def test_an_epoch_the_publish_script_never_makes_is_refused() -> None:
    """The epoch goes into envelope JSON and positions: a quote or a dash would forge fields."""
    for epoch in (b'a"b', b"a\\b", b"a-b", b"a}b", b"x" * 41, "é".encode(), b"\x00", b"\t"):
        assert wire.parse_history(b"\xffH" + epoch + b" 1 data") is None, epoch
    assert wire.parse_history(b"\xffH" + b"Az09" * 10 + b" 1 data") == ("Az09" * 10, 1, b"data")


_DIGITS = st.integers(0, 6000).map(lambda n: b"9" * n)
_ODD = st.sampled_from([b"", b'"', b"-", b"\xff", b"a\x00", b"ab12"])
_FIELD = st.one_of(st.binary(max_size=50), _DIGITS, _ODD)
# Shaped like a history or control message, or not at all.
_OWN = st.one_of(
    st.binary().map(lambda rest: b"\xff" + rest),
    st.tuples(_FIELD, _FIELD, st.binary(max_size=50)).map(lambda parts: b"\xffH" + b" ".join(parts)),
    st.tuples(_FIELD, _FIELD).map(lambda parts: b"\xffC" + b" ".join(parts)),
)


@given(_OWN)
def test_any_bytes_after_the_mark_are_parsed_or_refused_never_raised(payload: bytes) -> None:
    """Whatever follows 0xFF, the parsers answer None or a message whose epoch and offset make a
    position the gateway gives out."""
    message = wire.parse_history(payload)
    if message is not None:
        position = format_position(message.epoch, message.offset)
        assert parse_position(position) == (message.epoch, message.offset)
    wire.parse_control(payload)
