"""python -m loadtest.bench.cluster: the same fan-out through one Redis and through a Redis Cluster.

One run, same gateway worker count, users, sockets and messages: first against one redis-server
(PUBLISH / SUBSCRIBE), then against a 3-master Redis Cluster (SPUBLISH to the master serving each
user's slot / SSUBSCRIBE). The messages go out as fast as Redis takes them (loadtest/bench/clients.py's
pipelined publisher); deliveries/s = deliveries / (last receipt - first publish), median of the rounds.
Per cluster node: the bytes it sent its clients (INFO stats total_net_output_bytes), the deliveries
of the users whose slots it serves, and the messages its cluster bus forwarded. Then, without the
gateway, what a plain PUBLISH broadcast would cost the same cluster against SPUBLISH (see
``loadtest/bench/cluster_bus.py``). Writes cluster.json and cluster.md to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from harness.paths import ROOT
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench import cluster_bus
from loadtest.bench.clients import ClientPool, run_publisher
from loadtest.bench.cluster_bus import BUS_KEYS, bus_counters, compare_broadcast, slot_ranges
from loadtest.bench.targets import running


@dataclass(frozen=True)
class Sizes:
    users: int = 300
    per_user: int = 2
    messages: int = 6000
    rounds: int = 3
    workers: int = 2
    masters: int = 3
    processes: int = 1
    batch: int = 100
    pipelines: int = 4
    quiet: float = 2.0
    drain_limit: float = 30.0


def _stats(nodes: dict[str, redis.Redis]) -> dict[str, dict[str, int]]:
    """INFO stats and the cluster bus's publish counters of each node, by "host:port"."""
    found = {}
    for address, client in nodes.items():
        info: dict[str, Any] = client.info("stats")
        found[address] = {
            "commands": int(info["total_commands_processed"]),
            "out": int(info["total_net_output_bytes"]),
        } | bus_counters(client)
    return found


def _round(
    pool: ClientPool,
    nodes: dict[str, redis.Redis],
    redis_url: str,
    slots: list[list[Any]] | None,
    users: list[str],
    sizes: Sizes,
    seed: int,
) -> dict[str, Any]:
    """One burst; per node, what it sent from the publisher's first command to the last delivery."""
    pool.broadcast("reset", False)
    before = _stats(nodes)
    job: dict[str, Any] = {
        "target": "gateway",
        "redis_url": redis_url,
        "users": users,
        "count": sizes.messages,
    }
    job |= {"batch": sizes.batch, "concurrency": sizes.pipelines, "seed": seed, "slots": slots}
    sent = run_publisher(job)
    expected = sent["sent"] * sizes.per_user
    got = pool.wait_quiet(expected, idle=sizes.quiet, limit=sizes.drain_limit)
    after = _stats(nodes)
    delivered = got["received"]
    seconds = max(1e-9, (got["last_ns"] - sent["started_ns"]) / 1e9)
    per_node = {}
    for address in nodes:
        # The publisher read this node's INFO just before its first command; ours came after.
        start = sent["redis_before_by_node"].get(address) or {
            "total_net_output_bytes": before[address]["out"]
        }
        owned = sent["sent_by_node"].get(address, 0) * sizes.per_user
        out = after[address]["out"] - start["total_net_output_bytes"]
        per_node[address] = {
            "published_here": sent["sent_by_node"].get(address, 0),
            "owned_deliveries": owned,
            "out_bytes": out,
            "out_bytes_per_owned_delivery": out / owned if owned else None,
        } | {key: after[address][key] - before[address][key] for key in BUS_KEYS}
    return {
        "published": sent["sent"],
        "publish_errors": sent["errors"],
        "expected": expected,
        "delivered": delivered,
        "seconds": seconds,
        "deliveries_per_second": delivered / seconds if delivered else 0.0,
        "nodes": per_node,
    }


