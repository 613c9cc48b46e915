"""python -m loadtest.bench.profile: py-spy on every gateway worker during the fan-out scenario,
or with ``--scenario connect`` while the connections open.

Starts a private Redis and gateway, records each worker with ``py-spy record --format raw``
(collapsed stacks) while the connections open or the messages are published, then prints the
hottest functions by own time and by inclusive time, summed over the workers.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.redis_server import RedisServer
from harness.tokens import make_token
from loadtest.bench.clients import ClientPool, run_publisher
from loadtest.bench.targets import running


def _frame(entry: str) -> str:
    # py-spy frames read "function (path/to/module.py:line)"; keep the function and the file name.
    name, _, where = entry.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def summarise(paths: list[Path], top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    lines = [f"{total} samples over {len(paths)} workers", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.profile", description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=2)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=8.0, help="py-spy recording time")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--target", default="gateway")
    parser.add_argument("--scenario", choices=("fanout", "connect"), default="fanout")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    redis_server = RedisServer()
    redis_server.start()
    try:
        with running(args.target, redis_server.url) as server:
            pool = ClientPool(args.target, server.port, 2)
            try:
                users = [f"u{i}" for i in range(args.users)]
                pairs = [(u, make_token(u)) for u in users for _ in range(args.per_user)]
                if args.scenario == "fanout":
                    opened = pool.connect(pairs, 200)
                    print(f"{opened['opened']} connections open", flush=True)
                    time.sleep(1)
                paths = [out / f"worker-{pid}.txt" for pid in server.worker_pids()]
                recorders = [
                    subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--duration",
                            str(int(args.seconds)),
                            "--rate",
                            "250",
                            "--format",
                            "raw",
                            "--output",
                            str(path),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for pid, path in zip(server.worker_pids(), paths, strict=True)
                ]
                time.sleep(1)
                if args.scenario == "connect":
                    opened = pool.connect(pairs, 200)
                    print(f"{opened['opened']} connections opened in {opened['seconds']:.1f}s", flush=True)
                else:
                    pool.broadcast("reset", False)
                    job = {"target": args.target, "redis_url": redis_server.url, "users": users}
                    sent = run_publisher(job | {"count": args.messages, "batch": 100, "concurrency": 4})
                    stats = pool.wait_quiet(sent["sent"] * args.per_user, idle=3.0, limit=60.0)
                    print(f"delivered {stats['received']} of {sent['sent'] * args.per_user}", flush=True)
                for recorder in recorders:
                    recorder.wait(args.seconds + 30)
            finally:
                pool.close()
    finally:
        redis_server.close()
    print(summarise([p for p in paths if p.exists()], args.top))
    print(f"\nraw stacks: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
