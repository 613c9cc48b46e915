"""The ``groups`` claim, the group channels' names, the hub's memberships and the one cursor per
connection, without a server (tests/e2e/test_groups.py has them through a real gateway)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway import close_codes, http_refusals, keys, wire
from gateway.admission.auth import Authenticator, AuthError, parse_groups
from gateway.config.settings import Settings
from gateway.history.cursor import MAX_LENGTH, Cursor, group_hash, parse_cursor
from gateway.history.position import Position
from gateway.hub import Hub
from harness.outbox import Outbox
from harness.paths import ROOT
from harness.tokens import SECRET

_IDS = st.text(min_size=1, max_size=40)
_CLAIMS = st.one_of(
    st.none(),
    st.lists(_IDS, max_size=70),
    st.lists(st.one_of(_IDS, st.integers(), st.none(), st.booleans()), max_size=5),
    _IDS,
    st.integers(),
    st.dictionaries(_IDS, _IDS, max_size=3),
)


@given(_CLAIMS)
def test_a_groups_claim_is_a_list_of_at_most_64_valid_ids_or_unusable(claim: Any) -> None:
    groups = parse_groups(claim)
    valid = claim is None or (
        isinstance(claim, list)
        and len(claim) <= keys.MAX_GROUPS
        and all(isinstance(g, str) and keys.is_valid_group_id(g) for g in claim)
    )
    assert (groups is not None) == valid
    if groups is not None and claim is not None:
        assert groups == tuple(dict.fromkeys(claim))


def _authenticator() -> Authenticator:
    return Authenticator(Settings.from_environ({"JWT_SECRET_KEY": SECRET}))


def _token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")


def test_a_token_s_groups_are_its_identity_s_and_a_bad_claim_refuses_it_as_invalid() -> None:
    authenticator = _authenticator()
    assert authenticator.validate(_token()).groups == ()
    assert authenticator.validate(_token(groups=["a", "b", "a"])).groups == ("a", "b")
    for bad in (["a", 1], "a", ["*"], ["{a"], [f"g{i}" for i in range(65)]):
        with pytest.raises(AuthError) as refused:
            authenticator.validate(_token(groups=bad))
        assert refused.value.refusal is close_codes.TOKEN_INVALID
        assert str(refused.value) == "unusable groups claim"


@given(st.text(min_size=1, max_size=256))
def test_no_group_or_broadcast_channel_is_a_user_s_and_each_shares_its_keys_slot(name: str) -> None:
    """A brace is in every group channel and in no user id; the unmatched brace hashes the whole
    channel on a Cluster, which is the tag of the group's history keys."""
    for group in (name, keys.BROADCAST):
        if group != keys.BROADCAST and not keys.is_valid_group_id(group):
            continue
        channel = keys.group_channel("ws", group)
        assert not keys.is_valid_user_id(channel.removeprefix("ws:"))
        source = keys.group_source(group)
        assert keys.group_of(source) == group
        slot = key_slot(channel.encode())
        assert key_slot(keys.history_key("ws", source).encode()) == slot
        assert key_slot(keys.history_meta_key("ws", source).encode()) == slot


_POSITIONS = st.builds(
    Position,
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=wire.MAX_EPOCH_LENGTH),
    st.integers(0, 10**wire.MAX_OFFSET_DIGITS - 1),
)
_GROUPS = st.lists(st.text(min_size=1, max_size=256).filter(keys.is_valid_group_id), max_size=64, unique=True)


@given(_GROUPS, st.data())
def test_a_cursor_round_trips_within_its_bound_and_a_url_needs_no_escape_for_it(
    groups: list[str], data: st.DataObject
) -> None:
    cursor = Cursor(data.draw(st.integers(0, 10**13 - 1)), data.draw(st.none() | _POSITIONS))
    for group in data.draw(st.lists(st.sampled_from([*groups, keys.BROADCAST]), unique=True)):
        cursor.groups[group] = data.draw(_POSITIONS)
    for group in [g for g in groups if g not in cursor.groups]:
        # A group a refresh joined, with no message since: its time instead of a position.
        if data.draw(st.booleans()):
            cursor.joined[group] = data.draw(st.integers(0, 10**13 - 1))
    text = cursor.text()
    assert len(text) <= MAX_LENGTH
    assert all(c.isascii() and (c.isalnum() or c in "-.") for c in text)
    parsed = parse_cursor(text, tuple(groups))
    assert parsed is not None
    again, single = parsed
    if cursor.user is not None and not cursor.composite:
        assert single and again.user == cursor.user
    else:
        assert not single and again == cursor


