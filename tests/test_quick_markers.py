"""`make test-quick` leaves out the tests that start Chromium, a Redis Cluster or Sentinel: the
markers tests/conftest.py sets from what each test starts, through its fixtures however deep."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.paths import ROOT

# Collects ``paths`` once (a pytest start costs seconds) and prints each test's markers among
# these, as the conftest left them; ``-m`` selects by exactly those.
_LIST_MARKERS = """
import json, sys, pytest

class Markers:
    found = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        for item in items:
            names = {m.name for m in item.iter_markers()}
            self.found[item.nodeid] = sorted(names & set(sys.argv[1].split(",")))

markers = Markers()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[2:]], plugins=[markers])
print("MARKERS " + json.dumps(markers.found))
sys.exit(int(code))
"""
_SLOW = ("browser", "cluster", "sentinel")


def _markers(*paths: str) -> dict[str, set[str]]:
    """Each collected test id among ``paths``, with the slow-part markers it carries."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_MARKERS, ",".join(_SLOW), *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("MARKERS ")]
    return {test_id: set(names) for test_id, names in json.loads(line.removeprefix("MARKERS ")).items()}


def _collected(markers: dict[str, set[str]], marker: str | None) -> set[str]:
    """The ids ``-m marker`` would select (None: ``-m "not browser and not cluster and not sentinel"``)."""
    return {test_id for test_id, names in markers.items() if (marker in names if marker else not names)}


def _files(ids: set[str]) -> set[str]:
    return {test_id.split("::")[0] for test_id in ids}


def test_each_slow_part_is_marked_and_the_rest_is_not() -> None:
    markers = _markers(
        "tests/browser/test_smoke.py",
        "tests/test_sentinels.py",
        "tests/test_limiter_cluster.py",
        "tests/test_hub.py",
    )
    assert _files(_collected(markers, "browser")) == {"tests/browser/test_smoke.py"}
    assert _files(_collected(markers, "sentinel")) == {"tests/test_sentinels.py"}
    cluster = _collected(markers, "cluster")
    assert _files(cluster) == {"tests/test_limiter_cluster.py"}
    assert "tests/test_limiter_cluster.py::test_the_limiter_keeps_working_after_a_master_failover" in cluster
    quick = _collected(markers, None)
    assert _files(quick) == {"tests/test_hub.py", "tests/test_limiter_cluster.py"}
    # A test in a cluster module that starts no cluster stays in the quick run.
    assert "tests/test_limiter_cluster.py::test_a_users_lease_keys_share_the_slot_of_its_channel" in quick


def test_make_test_quick_selects_by_those_markers() -> None:
    commands = subprocess.run(
        ["make", "-n", "test-quick"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert '-m "not browser and not cluster and not sentinel"' in commands
    assert "ensure-chromium" not in commands
