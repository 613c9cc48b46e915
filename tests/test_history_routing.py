"""The hub's routing of history messages, envelope frames, positions and resume options."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway import wire
from gateway.admission.query import parse as parse_query
from gateway.history import envelope
from gateway.history.cursor import Cursor
from gateway.history.position import Position, parse_position
from gateway.history.recovery import parse_options
from gateway.hub import Hub
from gateway.untrusted_json import MAX_DEPTH
from harness.outbox import Outbox
from harness.paths import ROOT


def _outbox(envelope: bool = False) -> Outbox:
    """Nothing routed here may end a socket."""
    return Outbox(envelope, may_end=False)


def _hub(*outboxes: Outbox, max_payload_size: int = 100) -> Hub:
    hub = Hub(max_payload_size)
    for outbox in outboxes:
        hub.add("alice", outbox)
    return hub


def test_raw_sockets_get_the_data_and_envelope_sockets_share_one_envelope() -> None:
    raw, env1, env2 = _outbox(), _outbox(envelope=True), _outbox(envelope=True)
    hub = _hub(raw, env1, env2)
    hub.deliver("alice", wire.history_message("ep1", 7, b'{"a":1}'))
    hub.deliver("alice", b"plain text")
    assert raw.frames == [b'{"a":1}', b"plain text"]
    assert [json.loads(f) for f in env1.frames] == [
        {"type": "message", "position": "7-ep1", "data": {"a": 1}},
        {"type": "message", "data": "plain text"},
    ]
    assert env1.frames[0] is env2.frames[0]  # built once per message
    assert hub.history.last_delivered("alice") == Position("ep1", 7)


def test_duplicates_malformed_and_bad_history_data_are_dropped() -> None:
    raw = _outbox()
    hub = _hub(raw, max_payload_size=10)
    hub.deliver("alice", wire.history_message("ep", 2, b"two"))
    hub.deliver("alice", wire.history_message("ep", 2, b"again"))
    hub.deliver("alice", wire.history_message("ep", 1, b"older"))
    hub.deliver("alice", b"\xffHno-offset")
    hub.deliver("alice", b"\xffX unknown kind")
    hub.deliver("alice", wire.history_message("ep", 3, b"\xff\xfe"))
    hub.deliver("alice", wire.history_message("ep", 4, b"x" * 11))
    hub.deliver("alice", wire.history_message("ep", 5, b"x" * 10))  # the limit counts the data only
    hub.deliver("alice", wire.history_message("new", 1, b"new epoch"))
    assert raw.frames == [b"two", b"x" * 10, b"new epoch"]


def test_a_held_user_gets_the_gap_then_what_was_held_without_duplicates() -> None:
    raw, env = _outbox(), _outbox(envelope=True)
    hub = _hub(raw, env)
    hub.deliver("alice", wire.history_message("ep", 1, b"1"))
    generation = hub.hold("alice")
    assert generation is not None
    assert hub.hold("bob") is None
    hub.deliver("alice", wire.history_message("ep", 4, b"4"))  # arrived live during the read
    hub.deliver("alice", b"plain")
    hub.deliver("alice", wire.history_message("ep", 5, b"5"))
    assert raw.frames == [b"1"]
    hub.deliver_held("alice", generation, Position("ep", 1), [b"2", b"3", b"4"])
    assert raw.frames == [b"1", b"2", b"3", b"4", b"plain", b"5"]
    assert [json.loads(f).get("position") for f in env.frames] == [
        "1-ep",
        "2-ep",
        "3-ep",
        "4-ep",
        None,
        "5-ep",
    ]
    hub.deliver("alice", b"after")
    assert raw.frames[-1] == b"after"


def test_notify_reaches_envelope_sockets_only_and_leaving_forgets_the_user() -> None:
    raw, env = _outbox(), _outbox(envelope=True)
    hub = _hub(raw, env)
    hub.deliver("alice", wire.history_message("ep", 1, b"1"))
    hub.notify("alice", envelope.recovery(False, 0, "trimmed"))
    assert raw.frames == [b"1"] and json.loads(env.frames[-1])["recovered"] is False
    hub.remove("alice", raw)
    hub.remove("alice", env)
    assert hub.history.last_delivered("alice") is None


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b'{"a":[1,2]}', {"a": [1, 2]}),
        (b"42", 42),
        (b"text", "text"),
        (b"NaN", "NaN"),
        (b'"s"', "s"),
        (b"", ""),
        (b"1\x002\x00", "1\x002\x00"),
        (b" [1] ", [1]),
    ],
)
def test_envelope_data_is_the_json_value_or_a_string(data: bytes, value: object) -> None:
    frame = json.loads(envelope.message(data, "1-e"))
    assert frame == {"type": "message", "position": "1-e", "data": value}


def test_positions_parse_only_what_the_gateway_gives_out() -> None:
    assert parse_position("12-abc9") == Position("abc9", 12)
    for bad in ["", "12", "-a", "1-", "a-b", "1-a b", "1-" + "a" * 70, "9" * 16 + "-a", "1-é", "1-a-b"]:
        assert parse_position(bad) is None, bad


def test_resume_options_come_from_the_query_string() -> None:
    assert parse_options(parse_query(b"token=x")) == (False, None)
    assert parse_options(parse_query(b"token=x&envelope=1")) == (True, None)
    assert parse_options(parse_query(b"token=x&envelope=0")) == (False, None)
    assert parse_options(parse_query(b"since=3-ab&token=x")) == (True, "3-ab")
    assert parse_options(parse_query(b"since=")) == (True, "")


def test_a_live_frame_is_replayed_only_within_the_replayed_epoch_and_offsets() -> None:
    cursor = Cursor(0, Position("ep", 5))
    assert not cursor.advance(None, Position("ep", 5))
    assert not cursor.advance(None, Position("ep", 4))
    assert cursor.advance(None, Position("other", 3))
    assert cursor.advance(None, Position("other", 4))
    assert cursor.advance("team", Position("other", 4))  # another source: not a copy


def test_a_live_copy_of_a_replayed_message_that_arrives_late_is_not_sent_again() -> None:
    """A resumed socket's replay read the history while copies were still on their way over
    pub/sub: those copies are dropped for that socket only, and checking stops past the replay."""
    resumed, other = _outbox(envelope=True), _outbox(envelope=True)
    hub = _hub(resumed, other)
    resumed.cursor.user = Position("ep", 5)
    for offset in (4, 5, 6, 7):
        hub.deliver("alice", wire.history_message("ep", offset, b"%d" % offset))
    assert [json.loads(f)["data"] for f in resumed.frames] == [6, 7]
    assert [json.loads(f)["data"] for f in other.frames] == [4, 5, 6, 7]
    assert resumed.cursor.user == Position("ep", 7)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_deeply_nested_payload_goes_to_envelope_sockets_as_a_string() -> None:
    """1,500 nested arrays are valid JSON that Python's parser cannot take (RecursionError): the
    envelope carries them as a JSON string, and no socket is ended (Outbox.end would raise)."""
    raw, env = _outbox(), _outbox(envelope=True)
    hub = _hub(raw, env, max_payload_size=64 * 1024)
    hub.deliver("alice", wire.history_message("ep", 1, _deep(1500)))
    hub.deliver("alice", _deep(1500))
    hub.deliver("alice", b'{"after":1}')
    assert raw.frames == [_deep(1500), _deep(1500), b'{"after":1}']
    frames = [json.loads(f) for f in env.frames]
    assert frames[0] == {"type": "message", "position": "1-ep", "data": _deep(1500).decode()}
    assert frames[1] == {"type": "message", "data": _deep(1500).decode()}
    assert frames[2]["data"] == {"after": 1}


@pytest.mark.parametrize("payload", ["\x01" * 65_000, '"' * 40_000, "\\" * 40_000])
def test_an_envelope_frame_over_the_bound_is_dropped_for_envelope_sockets_only(payload: str) -> None:
    """The queue bound (queue length x message size) holds for the frame queued: escaping makes
    a control character 6 bytes, so the envelope of a payload under the limit can be over it."""
    raw, env = _outbox(), _outbox(envelope=True)
    hub = _hub(raw, env, max_payload_size=64 * 1024)
    before = _dropped("too_large")
    hub.deliver("alice", payload.encode())
    hub.deliver("alice", wire.history_message("ep", 1, payload.encode()))
    hub.deliver("alice", b'"small"')
    assert raw.frames == [payload.encode(), payload.encode(), b'"small"']
    assert [json.loads(f)["data"] for f in env.frames] == ["small"]
    assert _dropped("too_large") == before + 2
    assert all(len(f) <= 64 * 1024 + envelope.MAX_OVERHEAD for f in env.frames)


def test_the_docs_state_the_envelope_bound() -> None:
    docs = [ROOT / "docs" / "publishing.md", ROOT / "docs" / "reference.md"]
    text = " ".join(" ".join(path.read_text().split()) for path in docs)
    assert f"An envelope is at most `WEBSOCKET_MAX_PAYLOAD_SIZE` plus {envelope.MAX_OVERHEAD} bytes" in text
    assert f"{envelope.MAX_OVERHEAD} bytes per envelope frame" in text
    assert f"nested at most {MAX_DEPTH} deep" in text


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": reason}) or 0.0


_OWN = st.one_of(
    st.binary().map(lambda rest: b"\xff" + rest),
    st.binary(max_size=80).map(lambda epoch: b"\xffH" + epoch + b" 1 {}"),
)


@settings(max_examples=300)
@given(_OWN)
def test_any_gateway_message_is_delivered_as_envelope_json_or_dropped(payload: bytes) -> None:
    """Whatever a publisher puts after 0xFF, delivery does not raise, ends no socket, and every
    envelope frame is a message object with no field a payload could forge."""
    raw, env = _outbox(), _outbox(envelope=True)
    hub = _hub(raw, env)
    hub.deliver("alice", payload)
    for frame in env.frames:
        parsed = json.loads(frame)
        assert parsed["type"] == "message" and set(parsed) <= {"type", "position", "data"}
        assert parse_position(parsed.get("position", "1-e")) is not None
