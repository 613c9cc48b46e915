"""Where a benchmark writes its results: a scratch directory unless told otherwise. The committed
results in loadtest/results/ (which the docs quote, with their date and machine) are rewritten
only on purpose, ``--out loadtest/results``, as ``make bench`` does."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

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
