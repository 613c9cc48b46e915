"""One run of the idle scenario: a fresh gateway, N idle sockets opened, then held and sampled.

Phases: the gateway starts and settles; the sockets open (admission: worker CPU and Redis
commands per admitted connection); they settle again; then the hold, sampled every ``every``
seconds. Per idle socket per second over the hold: Redis commands (INFO commandstats, a
script's inner commands included) and Redis CPU on each node, the workers' CPU. RSS per idle
socket is the workers' growth from before the first connect to the end of the hold.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.gateway_process import Gateway
from harness.tokens import make_token
from loadtest.bench.clients import ClientPool
from loadtest.bench.idle_meters import RedisMeter, read_workers, redis_work, total_calls
from loadtest.bench.targets import Server, raise_file_limit

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    sockets: int = 20_000
    per_user: int = 2
    seconds: float = 60.0
    workers: int = 2
    processes: int = 2
    # Handshakes in flight, all processes together: every client is 127.0.0.1, and beyond
    # WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS (100 by default) a worker refuses with 1013.
    concurrency: int = 100
    settle: float = 5.0
    every: float = 10.0
    # The long hold's figures must be flat after this many seconds.
    warmup: float = 60.0


@contextlib.contextmanager
def _gateway(redis_url: str, plan: Plan, env: dict[str, str]) -> Iterator[Server]:
    """The gateway with its defaults, but for a per-worker cap that lets one worker take every
    socket (the default would refuse some when the kernel hands one worker more than half)."""
    raise_file_limit()
    settings = {"WEBSOCKET_MAX_CONNECTIONS_PER_WORKER": str(plan.sockets + 1000)} | env
    gateway = Gateway(redis_url, plan.workers, **settings)
    try:
        gateway.start()
        assert gateway.process is not None
        yield Server("gateway", gateway.port, gateway.process.pid, gateway.log_path)
    finally:
        gateway.close()


def _pairs(plan: Plan) -> list[tuple[str, str]]:
    users = math.ceil(plan.sockets / plan.per_user)
    tokens = [make_token(f"idle-{u}") for u in range(users)]
    return [(f"idle-{i // plan.per_user}", tokens[i // plan.per_user]) for i in range(plan.sockets)]


def _per_second(work: dict[str, Any], sockets: int, seconds: float) -> dict[str, Any]:
    """Per node and in all: commands/s, and per idle socket per second the commands and the CPU."""
    per = max(1, sockets) * seconds
    nodes = {
        address: {
            "commands_per_s": node.commands / seconds,
            "commands_per_socket_s": node.commands / per,
            "cpu_us_per_socket_s": node.cpu_seconds * 1e6 / per,
            "by_command_per_s": {k: v / seconds for k, v in sorted(node.calls.items(), key=lambda i: -i[1])},
        }
        for address, node in work.items()
    }
    commands = sum(node.commands for node in work.values())
    return {
        "commands_per_s": commands / seconds,
        "commands_per_socket_s": commands / per,
        "cpu_us_per_socket_s": sum(node.cpu_seconds for node in work.values()) * 1e6 / per,
        "by_command_per_s": {name: count / seconds for name, count in total_calls(work).items()},
        "nodes": nodes,
    }


def _hold(server: Server, pool: ClientPool, meter: RedisMeter, plan: Plan, log: Log) -> list[dict[str, Any]]:
    """Hold the sockets ``plan.seconds``, one sample every ``plan.every`` seconds."""
    samples: list[dict[str, Any]] = []
    began = previous_at = time.monotonic()
    previous = meter.read()
    while (left := began + plan.seconds - time.monotonic()) > 0:
        time.sleep(min(plan.every, left))
        reading, workers, at = meter.read(), read_workers(server), time.monotonic()
        commands = sum(node.commands for node in redis_work(previous, reading).values())
        sample = {
            "t": at - began,
            "open": pool.stats()["open"],
            "rss_bytes": workers.rss_bytes,
            "descriptors": workers.descriptors,
            "redis_commands_per_s": commands / (at - previous_at),
        }
        samples.append(sample)
        log(
            f"  t={sample['t']:.0f}s open {sample['open']} rss {workers.rss_bytes / 2**20:.1f} MiB "
            f"fds {workers.descriptors} redis {sample['redis_commands_per_s']:.0f} cmd/s"
        )
        previous, previous_at = reading, at
    return samples


def flatness(samples: list[dict[str, Any]], warmup: float) -> dict[str, float | None]:
    """Per sampled figure, (max - min) / mean over the samples after ``warmup`` seconds (None:
    no such sample, or a mean of zero)."""
    late = [s for s in samples if s["t"] > warmup]
    spread: dict[str, float | None] = {"samples": len(late)}
    for key in ("rss_bytes", "descriptors", "redis_commands_per_s", "open"):
        values = [float(s[key]) for s in late]
        mean = sum(values) / len(values) if values else 0.0
        spread[key] = (max(values) - min(values)) / mean if mean else None
    return spread


def measure(
    plan: Plan, redis_url: str, meter: RedisMeter, log: Log, env: dict[str, str] | None = None
) -> dict[str, Any]:
    pairs = _pairs(plan)
    with _gateway(redis_url, plan, env or {}) as server:
        pool = ClientPool("gateway", server.port, plan.processes)
        try:
            time.sleep(plan.settle)  # start-up work (imports, first beats) is no socket's
            empty, empty_redis = read_workers(server), meter.read()
            outcome = pool.connect(pairs, plan.concurrency)
            admitted, admitted_redis = read_workers(server), meter.read()
            time.sleep(plan.settle)
            # A socket refused after its upgrade (1013) was counted open by its client at the 101.
            opened = max(1, pool.stats()["open"])
            log(f"  {opened}/{plan.sockets} sockets open {outcome['seconds']:.1f}s after the first connect")
            held, held_redis, held_at = read_workers(server), meter.read(), time.monotonic()
            samples = _hold(server, pool, meter, plan, log)
            end, end_redis, seconds = read_workers(server), meter.read(), time.monotonic() - held_at
            still_open = pool.stats()["open"]
        finally:
            pool.close()
    admission = redis_work(empty_redis, admitted_redis)
    hold = redis_work(held_redis, end_redis)
    return {
        "sockets": plan.sockets,
        "users": math.ceil(plan.sockets / plan.per_user),
        "opened": opened,
        "failed": plan.sockets - opened,
        "errors": outcome["errors"],
        "still_open": still_open,
        "connect_seconds": outcome["seconds"],
        "admission_cpu_us": (admitted.cpu_seconds - empty.cpu_seconds) * 1e6 / opened,
        "admission_redis_commands": sum(n.commands for n in admission.values()) / opened,
        "admission_by_command": {k: v / opened for k, v in total_calls(admission).items()},
        "hold_seconds": seconds,
        "redis": _per_second(hold, opened, seconds),
        "redis_memory_bytes_per_socket": sum(n.used_memory_delta for n in admission.values()) / opened,
        "worker_cpu_us_per_socket_s": (end.cpu_seconds - held.cpu_seconds) * 1e6 / opened / seconds,
        "rss_before": empty.rss_bytes,
        "rss_after": end.rss_bytes,
        "rss_kib_per_socket": (end.rss_bytes - empty.rss_bytes) / 1024 / opened,
        "descriptors_per_worker": {
            str(pid): count - empty.per_worker_descriptors.get(pid, 0)
            for pid, count in end.per_worker_descriptors.items()
        },
        "workers_replaced": empty.pids != end.pids,
        "samples": samples,
        "flatness": flatness(samples, plan.warmup),
    }
