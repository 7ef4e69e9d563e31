"""Precedence: bioprior's own entries win, two third parties providing one name are both refused
until the user picks one (BIOPRIOR_PREFER), and nothing depends on names or install order."""

from __future__ import annotations

import textwrap
from importlib.metadata import distributions, entry_points

import pytest
from conftest import ROOT, run_cli

from bioprior.registry.hooks.loading import PluginConflictError, Registry, preferences
from bioprior.registry.hooks.precedence import Decision, decide, preferred, winner

PLUGIN = """
from pydantic import Field
from bioprior import hookimpl
from bioprior.registry.hooks.entries import PluginParams


class Params(PluginParams):
    depth: int = Field(default=3, description="Layers of the {dist} network.")


@hookimpl
def register_models(register):
    register(name="{model}", factory="{module}:build", params=Params, version="1",
             citation="{dist} authors")
"""


# -- the rule as a table: (kept, new, BIOPRIOR_PREFER) -> decision, for model "deepnet" ---------
RULE = [
    # one distribution registering a name twice keeps its first
    ("alpha-nets", "alpha-nets", {}, "keep", "same-distribution"),
    ("Alpha_Nets", "alpha.nets", {}, "keep", "same-distribution"),  # names are normalized
    ("bioprior", "bioprior", {}, "keep", "same-distribution"),
    ("alpha-nets", "alpha-nets", {"deepnet": "beta-nets"}, "keep", "same-distribution"),
    # bioprior's own always wins, whichever came first, and a pick cannot override it
    ("bioprior", "aardvark-probe", {}, "keep", "builtin"),
    ("aardvark-probe", "bioprior", {}, "replace", "builtin"),
    ("aardvark-probe", "Bioprior", {}, "replace", "builtin"),
    ("bioprior", "aardvark-probe", {"deepnet": "aardvark-probe"}, "keep", "builtin"),
    ("bioprior", "aardvark-probe", {"model:deepnet": "aardvark-probe"}, "keep", "builtin"),
    ("aardvark-probe", "bioprior", {"deepnet": "aardvark-probe"}, "replace", "builtin"),
    # two third parties: the user's pick wins ...
    ("alpha-nets", "beta-nets", {"deepnet": "beta-nets"}, "replace", "preferred"),
    ("alpha-nets", "beta-nets", {"deepnet": "alpha-nets"}, "keep", "preferred"),
    ("beta-nets", "alpha-nets", {"deepnet": "beta-nets"}, "keep", "preferred"),
    ("alpha-nets", "beta-nets", {"deepnet": "Beta_Nets"}, "replace", "preferred"),
    ("alpha-nets", "beta-nets", {"model:deepnet": "beta-nets"}, "replace", "preferred"),
    # ... the kind-qualified pick before the plain one
    (
        "alpha-nets",
        "beta-nets",
        {"model:deepnet": "alpha-nets", "deepnet": "beta-nets"},
        "keep",
        "preferred",
    ),
    # ... else neither is registered
    ("alpha-nets", "beta-nets", {}, "conflict", "unpicked"),
    ("beta-nets", "alpha-nets", {}, "conflict", "unpicked"),
    ("alpha-nets", "beta-nets", {"othernet": "beta-nets"}, "conflict", "unpicked"),
    ("alpha-nets", "beta-nets", {"constraint:deepnet": "beta-nets"}, "conflict", "unpicked"),
    ("alpha-nets", "beta-nets", {"deepnet": "gamma-nets"}, "conflict", "pick-elsewhere"),
]


@pytest.mark.parametrize(("kept", "new", "prefer", "verdict", "reason"), RULE)
def test_the_rule(kept, new, prefer, verdict, reason):
    decision = decide("model", "deepnet", kept, new, prefer)
    assert (decision.verdict, decision.reason) == (verdict, reason)
    assert decision.pick == preferred("model", "deepnet", prefer)


@pytest.mark.parametrize(("kept", "new", "prefer", "verdict", "reason"), RULE)
def test_the_rule_does_not_depend_on_order(kept, new, prefer, verdict, reason):
    swapped = {"keep": "replace", "replace": "keep", "conflict": "conflict"}[verdict]
    if reason == "same-distribution":
        swapped = "keep"
    assert decide("model", "deepnet", new, kept, prefer) == Decision(
        swapped, reason, preferred("model", "deepnet", prefer)
    )


# -- every distribution providing a name -> the one registered (None: a conflict) --------------
WINNER = [
    (["alpha-nets"], {}, "alpha-nets"),
    (["alpha-nets"], {"deepnet": "beta-nets"}, "alpha-nets"),  # the only provider
    (["alpha-nets", "bioprior"], {}, "bioprior"),
    (["alpha-nets", "beta-nets", "bioprior"], {"deepnet": "beta-nets"}, "bioprior"),
    (["alpha-nets", "beta-nets"], {}, None),
    (["alpha-nets", "beta-nets"], {"deepnet": "gamma-nets"}, None),
    (["alpha-nets", "beta-nets"], {"deepnet": "beta-nets"}, "beta-nets"),
    (["alpha-nets", "beta-nets", "gamma-nets"], {"deepnet": "gamma-nets"}, "gamma-nets"),
    (["alpha-nets", "beta-nets", "gamma-nets"], {}, None),
]


@pytest.mark.parametrize(("dists", "prefer", "expected"), WINNER)
def test_the_winner_in_any_order(dists, prefer, expected):
    assert winner("model", "deepnet", dists, prefer) == expected
    assert winner("model", "deepnet", dists[::-1], prefer) == expected


