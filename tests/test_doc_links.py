"""Every link between the repository's documents lands: the file is there, and so is the heading an
anchor names (GitHub's slugs), so moving a section cannot leave a link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.paths import ROOT

DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.S | re.M)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_slug_is_githubs() -> None:
    assert slug("History and recovery") == "history-and-recovery"
    assert slug("Admission: `GET /ws`") == "admission-get-ws"
    assert slug("Redis for the gateway: one server, Sentinel or Cluster") == (
        "redis-for-the-gateway-one-server-sentinel-or-cluster"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(document: Path) -> None:
    broken = []
    for target in _LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


def test_the_readme_stays_a_page_a_newcomer_finishes() -> None:
    """What it is, the two commands, how it works, one connect and one publish example, and links:
    the reference lives in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert "make run" in "\n".join(lines) and "make test" in "\n".join(lines)
