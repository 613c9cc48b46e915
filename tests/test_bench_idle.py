"""The idle scenario (loadtest.bench.idle) at a tiny size, so it cannot rot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtest.bench import idle


@pytest.mark.timeout(120)
def test_the_long_hold_measures_and_samples_a_few_idle_sockets(tmp_path: Path) -> None:
    argv = ["--hold", "--sockets", "20", "--seconds", "2", "--every", "0.5", "--warmup", "0"]
    assert idle.main([*argv, "--settle", "0.5", "--processes", "1", "--out", str(tmp_path)]) == 0

    data = json.loads((tmp_path / "idle-hold.json").read_text())
    (result,) = data["results"]
    assert result["opened"] == 20 and result["still_open"] == 20
    assert not result["workers_replaced"]
    # Admission goes through Redis; the commands a script runs count under their own names.
    assert result["admission_redis_commands"] > 0
    assert set(result["admission_by_command"]) - {"evalsha", "evalsha_ro", "eval", "info"}
    redis = result["redis"]
    assert redis["commands_per_socket_s"] >= 0 and redis["cpu_us_per_socket_s"] >= 0
    assert len(redis["nodes"]) == 1
    assert math.isfinite(result["rss_kib_per_socket"]) and result["worker_cpu_us_per_socket_s"] >= 0
    assert len(result["samples"]) >= 3
    assert all(sample["open"] == 20 and sample["descriptors"] >= 20 for sample in result["samples"])
    assert result["flatness"]["samples"] >= 3
    text = (tmp_path / "idle-hold.md").read_text()
    assert "Redis commands per idle socket per second" in text and "sockets lost: 0" in text


@pytest.mark.timeout(120)
def test_the_latency_tail_runs_against_the_gateway(tmp_path: Path) -> None:
    argv = ["--tail", "--sockets", "20", "--seconds", "1", "--rounds", "2", "--rate", "50", "--settle", "0.5"]
    assert idle.main([*argv, "--processes", "1", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "idle-tail.json").read_text())["results"]
    gateway = results["gateway"]
    assert gateway["opened"] == 20 and gateway["published"] == 2 * 50 and gateway["loss"] == 0
    assert len(gateway["rounds"]) == 2
    assert 0 < gateway["p99_ms"] <= gateway["max_ms"]
    # The baseline may lack its package here; it then says so instead of a figure.
    assert set(results["broadcaster"]) >= {"p99_ms", "max_ms"} or "error" in results["broadcaster"]
