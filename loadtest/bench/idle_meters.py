"""What the idle scenario reads: Redis's own counters per node, and the gateway workers' /proc.

Redis counts a command a script runs (``redis.call``) under the command's own name in INFO
commandstats, besides the EVALSHA that ran the script; ``total_commands_processed`` counts only
the EVALSHA. The figures here are commandstats', so a script's inner commands are included.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtest.bench.targets import Server


@dataclass(frozen=True)
class NodeReading:
    calls: dict[str, int]
    cpu_seconds: float
    used_memory: int


@dataclass(frozen=True)
class RedisReading:
    nodes: dict[str, NodeReading]
    # INFO calls this meter had made before this one: they are in its counts, and are not the gateway's.
    own_info_calls: int


class RedisMeter:
    """INFO of each node ("host:port"), one INFO call per node per reading."""

    def __init__(self, nodes: dict[str, redis.Redis]) -> None:
        self.nodes = nodes
        self._readings = 0

    def read(self) -> RedisReading:
        found = {}
        for address, client in self.nodes.items():
            info: dict[str, Any] = client.info("all")
            calls = {
                key.removeprefix("cmdstat_"): int(value["calls"])
                for key, value in info.items()
                if key.startswith("cmdstat_")
            }
            cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            found[address] = NodeReading(calls, cpu, int(info["used_memory"]))
        reading = RedisReading(found, self._readings)
        self._readings += 1
        return reading


@dataclass(frozen=True)
class NodeWork:
    calls: dict[str, int]
    cpu_seconds: float
    used_memory_delta: int

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def redis_work(before: RedisReading, after: RedisReading) -> dict[str, NodeWork]:
    """Per node, the commands by name and the CPU between two readings, the meter's own INFO
    calls left out."""
    own = after.own_info_calls - before.own_info_calls
    work = {}
    for address, end in after.nodes.items():
        start = before.nodes[address]
        calls = {name: count - start.calls.get(name, 0) for name, count in end.calls.items()}
        calls["info"] = calls.get("info", 0) - own
        work[address] = NodeWork(
            {name: count for name, count in calls.items() if count},
            end.cpu_seconds - start.cpu_seconds,
            end.used_memory - start.used_memory,
        )
    return work


def total_calls(work: dict[str, NodeWork]) -> dict[str, int]:
    """The commands of every node, by name, most first."""
    calls: dict[str, int] = {}
    for node in work.values():
        for name, count in node.calls.items():
            calls[name] = calls.get(name, 0) + count
    return dict(sorted(calls.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class WorkerReading:
    pids: tuple[int, ...]
    cpu_seconds: float
    rss_bytes: int
    descriptors: int
    per_worker_descriptors: dict[int, int] = field(default_factory=dict)


def read_workers(server: Server) -> WorkerReading:
    """The gunicorn workers (the master's children) only: utime+stime, VmRSS and open descriptors."""
    pids = tuple(sorted(server.worker_pids()))
    ticks = rss = 0
    descriptors: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            # utime and stime, fields 14 and 15, follow the command name.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            descriptors[pid] = len(os.listdir(f"/proc/{pid}/fd"))
    cpu = ticks / os.sysconf("SC_CLK_TCK")
    return WorkerReading(pids, cpu, rss, sum(descriptors.values()), descriptors)


def descriptor_limit() -> int:
    """The hard limit on open descriptors a process here may raise itself to."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]
