"""The table of HTTP refusals, in the code and in docs/reference.md."""

from __future__ import annotations

from gateway import http_refusals
from harness.paths import ROOT


def test_readme_carries_the_current_table() -> None:
    assert http_refusals.markdown_table() in (ROOT / "docs" / "reference.md").read_text()


def test_reasons_are_unique() -> None:
    reasons = [r.reason for r in http_refusals.ALL]
    assert len(reasons) == len(set(reasons))


def test_the_limits_sit_inside_the_websocket_handshake_parsers() -> None:
    """An upgrade is re-read by websockets' parser: anything this server lets through must pass
    it too, so that one request meets one set of limits, whatever its path."""
    from websockets import http11

    longest_method = len("OPTIONS")
    request_line = longest_method + 1 + http_refusals.MAX_TARGET_BYTES + len(" HTTP/1.1\r\n")
    assert request_line <= http11.MAX_LINE_LENGTH
    assert http_refusals.MAX_HEADER_BYTES + len(": \r\n") <= http11.MAX_LINE_LENGTH
    assert http_refusals.MAX_HEADERS <= http11.MAX_NUM_HEADERS
