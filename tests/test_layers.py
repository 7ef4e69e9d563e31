"""The core's layers, enforced from the import graph (derived from the source with ``ast``).

``registry/`` is a stack of subpackages; a module may import from its own subpackage and from the
layers below its own, never from a layer above or beside it (``toolkit`` and ``submissions`` are
independent of each other, and so are ``engine`` and ``execution``: executors are handed the
worker). No file-level import cycle, in ``registry/`` or in ``testing/``. Imports placed inside
functions count like the others, and each in-function import of a bioprior module says why on
its line (``# lazy: <reason>``: it imports torch, which ``import bioprior`` and the CLI's start
must not, or it would close a cycle); a light one (importing neither torch nor another large
library) without a reason is reported as belonging at the top. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

#: bottom first; a layer may import the layers of a lower rank (same rank: independent)
RANKS = {
    "base": 0,
    "hooks": 1,
    "contracts": 2,
    "toolkit": 3,
    "submissions": 3,
    "planning": 4,
    "store": 5,
    "engine": 6,
    "execution": 6,
    "scoring": 7,
    "report": 8,
    "api": 9,
    "cli": 10,
}
#: libraries whose import is what a lazy import avoids
HEAVY = {
    "torch",
    "torchvision",
    "timm",
    "ray",
    "foolbox",
    "matplotlib",
    "sklearn",
    "scipy",
    "safetensors",
    "imagecorruptions",
    "skimage",
    "PIL",
    "numba",
    "selenium",
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["bioprior", *parts])


def repository_modules() -> dict[str, Path]:
    found = {"bioprior": ROOT / "__init__.py"}
    for folder in ("registry", "testing", "plugins", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if "example_thirdparty" not in path.parts and "templates" not in path.parts:
                found[module_name(path)] = path
    for path in ROOT.glob("*.py"):
        found[module_name(path)] = path
    return found


def layer(module: str) -> str | None:
    """bioprior.registry.engine.trainer -> engine; bioprior.registry.api -> api; a module of
    registry/ outside every layer -> "deprecated" (the shims left at the old paths)."""
    parts = module.split(".")
    if parts[:2] != ["bioprior", "registry"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in RANKS else "deprecated"


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


class ImportGraph:
    """Every runtime import of every module: (imported module, line, inside a function)."""

    def __init__(self, modules: dict[str, Path]):
        self.modules = modules
        self.imports = {m: self._parse(m, p) for m, p in modules.items()}
        self._heavy: dict[str, bool] = {}

    def _parse(self, module: str, path: Path) -> list[tuple[str, int, bool]]:
        tree = ast.parse(path.read_text(), str(path))
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for n in ast.walk(node)}
        in_function = {
            id(n)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(fn)
        }
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names]
                named = [s for s in subs if s in self.modules]
                targets = named if len(named) == len(subs) else [target, *named]
            found += [(t, node.lineno, id(node) in in_function) for t in targets]
        return found

    def heavy(self, module: str, seen: frozenset[str] = frozenset()) -> bool:
        """Importing ``module`` imports a heavy library (at module level, transitively)."""
        if module not in self._heavy:
            self._heavy[module] = any(
                t.split(".")[0] in HEAVY
                or (t in self.modules and t not in seen and self.heavy(t, seen | {module}))
                for t, _, lazy in self.imports[module]
                if not lazy
            )
        return self._heavy[module]

    def where(self, module: str, line: int) -> str:
        return f"{self.modules[module].relative_to(ROOT)}:{line}"

    def layering_violations(self) -> list[str]:
        bad = []
        for module, found in self.imports.items():
            own = layer(module)
            if own is None:
                continue
            for target, line, _ in found:
                theirs = layer(target)
                what = f"{self.where(module, line)}: {module} imports {target}"
                if theirs == "deprecated" and own != "deprecated":
                    bad.append(f"{what} (a deprecated shim: import the new module)")
                elif target.startswith(("bioprior.plugin", "bioprior.benchmarks")):
                    if own != "deprecated":
                        bad.append(f"{what} (the core never imports plugins or their API)")
                elif target.startswith("bioprior.testing") and own != "cli":
                    bad.append(f"{what} (only the CLI uses the conformance kit)")
                elif (
                    own != "deprecated"
                    and theirs in RANKS
                    and theirs != own
                    and RANKS[theirs] >= RANKS[own]
                ):
                    bad.append(f"{what} ({own} may not import {theirs})")
        return bad

    def cycles(self, prefix: str) -> list[list[str]]:
        """Strongly connected components of more than one module among ``prefix``'s."""
        graph = {
            m: sorted({t for t, _, _ in found if t in self.modules and within(t, prefix)} - {m})
            for m, found in self.imports.items()
            if within(m, prefix)
        }
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        found: list[list[str]] = []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in graph[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while component[-1:] != [v]:
                    component.append(stack.pop())
                if len(component) > 1:
                    found.append(sorted(component))

        for v in sorted(graph):
            if v not in index:
                visit(v)
        return found

    def lazy_without_reason(self, prefix: str) -> list[str]:
        bad = []
        for module, found in self.imports.items():
            if not within(module, prefix):
                continue
            lines = self.modules[module].read_text().splitlines()
            for target, line, lazy in found:
                if not lazy or target not in self.modules or "lazy:" in lines[line - 1]:
                    continue
                heavy = self.heavy(target)
                why = "say why: # lazy: <reason>" if heavy else "light: import it at the top"
                bad.append(f"{self.where(module, line)}: {target} ({why})")
        return sorted(set(bad))


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph(repository_modules())


def test_every_subpackage_of_registry_is_a_layer():
    folders = {p.name for p in (ROOT / "registry").iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(RANKS), folders - set(RANKS)


def test_imports_follow_the_layer_order(graph):
    assert graph.layering_violations() == []


@pytest.mark.parametrize("prefix", ["bioprior.registry", "bioprior.testing"])
def test_no_file_level_import_cycle(graph, prefix):
    assert graph.cycles(prefix) == []


@pytest.mark.parametrize("prefix", ["bioprior.registry", "bioprior.testing", "bioprior.plugin"])
def test_lazy_imports_are_heavy_or_say_why(graph, prefix):
    assert graph.lazy_without_reason(prefix) == []


def test_the_checks_catch_a_back_import_a_cycle_and_a_light_lazy_import(tmp_path):
    """Not vacuous: a base module that imports the engine, two modules importing each other, a
    heavy module imported inside a function without a reason and a light one are reported."""
    (tmp_path / "a.py").write_text(
        "from bioprior.registry.engine.trainer import seeded\n"
        "from bioprior.registry.base import b\n"
    )
    (tmp_path / "b.py").write_text(
        "def f():\n    from bioprior.registry.base import a\n"
        "    from bioprior.registry.base.hashing import content_hash\n"
    )
    fakes = {f"bioprior.registry.base.{n}": tmp_path / f"{n}.py" for n in "ab"}
    graph = ImportGraph(repository_modules() | fakes)
    graph.where = lambda module, line: f"{module}:{line}"
    assert (
        "bioprior.registry.base.a:1: bioprior.registry.base.a imports "
        "bioprior.registry.engine.trainer (base may not import engine)"
        in graph.layering_violations()
    )
    assert ["bioprior.registry.base.a", "bioprior.registry.base.b"] in graph.cycles(
        "bioprior.registry"
    )
    lazy = graph.lazy_without_reason("bioprior.registry.base.b")
    assert lazy == [
        "bioprior.registry.base.b:2: bioprior.registry.base.a (say why: # lazy: <reason>)",
        "bioprior.registry.base.b:3: bioprior.registry.base.hashing (light: import it at the top)",
    ]
