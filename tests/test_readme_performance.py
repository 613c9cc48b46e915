"""The README's performance figures are those of docs/performance.md's latest run, with its date."""

from __future__ import annotations

import re

from harness.paths import ROOT


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_quotes_the_latest_run_with_its_date() -> None:
    readme = section((ROOT / "README.md").read_text(), "Performance")
    performance = (ROOT / "docs" / "performance.md").read_text()
    run = re.search(r"^Run (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", performance, re.M)
    assert run, "docs/performance.md names no run date"
    assert f"Latest run, {run[1]}" in readme
    targets = section(performance, "Latest results")
    quoted = re.findall(r"\b\d+\.\d+x\b", readme)
    assert quoted, "no ratio quoted"
    missing = [ratio for ratio in quoted if ratio not in targets]
    assert not missing, f"README ratios not in docs/performance.md's latest results: {missing}"
