"""Where a benchmark writes its results: a scratch directory unless told otherwise. The committed
results in loadtest/results/ (which the docs quote, with their date and machine) are rewritten
only on purpose, ``--out loadtest/results``, as ``make bench`` does."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from harness.paths import ROOT

COMMITTED = ROOT / "loadtest" / "results"
SCRATCH = Path(tempfile.gettempdir()) / "ws-gateway-bench"


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=SCRATCH,
        help=f"where to write (default {SCRATCH}); --out loadtest/results rewrites the committed results",
    )


def written(out: Path) -> str:
    """The line a benchmark ends with: where its files are."""
    return f"results written to {out}"


def write_results(out: Path, name: str, results: dict[str, Any], markdown: str) -> None:
    """``<name>.json`` and ``<name>.md`` in ``out``; the table printed, then where it went."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    print(written(out))
