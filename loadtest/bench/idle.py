"""python -m loadtest.bench.idle: what an idle socket costs Redis, the workers' CPU and memory.

The gateway with its defaults (2 workers, pings on at the default interval) on a private Redis
(``--cluster``: a Redis Cluster, figures per master), N idle sockets from client processes,
held a while: per idle socket per second, Redis commands (INFO commandstats, a script's inner
commands included; in all and by command) and Redis CPU (INFO cpu), the workers' CPU
(/proc/PID/stat); RSS per idle socket; the workers' CPU and the Redis commands per admitted
connection. ``--sockets`` takes several sizes, one fresh gateway and Redis each.

``--hold``: the long hold (by default 50,000 sockets for 600 s), sampled every 10 s: RSS,
descriptors, Redis commands/s and sockets open, and how flat each is after the first minute.
``--tail``: the delivery latency tail at a low rate (500 messages/s over 1,000 users x 2
sockets, 3 rounds of 20 s), the gateway against Starlette + broadcaster (loadtest.bench's latency
scenario), both up at once and their rounds alternated.
Writes idle[-cluster][-hold].json and .md, or idle-tail.json and .md, to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import redis

from harness.redis_cluster import running_cluster
from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench.clients import ClientPool, percentile
from loadtest.bench.idle_meters import RedisMeter, descriptor_limit
from loadtest.bench.idle_report import markdown, tail_markdown
from loadtest.bench.idle_run import Log, Plan, measure
from loadtest.bench.output import add_out_argument, written
from loadtest.bench.report import machine
from loadtest.bench.scenarios import Sizes, latency
from loadtest.bench.targets import missing_packages, running

TAIL_TARGETS = ("gateway", "broadcaster")


@contextlib.contextmanager
def _redis(cluster: bool, masters: int) -> Iterator[tuple[str, RedisMeter, dict[str, str]]]:
    """A fresh Redis (or Cluster): its URL, a meter of its masters, the gateway's settings for it."""
    with contextlib.ExitStack() as stack:
        if cluster:
            nodes = stack.enter_context(running_cluster(masters=masters)).nodes
            env = {"REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{n.port}" for n in nodes)}
        else:
            nodes = [RedisServer()]
            nodes[0].start()
            stack.callback(nodes[0].close)
            env = {}
        clients: dict[str, redis.Redis] = {
            f"127.0.0.1:{n.port}": stack.enter_context(n.client()) for n in nodes
        }
        yield nodes[0].url, RedisMeter(clients), env


def _processes(sockets: int, asked: int) -> int:
    """Enough client processes that none holds more sockets than its descriptor limit allows."""
    return max(asked, math.ceil(sockets / max(1, descriptor_limit() - 1000)))


def run_idle(plans: list[Plan], cluster: bool, masters: int, env: dict[str, str], log: Log) -> list[Any]:
    results = []
    for plan in plans:
        log(f"{plan.sockets} idle sockets, {plan.processes} client processes, held {plan.seconds:.0f}s:")
        with _redis(cluster, masters) as (url, meter, topology):
            results.append(measure(plan, url, meter, log, topology | env))
    return results


