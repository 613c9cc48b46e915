"""python -m loadtest.bench: every scenario against every target, one private Redis, one report.

Writes results.json, results.md and results.png (when matplotlib is installed) to --out: a scratch
directory by default; ``make bench`` passes ``--out loadtest/results``, the committed results.
Needs the bench extra for the alternatives and the chart: ``scripts/bootstrap test,bench``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from harness.redis_server import RedisServer
from loadtest.bench.output import add_out_argument, written
from loadtest.bench.report import chart, machine, markdown
from loadtest.bench.scenarios import Sizes, run_target
from loadtest.bench.targets import TARGETS, missing_packages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated, from: " + ", ".join(TARGETS)
    )
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--per-user", type=int, default=Sizes.per_user)
    parser.add_argument("--messages", type=int, default=Sizes.messages)
    parser.add_argument(
        "--rates", default=",".join(map(str, Sizes.rates)), help="latency publish rates, msg/s"
    )
    parser.add_argument("--duration", type=float, default=Sizes.duration, help="seconds per latency rate")
    parser.add_argument("--idle", type=int, default=Sizes.idle, help="idle connections for the capacity run")
    parser.add_argument("--hold", type=float, default=Sizes.hold, help="seconds to hold the idle connections")
    parser.add_argument("--processes", type=int, default=Sizes.processes, help="client processes")
    add_out_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes(
        users=args.users,
        per_user=args.per_user,
        messages=args.messages,
        rates=tuple(int(r) for r in args.rates.split(",") if r),
        duration=args.duration,
        idle=args.idle,
        hold=args.hold,
        processes=args.processes,
    )
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "sizes": sizes.__dict__ | {"rates": list(sizes.rates)},
    }
    results: list[dict[str, Any]] = []
    redis_server = RedisServer()
    redis_server.start()
    try:
        for target in args.targets.split(","):
            missing = missing_packages(target)
            if missing:
                print(
                    f"{target}: skipped, missing {', '.join(missing)} (scripts/bootstrap bench)", flush=True
                )
                results.append({"target": target, "error": f"not run: {', '.join(missing)} not installed"})
                continue
            print(f"{target}:", flush=True)
            try:
                results.append(
                    run_target(target, redis_server.url, sizes, log=lambda m: print(m, flush=True))
                )
            except Exception as exc:
                print(f"  {target} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                results.append({"target": target, "error": f"failed: {type(exc).__name__}: {exc}"})
    finally:
        redis_server.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    table = markdown(results, meta)
    (args.out / "results.md").write_text(table)
    if not chart(results, meta, args.out / "results.png"):
        print("results.png not drawn: matplotlib is missing (scripts/bootstrap test,bench installs it)")
    print(table)
    print(written(args.out))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
