"""python -m loadtest.run: locust headless against a private gateway (or TARGET_URL), bounded in time.

The default (100 users for 45 s) finishes in about a minute; ``make loadtest LOADTEST_ARGS="--users
2000 --run-time 5m"`` runs a bigger one. Locust gives one user in 21 to a publisher (the first at
the 10th user): with fewer users nothing publishes and only connects are measured (a warning says so).

Without ``TARGET_URL`` it starts its own redis-server and gateway (2 workers) on free loopback
ports and stops them afterwards. With ``TARGET_URL`` it needs ``REDIS_URL`` and ``JWT_SECRET_KEY``
of that gateway. Writes locust's CSV files and HTML report to --out (default loadtest/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from heapq import heapify, heapreplace
from math import log2
from pathlib import Path

from harness.gateway_process import running_gateway
from harness.paths import ROOT
from harness.redis_server import RedisServer
from harness.tokens import SECRET

# loadtest/locustfile.py's user classes and weights (tests/test_loadtest_run.py checks them).
WEIGHTS = (("GatewayUser", 20), ("PublisherUser", 1))


def fewest_users_with_a_publisher() -> int:
    """How many users locust starts before one of them publishes (with 20:1, the 10th).

    Locust hands users out in the order of a generator that keeps the mix closest to the weights
    (locust/dispatch.py's ``_kl_generator``, redone here: importing locust monkey-patches this
    process with gevent; tests/test_loadtest_run.py compares the two where locust is installed).
    """
    heap = [(weight * log2(weight / (weight + 1.0)), weight + 1.0, weight, name) for name, weight in WEIGHTS]
    heapify(heap)
    for position in itertools.count(1):
        _, seen, weight, name = heap[0]
        if name == "PublisherUser":
            return position
        heapreplace(heap, (weight * log2(seen / (seen + 1.0)), seen + 1.0, weight, name))
    raise AssertionError("unreachable")


def publisher_warning(users: int) -> str | None:
    """Why a run with this many users measures no delivery, or None when it does."""
    fewest = fewest_users_with_a_publisher()
    if users >= fewest:
        return None
    return (
        f"warning: --users {users} leaves no publisher (locust gives GatewayUser and PublisherUser "
        f"20:1): only connects are measured; use --users {fewest} or more"
    )


@contextlib.contextmanager
def _target(workers: int) -> Iterator[dict[str, str]]:
    if os.environ.get("TARGET_URL"):
        missing = [name for name in ("REDIS_URL", "JWT_SECRET_KEY") if not os.environ.get(name)]
        if missing:
            raise SystemExit(f"TARGET_URL is set: {' and '.join(missing)} must be set too")
        yield {"TARGET_URL": os.environ["TARGET_URL"]}
        return
    redis_server = RedisServer()
    redis_server.start()
    try:
        with running_gateway(redis_server.url, workers) as gateway:
            yield {"TARGET_URL": gateway.ws_url, "REDIS_URL": redis_server.url, "JWT_SECRET_KEY": SECRET}
    finally:
        redis_server.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    parser.add_argument("--users", type=int, default=100, help="locust users (20 WebSocket : 1 publisher)")
    parser.add_argument("--spawn-rate", type=float, default=50.0)
    parser.add_argument("--run-time", default="45s")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers when starting one")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warning = publisher_warning(args.users)
    if warning is not None:
        print(warning, file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with _target(args.workers) as env:
        command = [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
            "--headless", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
            "--run-time", args.run_time, "--stop-timeout", "10", "--host", env["TARGET_URL"],
            "--csv", str(args.out / "locust"), "--html", str(args.out / "locust.html"), "--only-summary",
        ]  # fmt: skip
        completed = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, check=False, timeout=3600)
    print(f"locust report: {args.out / 'locust.html'}, CSV: {args.out}/locust_*.csv")
    return completed.returncode


if __name__ == "__main__":
    raise SystemExit(main())
