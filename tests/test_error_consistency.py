"""Error consistency (Geirhos, Meding & Wichmann 2020): the kappa against model-vs-human's own
formula and scikit-learn's Cohen's kappa, the packed per-image bits, and a real run: a tiny
digits network with and without its constraint on corruption, spectral and ood_stylized (with an
external set and synthetic human trials in model-vs-human's raw-data CSV layout), the report's
numbers checked against the stored bits."""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest
from conftest import run_cli, tiny_submission
from PIL import Image
from sklearn.metrics import cohen_kappa_score

import bioprior
from bioprior.plugin import error_consistency, pack_correct, unpack_correct
from bioprior.registry.toolkit.consistency import consistency, packed_leaves


# -- the number ---------------------------------------------------------------------------------
def mvh_error_consistency(correct_1, correct_2) -> float:
    """model-vs-human's ``ErrorConsistency`` (modelvshuman/plotting/analyses.py), written out:
    p_i the 16-class accuracies, expected = p1 p2 + (1 - p1)(1 - p2), observed = the fraction of
    trials with equal correctness, 1.0 when observed == 1, else (obs - exp) / (1 - exp)."""
    n = len(correct_1)
    p1 = sum(correct_1) / n
    p2 = sum(correct_2) / n
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    observed = sum(a == b for a, b in zip(correct_1, correct_2, strict=True)) / n
    if observed == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


@pytest.mark.parametrize(
    "p1,p2,n", [(0.9, 0.8, 500), (0.5, 0.5, 64), (0.97, 0.3, 1000), (0.1, 0.9, 7)]
)
def test_kappa_is_model_vs_humans_and_cohens(p1, p2, n):
    rng = np.random.default_rng(int(p1 * 100 + p2 * 10 + n))
    a = rng.random(n) < p1
    b = np.where(rng.random(n) < 0.5, a, rng.random(n) < p2)  # correlated errors
    k = error_consistency(a, b)
    assert k == pytest.approx(mvh_error_consistency(list(a), list(b)), abs=1e-12)
    # Cohen's kappa of two binary raters (right / wrong) is Geirhos' error consistency
    assert k == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    c = consistency(a, b)
    assert c.observed == pytest.approx(np.mean(a == b))
    assert c.expected == pytest.approx(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))


def test_kappa_edge_cases():
    a = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)
    assert error_consistency(a, a) == 1.0  # the same errors
    assert error_consistency(a, ~a) == pytest.approx(cohen_kappa_score(a, ~a)) and (
        error_consistency(a, ~a) < 0
    )
    # one observer always right: c_obs = p2 = c_exp, kappa 0
    assert error_consistency(np.ones(8, bool), a) == pytest.approx(0.0)
    # c_exp == 1 (both always right, or both always wrong): undefined
    assert error_consistency(np.ones(5, bool), np.ones(5, bool)) is None
    assert error_consistency(np.zeros(5, bool), np.zeros(5, bool)) is None
    assert mvh_error_consistency([True] * 5, [True] * 5) == 1.0  # theirs says 1.0 there
    with pytest.raises(ValueError, match="same"):
        error_consistency(a, a[:-1])
    with pytest.raises(ValueError, match="no trials"):
        error_consistency([], [])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001, 10_000])
def test_packed_bits_round_trip(n):
    hits = np.random.default_rng(n).random(n) < 0.8
    packed = pack_correct(hits)
    assert packed["n"] == n and set(packed) == {"n", "bits"}
    assert np.array_equal(unpack_correct(json.loads(json.dumps(packed))), hits)
    assert len(base64.b64decode(packed["bits"])) == (n + 7) // 8
    if n == 10_000:  # 1,250 bytes per condition, 1,668 characters of base64
        assert len(packed["bits"]) == 1668


