"""Submission files: schema, plugin resolution, sweeps, and one-line FILE:LINE errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_cli, tiny_submission

from bioprior.registry.submissions.loading import InvalidSubmission, expand_grid, load_submission

GOOD = """\
name: t
model: {name: small_alexnet, params: {width: 0.25}}
constraints:
  - name: internal_noise
    params: {sigma: 0.2}
  - name: bottleneck
training:
  dataset: digits
  epochs: 1
sweep:
  constraints.0.params.sigma: [0.0, 0.4]
  constraints.1.enabled: [false, true]
seeds: [0, 1]
benchmarks: [memorization]
"""


def _errors(tmp_path: Path, text: str, registry) -> list[str]:
    path = tmp_path / "sub.yaml"
    path.write_text(text)
    with pytest.raises(InvalidSubmission) as info:
        load_submission(path, registry)
    return [str(e) for e in info.value.errors]


def test_good_submission_expands_sweep(tmp_path, registry):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    loaded = load_submission(path, registry)
    assert len(loaded.variants) == 4
    sigmas = sorted((v.constraints[0].params.sigma, len(v.constraints)) for v in loaded.variants)
    assert sigmas == [(0.0, 1), (0.0, 2), (0.4, 1), (0.4, 2)]
    with_bottleneck = next(v for v in loaded.variants if len(v.constraints) == 2)
    assert with_bottleneck.constraints[1].params.width == 8  # the paper's small-alexnet default


def test_zipped_and_union_sweeps():
    assert expand_grid({"a,b": [[1, 2], [3, 4]], "c": [5, 6]}) == [
        {"a": 1, "b": 2, "c": 5},
        {"a": 1, "b": 2, "c": 6},
        {"a": 3, "b": 4, "c": 5},
        {"a": 3, "b": 4, "c": 6},
    ]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "submissions").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_submissions_are_valid(path, registry):
    loaded = load_submission(path, registry)
    assert loaded.variants


def test_bad_yaml(tmp_path, registry):
    (err,) = _errors(tmp_path, "name: t\nmodel: [unclosed\n", registry)
    assert err.startswith(f"{tmp_path / 'sub.yaml'}:3: ") and "invalid YAML" in err


def test_unknown_plugin_lists_close_matches(tmp_path, registry):
    (err,) = _errors(
        tmp_path, GOOD.replace("name: internal_noise", "name: internal_nois"), registry
    )
    assert (
        ":4: constraints.0.name: unknown constraint 'internal_nois'; did you mean internal_noise"
        in err
    )


def test_wrong_type(tmp_path, registry):
    (err,) = _errors(tmp_path, GOOD.replace("epochs: 1", "epochs: many"), registry)
    assert ":9: training.epochs: " in err and "integer" in err


def test_missing_field(tmp_path, registry):
    text = GOOD.replace("training:\n  dataset: digits\n  epochs: 1\n", "")
    (err,) = _errors(tmp_path, text, registry)
    assert ":1: training: Field required" in err


def test_out_of_range_plugin_param(tmp_path, registry):
    (err,) = _errors(tmp_path, GOOD.replace("sigma: 0.2", "sigma: -1"), registry)
    assert ":5: constraints.0.params.sigma: " in err and "greater than or equal to 0" in err


def test_unknown_plugin_param_and_field(tmp_path, registry):
    errs = _errors(
        tmp_path,
        GOOD.replace("sigma: 0.2", "sigma: 0.2, sigm: 1").replace("seeds:", "sedes:"),
        registry,
    )
    assert any("seeds" not in e and "sedes: unknown field" in e for e in errs)


def test_bad_sweep_value_names_the_sweep_line(tmp_path, registry):
    errs = _errors(tmp_path, GOOD.replace("[0.0, 0.4]", "[0.0, -2]"), registry)
    assert errs and all(":11: sweep (" in e and "sigma" in e for e in errs)


def test_bad_sweep_path(tmp_path, registry):
    errs = _errors(
        tmp_path, GOOD.replace("constraints.1.enabled", "constraints.7.enabled"), registry
    )
    assert any(":12: sweep.constraints.7.enabled: no list item" in e for e in errs)


def test_bottleneck_on_model_without_first_conv(tmp_path, registry, monkeypatch):
    from bioprior.registry.hooks.entries import ImageModelParams, PluginEntry

    registry._entries[("model", "plain")] = PluginEntry(
        name="plain", kind="model", factory="x:y", params=ImageModelParams
    )
    errs = _errors(
        tmp_path,
        GOOD.replace("name: small_alexnet", "name: plain").replace("{width: 0.25}", "{}"),
        registry,
    )
    assert any(
        "constraints.1.name: bottleneck needs model parameter(s) first_conv_width" in e
        for e in errs
    )


def test_cli_validate_exit_codes(tmp_path, write_submission):
    good = write_submission(tiny_submission())
    ok = run_cli("validate", str(good))
    assert ok.returncode == 0 and "ok (1 variants, 1 jobs)" in ok.stdout
    bad = write_submission(tiny_submission("bad", training={"dataset": "digitz"}))
    out = run_cli("validate", str(good), str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    line = bad.read_text().splitlines().index("  dataset: digitz") + 1
    assert lines == [
        f"{bad}:{line}: training.dataset.name: unknown dataset 'digitz'; did you mean digits?"
    ]
    missing = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml:1: <root>: cannot read file" in missing.stderr
