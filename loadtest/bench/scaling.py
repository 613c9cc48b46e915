"""python -m loadtest.bench.scaling: the gateway alone as its worker count grows.

For each worker count: a burst of connects (rate and server CPU per connection), how the
sockets landed on the workers (each worker's count against the fair share), then the fan-out
of ``loadtest.bench`` on those sockets. Meant for a machine with many cores: on 2 cores the
clients and the workers fight over the same CPUs and the curve says little.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import wait_for
from loadtest.bench.clients import ClientPool
from loadtest.bench.scenarios import Sizes, fanout
from loadtest.bench.targets import Server, running


def worker_connections(server: Server, timeout: float = 30.0) -> dict[int, int]:
    """Sockets per worker pid, from each worker's /healthz/websocket (polled until all answered)."""
    pids = set(server.worker_pids())
    seen: dict[int, int] = {}

    def all_answered() -> bool:
        with contextlib.suppress(OSError, ValueError):
            url = f"http://127.0.0.1:{server.port}/healthz/websocket"
            request = urllib.request.Request(url, headers={"Connection": "close"})
            with urllib.request.urlopen(request, timeout=2) as response:
                state = json.loads(response.read())
                seen[int(state["pid"])] = int(state["connections"])
        return pids <= seen.keys()

    wait_for(all_answered, timeout=timeout, interval=0.0, what="every worker's /healthz/websocket")
    return {pid: seen[pid] for pid in sorted(pids)}


def spread(counts: dict[int, int]) -> dict[str, Any]:
    values = sorted(counts.values())
    fair = sum(values) / len(values) if values else 0.0
    return {
        "per_worker": values,
        "fair_share": fair,
        "min_ratio": values[0] / fair if fair else 0.0,
        "max_ratio": values[-1] / fair if fair else 0.0,
    }


def run_workers(workers: int, redis_url: str, sizes: Sizes) -> dict[str, Any]:
    monitor = redis.Redis.from_url(redis_url)
    monitor.flushall()
    users = [f"u{i}" for i in range(sizes.users)]
    pairs = [(u, make_token(u)) for u in users for _ in range(sizes.per_user)]
    try:
        with running("gateway", redis_url, workers=workers, max_per_worker=len(pairs) + 1000) as server:
            pool = ClientPool("gateway", server.port, sizes.processes)
            try:
                cpu_before = server.cpu_seconds()
                opened = pool.connect(pairs, sizes.connect_concurrency)
                cpu = server.cpu_seconds() - cpu_before
                landed = spread(worker_connections(server))
                out = fanout("gateway", server, pool, monitor, redis_url, users, sizes, print)
            finally:
                pool.close()
    finally:
        monitor.close()
    result = {
        "workers": workers,
        "opened": opened["opened"],
        "failed": opened["failed"],
        "connect_rate": opened["opened"] / opened["seconds"] if opened["seconds"] else 0.0,
        "connect_cpu_us": cpu / max(1, opened["opened"]) * 1e6,
        "spread": landed,
        "fanout_per_second": out["deliveries_per_second"],
        "fanout_cpu_us": out["server_cpu_us_per_delivery"],
        "delivery_ratio": out["delivery_ratio"],
    }
    print(json.dumps(result), flush=True)
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        "| workers | connect/s | CPU us/connect | sockets per worker (min-max) | vs fair share |"
        " fan-out deliveries/s | CPU us/delivery | delivered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["spread"]
        rows.append(
            f"| {r['workers']} | {r['connect_rate']:,.0f} | {r['connect_cpu_us']:.0f} "
            f"| {s['per_worker'][0]}-{s['per_worker'][-1]} "
            f"| {s['min_ratio']:.2f}x-{s['max_ratio']:.2f}x | {r['fanout_per_second']:,.0f} "
            f"| {r['fanout_cpu_us']:.1f} | {r['delivery_ratio']:.4f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.scaling", description=__doc__)
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=2)
    parser.add_argument("--messages", type=int, default=40000)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--out", type=Path, default=None, help="write scaling.json and scaling.md here")
    args = parser.parse_args(argv)
    sizes = Sizes(
        users=args.users,
        per_user=args.per_user,
        messages=args.messages,
        processes=args.processes,
        fanout_rounds=3,
    )
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    redis_server = RedisServer()
    redis_server.start()
    try:
        results = [run_workers(int(n), redis_server.url, sizes) for n in args.workers.split(",")]
    finally:
        redis_server.close()
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scaling.json").write_text(json.dumps({"started": started, "results": results}) + "\n")
        (args.out / "scaling.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