@given(st.text(max_size=200) | st.builds("t{}.u1-a".format, st.text(max_size=20)))
@example("t\u00b2")  # a digit to str.isdigit, not to int()
@example("t\u0663.u1-a")  # an Arabic-Indic digit
def test_any_since_parses_to_a_cursor_or_none_and_never_raises(text: str) -> None:
    parsed = parse_cursor(text, ("a", "b"))
    if parsed is not None and not parsed[1]:
        assert text[1 : text.find(".") if "." in text else None].isascii()


def test_a_cursor_forgets_a_group_it_left_and_ignores_one_it_cannot_name() -> None:
    cursor = Cursor(5, Position("ep", 1), {"a": Position("ea", 2), "b": Position("eb", 3)})
    text = cursor.text()
    parsed = parse_cursor(text, ("a",))
    assert parsed is not None and parsed[0].groups == {"a": Position("ea", 2)}
    cursor.change_groups(("a", "b"), ("b",), 9)
    assert cursor.groups == {"b": Position("eb", 3)} and cursor.joined == {}


def test_a_group_joined_again_counts_its_messages_from_the_rejoin_not_its_old_position() -> None:
    """Left, its position is forgotten; joined again, its messages count from the join: neither
    what it was given nor what was published while not a member comes back on a resume."""
    cursor = Cursor(5, Position("ep", 1), {"a": Position("ea", 2)})
    cursor.change_groups(("a",), (), 7)
    assert not cursor.composite and cursor.text() == "1-ep"
    cursor.change_groups((), ("a",), 9)
    assert cursor.composite and cursor.since("a") == 9 and cursor.since("b") == 5
    parsed = parse_cursor(cursor.text(), ("a", "b"))
    assert parsed is not None and parsed[0].joined == {"a": 9} and parsed[0].groups == {}
    assert cursor.advance("a", Position("ea", 3)) and cursor.joined == {}
    assert parse_cursor(f"t5.j{group_hash('a')}x", ("a",)) is None
    assert parse_cursor("x" * (MAX_LENGTH + 1), ()) is None
    assert parse_cursor("t1.q1-ab", ()) is None


def test_a_group_s_members_get_one_envelope_each_with_their_own_cursor() -> None:
    """Raw members the data; envelope members a frame that names the group and carries their
    own cursor; the group's last member gone: no membership left (the hub says so)."""
    raw, env = Outbox(), Outbox(envelope=True)
    hub = Hub(100)
    hub.add("alice", env)
    hub.add("bob", raw)
    assert hub.add_member("team", env) is True
    assert hub.add_member("team", raw) is False
    assert "{team" in hub.user_ids() and hub.user_count == 2 and len(hub.connections()) == 2
    hub.deliver("alice", wire.history_message("ua", 4, b'"mine"'))
    hub.deliver("{team", wire.history_message("ga", 7, b'{"n":1}'))
    hub.deliver("{team", b"plain")
    hub.deliver("{team", wire.control_command("disconnect"))  # a group's channel ends nobody
    assert raw.frames == [b'{"n":1}', b"plain"]
    frames = [json.loads(f) for f in env.frames]
    assert frames[0] == {"type": "message", "position": "4-ua", "data": "mine"}
    assert frames[1]["group"] == "team" and frames[1]["data"] == {"n": 1}
    cursor = parse_cursor(frames[1]["position"], ("team",))
    assert cursor is not None and cursor[0].user == Position("ua", 4)
    assert cursor[0].groups == {"team": Position("ga", 7)}
    assert frames[2] == {"type": "message", "group": "team", "data": "plain"}
    assert not raw.ended and not env.ended
    assert hub.remove_member("team", env) is False
    assert hub.remove_member("team", raw) is True
    assert "{team" not in hub.user_ids()


def test_the_longest_cursor_fits_a_request_target_and_the_docs_state_its_bound() -> None:
    assert len("/ws?envelope=1&since=") + MAX_LENGTH < http_refusals.MAX_TARGET_BYTES
    text = " ".join((ROOT / "docs" / "publishing.md").read_text().split())
    assert f"With 64 groups a cursor is at most {MAX_LENGTH:,} characters" in text
    assert f"{http_refusals.MAX_TARGET_BYTES:,} bytes the gateway takes for a request target" in text
