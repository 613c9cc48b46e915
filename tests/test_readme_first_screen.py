"""The README's first screen says what `make test` installs on the machine and that a quicker
target exists: each `scripts/ensure-*` the test target runs is named there."""

from __future__ import annotations

import re

from harness.paths import ROOT

FIRST_SCREEN = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])


def _recipe(target: str) -> str:
    makefile = (ROOT / "Makefile").read_text()
    return re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)[1]  # type: ignore[index]


def test_every_package_make_test_installs_is_named_on_the_first_screen() -> None:
    ensured = re.findall(r"scripts/ensure-([\w-]+)", _recipe("test"))
    assert ensured, "the test target installs nothing?"
    assert [name for name in ensured if name not in FIRST_SCREEN] == []
    assert "as root" in FIRST_SCREEN or "run as root" in FIRST_SCREEN
    assert re.search(r"about \d+ minutes", FIRST_SCREEN)


def test_the_quick_target_is_on_the_first_screen_and_installs_no_browser() -> None:
    assert "make test-quick" in FIRST_SCREEN
    assert "ensure-chromium" not in _recipe("test-quick")