def test_preferences_by_kind_then_name():
    prefer = {"model:deepnet": "Alpha_Nets", "deepnet": "beta-nets"}
    assert preferred("model", "deepnet", prefer) == "alpha-nets"
    assert preferred("constraint", "deepnet", prefer) == "beta-nets"
    assert preferred("model", "othernet", prefer) is None


# -- end to end: real installed distributions ------------------------------------------------
def _dist(root, dist: str, model: str):
    """A real installed distribution (dist-info + module) providing the model ``model``."""
    module = dist.replace("-", "_") + "_plugin"
    (root / f"{module}.py").write_text(
        textwrap.dedent(PLUGIN.format(dist=dist, model=model, module=module))
    )
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[bioprior]\nplugin = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def _load(site, order=1, **kw) -> Registry:
    ours = [ep for ep in entry_points(group="bioprior") if ep.dist.name == "bioprior"]
    theirs = [ep for d in distributions(path=[str(site)]) for ep in d.entry_points]
    eps = ours + theirs if order > 0 else theirs[::-1] + ours[::-1]
    return Registry(strict=False, **kw).load_entry_points(eps)


def test_builtin_wins_over_a_third_party_whose_name_sorts_first(site):
    _dist(site, "aardvark-probe", "small_alexnet")
    for order in (1, -1):
        reg = _load(site, order)
        entry = reg.get("model", "small_alexnet")
        assert entry.provider == "bioprior" and "width" in entry.params.model_fields
        (failure,) = reg.failures
        assert "aardvark-probe 1.0" in failure.error and "always wins" in failure.error


def test_two_third_parties_neither_registered_both_named(site):
    _dist(site, "alpha-nets", "deepnet")
    _dist(site, "beta-nets", "deepnet")
    for order in (1, -1):
        reg = _load(site, order)
        assert "deepnet" not in reg.names("model")
        with pytest.raises(PluginConflictError) as info:
            reg.get("model", "deepnet")
        msg = str(info.value)
        assert "alpha-nets 1.0" in msg and "beta-nets 1.0" in msg and "BIOPRIOR_PREFER" in msg
        assert [f.name for f in reg.failures] == ["deepnet"]


def test_prefer_picks_one_third_party_in_any_order(site, monkeypatch):
    _dist(site, "alpha-nets", "deepnet")
    _dist(site, "beta-nets", "deepnet")
    monkeypatch.setenv("BIOPRIOR_PREFER", "deepnet=Beta_Nets")
    for order in (1, -1):
        reg = _load(site, order)
        assert reg.get("model", "deepnet").provider == "beta-nets"
        assert reg.origin("model", "deepnet").module == "beta_nets_plugin"
        (failure,) = reg.failures
        assert (
            failure.provider == "alpha-nets" and "BIOPRIOR_PREFER picks beta-nets" in failure.error
        )
    reg = _load(site, prefer={"model:deepnet": "alpha-nets"})
    assert reg.get("model", "deepnet").provider == "alpha-nets"


def test_prefer_naming_a_distribution_that_does_not_provide_it(site):
    _dist(site, "alpha-nets", "deepnet")
    _dist(site, "beta-nets", "deepnet")
    reg = _load(site, prefer={"deepnet": "gamma-nets"})
    with pytest.raises(PluginConflictError, match="gamma-nets, which does not provide it"):
        reg.get("model", "deepnet")


def test_prefer_cannot_displace_a_builtin(site):
    _dist(site, "aardvark-probe", "small_alexnet")
    reg = _load(site, prefer={"small_alexnet": "aardvark-probe"})
    assert reg.get("model", "small_alexnet").provider == "bioprior"


def test_prefer_syntax_errors_are_one_line():
    assert preferences("a=x-y, model:b=Z_z") == {"a": "x-y", "model:b": "z-z"}
    with pytest.raises(ValueError, match="NAME=DISTRIBUTION"):
        preferences("deepnet")


def test_malformed_prefer_is_listed_not_a_crash():
    out = run_cli("plugins", "small_*", env={"BIOPRIOR_PREFER": "oops"})
    assert out.returncode == 0 and "small_alexnet" in out.stdout
    assert "BIOPRIOR_PREFER: expected NAME=DISTRIBUTION, got 'oops'" in out.stdout


def test_cli_validate_quickstart_with_a_shadowing_package_installed(site):
    """The reported bug: `aardvark-probe` registering small_alexnet broke the quickstart."""
    _dist(site, "aardvark-probe", "small_alexnet")
    env = {"PYTHONPATH": str(site)}
    out = run_cli("validate", str(ROOT / "submissions" / "quickstart.yaml"), env=env)
    assert out.returncode == 0, out.stderr
    listing = run_cli("plugins", "small_*", env=env)
    assert "aardvark-probe" in listing.stdout and "always wins" in listing.stdout


def test_cli_conflict_is_reported_then_resolved_with_prefer(site, write_submission):
    from conftest import tiny_submission

    _dist(site, "alpha-nets", "deepnet")
    _dist(site, "beta-nets", "deepnet")
    path = write_submission(tiny_submission(model={"name": "deepnet"}))
    out = run_cli("validate", str(path), env={"PYTHONPATH": str(site)})
    assert out.returncode == 2
    assert "model.name" in out.stderr and "alpha-nets" in out.stderr and "beta-nets" in out.stderr
    ok = run_cli(
        "schema",
        "model",
        "deepnet",
        env={"PYTHONPATH": str(site), "BIOPRIOR_PREFER": "deepnet=alpha-nets"},
    )
    assert ok.returncode == 0 and "alpha-nets network" in ok.stdout
