"""Figures live in loadtest/results/ with their date and machine: the README's performance section
links the latest results and quotes none, and docs/performance.md reports that same run."""

from __future__ import annotations

import re

from harness.paths import ROOT

RESULTS = ROOT / "loadtest" / "results" / "results.md"


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_links_the_latest_results_and_quotes_no_figure() -> None:
    readme = section((ROOT / "README.md").read_text(), "Performance")
    assert "](loadtest/results/results.md)" in readme
    assert RESULTS.is_file()
    assert re.findall(r"\d", readme) == [], "a figure in the README ages: link the results instead"


def test_the_latest_results_name_their_date_and_machine_and_docs_report_them() -> None:
    results = RESULTS.read_text()
    run = re.search(r"^Run (\d{4}-\d\d-\d\d \d\d:\d\d UTC) on (\d+ cores? .+)$", results, re.M)
    assert run, "loadtest/results/results.md names no run date and machine"
    latest = section((ROOT / "docs" / "performance.md").read_text(), "Latest results")
    assert run[0] in latest
    table = [line for line in results.splitlines() if line.startswith("|")]
    assert table and all(line in latest for line in table)
