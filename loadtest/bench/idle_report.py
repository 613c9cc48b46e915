"""The idle scenario's Markdown: one column per size, per-master and per-sample tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Result = dict[str, Any]

_ROWS: list[tuple[str, Callable[[Result], float], str]] = [
    ("Redis commands per idle socket per second", lambda r: r["redis"]["commands_per_socket_s"], "{:.4f}"),
    ("Redis CPU per idle socket per second (µs)", lambda r: r["redis"]["cpu_us_per_socket_s"], "{:.3f}"),
    ("worker CPU per idle socket per second (µs)", lambda r: r["worker_cpu_us_per_socket_s"], "{:.2f}"),
    ("RSS per idle socket (KiB)", lambda r: r["rss_kib_per_socket"], "{:.1f}"),
    ("admission: worker CPU per connection (µs)", lambda r: r["admission_cpu_us"], "{:.0f}"),
    ("admission: Redis commands per connection", lambda r: r["admission_redis_commands"], "{:.1f}"),
    ("Redis memory per socket (bytes)", lambda r: r["redis_memory_bytes_per_socket"], "{:.0f}"),
    ("Redis commands per second, in all", lambda r: r["redis"]["commands_per_s"], "{:,.1f}"),
    ("sockets asked", lambda r: r["sockets"], "{:,.0f}"),
    ("sockets open after the connects", lambda r: r["opened"], "{:,.0f}"),
    ("sockets still open at the end", lambda r: r["still_open"], "{:,.0f}"),
    ("connect seconds", lambda r: r["connect_seconds"], "{:.1f}"),
    ("seconds held (measured)", lambda r: r["hold_seconds"], "{:.1f}"),
]


def _run(meta: dict[str, Any]) -> str:
    load = ""
    if "load_average" in meta:
        before, after = meta["load_average"][0], meta["load_average_after"][0]
        load = f" (load average over 1 min: {before:.1f} at the start, {after:.1f} at the end)"
    return f"Run {meta['started']} on {meta['machine']}{load}: `{meta['command']}`."


def _header(data: dict[str, Any]) -> list[str]:
    meta, first = data["meta"], data["plans"][0]
    masters = len(data["results"][0]["redis"]["nodes"])
    where = f"a Redis Cluster of {masters} masters" if data["cluster"] else "one Redis"
    settings = "".join(f", {k}={v}" for k, v in data["env"].items())
    return [
        _run(meta),
        "",
        f"The gateway's defaults ({first['workers']} workers, protocol pings at the default interval) but"
        f" WEBSOCKET_MAX_CONNECTIONS_PER_WORKER = sockets + 1000{settings}, on {where}; {first['per_user']}"
        f" sockets per user, clients in at least {first['processes']} processes (descriptor limit"
        f" {meta['descriptor_limit']}); each size on a fresh gateway and Redis. Figures per idle socket"
        f" per second are over the hold, which starts {first['settle']:.0f} s after the last connect."
        " Redis commands are INFO commandstats' (a script's inner commands counted under their own"
        " names, besides its EVALSHA); Redis CPU is used_cpu_sys + used_cpu_user; worker CPU is"
        " utime + stime of the gunicorn workers; RSS per socket is the workers' growth from before"
        " the first connect to the end of the hold.",
        "",
    ]


def markdown(data: dict[str, Any]) -> str:
    results: list[Result] = data["results"]
    columns = [f"{r['sockets']:,} sockets" for r in results]
    lines = _header(data)
    lines += ["| figure | " + " | ".join(columns) + " |", "|---|" + "---|" * len(results)]
    for label, get, shape in _ROWS:
        lines.append(f"| {label} | " + " | ".join(shape.format(get(r)) for r in results) + " |")
    lines += ["", "Redis commands per second during the hold, by command:", ""]
    lines += ["| command | " + " | ".join(columns) + " |", "|---|" + "---|" * len(results)]
    names = {name for r in results for name in r["redis"]["by_command_per_s"]}
    most = {name: max(r["redis"]["by_command_per_s"].get(name, 0.0) for r in results) for name in names}
    for name in sorted(names, key=lambda n: -most[n]):
        cells = [f"{r['redis']['by_command_per_s'].get(name, 0.0):,.1f}" for r in results]
        lines.append(f"| {name.upper()} | " + " | ".join(cells) + " |")
    if data["cluster"]:
        lines += _per_master(results)
    if data["hold"]:
        lines += _samples(results, data["plans"][0]["warmup"])
    failures = [f"{r['sockets']}: {r['errors']}" for r in results if r["failed"]]
    if failures:
        lines += ["", "Connect failures: " + "; ".join(failures)]
    return "\n".join(lines) + "\n"


def _per_master(results: list[Result]) -> list[str]:
    lines = ["", "Per master during the hold:", ""]
    lines += [
        "| sockets | master | commands/s | commands per idle socket per s (of all) "
        "| CPU per idle socket per s (µs) | commands/s by command |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for address, node in r["redis"]["nodes"].items():
            top = ", ".join(f"{k.upper()} {v:,.1f}" for k, v in list(node["by_command_per_s"].items())[:6])
            lines.append(
                f"| {r['sockets']:,} | {address.rpartition(':')[2]} | {node['commands_per_s']:,.1f} "
                f"| {node['commands_per_socket_s']:.4f} | {node['cpu_us_per_socket_s']:.3f} | {top} |"
            )
    return lines


def _samples(results: list[Result], warmup: float) -> list[str]:
    lines: list[str] = []
    for r in results:
        flat = {k: "n/a" if v is None else f"{v:.2%}" for k, v in r["flatness"].items() if k != "samples"}
        lines += [
            "",
            f"{r['sockets']:,} sockets, sampled during the hold; after the first {warmup:.0f} s"
            f" ({r['flatness']['samples']} samples), (max - min) / mean: RSS {flat['rss_bytes']},"
            f" descriptors {flat['descriptors']}, Redis commands/s {flat['redis_commands_per_s']},"
            f" sockets open {flat['open']}; sockets lost: {r['opened'] - r['still_open']}.",
            "",
            "| t (s) | sockets open | workers' RSS (MiB) | workers' descriptors | Redis commands/s |",
            "|---|---|---|---|---|",
        ]
        for s in r["samples"]:
            lines.append(
                f"| {s['t']:.0f} | {s['open']:,} | {s['rss_bytes'] / 2**20:.1f} | {s['descriptors']:,} "
                f"| {s['redis_commands_per_s']:,.1f} |"
            )
    return lines


def tail_markdown(data: dict[str, Any]) -> str:
    meta, plan, results = data["meta"], data["plan"], data["results"]
    lines = [
        _run(meta),
        "",
        f"{data['rate']} messages/s, {data['rounds']} rounds of {plan['seconds']:.0f} s per target, each"
        f" message to a user at random among {plan['sockets'] // plan['per_user']:,} ({plan['per_user']}"
        " sockets each), through each target's own publish call (loadtest.bench's latency scenario);"
        f" both targets {plan['workers']} workers, up at once on one private Redis, their rounds"
        " alternated. Latency: publish to receipt, percentiles over every round.",
        "",
        "| target | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | loss | sockets | p99 / max per round (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, r in results.items():
        if "error" in r:
            lines.append(f"| {target} | {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {target} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} "
            f"| {r['loss']:.4f} | {r['opened']:,} | "
            + ", ".join(f"{each['p99_ms']:.2f} / {each['max_ms']:.1f}" for each in r["rounds"])
            + " |"
        )
    return "\n".join(lines) + "\n"
