"""The HTTP API's bound on the JSON values of a body, checked before it is parsed: the bodies it
exists for pass, a body of millions of tiny values is refused unparsed."""

from __future__ import annotations

import json

import pytest

from gateway.api import bodies, requests
from gateway.api.bodies import ApiError
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_full_batch_of_messages_with_their_share_of_values_parses() -> None:
    data = {f"k{i}": [i, i] for i in range(30)}  # about 90 values, as counted
    body = _body({"messages": [{"user": f"u{i}", "data": data, "history": True} for i in range(1000)]})
    limit = bodies.max_values(DEFAULT_MAX_PAYLOAD_SIZE)
    assert requests.parse_json(body, limit) == json.loads(body)


@pytest.mark.parametrize("payload_size", [DEFAULT_MAX_PAYLOAD_SIZE, 1024 * 1024])
def test_a_publish_of_the_largest_payload_parses_whatever_its_values(payload_size: int) -> None:
    zeros = [0] * (payload_size // 2 - 1)  # "[0,0,...]": the most values a payload holds
    assert len(json.dumps(zeros, separators=(",", ":"))) <= payload_size
    body = _body({"user": "u", "data": zeros, "idempotency_key": "k"})
    assert requests.parse_json(body, bodies.max_values(payload_size))["data"] == zeros  # type: ignore[index]


def test_a_body_of_tiny_values_is_refused_unparsed() -> None:
    bomb = b'{"messages":[' + b",".join([b"[]"] * 200_000) + b"]}"
    with pytest.raises(ApiError) as refused:
        requests.parse_json(bomb, bodies.max_values(DEFAULT_MAX_PAYLOAD_SIZE))
    assert (refused.value.status, refused.value.reason) == (413, "too_many_values")


def test_commas_in_text_do_not_count() -> None:
    text = "a, " * 200_000
    assert requests.parse_json(_body({"user": "u", "data": text}), 100_000) == {"user": "u", "data": text}
