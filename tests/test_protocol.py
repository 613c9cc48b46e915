"""The gateway's own text-frame header against websockets' serializer."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from gateway.server.protocol import _text_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
def test_text_header_matches_websockets(length: int) -> None:
    payload = b"a" * length
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert _text_header(length) + payload == expected
