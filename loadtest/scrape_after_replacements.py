"""Scrape cost as workers come and go: /metrics time at a fresh start and after N replacements.

    .venv/bin/python -m loadtest.scrape_after_replacements --replacements 200

Starts its own redis-server and a 2-worker gunicorn on loopback, kills a worker with SIGKILL N
times (gunicorn respawns it), and reports the median scrape time before and after as a ratio.
Without archiving, every dead worker leaves its counter and histogram files behind and each
scrape reads them all.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import time

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer


def median_scrape_ms(gateway: Gateway, samples: int) -> float:
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        status, _ = gateway.get("/metrics")
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200
    return statistics.median(timings)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--replacements", type=int, default=200)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(1)
    redis_server = RedisServer()
    redis_server.start()
    try:
        with running_gateway(redis_server.url, workers=2) as gateway:
            fresh = median_scrape_ms(gateway, args.samples)
            started = time.monotonic()
            for _ in range(args.replacements):
                os.kill(rng.choice(gateway.worker_pids()), signal.SIGKILL)
                gateway.wait_all_workers_ready()
            replaced = median_scrape_ms(gateway, args.samples)
            files = len([f for f in os.listdir(gateway.metrics_dir) if f.endswith(".db")])
    finally:
        redis_server.close()
    print(f"replacements: {args.replacements} in {time.monotonic() - started:.0f} s")
    print(f"median scrape, fresh start: {fresh:.2f} ms")
    print(f"median scrape, after:       {replaced:.2f} ms  (ratio {replaced / fresh:.2f}x, target <= 2x)")
    print(f"metric files in the directory after: {files}")


if __name__ == "__main__":
    main()
