"""make loadtest (loadtest/run.py): its warning when no user would publish, and its defaults."""

from __future__ import annotations

import re

from harness.paths import ROOT
from loadtest import run


def test_the_publisher_share_is_the_locustfile_weights() -> None:
    weights = re.findall(r"^    weight = (\d+)$", (ROOT / "loadtest" / "locustfile.py").read_text(), re.M)
    assert sum(map(int, weights)) == run.USERS_PER_PUBLISHER


def test_too_few_users_for_a_publisher_are_warned_about() -> None:
    warning = run.publisher_warning(20)
    assert warning is not None and "no publisher" in warning and "--users 21" in warning
    assert run.publisher_warning(run.USERS_PER_PUBLISHER) is None


def test_the_default_run_is_small_and_has_publishers() -> None:
    """About a minute in all: the run time plus start and stop."""
    defaults = run.build_parser().parse_args([])
    assert defaults.run_time == "45s"
    assert run.publisher_warning(defaults.users) is None
    assert defaults.users <= 200
