"""WEB_CONCURRENCY's default: the CPUs the process may use (affinity, capped by the cgroup's CPU
quota), read from cgroup files laid out in a temporary directory as the kernel lays them out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import table
from gateway.config.cpus import cgroup_quota, usable_cpus
from harness.paths import ROOT


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path: Path, own_path: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    for relative, text in files.items():
        _write(root, relative, text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own_path}\n")
    return root, proc


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),  # docker run --cpus 2, its own cgroup namespace
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),  # no limit
        ({}, None),  # no cpu controller enabled
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_cgroup_v2_cpu_max_in_a_namespace(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_quota(*_v2(tmp_path, "/", files)) == quota


def test_cgroup_v2_the_smallest_quota_up_the_hierarchy_wins(tmp_path: Path) -> None:
    """A pod's limit on kubepods.slice/pod/ and none on the container's own cgroup below it."""
    files = {
        "kubepods.slice/cpu.max": "400000 100000\n",
        "kubepods.slice/pod1/cpu.max": "50000 100000\n",
        "kubepods.slice/pod1/ctr/cpu.max": "max 100000\n",
    }
    root, proc = _v2(tmp_path, "/kubepods.slice/pod1/ctr", files)
    assert cgroup_quota(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1, "a fraction of a CPU still runs one worker"


def test_cgroup_v2_a_path_of_another_namespace_reads_the_root(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/system.slice/elsewhere", {"cpu.max": "300000 100000\n"})
    assert cgroup_quota(root, proc) == 3.0


@pytest.mark.parametrize(("quota_us", "quota"), [("250000", 2.5), ("-1", None)])
def test_cgroup_v1_cfs_quota_on_a_hybrid_host(tmp_path: Path, quota_us: str, quota: float | None) -> None:
    """A v1 cpu hierarchy beside the v2 line ("0::/"): the v1 quota is the one enforced."""
    root = tmp_path / "cgroup"
    _write(root, "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", quota_us + "\n")
    _write(root, "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_quota(root, proc) == quota


def test_the_quota_caps_the_affinity_rounded_up(tmp_path: Path) -> None:
    allowed = len(os.sched_getaffinity(0))
    root, proc = _v2(tmp_path, "/", {"cpu.max": f"{allowed * 100000 - 50000} 100000\n"})
    assert usable_cpus(root, proc) == allowed  # 1.5 CPUs: two workers keep them busy
    capped = tmp_path / "capped"
    capped.mkdir()
    root, proc = _v2(capped, "/", {"cpu.max": "100000 100000\n"})
    assert usable_cpus(root, proc) == 1


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path / "none", tmp_path / "none") == len(os.sched_getaffinity(0))


def test_web_concurrency_defaults_to_the_usable_cpus() -> None:
    assert table.WEB_CONCURRENCY.default_value() == usable_cpus()


def test_a_process_pinned_to_one_cpu_defaults_to_one_worker() -> None:
    """The real affinity, through taskset: what a cpuset or `docker run --cpuset-cpus 0` gives."""
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    code = "from gateway.config import table; print(table.WEB_CONCURRENCY.default_value())"
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "1"
