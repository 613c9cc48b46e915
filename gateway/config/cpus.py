"""How many CPUs this process may use, for ``WEB_CONCURRENCY``'s default: the CPUs its affinity
allows (``taskset``, a cpuset), capped by its cgroup's CPU quota (a container's ``--cpus``, a pod's
CPU limit), rounded up. ``os.cpu_count()`` counts the node's cores: on a 64-core node a pod limited
to 2 CPUs would start 64 workers, each with its own Redis connections.

The quota is cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none) where a v1
hierarchy holds the cpu controller, else cgroup v2's ``cpu.max`` (``<quota> <period>`` or ``max``)
of the process's cgroup and each of its ancestors (the smallest wins). A file that is missing or
unreadable means no quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    cpus = _affinity()
    quota = cgroup_quota(root, proc_cgroup)
    if quota is not None:
        # Rounded up: 1.5 CPUs keep two workers busy between them; at least one worker.
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """CPUs the cgroup quota allows (a fraction), or None when there is none."""
    memberships = _memberships(proc_cgroup)
    # A v1 hierarchy with the cpu controller wins: on a hybrid host the v2 line ("0::/path")
    # is there too, but its cgroup has no cpu controller.
    for controllers, path in memberships.items():
        if "cpu" in controllers.split(","):
            return _v1_quota(root, controllers, path)
    if "" in memberships:
        return _v2_quota(root, memberships[""])
    return None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _memberships(proc_cgroup: Path) -> dict[str, str]:
    """``controllers -> cgroup path`` from /proc/self/cgroup's ``id:controllers:path`` lines."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return {}
    memberships = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            memberships[parts[1]] = parts[2]
    return memberships


def _v2_quota(root: Path, path: str) -> float | None:
    """The smallest ``cpu.max`` from the process's cgroup up to the root. In a container with its
    own cgroup namespace the path is ``/`` and the root's file is the container's."""
    quotas = []
    directory = root / path.lstrip("/")
    if not directory.is_dir():  # the path of another namespace: only the root's file is ours
        directory = root
    for place in (directory, *directory.parents):
        quota = _v2_file(place / "cpu.max")
        if quota is not None:
            quotas.append(quota)
        if place == root:
            break
    return min(quotas, default=None)


def _v2_file(file: Path) -> float | None:
    try:
        fields = file.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(root: Path, controllers: str, path: str) -> float | None:
    for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
        for directory in (mount / path.lstrip("/"), mount):
            try:
                quota = (directory / "cpu.cfs_quota_us").read_text().strip()
                period = (directory / "cpu.cfs_period_us").read_text().strip()
            except OSError:
                continue
            return _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
