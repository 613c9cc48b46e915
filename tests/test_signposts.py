"""Signposts that cannot go stale: each package's docstring names its modules, the paths the
architecture map and the layout (docs/development.md) name exist, and no import circle runs through
gateway/."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"
PACKAGES = sorted(
    [GATEWAY, ROOT / "harness", *(p.parent for p in GATEWAY.glob("*/__init__.py"))], key=lambda p: str(p)
)


def _docstring(package: Path) -> str:
    return ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_packages_docstring_names_each_of_its_modules(package: Path) -> None:
    """``name.py`` for every module, ``name/`` for every subpackage."""
    doc = _docstring(package)
    modules = [f"{p.name}" for p in package.glob("*.py") if p.name != "__init__.py"]
    subpackages = [f"{p.parent.name}/" for p in package.glob("*/__init__.py")]
    missing = [name for name in modules + subpackages if not re.search(rf"(?<![\w/]){re.escape(name)}", doc)]
    assert missing == []


def _named_paths(text: str) -> set[str]:
    """Paths of files (``x/y.py``, ``lua/acquire.lua``) and folders (``history/``) in the text."""
    extensions = "py|lua|md|toml|yaml|conf|json"
    files = re.findall(rf"(?<![\w./-])((?:[\w-]+/)*[\w-]+(?:\.[\w-]+)*\.(?:{extensions}))(?!\w|\.\w)", text)
    folders = re.findall(r"(?<![\w./-])((?:[\w-]+/)+)(?=[\s`),:;]|$)", text)
    return set(files) | set(folders)


def _exists(path: str, *bases: Path) -> bool:
    return any((base / path).exists() for base in bases)


def test_every_path_the_architecture_map_names_exists() -> None:
    """Paths there are under gateway/ unless they name the repository's own (gunicorn.conf.py)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = _named_paths(text)
    assert "hub.py" in paths and "broker/redis.py" in paths
    assert sorted(p for p in paths if not _exists(p, GATEWAY, ROOT, ROOT / "docs")) == []


def test_every_symbol_the_architecture_maps_diagrams_name_is_defined_there() -> None:
    """In the diagrams, ``path.py Name.member`` names where a step is done: it must be there."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    diagrams = "\n".join(body for language, body in blocks if not language)
    pairs = re.findall(r"((?:[\w-]+/)*[\w-]+\.py)\s+([A-Za-z_][\w.]*)(?![\w.-])", diagrams)
    assert len(pairs) > 10
    undefined = []
    for path, symbol in pairs:
        source = (GATEWAY / path).read_text()
        name = symbol.rstrip(".").rpartition(".")[2]
        if not re.search(rf"(def|class)\s+_?{name}\b|^\s*(self\.)?_?{name}\s*[:=]", source, re.M):
            undefined.append(f"{path} {symbol}")
    assert undefined == []


def _layout_lines() -> list[tuple[str, list[Path]]]:
    """docs/development.md's layout: each line, and where the names after its opening path are
    looked for (under its folder, or one above)."""
    text = (ROOT / "docs" / "development.md").read_text()
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    assert "gateway/hub.py" in _named_paths(layout)
    lines = []
    for line in layout.split("```")[1].strip().splitlines():
        first = line.split()[0]
        folder = ROOT / (first if first.endswith("/") else str(Path(first).parent))
        lines.append((line, [folder, *(p for p in folder.parents if p == ROOT or ROOT in p.parents)]))
    return lines


def test_every_path_the_layout_names_exists() -> None:
    """Each line of the layout opens with a path; the names after it are under its folder or one
    above."""
    missing = []
    for line, bases in _layout_lines():
        missing += [p for p in _named_paths(line) if not _exists(p, *bases)]
    assert sorted(missing) == []


def test_the_layout_names_every_gateway_module() -> None:
    """A module added to gateway/ is placed in the layout too."""
    named = set()
    for line, bases in _layout_lines():
        for path in _named_paths(line):
            named.update((base / path).resolve() for base in bases if (base / path).is_file())
    modules = [p for p in GATEWAY.rglob("*.py") if p.name != "__init__.py" or p.parent == GATEWAY]
    assert sorted(str(p.relative_to(ROOT)) for p in modules if p.resolve() not in named) == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_at_module_level(tree: ast.Module, modules: set[str]) -> set[str]:
    """What a module imports outside its functions (``if TYPE_CHECKING:`` included: a circle there
    is a circle in the design), resolved to gateway's modules."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "gateway's modules import absolutely"
            base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            pending.extend(node.body)
            pending.extend(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
    return {name for name in found if name in modules}


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in GATEWAY.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = _imports_at_module_level(ast.parse(path.read_text()), set(files)) - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _part(module: str) -> str:
    """The part a module belongs to: its package under gateway/, or itself when flat."""
    return ".".join(module.split(".")[:2])


def test_no_import_circle_between_gateway_modules() -> None:
    graph = _import_graph()
    assert "gateway.hub" in graph["gateway.app"]
    assert _circles(graph) == []


def test_no_import_circle_between_gateway_parts() -> None:
    """Packages and flat modules as units: a package that imports the hub, imported by the hub,
    is a circle too, whichever of its modules close it."""
    parts: dict[str, set[str]] = {}
    for module, targets in _import_graph().items():
        if module == "gateway":
            continue  # the package's lazy re-exports import publishing/ on first use only
        parts.setdefault(_part(module), set()).update(_part(t) for t in targets if _part(t) != _part(module))
    assert _circles(parts) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


_SOURCES = [
    *GATEWAY.rglob("*.py"),
    *(ROOT / "harness").glob("*.py"),
    *(ROOT / "docs").glob("*.md"),
    ROOT / "README.md",
    ROOT / "gunicorn.conf.py",
]


def test_every_gateway_path_named_in_code_and_docs_exists() -> None:
    """``gateway/x/y.py`` in a comment, docstring or document names a file that is there."""
    missing = set()
    for source in _SOURCES:
        for path in re.findall(r"(?<![\w/])gateway/(?:[\w-]+/)*[\w-]+\.(?:py|lua)", source.read_text()):
            if not (ROOT / path).exists():
                missing.add(f"{source.relative_to(ROOT)}: {path}")
    assert sorted(missing) == []


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(owner, name):
                return False
            owner = getattr(owner, name)
        return True
    return False


def test_every_dotted_gateway_name_in_code_and_docs_resolves() -> None:
    """``gateway.link.offer_link`` quoted in a docstring or a document names something that is there
    (code itself is checked by running it; ``gateway`` is also the usual name of a worker's state)."""
    unresolved = set()
    for source in _SOURCES:
        for dotted in re.findall(r"`(gateway(?:\.[A-Za-z_]\w*)+)`", source.read_text()):
            if not _resolves(dotted):
                unresolved.add(f"{source.relative_to(ROOT)}: {dotted}")
    assert sorted(unresolved) == []
