"""python -m loadtest.bench.api: what the HTTP API costs, against the publisher library.

On one gateway worker and one Redis, history on:
- round trip: one publish at a time, the library (``Publisher.publish``) against ``POST
  /api/publish`` on one keep-alive connection: median and p99;
- throughput: publishes per second the worker serves over ``--connections`` keep-alive
  connections, each sending its next request when the last is answered;
- a batch: ``POST /api/publish/batch`` of ``--batch`` messages against as many single calls in
  turn on one keep-alive connection.
The client runs on the same machine as the worker and Redis: absolute figures are that machine's,
the ratios are the result. Writes api.json and api.md to --out (default: a scratch directory,
loadtest/bench/output.py).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import statistics
import time
from typing import Any

from gateway import Publisher
from harness.api_client import API_KEY
from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer
from loadtest.bench.output import add_out_argument, write_results

_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": statistics.quantiles(samples, n=100)[98] * 1e6,
    }


def _post(conn: http.client.HTTPConnection, path: str, body: Any) -> Any:
    conn.request("POST", path, body=json.dumps(body).encode(), headers=_HEADERS)
    response = conn.getresponse()
    answer = response.read()
    assert response.status == 200, answer
    return json.loads(answer)


def _round_trips(redis_url: str, port: int, count: int) -> dict[str, dict[str, float]]:
    library, api = [], []
    with Publisher(redis_url) as publisher:
        publisher.publish("warm-up", "x")
        for i in range(count):
            started = time.perf_counter()
            publisher.publish(f"bench-{i % 100}", {"n": i})
            library.append(time.perf_counter() - started)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    _post(conn, "/api/publish", {"user": "warm-up", "data": "x"})
    for i in range(count):
        started = time.perf_counter()
        _post(conn, "/api/publish", {"user": f"bench-{i % 100}", "data": {"n": i}})
        api.append(time.perf_counter() - started)
    conn.close()
    return {"library": _percentiles(library), "http": _percentiles(api)}


async def _keep_alive_client(port: int, requests: int, counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(requests):
        body = json.dumps({"user": f"load-{i % 100}", "data": {"n": i}}).encode()
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        status = await reader.readline()
        assert b" 200 " in status, status
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        counter[0] += 1
    writer.close()


async def _throughput(port: int, connections: int, requests: int) -> dict[str, float]:
    counter = [0]
    started = time.perf_counter()
    await asyncio.gather(*(_keep_alive_client(port, requests, counter) for _ in range(connections)))
    seconds = time.perf_counter() - started
    return {"publishes": counter[0], "seconds": seconds, "publishes_per_second": counter[0] / seconds}


def _batch_against_singles(port: int, size: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    messages = [{"user": f"batch-{i % 100}", "data": {"n": i}} for i in range(size)]
    started = time.perf_counter()
    results = _post(conn, "/api/publish/batch", {"messages": messages})["results"]
    batch = time.perf_counter() - started
    assert len(results) == size and all("position" in r for r in results)
    started = time.perf_counter()
    for message in messages:
        _post(conn, "/api/publish", message)
    singles = time.perf_counter() - started
    conn.close()
    return {"messages": size, "batch_seconds": batch, "singles_seconds": singles, "speed_up": singles / batch}


def run(count: int, connections: int, requests: int, batch: int) -> dict[str, Any]:
    server = RedisServer()
    server.start()
    try:
        with running_gateway(server.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway:
            return {
                "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
                "round_trip": _round_trips(server.url, gateway.port, count),
                "throughput": {
                    "connections": connections,
                    **asyncio.run(_throughput(gateway.port, connections, requests)),
                },
                "batch": _batch_against_singles(gateway.port, batch),
            }
    finally:
        server.close()


def markdown(results: dict[str, Any]) -> str:
    trip = results["round_trip"]
    ratio = trip["http"]["median_us"] / trip["library"]["median_us"]
    rows = [f"Run {results['started']} on {results['machine']}: `python -m loadtest.bench.api`.", ""]
    rows += ["| one publish at a time, history on | library | HTTP API |", "|---|---|---|"]
    for key, label in [("median_us", "round trip, median (µs)"), ("p99_us", "round trip, p99 (µs)")]:
        rows.append(f"| {label} | {trip['library'][key]:.0f} | {trip['http'][key]:.0f} |")
    rows += ["", f"The HTTP round trip is {ratio:.1f} times the library's (median)."]
    load, batch = results["throughput"], results["batch"]
    rows += [
        "",
        f"One worker over {load['connections']} keep-alive connections:"
        f" {load['publishes_per_second']:.0f} publishes/s ({load['publishes']} in {load['seconds']:.1f} s).",
        "",
        f"A batch of {batch['messages']}: {batch['batch_seconds'] * 1000:.0f} ms; the same messages as"
        f" single calls on one keep-alive connection: {batch['singles_seconds'] * 1000:.0f} ms"
        f" ({batch['speed_up']:.0f} times longer).",
    ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.api", description=__doc__)
    parser.add_argument("--publishes", type=int, default=2000, help="publishes timed one by one, per side")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections for throughput")
    parser.add_argument("--requests", type=int, default=500, help="publishes per connection for throughput")
    parser.add_argument("--batch", type=int, default=1000, help="messages in the batch (at most 1,000)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    results = run(args.publishes, args.connections, args.requests, args.batch)
    write_results(args.out, "api", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