def test_bad_packed_bits_are_refused():
    good = pack_correct([True, False, True])
    for bad in ({"n": 3}, {**good, "n": 20}, {**good, "bits": "not base64!"}, [1, 0], None):
        with pytest.raises(ValueError):
            unpack_correct(bad)
    tree = {"clean": good, "fog": {"1": good, "2": good}, "other": 3}
    assert [p for p, _ in packed_leaves(tree)] == [("clean",), ("fog", "1"), ("fog", "2")]


# -- a real run ---------------------------------------------------------------------------------
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HEADER = ["subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename"]


def human_set(root, images, labels):
    """An external ImageFolder set of 40 digits (<class name>/img<i>.png) and two subjects'
    trials in model-vs-human's raw-data layout: condition "0" on images 0-19, "1" on 20-39,
    trial image names with the experiment's prefix (trial, subject) as model-vs-human writes
    them; subject-01 is right on even images, subject-02 on images whose index is not 3 mod 4."""
    folder = root / "digits-set"
    for i in range(40):
        (folder / CLASSES[labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i][0]).save(folder / CLASSES[labels[i]] / f"img{i}.png")
    trials = root / "trials"
    trials.mkdir()
    files = []
    for s, right in ((1, lambda i: i % 2 == 0), (2, lambda i: i % 4 != 3)):
        path = trials / f"digits_subject-0{s}_session_1.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(HEADER)
            for t, i in enumerate(range(40)):
                cat = CLASSES[labels[i]]
                response = cat if right(i) else CLASSES[(labels[i] + 1) % 10]
                cond = "0" if i < 20 else "1"
                name = f"{t + 1:04d}_dg_s0{s}_{cond}_{cat}_img{i}.png"
                w.writerow([f"subject-0{s}", 1, t + 1, 0.7, response, cat, cond, name])
        files.append(path)
    return folder, trials, files


def digits_images():
    from bioprior.benchmarks.stimuli import to_uint8
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.toolkit.data import fit_images

    data = get_registry().get("dataset", "digits").build({})
    return to_uint8(fit_images(data.test_x, 1, 8)), data.test_y.numpy()