def _fan_out(redis_url: str, nodes: dict[str, redis.Redis], sizes: Sizes, **env: str) -> dict[str, Any]:
    """Connect every user's sockets through one gateway, then ``rounds`` bursts; the median round."""
    slots = slot_ranges(next(iter(nodes.values()))) if env.get("REDIS_CLUSTER_NODES") else None
    users = [f"u{i}" for i in range(sizes.users)]
    pairs = [(u, make_token(u)) for u in users for _ in range(sizes.per_user)]
    per_worker = sizes.users * sizes.per_user + 1000
    with running("gateway", redis_url, sizes.workers, per_worker, **env) as server:
        pool = ClientPool("gateway", server.port, sizes.processes)
        try:
            opened = pool.connect(pairs, concurrency=100)
            if opened["opened"] != len(pairs):
                raise RuntimeError(f"{opened['failed']} of {len(pairs)} sockets failed: {opened['errors']}")
            rounds = [
                _round(pool, nodes, redis_url, slots, users, sizes, seed) for seed in range(sizes.rounds)
            ]
        finally:
            pool.close()
    median = sorted(rounds, key=lambda r: r["deliveries_per_second"])[len(rounds) // 2]
    return median | {"rounds": [r["deliveries_per_second"] for r in rounds]}


def run(sizes: Sizes, log: Any = print) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "sizes": asdict(sizes),
    }
    single = RedisServer()
    single.start()
    try:
        with single.client() as client:
            results["single"] = _fan_out(single.url, {f"127.0.0.1:{single.port}": client}, sizes)
    finally:
        single.close()
    log(f"single Redis: {results['single']['deliveries_per_second']:.0f} deliveries/s")
    with running_cluster(masters=sizes.masters) as cluster:
        masters = _masters(cluster)
        try:
            first = next(iter(masters))
            env = {"REDIS_CLUSTER_NODES": cluster.startup_nodes}
            results["cluster"] = _fan_out(f"redis://{first}", masters, sizes, **env)
            log(f"cluster: {results['cluster']['deliveries_per_second']:.0f} deliveries/s")
            results["broadcast"] = compare_broadcast(masters, sizes.users, sizes.messages)
        finally:
            for client in masters.values():
                client.close()
    results["ratio"] = (
        results["cluster"]["deliveries_per_second"] / results["single"]["deliveries_per_second"]
    )
    return results


def _masters(cluster: RedisCluster) -> dict[str, redis.Redis]:
    return {f"127.0.0.1:{node.port}": node.client() for node in cluster.nodes}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def markdown(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    single, cluster = results["single"], results["cluster"]
    lines = [
        f"Run {results['started']} on {results['machine']}: `python -m loadtest.bench.cluster`; "
        f"{sizes['workers']} gateway workers, {sizes['users']} users x {sizes['per_user']} sockets, "
        f"{sizes['messages']} messages per round, median of {sizes['rounds']} rounds.",
        "",
        "| fan-out | deliveries/s | rounds |",
        "|---|---|---|",
        f"| one Redis | {single['deliveries_per_second']:.0f} | {_each(single)} |",
        f"| Redis Cluster, {sizes['masters']} masters | {cluster['deliveries_per_second']:.0f} "
        f"| {_each(cluster)} |",
        f"| cluster / one Redis | {results['ratio']:.2f}x | |",
        "",
        "Per cluster master, the median round (out = INFO stats total_net_output_bytes; bus = publish",
        "messages its cluster bus received):",
        "",
        "| master | messages published to it | deliveries of its users | out bytes "
        "| bytes per delivery | bus publish in |",
        "|---|---|---|---|---|---|",
    ]
    for address, node in cluster["nodes"].items():
        per = node["out_bytes_per_owned_delivery"]
        lines.append(
            f"| {address.rpartition(':')[2]} | {node['published_here']} | {node['owned_deliveries']} | "
            f"{node['out_bytes']} | {per:.1f} | {node['publish_received'] + node['publishshard_received']} |"
            if per is not None
            else f"| {address.rpartition(':')[2]} | 0 | 0 | {node['out_bytes']} | - | - |"
        )
    lines += ["", cluster_bus.markdown(results["broadcast"])]
    return "\n".join(lines) + "\n"


def _each(result: dict[str, Any]) -> str:
    return ", ".join(f"{value:.0f}" for value in result["rounds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.cluster", description=__doc__)
    defaults = Sizes()
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--per-user", type=int, default=defaults.per_user, help="sockets per user")
    parser.add_argument("--messages", type=int, default=defaults.messages, help="messages per round")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="gateway workers, both runs")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    args = parser.parse_args(argv)
    sizes = Sizes(
        users=args.users,
        per_user=args.per_user,
        messages=args.messages,
        rounds=args.rounds,
        workers=args.workers,
    )
    results = run(sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "cluster.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