def run_tail(plan: Plan, rate: int, rounds: int, log: Log) -> dict[str, Any]:
    """loadtest.bench's latency scenario, both targets up at once on one Redis and their rounds
    alternated, so a change in the machine's load falls on both; percentiles over every round."""
    users = [f"tail-{u}" for u in range(math.ceil(plan.sockets / plan.per_user))]
    pairs = [(u, make_token(u)) for u in users for _ in range(plan.per_user)]
    sizes = Sizes(users=len(users), per_user=plan.per_user, duration=plan.seconds, processes=plan.processes)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_redis(False, 0))[0]
        pools: dict[str, ClientPool] = {}
        for target in TAIL_TARGETS:
            missing = missing_packages(target)
            if missing:
                results[target] = {"error": f"not run: {', '.join(missing)} not installed"}
                continue
            server = stack.enter_context(running(target, url, plan.workers))
            pools[target] = ClientPool(target, server.port, plan.processes)
            stack.callback(pools[target].close)
            pools[target].connect(pairs, plan.concurrency)
        time.sleep(plan.settle)
        for target, pool in pools.items():
            results[target] = {"opened": pool.stats()["open"], "rounds": []}
        latencies: dict[str, list[int]] = {target: [] for target in pools}
        for _ in range(rounds):
            for target, pool in pools.items():
                results[target]["rounds"].append(latency(target, pool, url, users, rate, sizes, log))
                latencies[target] += pool.latencies_ns()
    for target, values in latencies.items():
        values.sort()
        each = results[target]["rounds"]
        expected = sum(r["expected"] for r in each)
        results[target] |= {
            "p50_ms": percentile(values, 0.50) / 1e6,
            "p95_ms": percentile(values, 0.95) / 1e6,
            "p99_ms": percentile(values, 0.99) / 1e6,
            "max_ms": values[-1] / 1e6 if values else float("nan"),
            "published": sum(r["published"] for r in each),
            "loss": 1 - sum(r["delivered"] for r in each) / expected if expected else 0.0,
        }
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.idle", description=__doc__)
    parser.add_argument("--sockets", help="idle sockets, comma-separated sizes (default 20000; --hold 50000)")
    parser.add_argument("--seconds", type=float, help="hold (default 60; --hold 600; --tail: publishing)")
    parser.add_argument("--per-user", type=int, default=Plan.per_user, help="sockets per user")
    parser.add_argument("--workers", type=int, default=Plan.workers, help="gateway workers")
    parser.add_argument("--processes", type=int, default=Plan.processes, help="client processes, at least")
    parser.add_argument("--settle", type=float, default=Plan.settle, help="seconds before each phase")
    parser.add_argument("--every", type=float, default=Plan.every, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=Plan.warmup, help="flatness is judged after it")
    parser.add_argument("--cluster", action="store_true", help="on a Redis Cluster (figures per master)")
    parser.add_argument("--masters", type=int, default=3, help="the cluster's masters")
    parser.add_argument("--hold", action="store_true", help="the long hold: 50,000 sockets for 600 s")
    parser.add_argument("--tail", action="store_true", help="latency tail, against Starlette + broadcaster")
    parser.add_argument("--rate", type=int, default=500, help="--tail: messages per second")
    parser.add_argument("--rounds", type=int, default=3, help="--tail: rounds per target, alternated")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a gateway setting (repeatable)"
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.tail and (args.cluster or args.hold):
        parser.error("--tail runs alone")
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    default_sockets, default_seconds = (50_000, 600.0) if args.hold else (20_000, 60.0)
    if args.tail:
        default_sockets, default_seconds = 2000, 20.0
    sizes = [int(s) for s in (args.sockets or str(default_sockets)).split(",") if s]
    plans = [
        Plan(
            sockets=n,
            per_user=args.per_user,
            workers=args.workers,
            seconds=args.seconds if args.seconds is not None else default_seconds,
            processes=_processes(n, args.processes),
            settle=args.settle,
            every=args.every,
            warmup=args.warmup,
        )
        for n in sizes
    ]
    limit = descriptor_limit()
    for plan in plans:
        # Each worker holds its share of the sockets; the kernel does not share them out evenly.
        if plan.sockets / plan.workers > limit * 0.9:
            print(
                f"{plan.sockets} sockets over {plan.workers} workers: more than a worker's descriptor limit"
                f" ({limit}) allows; raise the hard limit (ulimit -Hn) or --workers",
                file=sys.stderr,
            )
            return 2
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": " ".join(["python -m loadtest.bench.idle", *(argv if argv is not None else sys.argv[1:])]),
        "descriptor_limit": limit,
        # The machine may be shared: what else ran shows in every figure.
        "load_average": os.getloadavg(),
    }
    log = lambda message: print(message, flush=True)  # noqa: E731
    if args.tail:
        stem = "idle-tail"
        tail = run_tail(plans[0], args.rate, args.rounds, log)
        data: dict[str, Any] = {"meta": meta, "rate": args.rate, "rounds": args.rounds, "results": tail}
        data["plan"] = plans[0].__dict__
    else:
        stem = "idle" + ("-cluster" if args.cluster else "") + ("-hold" if args.hold else "")
        env = dict(item.split("=", 1) for item in args.env)
        results = run_idle(plans, args.cluster, args.masters, env, log)
        data = {"meta": meta, "cluster": args.cluster, "hold": args.hold, "env": env, "results": results}
        data["plans"] = [plan.__dict__ for plan in plans]
    meta["load_average_after"] = os.getloadavg()
    text = tail_markdown(data) if args.tail else markdown(data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(written(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
