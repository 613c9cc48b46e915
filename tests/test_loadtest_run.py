"""make loadtest (loadtest/run.py): its warning when no user would publish, and its defaults."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from harness.paths import ROOT
from loadtest import run


def test_the_weights_are_the_locustfile_ones() -> None:
    source = (ROOT / "loadtest" / "locustfile.py").read_text()
    found = re.findall(r"^class (\w+)\(User\):\n(?:.*\n)*?    weight = (\d+)$", source, re.M)
    assert tuple((name, int(weight)) for name, weight in found) == run.WEIGHTS


def test_too_few_users_for_a_publisher_are_warned_about() -> None:
    fewest = run.fewest_users_with_a_publisher()
    assert 1 < fewest <= 21
    warning = run.publisher_warning(fewest - 1)
    assert warning is not None and "no publisher" in warning and f"--users {fewest} or more" in warning
    assert run.publisher_warning(fewest) is None


def test_the_default_run_is_small_and_has_publishers() -> None:
    """About a minute in all: the run time plus start and stop."""
    defaults = run.build_parser().parse_args([])
    assert defaults.run_time == "45s"
    assert run.publisher_warning(defaults.users) is None
    assert defaults.users <= 200


@pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (make loadtest installs it)"
)
def test_the_first_publisher_is_where_locust_puts_it() -> None:
    """Locust's own order, in a process of its own (importing locust monkey-patches with gevent)."""
    script = (
        "import itertools; from locust.dispatch import _kl_generator; "
        f"order = _kl_generator({run.WEIGHTS!r}); "
        "print(next(i for i, name in enumerate(order, 1) if name == 'PublisherUser'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(result.stdout) == run.fewest_users_with_a_publisher()
