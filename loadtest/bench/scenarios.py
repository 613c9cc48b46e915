"""The scenarios, run one target at a time against a fresh server and a reset Redis.

Order per target: capacity first (the server is fresh, so its memory growth is the sockets'),
then fan-out, latency at each rate and the Redis cost of the fan-out, on the same connections.
Every phase is bounded in count and in time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from harness.tokens import make_token
from loadtest.bench.clients import ClientPool, percentile, run_publisher
from loadtest.bench.targets import Server, running


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    per_user: int = 2
    messages: int = 20000
    rates: tuple[int, ...] = (500, 2000, 8000)
    duration: float = 10.0
    idle: int = 5000
    hold: float = 5.0
    processes: int = 2
    connect_concurrency: int = 200
    publish_concurrency: int = 64
    publish_batch: int = 100
    publish_pipelines: int = 4
    fanout_rounds: int = 3
    settle: float = 1.0
    quiet: float = 3.0
    drain_limit: float = 60.0


def _redis_stats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("stats")
    return {"commands": int(info["total_commands_processed"]), "out": int(info["total_net_output_bytes"])}


def _command_calls(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


def _redis_clients(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("clients")
    return int(info["connected_clients"]) - 1  # less this one


def run_target(target: str, redis_url: str, sizes: Sizes, log: Any = print) -> dict[str, Any]:
    monitor = redis.Redis.from_url(redis_url)
    monitor.flushall()
    monitor.config_resetstat()
    results: dict[str, Any] = {"target": target, "sizes": asdict(sizes)}
    try:
        with running(
            target, redis_url, max_per_worker=max(sizes.idle, sizes.users * sizes.per_user) + 1000
        ) as server:
            pool = ClientPool(target, server.port, sizes.processes)
            try:
                results["capacity"] = _capacity(target, server, pool, monitor, redis_url, sizes, log)
                pool.broadcast("close")
                time.sleep(sizes.settle * 2)
                users = [f"u{i}" for i in range(sizes.users)]
                pairs = [(u, make_token(u)) for u in users for _ in range(sizes.per_user)]
                opened = pool.connect(pairs, sizes.connect_concurrency)
                time.sleep(sizes.settle)
                opened["open_after_settle"] = pool.stats()["open"]
                log(
                    f"  {target}: {opened['opened']} fan-out connections opened, {opened['failed']} failed, "
                    f"{opened['open_after_settle']} still open"
                )
                results["connections"] = opened
                results["fanout"] = fanout(target, server, pool, monitor, redis_url, users, sizes, log)
                results["latency"] = {
                    str(rate): latency(target, pool, redis_url, users, rate, sizes, log)
                    for rate in sizes.rates
                }
            finally:
                pool.close()
    finally:
        monitor.close()
    return results


def _capacity(
    target: str,
    server: Server,
    pool: ClientPool,
    monitor: redis.Redis,
    redis_url: str,
    sizes: Sizes,
    log: Any,
) -> dict[str, Any]:
    rss_before = server.rss_bytes()
    users = [f"c{i}" for i in range(sizes.idle)]
    cpu_before = server.cpu_seconds()
    outcome = pool.connect([(u, make_token(u)) for u in users], sizes.connect_concurrency)
    connect_cpu = server.cpu_seconds() - cpu_before
    log(f"  {target}: {outcome['opened']}/{sizes.idle} idle connections in {outcome['seconds']:.1f}s")
    hold_until = time.monotonic() + sizes.hold
    while time.monotonic() < hold_until:
        time.sleep(min(1.0, max(0.0, hold_until - time.monotonic())))
    rss_after = server.rss_bytes()
    still_open = pool.stats()["open"]
    redis_clients = _redis_clients(monitor)
    # Still delivering after the hold: one message to each of a sample of the idle users.
    sample = users[: min(len(users), 500)]
    pool.broadcast("reset", False)
    sent = run_publisher(
        {"target": target, "redis_url": redis_url, "users": sample, "count": len(sample), "concurrency": 32}
    )
    got = pool.wait_quiet(sent["sent"], idle=sizes.quiet, limit=15.0)["received"]
    opened = max(1, outcome["opened"])
    return {
        "attempted": sizes.idle,
        "opened": outcome["opened"],
        "failed": outcome["failed"],
        "errors": outcome["errors"],
        "connect_seconds": outcome["seconds"],
        "connect_rate": outcome["opened"] / outcome["seconds"] if outcome["seconds"] else 0.0,
        "connect_cpu_us_per_connection": connect_cpu / opened * 1e6,
        "held_seconds": sizes.hold,
        "still_open": still_open,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_kib_per_connection": (rss_after - rss_before) / 1024 / opened,
        "redis_clients": redis_clients,
        "probe_sent": sent["sent"],
        "probe_received": got,
    }


def fanout(
    target: str,
    server: Server,
    pool: ClientPool,
    monitor: redis.Redis,
    redis_url: str,
    users: list[str],
    sizes: Sizes,
    log: Any,
) -> dict[str, Any]:
    """``fanout_rounds`` rounds of the same burst; the figures are the median round's, and the
    Redis cost is over every round."""
    calls_before = _command_calls(monitor)
    rounds = [
        _fanout_round(target, server, pool, monitor, redis_url, users, sizes, seed)
        for seed in range(sizes.fanout_rounds)
    ]
    calls_after = _command_calls(monitor)
    # Every command over the rounds by name, our INFO calls included: what else the target sent.
    calls = {k: v - calls_before.get(k, 0) for k, v in calls_after.items() if v != calls_before.get(k, 0)}
    delivered = sum(r["delivered"] for r in rounds)
    commands = sum(r["redis_commands"] for r in rounds)
    out = sum(r["redis_out_bytes"] for r in rounds)
    median = sorted(rounds, key=lambda r: r["deliveries_per_second"])[len(rounds) // 2]
    result = median | {
        "rounds": rounds,
        "delivery_ratio": min(r["delivery_ratio"] for r in rounds),
        "redis_commands": commands,
        "redis_out_bytes": out,
        "redis_calls_by_command": calls,
        "redis_commands_per_delivery": commands / delivered if delivered else float("nan"),
        "redis_out_bytes_per_delivery": out / delivered if delivered else float("nan"),
    }
    each = ", ".join(f"{r['deliveries_per_second']:.0f}" for r in rounds)
    log(
        f"  {target}: fan-out median {result['deliveries_per_second']:.0f}/s (rounds: {each}), "
        f"{result['server_cpu_us_per_delivery']:.1f} server CPU us/delivery, "
        f"{result['redis_commands_per_delivery']:.3f} Redis cmd/delivery"
    )
    return result


def _fanout_round(
    target: str,
    server: Server,
    pool: ClientPool,
    monitor: redis.Redis,
    redis_url: str,
    users: list[str],
    sizes: Sizes,
    seed: int,
) -> dict[str, Any]:
    """One burst. Its Redis cost runs from the publisher's first PUBLISH to the last delivery."""
    pool.broadcast("reset", False)
    cpu_before = server.cpu_seconds()
    sent = run_publisher(
        {
            "target": target,
            "redis_url": redis_url,
            "users": users,
            "count": sizes.messages,
            "batch": sizes.publish_batch,
            "concurrency": sizes.publish_pipelines,
            "seed": seed,
        }
    )
    expected = sent["sent"] * sizes.per_user
    stats = pool.wait_quiet(expected, idle=sizes.quiet, limit=sizes.drain_limit, probe=server.cpu_seconds)
    after = _redis_stats(monitor)
    # Up to the poll that saw the last delivery: a quiet tail after lost messages is idle time.
    cpu = stats["probe"] - cpu_before
    before = sent["redis_before"]
    # The publisher's INFO counts once it has run; this one only after it has answered.
    commands = after["commands"] - before["total_commands_processed"] - 1
    out = after["out"] - before["total_net_output_bytes"]
    delivered = stats["received"]
    seconds = max(1e-9, (stats["last_ns"] - sent["started_ns"]) / 1e9) if delivered else float("nan")
    return {
        "published": sent["sent"],
        "publish_errors": sent["errors"],
        "publish_seconds": sent["seconds"],
        "expected": expected,
        "delivered": delivered,
        "delivery_ratio": delivered / expected if expected else 0.0,
        "open_after": stats["open"],
        "seconds": seconds,
        "deliveries_per_second": delivered / seconds if delivered else 0.0,
        "redis_commands": commands,
        "redis_out_bytes": out,
        "server_cpu_seconds": cpu,
        "server_cpu_us_per_delivery": cpu / delivered * 1e6 if delivered else float("nan"),
    }


