"""`make test-quick` leaves out the tests that start Chromium, a Redis Cluster or Sentinel: the
markers tests/conftest.py sets from what each test starts, through its fixtures however deep."""

from __future__ import annotations

import subprocess
import sys

from harness.paths import ROOT


def _collected(marker: str, *paths: str) -> set[str]:
    """The test ids ``-m marker`` selects among ``paths``."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            marker,
            *paths,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: none collected
    return {line for line in result.stdout.splitlines() if "::" in line}


def _files(ids: set[str]) -> set[str]:
    return {test_id.split("::")[0] for test_id in ids}


def test_each_slow_part_is_marked_and_the_rest_is_not() -> None:
    paths = (
        "tests/browser/test_smoke.py",
        "tests/test_sentinels.py",
        "tests/test_limiter_cluster.py",
        "tests/test_hub.py",
    )
    assert _files(_collected("browser", *paths)) == {"tests/browser/test_smoke.py"}
    assert _files(_collected("sentinel", *paths)) == {"tests/test_sentinels.py"}
    cluster = _collected("cluster", *paths)
    assert _files(cluster) == {"tests/test_limiter_cluster.py"}
    assert "tests/test_limiter_cluster.py::test_the_limiter_keeps_working_after_a_master_failover" in cluster
    quick = _collected("not browser and not cluster and not sentinel", *paths)
    assert _files(quick) == {"tests/test_hub.py", "tests/test_limiter_cluster.py"}
    # A test in a cluster module that starts no cluster stays in the quick run.
    assert "tests/test_limiter_cluster.py::test_a_users_lease_keys_share_the_slot_of_its_channel" in quick


def test_make_test_quick_selects_by_those_markers() -> None:
    commands = subprocess.run(
        ["make", "-n", "test-quick"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert '-m "not browser and not cluster and not sentinel"' in commands
    assert "ensure-chromium" not in commands
