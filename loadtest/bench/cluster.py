"""python -m loadtest.bench.cluster: the same fan-out through one Redis and through a Redis Cluster.

One run, same gateway worker count, users, sockets and messages, on one redis-server (PUBLISH /
SUBSCRIBE) and on a 3-master Redis Cluster (SPUBLISH to the master serving each user's slot /
SSUBSCRIBE), both gateways up at once and their rounds alternated. The messages go out as fast
as Redis takes them (loadtest/bench/clients.py's pipelined publisher); deliveries/s = deliveries
/ (last receipt - first publish), median of the rounds. Per cluster node: the bytes it sent its
clients (INFO stats total_net_output_bytes), the deliveries of the users whose slots it serves,
and the publish messages its cluster bus received. Then, without the gateway, what a plain
PUBLISH broadcast would cost the same cluster against SPUBLISH (loadtest/bench/cluster_bus.py).
Writes cluster.json and cluster.md to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from harness.redis_cluster import running_cluster
from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench import cluster_bus
from loadtest.bench.clients import ClientPool, run_publisher
from loadtest.bench.cluster_bus import BUS_KEYS, bus_counters, compare_broadcast, slot_ranges
from loadtest.bench.output import add_out_argument, write_results
from loadtest.bench.targets import running


@dataclass(frozen=True)
class Sizes:
    users: int = 500
    per_user: int = 2
    messages: int = 20000
    rounds: int = 3
    workers: int = 2
    masters: int = 3
    processes: int = 2
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


class _Setup:
    """One gateway on one Redis topology with every user's sockets connected through it."""

    def __init__(self, name: str, redis_url: str, nodes: dict[str, redis.Redis], sizes: Sizes) -> None:
        self.name, self.redis_url, self.nodes, self.sizes = name, redis_url, nodes, sizes
        self.users = [f"u{i}" for i in range(sizes.users)]
        self.slots: list[list[Any]] | None = None
        self.rounds: list[dict[str, Any]] = []
        self.clients: dict[str, int] = {}

    @contextlib.contextmanager
    def connected(self, **env: str) -> Iterator[_Setup]:
        if env.get("REDIS_CLUSTER_NODES"):
            self.slots = slot_ranges(next(iter(self.nodes.values())))
        pairs = [(u, make_token(u)) for u in self.users for _ in range(self.sizes.per_user)]
        per_worker = len(pairs) + 1000
        with running("gateway", self.redis_url, self.sizes.workers, per_worker, **env) as server:
            self.pool = ClientPool("gateway", server.port, self.sizes.processes)
            try:
                opened = self.pool.connect(pairs, concurrency=100)
                if opened["opened"] != len(pairs):
                    log = server.log_path.read_text(errors="replace")[-4000:]
                    raise RuntimeError(
                        f"{self.name}: {opened['failed']} sockets failed: {opened['errors']}\n{log}"
                    )
                # The gateway's own connections to each node while the sockets are held (less ours).
                self.clients = {
                    a: int(c.info("clients")["connected_clients"]) - 1 for a, c in self.nodes.items()
                }
                yield self
            finally:
                self.pool.close()

    def run_round(self, seed: int) -> None:
        self.rounds.append(
            _round(self.pool, self.nodes, self.redis_url, self.slots, self.users, self.sizes, seed)
        )

    def result(self) -> dict[str, Any]:
        """The median round, with every round's deliveries/s."""
        median = sorted(self.rounds, key=lambda r: r["deliveries_per_second"])[len(self.rounds) // 2]
        each = [r["deliveries_per_second"] for r in self.rounds]
        return median | {"rounds": each, "redis_clients": self.clients}


def run(sizes: Sizes, log: Any = print) -> dict[str, Any]:
    """Both setups up at once and their rounds alternated, so a change in the machine's load
    falls on both."""
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "sizes": asdict(sizes),
    }
    with contextlib.ExitStack() as stack:
        single = RedisServer()
        single.start()
        stack.callback(single.close)
        single_nodes = {f"127.0.0.1:{single.port}": stack.enter_context(single.client())}
        cluster = stack.enter_context(running_cluster(masters=sizes.masters))
        masters = {f"127.0.0.1:{node.port}": stack.enter_context(node.client()) for node in cluster.nodes}
        env = {"REDIS_CLUSTER_NODES": cluster.startup_nodes}
        setups = [
            stack.enter_context(_Setup("single", single.url, single_nodes, sizes).connected()),
            stack.enter_context(
                _Setup("cluster", f"redis://{next(iter(masters))}", masters, sizes).connected(**env)
            ),
        ]
        for seed in range(sizes.rounds):
            for setup in setups:
                setup.run_round(seed)
                log(f"{setup.name}: {setup.rounds[-1]['deliveries_per_second']:.0f} deliveries/s")
        for setup in setups:
            results[setup.name] = setup.result()
        # A quarter of the messages is plenty to show what the bus carries per PUBLISH.
        results["broadcast"] = compare_broadcast(masters, sizes.users, max(1, sizes.messages // 4))
    results["ratio"] = (
        results["cluster"]["deliveries_per_second"] / results["single"]["deliveries_per_second"]
    )
    return results


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
        f"Gateway connections to Redis while the sockets are held: one Redis {_total(single)}, "
        f"the cluster's masters {_total(cluster)} in all.",
        "",
        "Per cluster master, the median round (out = INFO stats total_net_output_bytes; bus = publish",
        "messages its cluster bus received):",
        "",
        "| master | messages published to it | deliveries of its users | out bytes "
        "| bytes per delivery | bus publish in | gateway connections |",
        "|---|---|---|---|---|---|---|",
    ]
    clients = cluster["redis_clients"]
    for address, node in cluster["nodes"].items():
        per = node["out_bytes_per_owned_delivery"]
        bus = node["publish_received"] + node["publishshard_received"]
        cells = [address.rpartition(":")[2], node["published_here"], node["owned_deliveries"]]
        cells += [node["out_bytes"], "-" if per is None else f"{per:.1f}", bus, clients[address]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", cluster_bus.markdown(results["broadcast"])]
    return "\n".join(lines) + "\n"


def _total(result: dict[str, Any]) -> int:
    return sum(result["redis_clients"].values())


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
    parser.add_argument("--processes", type=int, default=defaults.processes, help="client processes")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    sizes = Sizes(
        users=args.users,
        per_user=args.per_user,
        messages=args.messages,
        rounds=args.rounds,
        workers=args.workers,
    )
    results = run(sizes)
    write_results(args.out, "cluster", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
