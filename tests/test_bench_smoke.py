"""The benchmark harness at a tiny size, so it cannot rot: every scenario against every target."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.redis_server import RedisServer
from loadtest.bench.scenarios import Sizes, run_target
from loadtest.bench.targets import TARGETS, missing_packages

TINY = Sizes(
    users=4,
    per_user=2,
    messages=40,
    rates=(100,),
    duration=0.3,
    idle=10,
    hold=0.2,
    processes=1,
    connect_concurrency=10,
    publish_concurrency=8,
    settle=0.3,
    quiet=0.7,
    drain_limit=10.0,
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", TARGETS)
def test_every_scenario_runs_at_a_tiny_size(
    target: str, redis_url: str, results: dict[str, dict[str, Any]]
) -> None:
    """Capacity, fan-out, latency and Redis cost all produce numbers for the target."""
    if target != "gateway" and not os.environ.get("BENCH_SMOKE_ALTERNATIVES"):
        # The alternatives' harness runs in make bench; smoke-testing it is opt-in, since it
        # needs the bench extra and the alternatives' own start-up is not ours to keep green.
        pytest.skip("alternatives are smoke-tested with BENCH_SMOKE_ALTERNATIVES=1")
    missing = missing_packages(target)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/bootstrap bench)")
    result = run_target(target, redis_url, TINY, log=lambda _: None)
    results[target] = result

    capacity = result["capacity"]
    assert capacity["opened"] == TINY.idle and capacity["failed"] == 0
    assert capacity["still_open"] == TINY.idle
    assert capacity["probe_sent"] == min(TINY.idle, 500)
    assert capacity["redis_clients"] >= 1

    fanout = result["fanout"]
    assert fanout["published"] == TINY.messages
    assert fanout["delivered"] > 0 and fanout["deliveries_per_second"] > 0
    assert fanout["redis_commands_per_delivery"] > 0
    assert len(fanout["rounds"]) == TINY.fanout_rounds
    # CPU time comes in clock ticks, so a tiny run may read zero; it must still be a number.
    assert fanout["server_cpu_us_per_delivery"] >= 0
    assert capacity["connect_cpu_us_per_connection"] >= 0

    latency = result["latency"]["100"]
    assert latency["delivered"] > 0 and not math.isnan(latency["p99_ms"])
    if target == "gateway":
        # The gateway subscribes before it accepts: nothing published after the open is lost.
        assert fanout["delivery_ratio"] == 1.0
        assert latency["loss"] == 0.0
        assert capacity["probe_received"] == capacity["probe_sent"]


def test_the_report_has_a_ratio_to_the_gateway_and_a_chart(
    results: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The Markdown table gives each alternative's figure as a ratio to the gateway's."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (scripts/bootstrap bench)")
    from dataclasses import asdict

    from loadtest.bench.report import chart, markdown

    if "gateway" not in results:
        pytest.skip("the gateway scenario did not run")
    ordered = [results[t] for t in TARGETS if t in results]
    meta = {"started": "test", "machine": "test", "sizes": asdict(TINY) | {"rates": list(TINY.rates)}}
    table = markdown(ordered, meta)
    assert "| fan-out deliveries/s |" in table
    if len(ordered) > 1:
        assert "x)" in table
    chart(ordered, meta, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_the_history_bench_measures_both_modes(tmp_path: Path) -> None:
    """loadtest/bench/history.py at a tiny size: a history publish costs more Redis commands."""
    from loadtest.bench import history

    assert (
        history.main(["--publishes", "50", "--users", "2", "--messages", "10", "--out", str(tmp_path)]) == 0
    )
    results = json.loads((tmp_path / "history.json").read_text())
    assert results["publish"]["plain"]["redis_commands_per_publish"] == 1.0
    assert results["publish"]["history"]["redis_commands_per_publish"] > 1.0
    assert results["fan_out"]["history"]["messages"] == 20
    table = (tmp_path / "history.md").read_text()
    assert "messages/s delivered" in table
    assert table.startswith(f"Run {results['started']} on {results['machine']}")


def test_a_plain_publish_on_a_cluster_crosses_the_bus_and_spublish_does_not() -> None:
    """loadtest/bench/cluster_bus.py at a tiny size: every PUBLISH reaches every other master over
    the cluster bus; an SPUBLISH reaches none, and its master writes far less."""
    from harness.redis_cluster import running_cluster
    from loadtest.bench.cluster_bus import compare_broadcast

    with running_cluster(masters=3) as cluster:
        masters = {f"127.0.0.1:{node.port}": node.client() for node in cluster.nodes}
        try:
            # Enough messages that the bus's own pings (2 kB each, several a second) are noise.
            results = compare_broadcast(masters, users=6, messages=300)
        finally:
            for client in masters.values():
                client.close()
    broadcast, sharded = results["broadcast"], results["sharded"]
    assert broadcast["delivered"] == sharded["delivered"] == 300
    for address, node in broadcast["nodes"].items():
        assert node["publish_received"] == 300 - node["published_here"]
        assert sharded["nodes"][address]["publishshard_received"] == 0
    written = [(node["written"], sharded["nodes"][a]["written"]) for a, node in broadcast["nodes"].items()]
    if all(b >= 0 for b, _ in written):  # /proc/PID/io readable
        assert sum(b for b, _ in written) > 2 * sum(s for _, s in written)


@pytest.mark.timeout(120)
def test_the_cluster_bench_compares_one_redis_with_a_cluster(tmp_path: Path) -> None:
    """loadtest/bench/cluster.py at a tiny size: both fan-outs deliver everything, and each master
    carries only the deliveries of the users whose slots it serves."""
    from loadtest.bench import cluster

    argv = ["--users", "6", "--per-user", "2", "--messages", "60", "--rounds", "1"]
    argv += ["--processes", "1", "--out", str(tmp_path)]
    assert cluster.main(argv) == 0
    results = json.loads((tmp_path / "cluster.json").read_text())
    for mode in ("single", "cluster"):
        assert results[mode]["delivered"] == results[mode]["expected"] == 120
        assert results[mode]["deliveries_per_second"] > 0
    nodes = results["cluster"]["nodes"].values()
    assert sum(node["owned_deliveries"] for node in nodes) == 120
    for node in nodes:
        assert node["publish_received"] == 0  # nothing crossed the cluster bus
        if node["owned_deliveries"] == 0:
            assert node["out_bytes"] < 2000  # replies to the gateway's own commands only
    assert results["ratio"] > 0
    assert "cluster / one Redis" in (tmp_path / "cluster.md").read_text()


def test_the_groups_bench_compares_group_broadcast_and_per_user_fan_out(tmp_path: Path) -> None:
    """loadtest/bench/groups.py at a tiny size: a group message costs the Redis commands of one
    publish, per-user fan-out those of one per member."""
    from loadtest.bench import groups

    argv = ["--sockets", "4", "--messages", "5", "--admissions", "4", "--out", str(tmp_path)]
    assert groups.main(argv) == 0
    results = json.loads((tmp_path / "groups.json").read_text())
    fan = results["fan_out"]
    assert fan["group"]["deliveries"] == fan["per_user"]["deliveries"] == 20
    assert fan["per_user"]["redis_commands_per_message"] > 3 * fan["group"]["redis_commands_per_message"]
    assert set(results["admission"]) == {"no_groups", "64_groups_held", "64_groups_new"}
    assert (tmp_path / "groups.md").read_text().startswith(f"Run {results['started']}")
