"""One table of refusals, in the code and in the README."""

from __future__ import annotations

from gateway import close_codes
from harness.paths import ROOT


def test_readme_carries_the_current_table() -> None:
    assert close_codes.markdown_table() in (ROOT / "README.md").read_text()


def test_every_refusal_has_exactly_one_signal_and_a_unique_reason() -> None:
    reasons = [r.reason for r in close_codes.ALL]
    assert len(reasons) == len(set(reasons))
    for refusal in close_codes.ALL:
        assert (refusal.http_status is None) != (refusal.close_code is None), refusal.reason
        if refusal.close_code is not None:
            assert refusal.close_code in {1001, 1007, 1008, 1009, 1011, 1012, 1013, 4001, 4003, 4008, 4029}
