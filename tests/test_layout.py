"""The package's shape: moving plugin or benchmark files changes no entry and no job key.

``golden/job_keys.json`` holds every submission's job keys and ``golden/entries.json`` every
registered entry, both recorded before the move into ``plugins/<family>/`` and
``benchmarks/<family>/``. A change that alters them must say why (results are keyed by content).
"""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from bioprior.registry.planning.jobs import plan
from bioprior.registry.submissions.loading import load_submission

GOLDEN = ROOT / "tests" / "golden"
JOB_KEYS = json.loads((GOLDEN / "job_keys.json").read_text())


def test_every_entry_is_still_registered(registry):
    names = sorted(f"{e.kind}:{e.name}" for e in registry.list())
    assert names == json.loads((GOLDEN / "entries.json").read_text())
    assert registry.failures == []


@pytest.mark.parametrize("filename", sorted(JOB_KEYS))
def test_submission_job_keys_unchanged(registry, filename):
    jobs = plan([load_submission(ROOT / "submissions" / filename, registry)])
    assert sorted(j.key for j in jobs) == JOB_KEYS[filename]


def test_quickstart_job_keys_unchanged(registry):
    jobs = plan([load_submission(ROOT / "submissions" / "quickstart.yaml", registry)])
    assert sorted(j.key for j in jobs) == ["13ce91aaab440630e86a", "2549bde8f246e9c7adfa"]


# -- the import graph ---------------------------------------------------------------------------
PACKAGE_DIRS = ("registry", "plugins", "benchmarks")


def _module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["bioprior", *parts])


def _imports(path) -> set[str]:
    """Every bioprior module ``path`` imports, at module level or inside functions."""
    import ast

    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bioprior")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("bioprior"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def _package_files():
    files = [ROOT / "__init__.py", ROOT / "plugin.py"]
    for d in PACKAGE_DIRS:
        files += [p for p in (ROOT / d).rglob("*.py") if "example_thirdparty" not in p.parts]
    return files


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in _package_files()}
    return {m: {t for t in _imports(p) if t in files} for m, p in files.items()}


def family(module: str) -> str:
    """bioprior.plugins.vone.nn -> plugins.vone; bioprior.registry.cli.app -> registry;
    bioprior.benchmarks.stimuli (shared by the benchmark families) -> benchmarks."""
    parts = module.split(".")[1:]
    if not parts:
        return "bioprior"
    if parts[0] in ("plugins", "benchmarks") and len(parts) > 1:
        root = ROOT / parts[0] / parts[1]
        if root.is_dir():
            return f"{parts[0]}.{parts[1]}"
    return parts[0]


def test_import_graph_sees_the_known_edges():
    graph = _graph()
    assert "bioprior.plugin" in graph["bioprior.plugins.capacity"]  # inside apply()
    assert "bioprior.plugins.flexible_layer.nn" in graph["bioprior.plugins.hmax.nn"]
    assert "bioprior.benchmarks.stimuli" in graph["bioprior.benchmarks.corruption.run"]


def test_no_plugin_imports_a_benchmark_and_the_core_imports_neither():
    bad = [
        (m, t)
        for m, targets in _graph().items()
        for t in targets
        if (family(m).startswith("plugins") and t.startswith("bioprior.benchmarks"))
        or (family(m) == "registry" and t.startswith(("bioprior.plugins", "bioprior.benchmarks")))
    ]
    assert bad == []


def test_no_import_cycle_between_families():
    graph = _graph()
    edges: dict[str, set[str]] = {}
    for m, targets in graph.items():
        for t in targets:
            if family(m) != family(t):
                edges.setdefault(family(m), set()).add(family(t))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    # the package's __init__ re-exports the API: it may import registry, nothing imports it back
    cycles = sorted(f for f in edges if f != "bioprior" and reaches(f, f, {f}))
    assert cycles == [], f"families in an import cycle: {cycles}"


def test_the_example_plugin_uses_only_the_public_core():
    example = ROOT / "plugins" / "example_thirdparty" / "src" / "bioprior_example"
    for path in example.glob("*.py"):
        text = path.read_text()
        assert "bioprior.plugins" not in text and "bioprior.benchmarks" not in text, path


# -- entry-point modules stay torch-free ---------------------------------------------------------
def test_every_entry_point_module_imports_without_torch():
    """Listing plugins never imports torch: each module an entry point names, in a fresh
    interpreter, leaves no ``torch`` in ``sys.modules``."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    modules = sorted(
        ep.value.split(":")[0]
        for ep in entry_points(group="bioprior")
        if ep.value.startswith("bioprior.")
    )
    assert len(modules) >= 20
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, name\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
