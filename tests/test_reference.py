"""A submission's ``reference:`` (the paper's numbers): its schema and one-line errors, that it
never enters a job key, the statistics of the comparison (checked against the formulas written
out here and Welch's t from scipy), ``bioprior results --paper`` and the report's section, both
on a store filled with made-up rows."""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from bioprior.registry.planning.jobs import plan
from bioprior.registry.store.results import ResultStore
from bioprior.registry.submissions import reference as ref
from bioprior.registry.submissions.loading import (
    InvalidSubmission,
    load_submission,
    validate_submission_dict,
)
from bioprior.registry.submissions.schema import ReferenceEntry

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
reference:
  source: a paper, Table 1
  scale: percent
  entries:
    - {variant: {sigma: 0.4, enabled: true}, metric: natural_test_acc, value: 80, sem: 1, n: 5}
"""
ENTRY = "    - {variant: {sigma: 0.4, enabled: true}, metric: natural_test_acc, value: 80, sem: 1, n: 5}"


def _errors(tmp_path: Path, text: str, registry) -> list[str]:
    path = tmp_path / "sub.yaml"
    path.write_text(text)
    with pytest.raises(InvalidSubmission) as info:
        load_submission(path, registry)
    return [str(e) for e in info.value.errors]


def _with_entry(entry: str) -> str:
    return GOOD.replace(ENTRY, "    - " + entry)


# -- the schema -----------------------------------------------------------------------------------
def test_good_reference_loads_and_names_one_variant(tmp_path, registry):
    path = tmp_path / "sub.yaml"
    path.write_text(
        _with_entry(
            "{variant: {constraints.0.params.sigma: 0.4, enabled: true}, metric: natural_test_acc,"
            " value: 80, sd: 2.2, n: 5}\n"
            "    - {variant: {sigma: 0.0, enabled: false}, minus: {sigma: 0.4, enabled: false},"
            " metric: random_train_acc, value: 0.3, scale: fraction}\n"
            "    - {variant: {sigma: 0, enabled: false}, metric: 'curve_x@0.031', value: 1}"
        )
    )
    loaded = load_submission(path, registry)
    sub = loaded.submission
    assert sub.reference.source == "a paper, Table 1" and len(sub.reference.entries) == 3
    first = sub.variant_of(sub.reference.entries[0].variant)
    assert first == {"constraints.0.params.sigma": 0.4, "constraints.1.enabled": True}
    assert first in [v.assignments for v in loaded.variants]
    # 0 matches the sweep's 0.0 (numbers compare as numbers)
    assert sub.variant_of(sub.reference.entries[2].variant)["constraints.0.params.sigma"] == 0.0
    assert ref.read_reference(path) == sub


@pytest.mark.parametrize(
    "entry, line, where, needle",
    [
        (
            "{variant: {sigma: 0.4}, metric: natural_test_acc, value: 80, sem: 1}",
            19,
            "reference.entries.0.variant",
            "matches several variants (sigma=0.4, enabled=False; sigma=0.4, enabled=True)",
        ),
        (
            "{variant: {sigma: 0.3, enabled: true}, metric: natural_test_acc, value: 80}",
            19,
            "reference.entries.0.variant",
            "matches no variant of the sweep",
        ),
        (
            "{variant: {width: 8, enabled: true}, metric: natural_test_acc, value: 80}",
            19,
            "reference.entries.0.variant",
            "'width' is not a swept path (swept: sigma, enabled)",
        ),
        (
            (
                "{variant: {enabled: true, sigma: 0.4}, minus: {sigma: 0.4, enabled: true}, "
                "metric: natural_test_acc, value: 1}"
            ),
            19,
            "reference.entries.0.minus",
            "is the same variant as `variant`",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, benchmark: corruption, metric: x, value: 1}",
            19,
            "reference.entries.0.benchmark",
            "'corruption' is not one of the submission's benchmarks (memorization)",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: x, value: 80, sem: 1, sd: 2, n: 5}",
            19,
            "reference.entries.0",
            "give `sem` or `sd`, not both",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: x, value: 80, sd: 2}",
            19,
            "reference.entries.0",
            "`sd` needs the paper's `n`",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: 'fgsm @ 0.1', value: 80}",
            19,
            "reference.entries.0.metric",
            "should match pattern",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: x, value: 80, sem: -1}",
            19,
            "reference.entries.0.sem",
            "greater than 0",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: x, value: 80, scale: percnt}",
            19,
            "reference.entries.0.scale",
            "'percent' or 'fraction'",
        ),
        (
            "{variant: {sigma: 0.4, enabled: true}, metric: x, value: 80, sem: 1, nn: 3}",
            19,
            "reference.entries.0.nn",
            "unknown field",
        ),
    ],
)
def test_bad_reference_is_one_line_naming_the_file_and_field(
    tmp_path, registry, entry, line, where, needle
):
    (err,) = _errors(tmp_path, _with_entry(entry), registry)
    assert err.startswith(f"{tmp_path / 'sub.yaml'}:{line}: {where}: "), err
    assert needle in err and "\n" not in err


def test_reference_needs_its_source_and_scale(tmp_path, registry):
    errs = _errors(
        tmp_path, GOOD.replace("  source: a paper, Table 1\n  scale: percent\n", ""), registry
    )
    assert any(":15: reference.source: Field required" in e for e in errs)
    assert any(":15: reference.scale: Field required" in e for e in errs)


def test_benchmark_must_be_named_when_there_are_several(tmp_path, registry):
    text = GOOD.replace("benchmarks: [memorization]", "benchmarks: [memorization, spectral]")
    (err,) = _errors(tmp_path, text, registry)
    assert (
        ":19: reference.entries.0: name the `benchmark` (the submission runs memorization, spectral)"
        in err
    )
    path = tmp_path / "ok.yaml"
    path.write_text(text.replace("metric: natural", "benchmark: memorization, metric: natural"))
    assert load_submission(path, registry).submission.reference


def test_without_a_sweep_an_entry_names_no_variant(tmp_path):
    raw = yaml.safe_load(GOOD)
    del raw["sweep"]
    raw["reference"]["entries"][0]["variant"] = {"sigma": 0.4}
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(InvalidSubmission) as info:
        ref.read_reference(path)
    (err,) = map(str, info.value.errors)
    assert "reference.entries.0.variant: 'sigma' is not a swept path (swept: none" in err
    del raw["reference"]["entries"][0]["variant"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    sub = ref.read_reference(path)
    assert sub.variant_of(sub.reference.entries[0].variant) == {}


def test_zipped_and_union_sweeps_are_matched_as_loading_expands_them(tmp_path, registry):
    raw = yaml.safe_load(GOOD)
    raw["sweep"] = [
        {"constraints.0.params.sigma,constraints.1.enabled": [[0.0, False], [0.4, True]]},
        {"constraints.0.params.sigma": [0.1]},
    ]
    raw["reference"]["entries"] = [
        {"variant": {"sigma": 0.4}, "metric": "natural_test_acc", "value": 1},
        {"variant": {"sigma": 0.1}, "metric": "natural_test_acc", "value": 1},
    ]
    loaded = validate_submission_dict(raw, registry)
    points = [v.assignments for v in loaded.variants]
    for entry in loaded.submission.reference.entries:
        assert loaded.submission.variant_of(entry.variant) in points
    raw["reference"]["entries"][0]["variant"] = {"enabled": True, "sigma": 0.0}
    with pytest.raises(InvalidSubmission, match="matches no variant"):
        validate_submission_dict(raw, registry)


# -- never part of a key --------------------------------------------------------------------------
REFERENCED = sorted(
    p for p in (ROOT / "submissions").glob("*.yaml") if "reference" in yaml.safe_load(p.read_text())
)


def _keys(raw: dict, registry) -> list[str]:
    return sorted(j.key for j in plan([validate_submission_dict(raw, registry)]))


def test_shipped_references(registry):
    names = {p.name for p in REFERENCED}
    assert {
        "evanson-table2-fmnist.yaml",
        "evanson-hmax-fmnist.yaml",
        "evanson-table3-vgg16-cifar10.yaml",
        "li2019-cifar10-grayscale.yaml",
    } <= names
    for path in REFERENCED:
        assert ref.read_reference(path).reference.entries


@pytest.mark.parametrize("path", REFERENCED, ids=lambda p: p.name)
def test_reference_leaves_every_job_key_identical(path, registry):
    raw = yaml.safe_load(path.read_text())
    without = {k: v for k, v in raw.items() if k != "reference"}
    with_keys = _keys(raw, registry)
    assert with_keys == _keys(without, registry)
    golden = json.loads((ROOT / "tests" / "golden" / "job_keys.json").read_text())
    if path.name in golden:
        assert with_keys == golden[path.name]


def test_adding_a_reference_leaves_the_keys_identical(registry):
    raw = yaml.safe_load((ROOT / "submissions" / "quickstart.yaml").read_text())
    assert "reference" not in raw
    added = copy.deepcopy(raw)
    added["reference"] = {
        "source": "x",
        "scale": "fraction",
        "entries": [
            {"variant": {"sigma": sigma}, "metric": "natural_test_acc", "value": 0.9, "sem": 0.1}
            for sigma in raw["sweep"]["constraints.0.params.sigma"]
        ],
    }
    keys = _keys(added, registry)
    assert keys == _keys(raw, registry) == ["13ce91aaab440630e86a", "2549bde8f246e9c7adfa"]


# -- the statistics ------------------------------------------------------------------------------
def _entry(**kw) -> ReferenceEntry:
    return ReferenceEntry.model_validate({"metric": "m", "value": 0.0, **kw})


def test_mean_and_sem_over_seeds():
    xs = [0.81, 0.84, 0.86, 0.79, 0.88]
    mean, sem = ref.mean_sem(xs)
    assert mean == pytest.approx(sum(xs) / 5)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (5 - 1))  # ddof 1
    assert sem == pytest.approx(sd / math.sqrt(5)) and sd == pytest.approx(statistics.stdev(xs))
    assert ref.mean_sem([0.8]) == (0.8, None)  # one seed: no SEM
    assert ref.mean_sem([]) == (None, None)


def test_paper_sem_from_sd_and_z_is_welchs_t():
    from scipy import stats

    entry = _entry(value=87.7, sd=1.7, n=10)
    assert ref.paper_sem(entry) == pytest.approx(1.7 / math.sqrt(10))
    assert ref.paper_sem(_entry(sem=0.54)) == 0.54
    assert ref.paper_sem(_entry()) is None
    xs = [86.1, 87.0, 85.2, 86.8, 85.9, 86.4]
    mean, sem = ref.mean_sem(xs)
    z, basis = ref.z_score(mean - 87.7, sem, ref.paper_sem(entry))
    assert basis == "combined SEM"
    by_hand = (mean - 87.7) / math.sqrt(sem**2 + (1.7 / math.sqrt(10)) ** 2)
    welch = stats.ttest_ind_from_stats(
        mean, statistics.stdev(xs), len(xs), 87.7, 1.7, 10, equal_var=False
    )
    assert z == pytest.approx(by_hand) == pytest.approx(welch.statistic)
    # one seed: the paper's SEM only; no paper uncertainty: the measured SEM only; neither: none
    assert ref.z_score(-1.0, None, 0.5) == (pytest.approx(-2.0), "paper SEM only (1 seed)")
    z, basis = ref.z_score(0.3, 0.1, None)
    assert z == pytest.approx(3.0) and basis.startswith("measured SEM only")
    assert ref.z_score(0.3, None, None) == (None, "no uncertainty")


@pytest.mark.parametrize(
    "z, done, verdict",
    [
        (0.0, 10, "agrees"),
        (-2.0, 10, "agrees"),
        (2.01, 10, "tension"),
        (-3.0, 10, "tension"),
        (3.01, 10, "disagrees"),
        (-7.0, 10, "disagrees"),
        (None, 10, "untested (no uncertainty)"),
        (0.1, 4, "incomplete (4 of 10 seeds): agrees so far"),
        (-5.0, 9, "incomplete (9 of 10 seeds): disagrees so far"),
        (None, 4, "incomplete (4 of 10 seeds)"),
        (None, 0, "incomplete (0 of 10 seeds)"),
    ],
)
def test_verdict_rule(z, done, verdict):
    assert ref.verdict(z, done, 10) == verdict
    assert ref.verdict(z, done, 10, stored=False) == "metric not stored"


ADV_METRICS = {
    "clean_accuracy": 0.9,
    "robust_accuracy": 0.2,
    "score_mode": "deterministic",
    "modes": {
        "deterministic": {
            "curves": {
                "fgsm": {
                    "epsilons": [0.0, 0.05, 0.1],
                    "accuracy": [0.9, 0.4, 0.2],
                    "accuracy_raw": [0.9, 0.4, 0.25],
                }
            },
            "transfer": {"epsilons": [0.0, 0.1], "accuracy": [0.9, 0.6]},
        },
        "stochastic": {"curves": {"fgsm": {"epsilons": [0.1], "accuracy": [0.5]}}},
    },
}


def test_metric_values_read_from_a_stored_result():
    m = ADV_METRICS
    assert ref.metric_value(m, "clean_accuracy") == 0.9
    assert ref.metric_value(m, "modes.deterministic.transfer.accuracy") is None  # a list
    assert ref.metric_value(m, "fgsm@0.1") == 0.25  # the attack at exactly 0.1: the raw value
    assert ref.metric_value(m, "fgsm@0.05") == 0.4
    assert ref.metric_value(m, "fgsm@0.2") is None
    assert ref.metric_value(m, "transfer@0.1") == 0.6
    assert ref.metric_value(m, "pgd@0.1") is None and ref.metric_value(m, "nope.x") is None
    assert ref.metric_value({**m, "score_mode": "stochastic"}, "fgsm@0.1") == 0.5


# -- a store of made-up rows -----------------------------------------------------------------------
SUB = {
    "name": "fake-paper",
    "model": {"name": "anything", "params": {"tag": "a"}},
    "training": {"dataset": "digits"},
    "sweep": {"model.params.tag": ["plain", "$x$ [bold]b[/bold]"]},
    "seeds": [0, 1, 2],
    "benchmarks": [{"name": "adversarial"}],
    "reference": {
        "source": "Made-up Table [red]1[/red] $5",
        "scale": "percent",
        "entries": [
            {
                "variant": {"tag": "plain"},
                "metric": "clean_accuracy",
                "value": 90,
                "sd": 2,
                "n": 10,
            },
            {"variant": {"tag": "plain"}, "metric": "fgsm@0.1", "value": 40, "sem": 1, "n": 10},
            {"variant": {"tag": "$x$ [bold]b[/bold]"}, "metric": "clean_accuracy", "value": 50},
            {
                "variant": {"tag": "$x$ [bold]b[/bold]"},
                "minus": {"tag": "plain"},
                "metric": "clean_accuracy",
                "value": -30,
                "sem": 2,
            },
            {"variant": {"tag": "plain"}, "metric": "median_minimal_l2", "value": 1, "sem": 1},
        ],
    },
}
PLAIN = {"model.params.tag": "plain"}
ODD = {"model.params.tag": "$x$ [bold]b[/bold]"}
#: (variant, seed) -> (clean accuracy, FGSM accuracy at 0.1); the odd variant's seed 2 is missing
MEASURED = {
    ("plain", 0): (0.88, 0.41),
    ("plain", 1): (0.90, 0.39),
    ("plain", 2): (0.91, 0.45),
    ("odd", 0): (0.61, 0.2),
    ("odd", 1): (0.63, 0.2),
}


def _metrics(clean: float, fgsm: float) -> dict:
    return {
        "clean_accuracy": clean,
        "robust_accuracy": fgsm,
        "score_mode": "deterministic",
        "flags": {},
        "modes": {
            "deterministic": {
                "clean_accuracy": clean,
                "curves": {
                    "fgsm": {
                        "attack": "fgsm",
                        "epsilons": [0.0, 0.1],
                        "accuracy": [clean, fgsm],
                        "accuracy_raw": [clean, fgsm],
                    }
                },
            }
        },
    }


def fake_store(path: Path) -> Path:
    """A results database with made-up adversarial rows of ``SUB`` (and one of another
    submission), written as the store writes them."""
    with ResultStore(path) as store:
        rows = [(v, seed, "ok", _metrics(*values)) for (v, seed), values in MEASURED.items()] + [
            ("odd", 2, "failed", {})
        ]
        for i, (v, seed, status, metrics) in enumerate(rows):
            store.conn.execute(
                "INSERT INTO results (job_key, submission, variant, seed, benchmark, "
                "benchmark_version, benchmark_params, training_key, metrics, score, status, error, "
                "finished_at, plugin_versions, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    f"k{i}",
                    "fake-paper",
                    json.dumps(PLAIN if v == "plain" else ODD, sort_keys=True),
                    seed,
                    "adversarial",
                    "1",
                    "{}",
                    f"t{i}",
                    json.dumps(metrics),
                    0.5 if status == "ok" else None,
                    status,
                    None if status == "ok" else "RuntimeError: boom",
                    f"2025-01-01T00:00:{i:02d}",
                    "{}",
                    "{}",
                ),
            )
        store.conn.execute(
            "INSERT INTO results (job_key, submission, variant, seed, benchmark, benchmark_version,"
            " benchmark_params, training_key, metrics, status, plugin_versions, spec) VALUES "
            "('other', 'someone-else', ?, 0, 'adversarial', '1', '{}', 'x', ?, 'ok', '{}', '{}')",
            (json.dumps(PLAIN), json.dumps(_metrics(0.1, 0.1))),
        )
    return path


@pytest.fixture
def paper_files(tmp_path):
    sub_file = tmp_path / "fake-paper.yaml"
    sub_file.write_text(yaml.safe_dump(SUB, sort_keys=False, allow_unicode=True))
    return sub_file, fake_store(tmp_path / "results.sqlite")


def _expected() -> dict[str, dict]:
    """The comparisons worked out here, independently of the module."""
    plain_clean = [100 * MEASURED[("plain", s)][0] for s in range(3)]
    plain_fgsm = [100 * MEASURED[("plain", s)][1] for s in range(3)]
    odd_clean = [100 * MEASURED[("odd", s)][0] for s in range(2)]

    def sem(xs):
        return statistics.stdev(xs) / math.sqrt(len(xs))

    m1 = statistics.fmean(plain_clean)
    z1 = (m1 - 90) / math.sqrt(sem(plain_clean) ** 2 + (2 / math.sqrt(10)) ** 2)
    m2 = statistics.fmean(plain_fgsm)
    z2 = (m2 - 40) / math.sqrt(sem(plain_fgsm) ** 2 + 1**2)
    m3 = statistics.fmean(odd_clean)
    z3 = (m3 - 50) / sem(odd_clean)
    m4 = m3 - m1
    z4 = (m4 + 30) / math.sqrt(sem(odd_clean) ** 2 + sem(plain_clean) ** 2 + 2**2)

    def so_far(z: float) -> str:
        rule = "agrees" if abs(z) <= 2 else "tension" if abs(z) <= 3 else "disagrees"
        return f"incomplete (2 of 3 seeds): {rule} so far"

    return {
        "clean plain": {"mean": m1, "z": z1, "verdict": "agrees" if abs(z1) <= 2 else "?"},
        "fgsm plain": {"mean": m2, "z": z2},
        "clean odd": {"mean": m3, "z": z3, "verdict": so_far(z3)},
        "difference": {"mean": m4, "z": z4, "verdict": so_far(z4)},
    }


def test_comparisons_of_made_up_rows(paper_files):
    sub_file, db = paper_files
    with ResultStore.open_readonly(db) as store:
        rows = store.rows()
    got = ref.compare(ref.read_reference(sub_file), rows)
    want = _expected()
    clean, fgsm, odd, diff, missing = got
    for c, key in (
        (clean, "clean plain"),
        (fgsm, "fgsm plain"),
        (odd, "clean odd"),
        (diff, "difference"),
    ):
        assert c.mean == pytest.approx(want[key]["mean"]), key
        assert c.z == pytest.approx(want[key]["z"]), key
        assert c.delta == pytest.approx(c.mean - c.entry.value)
    assert clean.verdict == want["clean plain"]["verdict"] and clean.done == 3
    assert clean.paper_sem == pytest.approx(2 / math.sqrt(10))
    assert odd.verdict == want["clean odd"]["verdict"] and "measured SEM only" in odd.note
    assert diff.verdict == want["difference"]["verdict"] and diff.minus == PLAIN
    assert missing.verdict == "metric not stored" and missing.mean is None
    assert fgsm.measured.values == {
        s: pytest.approx(100 * MEASURED[("plain", s)][1]) for s in range(3)
    }
    assert json.loads(json.dumps(clean.as_dict()))["measured"]["seeds_done"] == 3


def test_results_paper_table_json_and_csv(paper_files):
    from typer.testing import CliRunner

    from bioprior.registry.cli.app import app

    sub_file, db = paper_files
    runner = CliRunner()
    out = runner.invoke(
        app, ["results", "--db", str(db), "--paper", str(sub_file)], env={"COLUMNS": "250"}
    )
    assert out.exit_code == 0, out.output
    text = out.stdout
    # user text is printed as text: markup-looking names, sources and dollars survive
    assert "Made-up Table [red]1[/red] $5" in text
    assert "tag=$x$" in text and "[bold]b[/bold]" in text
    for needle in (
        "90 ± 0.63 (n=10)",
        "(3 of 3 seeds)",
        "incomplete (2 of 3",
        "metric not stored",
        "fgsm@0.1",
        "|z| <= 2 agrees",
    ):
        assert needle in text, needle
    want = _expected()
    assert f"{want['clean plain']['z']:+.2f}" in text
    out = runner.invoke(app, ["results", "--db", str(db), "--paper", str(sub_file), "-f", "json"])
    data = json.loads(out.stdout)
    assert [d["verdict"] for d in data][2:] == [
        want["clean odd"]["verdict"],
        want["difference"]["verdict"],
        "metric not stored",
    ]
    assert data[0]["z"] == pytest.approx(want["clean plain"]["z"])
    assert data[3]["minus"] == PLAIN and data[3]["label"] == "tag=$x$ [bold]b[/bold] − tag=plain"
    out = runner.invoke(app, ["results", "--db", str(db), "--paper", str(sub_file), "-f", "csv"])
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("submission,label,benchmark,metric") and len(lines) == 6


def test_results_paper_bad_input_is_one_line(paper_files, tmp_path):
    from typer.testing import CliRunner

    from bioprior.registry.cli.app import app

    sub_file, db = paper_files
    runner = CliRunner()
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in SUB.items() if k != "reference"}))
    bad = tmp_path / "bad.yaml"
    broken = copy.deepcopy(SUB)
    broken["reference"]["entries"][0]["variant"] = {"tag": "nope"}
    bad.write_text(yaml.safe_dump(broken))
    cases = {
        "no reference": ([str(plain)], "has no `reference:`"),
        "bad entry": ([str(bad)], "reference.entries.0.variant: matches no variant"),
    }
    for name, (files, needle) in cases.items():
        args = ["results", "--db", str(db)] + [a for f in files for a in ("--paper", f)]
        out = runner.invoke(app, args)
        assert out.exit_code == 2, (name, out.output)
        (line,) = out.stderr.strip().splitlines()
        assert needle in line, name
    out = runner.invoke(app, ["results", "--db", str(db), "--paper", str(sub_file), "-s", "x"])
    assert out.exit_code == 2 and "--submission" in out.stderr


def test_report_shows_the_paper_beside_the_measurement(paper_files, tmp_path):
    from bioprior.registry.report import ReportError, build_report

    sub_file, db = paper_files
    site = build_report(db, tmp_path / "site", weights_dirs=[], references=[sub_file])
    page = (site.out / "submissions" / "fake-paper.html").read_text()
    assert 'id="paper-table"' in page and page.count('class="paper-row"') == 5
    assert "Made-up Table [red]1[/red] $5" in page and "incomplete (2 of 3 seeds)" in page
    assert "tag=$x$ [bold]b[/bold] − tag=plain" in page
    assert f"{_expected()['clean plain']['z']:+.2f}" in page
    (plot,) = [p for p in site.plots["fake-paper"] if p.kind == "paper"]
    assert f'src="../{plot.path}"' in page
    svg = (site.out / plot.path).read_text()
    assert 'id="series-paper-m0"' in svg and 'id="series-measured-m0"' in svg
    assert "$x$ [bold]b[/bold]" in svg  # the label as written, not read as math
    other = (site.out / "submissions" / "someone-else.html").read_text()
    assert "paper-table" not in other
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in SUB.items() if k != "reference"}))
    with pytest.raises(ReportError, match="--paper: .* has no `reference:`"):
        build_report(db, tmp_path / "site2", references=[plain])


def test_report_cli_paper_option(paper_files, tmp_path):
    """`bioprior report --paper FILE` puts the paper table on the submission's page; a file
    without a reference is one line and exit 2."""
    from typer.testing import CliRunner

    from bioprior.registry.cli.app import app

    sub_file, db = paper_files
    out = CliRunner().invoke(
        app, ["report", "-o", str(tmp_path / "site"), "--db", str(db), "--paper", str(sub_file)]
    )
    assert out.exit_code == 0, out.output
    page = (tmp_path / "site" / "submissions" / "fake-paper.html").read_text()
    assert page.count('class="paper-row"') == 5
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in SUB.items() if k != "reference"}))
    bad = CliRunner().invoke(
        app, ["report", "-o", str(tmp_path / "s2"), "--db", str(db), "--paper", str(plain)]
    )
    assert bad.exit_code == 2 and "has no `reference:`" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
