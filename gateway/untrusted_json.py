"""JSON from outside the gateway (published payloads, history entries, client frames), parsed so
that every failure is one exception the caller expects.

Python's parser recurses once per nesting level: a few kilobytes of brackets raise
``RecursionError``, which is no ``ValueError``, and where it raises depends on how deep the
caller's stack already is. So nesting is bounded first, the same everywhere (``MAX_DEPTH``),
and the parser's own exceptions are caught too: a caller handles ``NotJSON`` and nothing else.

What parsing costs grows with the number of values, not only the bytes: a few megabytes of
``[],[],...`` are millions of lists, a second of the event loop and a hundred megabytes.
``values`` bounds that before anything is parsed.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

# Deeper than any notification, shallow enough for every client's parser (the envelope adds one).
MAX_DEPTH = 128

# A JSON string, escapes included; unrolled so the match is linear.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BYTE_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class NotJSON(ValueError):
    """Not one JSON value (NaN and Infinity are not JSON), or nested deeper than ``MAX_DEPTH``."""


def loads(text: str) -> object:
    """The JSON value of ``text``; raises NotJSON and nothing else."""
    _check_depth(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise NotJSON(str(exc)) from None


def is_json(text: str) -> bool:
    """Whether ``text`` is one JSON value within the nesting bound. Numbers are not converted:
    an integer of any length is valid JSON, though ``int()`` refuses 4,300 digits and more."""
    try:
        _check_depth(text)
        json.loads(text, parse_constant=_refuse_constant, parse_int=_skip, parse_float=_skip)
    except (ValueError, RecursionError):
        return False
    return True


def nesting(text: str) -> int:
    """How deep brackets nest in ``text``, outside strings (an upper bound for text that is not
    JSON, which the parser refuses anyway)."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def values(data: bytes, limit: int) -> int:
    """How many arrays, objects and commas ``data`` holds, a bound on the values parsing it makes
    (every value of a container but its first follows a comma; a key and its value count once).
    Counted on the bytes first, three passes in C, which may count some inside strings; only when
    that is over ``limit`` are strings taken out (commas in text) and the count made exact."""
    rough = data.count(b"[") + data.count(b"{") + data.count(b",")
    if rough <= limit:
        return rough
    bare = _BYTE_STRING.sub(b"", data)
    return bare.count(b"[") + bare.count(b"{") + bare.count(b",")


def _check_depth(text: str) -> None:
    # Counting brackets is cheap, and fewer of them than the bound cannot nest past it.
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting(text) > MAX_DEPTH:
        raise NotJSON(f"nested deeper than {MAX_DEPTH}")


def _refuse_constant(name: str) -> None:
    raise ValueError(name)  # NaN and Infinity are not JSON, whatever Python's parser allows


def _skip(number: str) -> None:
    return None
