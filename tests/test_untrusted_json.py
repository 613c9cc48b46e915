"""JSON from outside: one exception for every way it can fail, and a nesting bound."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import untrusted_json
from gateway.untrusted_json import MAX_DEPTH, NotJSON


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "text",
    [
        _nested(1500),  # RecursionError in Python's parser
        "[" * 5000,  # the same, unterminated
        '{"a":' * 3000,
        _nested(MAX_DEPTH + 1),  # within Python's stack, past the bound
        "9" * 5000,  # int() refuses it with a ValueError
        "NaN",
        "",
        "[1,]",
        '"\\ud800"x',
    ],
    ids=[
        "1500 deep",
        "unterminated",
        "objects",
        "past the bound",
        "huge int",
        "NaN",
        "empty",
        "trailing",
        "junk",
    ],
)
def test_loads_raises_only_not_json(text: str) -> None:
    with pytest.raises(NotJSON):
        untrusted_json.loads(text)


def test_nesting_up_to_the_bound_parses_and_brackets_in_strings_do_not_count() -> None:
    assert untrusted_json.loads(_nested(MAX_DEPTH)) == json.loads(_nested(MAX_DEPTH))
    in_strings = json.dumps(["[" * 5000, "{" * 5000, '\\"[[[', {"k[": "]"}])
    assert untrusted_json.loads(in_strings) == json.loads(in_strings)
    assert untrusted_json.nesting(in_strings) == 2


def test_is_json_takes_valid_numbers_of_any_length() -> None:
    """Validation converts no number: a 5,000-digit integer is valid JSON, embedded as it is."""
    assert untrusted_json.is_json("9" * 5000)
    assert untrusted_json.is_json("[1e999999, -0.5]")
    assert not untrusted_json.is_json(_nested(MAX_DEPTH + 1))
    assert not untrusted_json.is_json("Infinity")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_json_within_the_bound_reads_as_pythons_parser_reads_it(value: object) -> None:
    text = json.dumps(value)
    assert untrusted_json.loads(text) == json.loads(text)
    assert untrusted_json.is_json(text)


@given(st.text(alphabet='[]{}",:\\ 0a', max_size=400))
def test_any_text_parses_or_raises_not_json(text: str) -> None:
    try:
        untrusted_json.loads(text)
    except NotJSON:
        pass
    untrusted_json.is_json(text)


def test_values_counts_containers_and_commas_outside_strings_once_over_the_limit() -> None:
    text = json.dumps([1, {"a": "x,y,[z", "b": [2, 3]}, '\\",[']).encode()
    # Within the limit, the cheap count (commas and brackets in strings included) is enough.
    assert untrusted_json.values(text, 1000) == text.count(b"[") + text.count(b"{") + text.count(b",")
    # Over it, strings are taken out: [ { [ and the commas between values.
    assert untrusted_json.values(text, 0) == 3 + 4
    assert untrusted_json.values(b"[" + b",".join([b"[]"] * 10_000) + b"]", 100) == 10_001 + 9_999
