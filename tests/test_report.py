"""`bioprior report`: the static site built from a store filled by a small real run on digits.

The browser checks (sorting, filtering, images, console) are in test_report_browser.py."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import statistics

import pytest
from conftest import run_cli
from report_store import built_site, scored_home
from safetensors import safe_open

from bioprior.registry.report import ReportError, build_report
from bioprior.registry.report import data as rdata
from bioprior.registry.report import plots as rplots
from bioprior.registry.store.results import ResultStore


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    return built_site(tmp_path_factory.getbasetemp() / "report")


@pytest.fixture(scope="session")
def store_rows(site):
    with ResultStore(site.report.weights_dirs[0].parent / "results.sqlite") as store:
        return store.rows()


def _sub(site, name):
    return next(s for s in site.report.submissions if s.name == name)


def _col(site, bench):
    return next(c for c in site.report.columns if c.benchmark == bench)


def test_site_has_pages_data_and_no_external_resources(site):
    out = site.out
    for rel in (
        "index.html",
        "compare.html",
        "submissions/tiny-noise.html",
        "submissions/tiny-readout.html",
        "results.json",
        "results.csv",
        "leaderboard.csv",
        "static/report.js",
        "static/report.css",
        "static/data.js",
    ):
        assert (out / rel).is_file(), rel
    for page in out.rglob("*.html"):
        html = page.read_text()
        # offline from file://: nothing loaded from the network
        assert not re.search(r'(src|href)="(https?:)?//', html), page
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
            assert (page.parent / ref).exists(), f"{page.name}: broken link {ref}"


def test_results_json_is_the_stores_rows(site, store_rows):
    written = json.loads((site.out / "results.json").read_text())
    assert written == json.loads(json.dumps(store_rows, default=str))
    assert {r["submission"] for r in written} == {"tiny-noise", "tiny-readout"}


def test_results_csv_has_every_row_and_scalar_metric(site, store_rows):
    with (site.out / "results.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == len(store_rows) == 24
    for line, row in zip(lines, store_rows, strict=True):
        assert (line["submission"], line["benchmark"], int(line["seed"])) == (
            row["submission"],
            row["benchmark"],
            row["seed"],
        )
        assert json.loads(line["variant"]) == row["variant"]
        assert line["status"] == row["status"] and line["job_key"] == row["job_key"]
        if row["score"] is None:
            assert line["score"] == ""
        else:
            assert float(line["score"]) == pytest.approx(row["score"], abs=0)
        for key in ("natural_test_acc", "robust_accuracy", "mce", "mean_band_acc"):
            if key in row["metrics"]:
                assert float(line[f"metrics.{key}"]) == row["metrics"][key]
        if row["benchmark"] == "adversarial":
            mode = row["metrics"]["modes"]["deterministic"]
            assert (
                float(line["metrics.modes.deterministic.robust_accuracy"])
                == (mode["robust_accuracy"])
            )
    failed = [line for line in lines if line["status"] == "failed"]
    assert [f["error_class"] for f in failed] == ["plugin_error"]  # the store's class


def test_leaderboard_rows_are_variants_with_mean_and_spread_over_seeds(site, store_rows):
    from bioprior.registry.report.pages import leaderboard

    board = leaderboard(site.report)
    assert sorted((r["submission"], r["variant"]) for r in board) == [
        ("tiny-noise", "sigma=0"),
        ("tiny-noise", "sigma=0.3"),
        ("tiny-readout", "default"),
    ]
    means = [r["overall"].mean for r in board]
    assert means == sorted(means, reverse=True) and [r["rank"] for r in board] == [1, 2, 3]
    for r in board:
        for col in site.report.columns:
            cell = r["cells"][col.id]
            scores = [
                s["score"]
                for s in store_rows
                if s["submission"] == r["submission"]
                and s["benchmark"] == col.benchmark
                and s["status"] == "ok"
                and s["score"] is not None
                and (s["variant"].get("constraints.0.params.sigma"), r["variant"])
                in {(0.0, "sigma=0"), (0.3, "sigma=0.3"), (None, "default")}
            ]
            if not scores:
                assert cell is None or cell["score"].mean is None
                continue
            assert cell["score"].mean == pytest.approx(statistics.fmean(scores))
            if len(scores) > 1:
                assert cell["score"].std == pytest.approx(statistics.stdev(scores))
    plain = next(r for r in board if r["submission"] == "tiny-readout")
    ood = plain["cells"]["ood_stylized"]
    neural = plain["cells"]["neural_predictivity"]
    assert {m["path"] for m in neural["metrics"] if m["stat"].mean is not None} >= {"correlation"}
    assert plain["failed"] == 1 and ood["failed"] == 1 and ood["errors"] == ["plugin_error"]
    with (site.out / "leaderboard.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [(t["submission"], t["variant"]) for t in table] == [
        (r["submission"], r["variant"]) for r in board
    ]
    for t, r in zip(table, board, strict=True):
        assert float(t["mean_score"]) == pytest.approx(r["overall"].mean)
        assert float(t["memorization.natural_test_acc"]) == pytest.approx(
            r["cells"]["memorization"]["metrics"][0]["stat"].mean
        )
    html = (site.out / "index.html").read_text()
    assert html.count('<tr class="entry"') == 3
    assert "DataUnavailable" in html and "Failed jobs" in html


def _lines(fig):
    return {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}


def test_sweep_plot_is_the_papers_figure_with_the_stores_means(site, store_rows):
    sub, col = _sub(site, "tiny-noise"), _col(site, "memorization")
    fig = rplots.sweep_plot(sub, col)
    lines = _lines(fig)
    for metric in ("natural_test_acc", "random_train_acc"):
        line = lines[f"series-{metric}-g0"]
        assert list(line.get_xdata()) == [0.0, 0.3]
        expected = [
            statistics.fmean(
                r["metrics"][metric]
                for r in store_rows
                if r["benchmark"] == "memorization"
                and r["submission"] == "tiny-noise"
                and r["variant"]["constraints.0.params.sigma"] == sigma
            )
            for sigma in (0.0, 0.3)
        ]
        assert list(line.get_ydata()) == pytest.approx(expected)
    assert fig.axes[0].get_xlabel() == "sigma"


def test_learning_curves_come_from_the_weights_histories(site, store_rows):
    sub, col = _sub(site, "tiny-noise"), _col(site, "memorization")
    weights = site.report.weights_dirs[0]

    def history(key):  # an independent reader: safetensors' own
        with safe_open(str(weights / f"{key}.safetensors"), "np") as fh:
            return json.loads(fh.metadata()["history"])

    fig = rplots.learning_curves(sub, col, lambda k: rdata.training_history([weights], k))
    lines = _lines(fig)
    assert {g for g in lines if g.startswith("series-")} == {
        f"series-{kind}-v{i}" for kind in ("natural", "random") for i in range(2)
    }
    for i, sigma in enumerate((0.0, 0.3)):
        rows = [
            r
            for r in store_rows
            if r["benchmark"] == "memorization"
            and r["submission"] == "tiny-noise"
            and r["variant"]["constraints.0.params.sigma"] == sigma
        ]
        natural = [history(r["training_key"])["accuracy"] for r in rows]
        expected = [statistics.fmean(x) for x in zip(*natural, strict=True)]
        assert list(lines[f"series-natural-v{i}"].get_ydata()) == pytest.approx(expected)
        assert len(expected) == 4  # epochs


def test_svgs_have_one_series_per_variant(site):
    plots = {p.name: site.out / p.path for p in site.plots["tiny-noise"]}
    assert {
        "memorization-learning",
        "memorization-sweep",
        "corruption-severity",
        "corruption-mce",
        "spectral-bands",
        "spectral-heatmap",
        "adversarial-epsilon",
        "adversarial-minimal",
        "ood_stylized-styles",
    } <= set(plots)
    expect = {
        "memorization-learning": ["natural", "random"],
        "corruption-severity": ["contrast", "gaussian_noise", "gaussian_noise_std"],
        "corruption-mce": ["mce"],
        "spectral-bands": ["bandpass", "lowpass", "highpass"],
        "spectral-heatmap": ["heatmap"],
        "adversarial-epsilon": ["fgsm-deterministic", "pgd_linf-deterministic"],
        "adversarial-minimal": ["minimal-l2", "minimal-linf"],
        "ood_stylized-styles": ["ood"],
    }
    for name, series in expect.items():
        svg = plots[name].read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        for s in series:
            ids = set(re.findall(rf'id="series-{re.escape(s)}-v(\d+)"', svg))
            assert ids == {"0", "1"}, (name, s, ids)
        assert "sigma=0.3" in svg  # legend / titles name the variants
    # sigma 0.3 stays on at inference: attacked with EOT; black-box transfer on the score curve
    svg = plots["adversarial-epsilon"].read_text()
    assert 'id="series-pgd_linf-stochastic-v1"' in svg
    assert 'id="series-pgd_linf-stochastic-v0"' not in svg  # sigma 0: deterministic
    assert set(re.findall(r'id="series-pgd_linf-transfer-v(\d+)"', svg)) == {"0", "1"}
    # one variant and a failed OOD job: no sweep plot, no OOD plot; the co-trained readout's
    # held-out predictivity
    assert {p.kind for p in site.plots["tiny-readout"]} == {"learning", "capacity", "neural"}
    svg = (site.out / "plots" / "tiny-readout" / "neural_predictivity-neural.svg").read_text()
    assert 'id="series-neural-v0"' in svg and "correlation" in svg


def test_plots_degrade_when_metrics_are_absent(site, tmp_path):
    rows = json.loads((site.out / "results.json").read_text())
    for r in rows:  # an older store: no baseline, no heat map, no minimal perturbations
        m = r["metrics"]
        for key in ("baseline", "mce", "relative_mce", "fourier_heatmap", "median_minimal_l2"):
            m.pop(key, None)
        for mode in (m.get("modes") or {}).values():
            mode.pop("minimal", None)
            mode.pop("transfer", None)
        r["weights"] = {}
    report = rdata.shape([r for r in rows if r["submission"] == "tiny-noise"], [tmp_path / "none"])
    drawn = rplots.submission_plots(report.submissions[0], report.columns, tmp_path, lambda k: None)
    kinds = {p.name for p in drawn}
    assert {"corruption-severity", "spectral-bands", "adversarial-epsilon"} <= kinds
    assert not kinds & {"corruption-mce", "spectral-heatmap", "adversarial-minimal"}
    assert "memorization-learning" not in kinds  # no weights cache: no curves, no error
    cols = {c.benchmark: [p for p, _ in c.metrics] for c in report.columns}
    assert "mce" not in cols["corruption"] and "median_minimal_l2" not in cols["adversarial"]


def test_extra_store_columns_are_shown_when_present(site, tmp_path):
    home = site.report.weights_dirs[0].parent
    db = tmp_path / "results.sqlite"
    shutil.copy(home / "results.sqlite", db)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE results ADD COLUMN torch_version TEXT")  # a column it does not know
    conn.execute("UPDATE results SET error_class = 'data_missing' WHERE status = 'failed'")
    conn.execute("UPDATE results SET torch_version = '2.13.0+cpu'")
    conn.commit()
    conn.close()
    out = build_report(db, tmp_path / "site", ["tiny-readout"], [home / "weights"])
    page = (out.out / "submissions" / "tiny-readout.html").read_text()
    assert "data_missing" in page and "torch_version" in page and "2.13.0+cpu" in page
    assert [r["submission"] for r in out.report.rows] == ["tiny-readout"] * 4


def test_report_cli_writes_the_site(site, tmp_path):
    home = site.report.weights_dirs[0].parent
    done = run_cli(
        "report", "--db", str(home / "results.sqlite"), "-s", "tiny-noise", "-o", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and (tmp_path / "index.html").is_file()
    assert not (tmp_path / "submissions" / "tiny-readout.html").exists()


def test_report_bad_input_is_one_line_exit_2(site, tmp_path):
    from typer.testing import CliRunner

    from bioprior.registry.cli.app import app

    home = site.report.weights_dirs[0].parent
    db = str(home / "results.sqlite")
    runner = CliRunner()
    cases = {
        "missing db": (["--db", str(tmp_path / "nope.sqlite"), "-o", str(tmp_path / "a")], "--db"),
        "unknown submission": (["--db", db, "-s", "nope", "-o", str(tmp_path / "b")], "nope"),
        "output is a file": (["--db", db, "-o", __file__], "-o"),
    }
    (tmp_path / "junk.sqlite").write_text("not a database")
    cases["not a database"] = (["--db", str(tmp_path / "junk.sqlite"), "-o", str(tmp_path)], "--db")
    for name, (args, needle) in cases.items():
        result = runner.invoke(app, ["report", *args])
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], name
    assert (
        "known: tiny-noise, tiny-readout"
        in runner.invoke(
            app, ["report", "--db", db, "-s", "nope", "-o", str(tmp_path / "b")]
        ).stderr
    )
    with pytest.raises(ReportError):
        rdata.read_rows(tmp_path / "nope.sqlite")
    assert scored_home.cache_info().currsize == 1  # the store was scored once


def test_the_store_is_only_read(site, tmp_path):
    import hashlib

    home = site.report.weights_dirs[0].parent
    db = tmp_path / "results.sqlite"
    shutil.copy(home / "results.sqlite", db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    build_report(db, tmp_path / "site", weights_dirs=[home / "weights"])
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    # nothing but the site and SQLite's own WAL side files (a read-only reader may create them)
    others = {p.name for p in tmp_path.iterdir()} - {"site", "results.sqlite"}
    assert others <= {"results.sqlite-wal", "results.sqlite-shm"}


def test_paper_section_beside_the_stores_means(site, store_rows):
    """The submission's made-up reference beside the measurement: the means and z worked out
    here from the store's rows, the table on the page and the figure beside it."""
    page = (site.out / "submissions" / "tiny-noise.html").read_text()
    assert 'id="paper-table"' in page and page.count('class="paper-row"') == 3
    assert "made-up numbers ($ not a paper)" in page and 'href="#paper"' in page
    sigma = "constraints.0.params.sigma"

    def values(bench, s, read):
        rows = [
            r
            for r in store_rows
            if r["submission"] == "tiny-noise"
            and r["benchmark"] == bench
            and r["variant"][sigma] == s
            and r["status"] == "ok"
        ]
        return [100 * read(r["metrics"]) for r in sorted(rows, key=lambda r: r["seed"])]

    def sem(xs):
        return statistics.stdev(xs) / len(xs) ** 0.5

    clean = values("adversarial", 0.0, lambda m: m["clean_accuracy"])
    z = (statistics.fmean(clean) - 90) / (sem(clean) ** 2 + 3**2) ** 0.5

    def fgsm_at_01(m):  # the scored mode's FGSM run at epsilon 0.1 (the third of 0, 0.05, 0.1)
        return m["modes"][m["score_mode"]]["curves"]["fgsm"]["accuracy_raw"][2]

    fgsm = values("adversarial", 0.3, fgsm_at_01)
    z_fgsm = (statistics.fmean(fgsm) - 50) / (sem(fgsm) ** 2 + (10 / 4**0.5) ** 2) ** 0.5
    natural = [values("memorization", s, lambda m: m["natural_test_acc"]) for s in (0.3, 0.0)]
    diff = statistics.fmean(natural[0]) - statistics.fmean(natural[1])
    z_diff = (diff + 5) / (sem(natural[0]) ** 2 + sem(natural[1]) ** 2 + 2**2) ** 0.5
    got = _sub(site, "tiny-noise").paper
    assert [c.z for c in got] == pytest.approx([z, z_fgsm, z_diff])
    assert got[2].mean == pytest.approx(diff) and got[2].variant_label == "sigma=0.3 − sigma=0.0"
    for c in got:
        assert c.done == 2 and c.verdict in {"agrees", "tension", "disagrees"}
        assert f"{c.z:+.2f}" in page
    (plot,) = [p for p in site.plots["tiny-noise"] if p.kind == "paper"]
    svg = (site.out / plot.path).read_text()
    assert all(f'id="series-{s}-m{j}"' in svg for s in ("paper", "measured") for j in range(3))
    assert "$ not a paper" in svg and f'src="../{plot.path}"' in page
    assert not [p for p in site.plots["tiny-readout"] if p.kind == "paper"]


def test_sweep_keys_are_shortened_unambiguously():
    keys = rdata.short_keys(
        [
            "constraints.0.params.sigma",
            "model.params.width",
            "constraints.0.enabled,constraints.0.params.shuffle",
        ]
    )
    assert keys == {
        "constraints.0.params.sigma": "sigma",
        "model.params.width": "width",
        "constraints.0.enabled,constraints.0.params.shuffle": "enabled,shuffle",
    }
    two = rdata.short_keys(["constraints.0.params.sigma", "constraints.1.params.sigma"])
    assert len(set(two.values())) == 2