def latency(
    target: str, pool: ClientPool, redis_url: str, users: list[str], rate: int, sizes: Sizes, log: Any
) -> dict[str, Any]:
    """``rate`` messages/s for ``sizes.duration`` s through the target's own publish call, to
    ``users`` at random: the publish-to-receipt percentiles over every socket."""
    pool.broadcast("reset", True)
    count = int(rate * sizes.duration)
    sent = run_publisher(
        {
            "target": target,
            "redis_url": redis_url,
            "users": users,
            "count": count,
            "rate": float(rate),
            "concurrency": sizes.publish_concurrency,
            "seed": rate,
        },
        timeout=sizes.duration + 120,
    )
    expected = sent["sent"] * sizes.per_user
    stats = pool.wait_quiet(expected, idle=sizes.quiet, limit=min(sizes.drain_limit, 30.0))
    values = sorted(pool.latencies_ns())
    ms = 1e6
    result = {
        "rate": rate,
        "published": sent["sent"],
        "achieved_rate": sent["sent"] / sent["seconds"] if sent["seconds"] else 0.0,
        "expected": expected,
        "delivered": stats["received"],
        "loss": 1 - stats["received"] / expected if expected else 0.0,
        "p50_ms": percentile(values, 0.50) / ms,
        "p95_ms": percentile(values, 0.95) / ms,
        "p99_ms": percentile(values, 0.99) / ms,
        "max_ms": (values[-1] / ms) if values else float("nan"),
    }
    log(
        f"  {target}: {rate}/s p50 {result['p50_ms']:.2f} p99 {result['p99_ms']:.2f} "
        f"max {result['max_ms']:.1f} ms, loss {result['loss']:.4f}"
    )
    return result