def submission(folder, trials):
    return tiny_submission(
        "ec",
        model={"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
        constraints=[{"name": "internal_noise", "params": {"sigma": 0.5, "at_inference": True}}],
        training={
            "dataset": "digits",
            "epochs": 3,
            "batch_size": 32,
            "lr": 0.02,
            "optimizer": "sgd",
            "momentum": 0.9,
        },
        sweep={"constraints.0.enabled": [True, False]},
        benchmarks=[
            {
                "name": "corruption",
                "params": {
                    "corruptions": ["gaussian_noise", "contrast"],
                    "severities": [1, 5],
                    "noise_sweeps": ["gaussian_noise_std"],
                    "gaussian_noise_stds": [0.0, 0.3],
                    "preset": "imagenet_c",
                    "max_images": 150,
                    "workers": 0,
                },
            },
            {
                "name": "spectral",
                "params": {
                    "centres": [1, 81, 161],
                    "lowpass_cutoffs": [0.25, 1.0],
                    "highpass_cutoffs": [0.0, 0.5],
                    "bandwidth_corruptions": [],
                    "fourier_heatmap": False,
                    "max_images": 150,
                    "workers": 0,
                },
            },
            {
                "name": "ood_stylized",
                "params": {
                    "styles": ["silhouette"],
                    "max_images": 150,
                    "workers": 0,
                    "external": [
                        {
                            "name": "digits-set",
                            "path": str(folder),
                            "class_map": {c: i for i, c in enumerate(CLASSES)},
                            "human_trials": [str(trials)],
                        }
                    ],
                },
            },
        ],
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("error-consistency")
    images, labels = digits_images()
    folder, trials, files = human_set(root, images, labels)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPRIOR_HOME", str(root / "home"))
        rows = bioprior.score(submission(folder, trials), device="cpu")
        from bioprior.registry.report import build_report

        site = build_report(root / "home" / "results.sqlite", root / "site")
    return rows, site, folder, files


def _row(rows, benchmark, enabled):
    (row,) = [
        r
        for r in rows
        if r["benchmark"] == benchmark and r["variant"]["constraints.0.enabled"] is enabled
    ]
    assert row["status"] == "ok", row["error"]
    return row


def test_the_stored_bits_are_the_stored_accuracies(scored):
    rows = scored[0]
    for enabled in (True, False):
        m = _row(rows, "corruption", enabled)["metrics"]
        assert np.mean(unpack_correct(m["correct"]["clean"])) == pytest.approx(m["clean_acc"])
        for name, levels in m["accuracy"].items():
            for level, acc in levels.items():
                bits = unpack_correct(m["correct"][name][level])
                assert len(bits) == m["images"] == 150
                assert bits.mean() == pytest.approx(acc), (name, level)
        base = m["baseline"]
        assert np.mean(unpack_correct(base["correct"]["contrast"]["5"])) == pytest.approx(
            base["accuracy"]["contrast"]["5"]
        )
        s = _row(rows, "spectral", enabled)["metrics"]
        for part in ("bandpass", "lowpass", "highpass"):
            levels = [f"{x:g}" for x in s[part]["centres" if part == "bandpass" else "cutoffs"]]
            got = [np.mean(unpack_correct(s["correct"][part][x])) for x in levels]
            assert got == pytest.approx(s[part]["accuracy"])
        o = _row(rows, "ood_stylized", enabled)["metrics"]
        assert np.mean(unpack_correct(o["correct"]["silhouette"])) == pytest.approx(
            o["accuracy"]["silhouette"]
        )
        ext = o["external"]["digits-set"]
        assert "correct" not in ext and np.mean(
            unpack_correct(o["correct"]["external"]["digits-set"])
        ) == pytest.approx(ext["accuracy"])


def test_the_unconstrained_variant_is_the_corruption_baseline(scored):
    from bioprior.registry.report.consistency import baseline_training_key

    rows = scored[0]
    constrained, free = _row(rows, "corruption", True), _row(rows, "corruption", False)
    key = baseline_training_key(constrained)
    assert key == free["training_key"] == baseline_training_key(free)
    assert key in constrained["weights"]  # the baseline corruption trained is that network
    assert constrained["metrics"]["baseline"]["weights_hash"] == free["weights_hash"]


def _kappas(site, benchmark, enabled):
    data = json.loads((site.out / "error_consistency.json").read_text())
    (sub,) = data
    (pair,) = [
        p
        for p in sub["baseline"]
        if p["benchmark"] == benchmark and p["values"]["constraints.0.enabled"] is enabled
    ]
    return pair


def test_report_numbers_are_kappa_of_the_stored_bits(scored):
    rows, site = scored[:2]
    for benchmark in ("corruption", "spectral", "ood_stylized"):
        pair = _kappas(site, benchmark, True)
        assert pair["baseline"] == (
            "corruption's baseline (constraints: none)"
            if benchmark == "corruption"
            else "variant enabled=False"
        )
        assert not pair["its_own_baseline"] and pair["note"] is None
        own = _row(rows, benchmark, True)["metrics"]["correct"]
        base = (
            _row(rows, benchmark, True)["metrics"]["baseline"]["correct"]
            if benchmark == "corruption"
            else _row(rows, benchmark, False)["metrics"]["correct"]
        )
        theirs = dict(packed_leaves(base))
        leaves = list(packed_leaves(own))
        assert len(pair["conditions"]) == len(leaves) >= 3
        kappas = []
        for path, packed in leaves:
            a, b = unpack_correct(packed), unpack_correct(theirs[path])
            got = pair["conditions"][" ".join(path)]
            assert got["images"] == len(a)
            if got["error_consistency"] is None:  # c_exp == 1
                assert a.all() == b.all() and (a.all() or not a.any())
                continue
            want = mvh_error_consistency(list(a), list(b))
            assert got["error_consistency"] == pytest.approx(want, abs=1e-12), (benchmark, path)
            assert got["accuracy"] == pytest.approx(a.mean())
            kappas.append(want)
        assert pair["mean_error_consistency"] == pytest.approx(np.mean(kappas))
        assert any(k < 1 for k in kappas)  # the noisy network does not make the same errors
    # the report's CSV has one line per condition with the same numbers
    lines = list(csv.DictReader((site.out / "error_consistency.csv").open()))
    pair = _kappas(site, "corruption", True)
    line = next(
        x
        for x in lines
        if x["benchmark"] == "corruption"
        and x["variant"] == "enabled=True"
        and x["condition"] == "contrast 5"
    )
    assert float(line["error_consistency"]) == pytest.approx(
        pair["conditions"]["contrast 5"]["error_consistency"]
    )


def test_identical_models_agree_perfectly(scored):
    """The unconstrained variant's corruption baseline is itself: kappa 1 wherever c_exp < 1."""
    pair = _kappas(scored[1], "corruption", False)
    assert pair["its_own_baseline"]
    defined = [c for c in pair["conditions"].values() if c["expected_consistency"] < 1]
    assert defined and all(c["error_consistency"] == pytest.approx(1.0) for c in defined)
    assert all(c["observed_consistency"] == 1.0 for c in pair["conditions"].values())


def test_the_report_shows_a_table_and_a_plot(scored):
    site = scored[1]
    page = (site.out / "submissions" / "ec.html").read_text()
    assert 'id="consistency-table"' in page and 'id="human-table"' in page
    assert "Geirhos, Meding &amp; Wichmann 2020" in page
    names = {p.name for p in site.plots["ec"]}
    for col in ("corruption", "spectral", "ood_stylized"):
        assert f"{col}-consistency" in names
    svg = (site.out / "plots" / "ec" / "spectral-consistency.svg").read_text()
    assert "series-consistency-bandpass-v1" in svg  # v0, the unconstrained one, is the baseline
    assert "series-consistency-bandpass-v0" not in svg
    # per-image bits stay out of the CSV of every result
    assert "correct" not in (site.out / "results.csv").read_text().splitlines()[0]


def test_model_vs_human_numbers(scored):
    rows, site, folder, files = scored
    o = _row(rows, "ood_stylized", True)["metrics"]
    human = o["external"]["digits-set"]["human"]
    assert (
        human["subjects"] == 2
        and human["trials"] == 80
        and sorted(human["conditions"])
        == [
            "0",
            "1",
        ]
    )
    # the model's correctness per image, in the folder's sorted order (class, then file name)
    bits = unpack_correct(o["correct"]["external"]["digits-set"])
    order = sorted((p.parent.name, p.name) for p in folder.glob("*/*.png"))
    model = {name: bool(b) for (_, name), b in zip(order, bits, strict=True)}
    trials = [t for f in files for t in csv.DictReader(f.open())]
    for cond in ("0", "1"):
        kappas, diffs = [], []
        for subj in ("subject-01", "subject-02"):
            mine = [t for t in trials if t["condition"] == cond and t["subj"] == subj]
            h = [t["object_response"] == t["category"] for t in mine]
            m = [model[t["imagename"].split("_")[-1]] for t in mine]
            kappas.append(mvh_error_consistency(m, h))
            diffs.append((np.mean(m) - np.mean(h)) ** 2)
        got = human["conditions"][cond]
        assert got["error_consistency"] == pytest.approx(np.mean(kappas), abs=1e-12)
        assert got["accuracy_difference"] == pytest.approx(np.mean(diffs), abs=1e-12)
        assert got["human_accuracy"] == pytest.approx(0.625)  # 1/2 and 3/4 right
    assert human["error_consistency"] == pytest.approx(
        np.mean([human["conditions"][c]["error_consistency"] for c in ("0", "1")])
    )
    page = (site.out / "submissions" / "ec.html").read_text()
    assert page.count('class="human-row"') == 2 * 3  # per variant: all, condition 0, 1


def test_rows_without_bits_or_baseline_say_so(scored):
    from bioprior.registry.report import consistency as ec
    from bioprior.registry.report.data import read_rows, shape

    db = scored[1].out.parent / "home" / "results.sqlite"
    # without the unconstrained variant, spectral and ood_stylized have no baseline to pair with
    report = shape([r for r in read_rows(db) if r["variant"]["constraints.0.enabled"]])
    ec.attach(report)
    notes = {p.column.benchmark: p.note for p in report.submissions[0].consistency}
    assert notes == {"corruption": "", "spectral": ec.NO_BASELINE, "ood_stylized": ec.NO_BASELINE}
    rows = read_rows(db)
    for r in rows:  # as stored before per-image results were kept
        r["metrics"].pop("correct", None)
        (r["metrics"].get("baseline") or {}).pop("correct", None)
    report = shape(rows)
    ec.attach(report)
    (sub,) = report.submissions
    assert len(sub.consistency) == 6 and all(not p.conditions for p in sub.consistency)
    assert {p.note for p in sub.consistency} == {ec.NOT_STORED}
    assert {x["note"] for x in ec.summary(sub)} == {ec.NOT_STORED}


def test_bad_human_trials_are_one_line_errors(tmp_path, write_submission):
    images, labels = digits_images()
    folder, trials, files = human_set(tmp_path, images, labels)
    no_column = tmp_path / "no-column.csv"
    text = files[0].read_text().splitlines()
    no_column.write_text("\n".join(x.rsplit(",", 1)[0] for x in text) + "\n")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(files[0].read_text().replace("_img7.png", "_img999.png"))
    sub = submission(folder, trials)
    ood = sub["benchmarks"][2]["params"]
    ood["external"] = [
        {**ood["external"][0], "name": "a", "human_trials": [str(no_column)]},
        {**ood["external"][0], "name": "b", "human_trials": [str(unknown)]},
    ]
    path = write_submission(sub)
    res = run_cli("validate", str(path))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "external.0.human_trials" in lines[0] and str(no_column) in lines[0]
    assert "no column 'imagename'" in lines[0]
    assert "external.1.human_trials" in lines[1] and f"{unknown}:9" in lines[1]
    assert "imagename" in lines[1] and "img999.png" in lines[1]


def test_keys_and_verify_ignore_what_older_rows_lack():
    """An external set without human trials dumps (and so keys) as before the field existed, and
    ``--verify`` of a row stored before per-image results were kept reports no drift for them."""
    from bioprior.benchmarks.ood_stylized import OODParams
    from bioprior.registry.scoring.verify import compare

    (ext,) = OODParams(external=[{"name": "a", "path": "x"}]).model_dump(mode="json")["external"]
    assert set(ext) == {"name", "path", "source", "class_map", "cue_conflict"}
    packed = pack_correct([True, False])
    rerun = {"clean_acc": 0.5, "correct": {"clean": packed}, "baseline": {"correct": {}, "a": 1}}
    old = {"clean_acc": 0.5, "baseline": {"a": 1}}
    assert compare({"metrics": old, "score": 1.0}, 1.0, rerun, None) == []
    stored = {**rerun, "correct": {"clean": pack_correct([True, True])}}
    assert compare({"metrics": stored, "score": 1.0}, 1.0, rerun, None) == ["correct differs"]


def test_missing_human_trials_say_where_they_were_looked_for(tmp_path):
    from bioprior.benchmarks.ood_stylized import ExternalSet, renderings
    from bioprior.plugin import DataUnavailable

    ext = ExternalSet(name="s", path=str(tmp_path), human_trials=[str(tmp_path / "nope.csv")])
    with pytest.raises(
        DataUnavailable, match=r"external set 's': human_trials: .*nope.csv not found"
    ):
        renderings.human_trials(ext)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .csv file in the folder"):
        ExternalSet(name="s", path=str(tmp_path), human_trials=[str(empty)])
