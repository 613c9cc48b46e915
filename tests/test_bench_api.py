"""loadtest/bench/api.py at a tiny size: every figure is measured and the table says them."""

from __future__ import annotations

import json
from pathlib import Path


def test_the_api_bench_measures_round_trips_throughput_and_a_batch(tmp_path: Path) -> None:
    from loadtest.bench import api

    argv = [
        "--publishes",
        "20",
        "--connections",
        "2",
        "--requests",
        "10",
        "--batch",
        "50",
        "--out",
        str(tmp_path),
    ]
    assert api.main(argv) == 0
    results = json.loads((tmp_path / "api.json").read_text())
    assert results["throughput"]["publishes"] == 20
    assert results["batch"]["messages"] == 50
    assert (
        results["round_trip"]["http"]["median_us"] > 0 and results["round_trip"]["library"]["median_us"] > 0
    )
    table = (tmp_path / "api.md").read_text()
    assert table.startswith(f"Run {results['started']} on {results['machine']}")
    assert "publishes/s" in table and "A batch of 50" in table
