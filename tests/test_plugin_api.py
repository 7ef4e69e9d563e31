"""``bioprior.plugin`` is the one public plugin API (docs/plugin-api.md): its names, the
deprecated paths that still lead to them, the first constraint contract still honoured, and
plugins written against either contract scoring end to end."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
import warnings
from importlib import import_module

import pytest
from conftest import ROOT, tiny_submission

import bioprior.plugin as api
from bioprior.registry.contracts.constraint import (
    UNKNOWN_GEOMETRY,
    Constraint,
    InputGeometry,
    apply_constraint,
)

DOC = ROOT / "docs" / "plugin-api.md"

#: deprecated module -> (the module it now is, the import its warning names)
REGISTRY_SHIMS = {
    "constraint": "contracts.constraint",
    "benchmark": "contracts.benchmark",
    "neural": "contracts.neural_data",
    "entries": "hooks.entries",
    "hookspecs": "hooks.specs",
    "plugins": "hooks.loading",
    "layers": "toolkit.layers",
    "data": "toolkit.data",
    "objective": "toolkit.objective",
    "neural_metrics": "toolkit.neural_metrics",
    "context": "engine.context",
    "trainer": "engine.trainer",
    "paths": "base.paths",
    "torchvision_compat": "base.torchvision_compat",
    "filecheck": "submissions.files",
    "spec": "planning.spec",
    "needs": "planning.needs",
}
PLUGIN_SHIMS = {
    "activations": "capacity.nn",
    "constraints": "capacity",
    "models": "zhang2017",
    "data_sources": "datasets.sources",
    "derivations": "datasets.derivations",
    "image_folders": "datasets.image_folders",
    "evanson_models": "evanson",
    "evanson_nets": "evanson.nn",
    "flexible_layer_nn": "flexible_layer.nn",
    "hmax_nn": "hmax.nn",
    "neural_similarity_nn": "neural_similarity.nn",
    "cw_conv2d": "surrogates.nn",
}
SHIMS = {
    **{
        f"bioprior.registry.{old}": (f"bioprior.registry.{new}", "bioprior.plugin")
        for old, new in REGISTRY_SHIMS.items()
    },
    **{
        f"bioprior.plugins.{old}": (f"bioprior.plugins.{new}",) * 2
        for old, new in PLUGIN_SHIMS.items()
    },
}


def bioprior_deprecations(caught) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, DeprecationWarning) and "bioprior" in str(w.message)
    ]


# -- the public names ---------------------------------------------------------------------------
def test_every_public_name_is_the_core_object_and_documented():
    doc = DOC.read_text()
    assert set(api.__all__) == set(api._NAMES)
    for name in api.__all__:
        assert getattr(api, name) is getattr(import_module(api._NAMES[name]), name), name
        assert f"`{name}`" in doc, f"{name} is public but not in docs/plugin-api.md"
    assert set(api.__all__) <= set(dir(api))
    with pytest.raises(AttributeError, match="no attribute 'hidden_activation'"):
        api.hidden_activation  # noqa: B018


def test_the_documented_names_are_exactly_the_public_ones():
    """The doc's table of public names lists ``__all__``, no more, no less."""
    table = DOC.read_text().split("## Public names", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`", table, re.MULTILINE))
    assert documented == set(api.__all__)


def test_importing_the_api_and_its_light_names_imports_no_torch():
    """Entry-point modules import hookimpl, the params, Constraint, Benchmark... while plugins
    are listed: that must stay torch-free."""
    light = [
        "hookimpl",
        "PluginEntry",
        "PluginParams",
        "ImageModelParams",
        "Constraint",
        "ConstraintError",
        "InputGeometry",
        "UNKNOWN_GEOMETRY",
        "Benchmark",
        "BenchmarkResult",
        "NeuralDataRef",
        "load_neural_data",
        "get_registry",
        "data_root",
        "pack_correct",
        "error_consistency",
    ]
    code = (
        "import sys\nimport bioprior.plugin as api\n"
        "assert not [m for m in sys.modules if m.startswith('bioprior.registry.')], sys.modules\n"
        f"from bioprior.plugin import {', '.join(light)}\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


# -- the deprecated paths -----------------------------------------------------------------------
@pytest.mark.parametrize("old", sorted(SHIMS))
def test_an_old_path_warns_and_gives_the_same_objects(old, monkeypatch):
    new, named = SHIMS[old]
    monkeypatch.delitem(sys.modules, old, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = __import__(old, fromlist=["_"])
    deprecations = [w for w in caught if "bioprior" in str(w.message)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    (warning,) = deprecations
    assert warning.category is DeprecationWarning
    assert str(warning.message) == f"Importing from {old} is deprecated, please import from {named}"
    assert warning.filename == __file__  # points at the importing line, not the shim
    moved = import_module(new)
    public = [n for n in dir(moved) if not n.startswith("_")]
    assert public
    for name in public:
        assert getattr(module, name) is getattr(moved, name), name
    private = [n for n in vars(moved) if n.startswith("_") and not n.startswith("__")]
    for name in private[:3]:  # reached through the shim's __getattr__
        assert getattr(module, name) is getattr(moved, name), name
    if named == "bioprior.plugin":  # every public name it had is still reachable from the API
        for name in set(public) & set(api.__all__):
            assert getattr(api, name) is getattr(moved, name), name


#: homes of public names added after the move: they never had an old path to keep
NEW_HOMES = {"toolkit.consistency", "engine.journal"}


def test_every_old_path_of_a_public_name_has_a_shim():
    homes = {module.removeprefix("bioprior.registry.") for module in set(api._NAMES.values())}
    assert homes - NEW_HOMES == set(REGISTRY_SHIMS.values())


def test_every_shim_is_listed_in_the_doc():
    doc = DOC.read_text()
    for old, (new, _) in SHIMS.items():
        assert f"`{old}`" in doc and f"`{new}`" in doc, old


# -- plugins import the API only ----------------------------------------------------------------
def _imports(path) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def test_no_plugin_or_benchmark_imports_the_core():
    """Built-in plugins and benchmarks (and the example package) import plugin-facing names
    from ``bioprior.plugin``, never from ``bioprior.registry``."""
    files = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module, _ in _imports(path)
        if module == "bioprior.registry" or module.startswith("bioprior.registry.")
    ]
    assert bad == []
    assert len(files) > 40


def test_the_scaffold_templates_import_the_api_only():
    templates = list((ROOT / "testing" / "templates").rglob("*.j2"))
    assert templates
    for path in templates:
        text = path.read_text()
        assert "bioprior.registry" not in text, path
        assert "from bioprior import hookimpl" not in text, path


def test_the_kit_imports_only_core_internals_from_the_core():
    """``bioprior.testing`` takes every plugin-facing name from ``bioprior.plugin``; what it
    imports from ``bioprior.registry`` is core-internal (the planner, the scorer, ...)."""
    bad = [
        f"{path.name}:{line}: {name} from {module}"
        for path in (ROOT / "testing").glob("*.py")
        for line, module, names in _imports(path)
        if module.startswith("bioprior.registry")
        for name in names
        if name in api.__all__
    ]
    assert bad == []


def test_the_docs_example_plugin_uses_the_api_only():
    example = ROOT / "plugins" / "example_thirdparty" / "src" / "bioprior_example" / "plugin.py"
    modules = {module for _, module, _ in _imports(example) if module.startswith("bioprior")}
    assert modules == {"bioprior.plugin"}


# -- the first constraint contract --------------------------------------------------------------
class _Defaulted(Constraint):
    def apply(self, module, geometry=UNKNOWN_GEOMETRY):
        return module, geometry


def _legacy_class():
    class Legacy(Constraint):
        def apply(self, module):  # the first contract
            module.legacy = True
            return module

    return Legacy


def test_a_first_contract_constraint_is_called_with_the_module_and_warns_once_per_class():
    legacy = _legacy_class()
    geometry = InputGeometry(1, 8, 10, "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            module = apply_constraint(legacy(None), type("M", (), {})(), geometry)
            assert module.legacy
    (message,) = bioprior_deprecations(caught)
    assert "Legacy.apply(self, module)" in message
    assert "apply(self, module, geometry=UNKNOWN_GEOMETRY)" in message
    assert "bioprior.plugin" in message
    assert caught[0].filename == inspect.getsourcefile(legacy)  # the plugin's apply, not ours
    with warnings.catch_warnings(record=True) as caught:  # another such class warns too
        warnings.simplefilter("always")
        apply_constraint(_legacy_class()(None), type("M", (), {})(), geometry)
    assert len(bioprior_deprecations(caught)) == 1


class _Positional(Constraint):
    def apply(self, module, geometry):
        return module, geometry


class _Args(Constraint):
    def apply(self, module, *args):
        return module, args[0]


class _OnlyArgs(Constraint):
    def apply(self, *args):
        return args


@pytest.mark.parametrize("cls", [_Positional, _Args, _OnlyArgs])
def test_todays_constraint_gets_the_geometry_without_a_warning(cls):
    geometry = InputGeometry(3, 32, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert apply_constraint(cls(None), "net", geometry) == ("net", geometry)
    assert bioprior_deprecations(caught) == []


def test_the_base_class_and_a_defaulted_geometry_take_the_geometry():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert apply_constraint(_Defaulted(None), "net", InputGeometry(1, 8)) == (
            "net",
            InputGeometry(1, 8),
        )
        assert apply_constraint(Constraint(None), "net") == "net"
    assert bioprior_deprecations(caught) == []


# -- plugin packages written against each contract score end to end ------------------------------
FIRST_CONTRACT = '''
"""A plugin written against bioprior 0.1's plugin contract."""
from pydantic import Field

from bioprior.registry.constraint import Constraint
from bioprior.registry.entries import PluginEntry, PluginParams
from bioprior.registry.hookspecs import hookimpl


class DropoutParams(PluginParams):
    p: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each hidden unit.")


class Dropout(Constraint):
    def apply(self, module):
        from torch import nn

        from bioprior.registry.layers import hidden_activations

        for act in hidden_activations(module):
            act.post.append(nn.Dropout(self.params.p))
        return module


@hookimpl
def register_constraints(register):
    register(PluginEntry(name="NAME", kind="constraint", factory=Dropout, params=DropoutParams,
                         version="1", citation="Srivastava et al. (2014)"))
'''

TODAYS_CONTRACT = '''
"""A plugin written against bioprior.plugin."""
from pydantic import Field

from bioprior.plugin import UNKNOWN_GEOMETRY, Constraint, PluginParams, hookimpl


class DropoutParams(PluginParams):
    p: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each hidden unit.")


class Dropout(Constraint):
    def apply(self, module, geometry=UNKNOWN_GEOMETRY):
        from torch import nn

        from bioprior.plugin import hidden_activations

        for act in hidden_activations(module):
            act.post.append(nn.Dropout(self.params.p))
        return module


@hookimpl
def register_constraints(register):
    register(name="NAME", factory=Dropout, params=DropoutParams, version="1",
             citation="Srivastava et al. (2014)")
'''


def install(site, package: str, source: str, entry: str) -> None:
    """An installed distribution, as pip leaves it: the package and a ``.dist-info`` with the
    entry point (no network, no build)."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(textwrap.dedent(source).replace("NAME", entry))
    dist = site / f"{package}-0.1.0.dist-info"
    dist.mkdir()
    name = package.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[bioprior]\n{package} = {package}\n")


def score_with(tmp_path, monkeypatch, package: str, source: str, entry: str):
    from bioprior.registry.api import score
    from bioprior.registry.hooks.loading import get_registry

    site = tmp_path / "site"
    install(site, package, source, entry)
    monkeypatch.syspath_prepend(str(site))
    for module in [package, *SHIMS]:  # imported fresh, as in a new process
        monkeypatch.delitem(sys.modules, module, raising=False)
    submission = tiny_submission(
        f"contract-{entry}", constraints=[{"name": entry, "params": {"p": 0.1}}]
    )
    submission["training"]["epochs"] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = get_registry(reload=True)
        assert registry.get("constraint", entry).provider == package.replace("_", "-")
        rows = score(submission, device="cpu", workers=1, db=tmp_path / "results.db")
    assert [r["status"] for r in rows] == ["ok"], rows
    metrics = rows[0]["metrics"]
    assert metrics["natural_test_acc"] > metrics["chance"]  # it learned, constrained
    return bioprior_deprecations(caught)


def test_a_first_contract_plugin_scores_with_deprecation_warnings(tmp_path, monkeypatch):
    messages = score_with(
        tmp_path, monkeypatch, "bioprior_first_contract", FIRST_CONTRACT, "old_drop"
    )
    for old in ("hookspecs", "entries", "constraint", "layers"):
        assert (
            f"Importing from bioprior.registry.{old} is deprecated, please import from "
            "bioprior.plugin" in messages
        ), messages
    applies = [m for m in messages if "Dropout.apply(self, module)" in m]
    assert len(applies) == 1, messages  # once per class, not once per model built


def test_a_plugin_written_against_the_api_scores_without_warnings(tmp_path, monkeypatch):
    messages = score_with(
        tmp_path, monkeypatch, "bioprior_todays_contract", TODAYS_CONTRACT, "new_drop"
    )
    assert messages == []


def test_the_cli_shows_a_plugins_deprecations_on_one_line_each(tmp_path):
    """Python hides DeprecationWarning outside ``__main__``; the CLI shows the plugin-facing ones,
    so a user of an old plugin sees what its author must change."""
    import yaml
    from conftest import run_cli

    site = tmp_path / "site"
    install(site, "bioprior_first_contract", FIRST_CONTRACT, "old_drop")
    sub = tiny_submission("old-plugin", constraints=[{"name": "old_drop", "params": {"p": 0.1}}])
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(sub))
    done = run_cli("validate", str(path), env={"PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "deprecated" in line]
    assert (
        "warning: Importing from bioprior.registry.constraint is deprecated, please import from "
        "bioprior.plugin" in warned
    ), done.stderr
