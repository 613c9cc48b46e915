"""One table of refusals, in the code and in docs/reference.md."""

from __future__ import annotations

from gateway import close_codes
from harness.paths import ROOT


def test_readme_carries_the_current_table() -> None:
    assert close_codes.markdown_table() in (ROOT / "docs" / "reference.md").read_text()


def test_every_refusal_has_a_close_code_and_a_unique_reason() -> None:
    """A browser reads every refusal as a close code; only handshake refusals also have an HTTP
    status (for clients that did not offer the bearer subprotocol)."""
    reasons = [r.reason for r in close_codes.ALL]
    assert len(reasons) == len(set(reasons))
    with_status = {r.reason for r in close_codes.ALL if r.http_status is not None}
    assert with_status == {
        "token_missing",
        "token_invalid",
        "token_expired",
        "origin_forbidden",
        "query_invalid",
    }
    for refusal in close_codes.ALL:
        assert refusal.close_code in {
            *(1001, 1002, 1007, 1008, 1009, 1011, 1012, 1013),
            *(4001, 4003, 4008, 4029, 4400, 4401, 4403),
        }, refusal.reason
        assert len(refusal.reason) <= 123  # a close frame's reason: 123 bytes at most (RFC 6455 5.5)


def test_one_close_code_has_one_retry_rule() -> None:
    """Clients decide by the code (the reason is for people and metrics): equal codes, equal rule."""
    rules: dict[int | None, set[close_codes.Retry]] = {}
    for refusal in close_codes.ALL:
        rules.setdefault(refusal.close_code, set()).add(refusal.retry)
    assert {code: rule for code, rule in rules.items() if len(rule) > 1} == {}
