"""A benchmark run by hand writes to a scratch directory, never over the committed results the docs
quote; ``make bench`` rewrites them on purpose; a missing matplotlib costs the chart, one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import ROOT
from loadtest.bench import __main__ as bench
from loadtest.bench import api, cluster, groups, history, idle
from loadtest.bench.output import COMMITTED, SCRATCH


def _default_out(main_module: object) -> Path:
    """The --out a module's parser gives when none is passed."""
    if main_module is bench:
        return Path(bench.parse_args([]).out)
    if main_module is idle:
        return Path(idle.parse_args([]).out)
    # api, groups, cluster and history parse inside main(): read --out from their help text instead.
    result = subprocess.run(
        [sys.executable, "-m", main_module.__name__, "--help"],  # type: ignore[attr-defined]
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"\(default (\S+?)\)", " ".join(result.stdout.split()))
    assert found, result.stdout
    return Path(found[1])


@pytest.mark.parametrize("module", [bench, history, groups, api, cluster, idle], ids=lambda m: m.__name__)
def test_by_default_a_bench_writes_to_a_scratch_directory(module: object) -> None:
    out = _default_out(module)
    assert out == SCRATCH and not out.resolve().is_relative_to(ROOT.resolve())


def test_make_bench_rewrites_the_committed_results_on_purpose() -> None:
    commands = subprocess.run(
        ["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    runs = [line for line in commands.splitlines() if "-m loadtest.bench" in line]
    assert len(runs) == 8 and all("--out loadtest/results" in line for line in runs), commands
    assert COMMITTED == ROOT / "loadtest" / "results"


def test_without_matplotlib_the_chart_is_one_line_and_the_tables_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target whose packages are missing is skipped at once: the run writes its report only."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    monkeypatch.setattr(bench, "missing_packages", lambda target: ["a-package"])
    assert bench.main(["--targets", "gateway", "--out", str(tmp_path)]) == 1  # nothing ran
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("results.png")]
    assert notes == [
        "results.png not drawn: matplotlib is missing (scripts/bootstrap test,bench installs it)"
    ]
    assert f"results written to {tmp_path}" in out
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["target"] == "gateway"
    assert (tmp_path / "results.md").exists() and not (tmp_path / "results.png").exists()
