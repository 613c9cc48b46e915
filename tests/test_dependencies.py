"""requirements.lock and requirements-runtime.lock agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.server.upstream import INTERNALS
from harness.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# name==version [; marker] \, then one or more "    --hash=sha256:..." continuation lines.
_ENTRY = re.compile(
    r"^([A-Za-z0-9_.-]+)==(\S+?)(?: ;[^\\]*)? \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\\n|\n))+)", re.M
)


def _lock(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    entries = {canonicalize_name(m[1]): m[2] for m in _ENTRY.finditer(text)}
    pinned = re.findall(r"^[A-Za-z0-9_.-]+==", text, re.M)
    assert len(entries) == len(pinned), f"{name}: an entry without a sha256 hash"
    return entries


def _declared(extras: list[str]) -> list[Requirement]:
    """The core's requirements and those of ``extras``, an extra that names the project itself
    (``gateway[server]``) followed to the extras it names."""
    project = PYPROJECT["project"]
    declared = [Requirement(line) for line in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending += sorted(requirement.extras)
            else:
                declared.append(requirement)
    return declared


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ["test"]), ("requirements-runtime.lock", ["server"])]
)
def test_every_declared_dependency_is_locked_within_its_range(lock: str, extras: list[str]) -> None:
    pins = _lock(lock)
    declared = _declared(extras) + [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {name} is not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock}: {name}=={pins[name]} is outside {requirement.specifier}"
        )


def test_the_test_extra_brings_the_server() -> None:
    """``make test`` installs the test extra: it runs the server, so it has all of it."""
    server = {r.name for r in _declared(["server"])}
    assert {"starlette", "uvicorn", "gunicorn"} <= server <= {r.name for r in _declared(["test"])}


def test_the_runtime_lock_pins_the_same_releases_as_the_test_lock() -> None:
    runtime, test = _lock("requirements-runtime.lock"), _lock("requirements.lock")
    assert runtime.items() <= test.items()


def test_packages_whose_internals_are_used_have_a_bounded_range() -> None:
    """A new release of these can drop what gateway/server/upstream.py lists: it needs a check first."""
    ranges = {canonicalize_name(r.name): r for r in _declared(["server"])}
    for package in {internal.package for internal in INTERNALS} - {"python"}:  # the interpreter's own
        assert any(spec.operator == "<" for spec in ranges[canonicalize_name(package)].specifier), package
