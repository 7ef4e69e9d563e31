"""The scorer end to end on digits: store rows, shared training, resume, failures, determinism."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, tiny_submission
from torch import nn

import bioprior
from bioprior.registry.base.progress import Reporter
from bioprior.registry.store.results import ResultStore


class RecordingReporter(Reporter):
    """Records what the scorer trained and the messages it gave."""

    def __init__(self) -> None:
        self.trainings: list[str] = []
        self.messages: list[str] = []

    def training_started(self, label: str, epochs: int) -> None:
        self.trainings.append(label)

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_score_stores_rows_with_provenance(bioprior_home, write_submission):
    path = write_submission(tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.5]}))
    rows = bioprior.score(path, device="cpu")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    row = rows[0]
    assert row["variant"] in (
        {"constraints.0.params.sigma": 0.0},
        {"constraints.0.params.sigma": 0.5},
    )
    assert {"natural_test_acc", "random_train_acc", "chance"} <= set(row["metrics"])
    m = row["metrics"]  # tsvetkov2020 memorization score: learned * (1 - memorized)
    learned = min(max((m["natural_test_acc"] - m["chance"]) / (1 - m["chance"]), 0), 1)
    memorized = min(max((m["random_train_acc"] - m["chance"]) / (1 - m["chance"]), 0), 1)
    assert row["score"] == pytest.approx(learned * (1 - memorized))
    assert row["plugin_versions"]["model:small_alexnet"].startswith("1 (bioprior")
    assert row["weights_hash"] and row["device"] == "cpu" and row["benchmark_version"] == "1"
    weights = list((bioprior_home / "weights").glob("*.safetensors"))
    assert len(weights) == 4  # natural + random model for each of the two variants


def test_training_is_shared_across_benchmarks_and_cached(bioprior_home, write_submission):
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.scoring.scorer import Scorer

    sub = tiny_submission(
        benchmarks=[
            {"name": "memorization"},
            {"name": "memorization", "params": {"random": "random_labels"}},
        ]
    )
    path = write_submission(sub)
    with ResultStore(bioprior_home / "r.sqlite") as store:
        scorer = Scorer(store, get_registry(), device="cpu")
        jobs, summary = scorer.plan(scorer.load([path]))
        assert len(jobs) == 2 and jobs[0].training.key == jobs[1].training.key
        report = scorer.run(summary)
    assert [o.status for o in report.outcomes] == ["ok", "ok"]
    # natural model shared: 1 + 2 random derivatives = 3 trainings, not 4
    assert len(list((bioprior_home / "weights").glob("*.safetensors"))) == 3
    assert len({o.weights_hash for o in report.outcomes}) == 1


def test_rerun_skips_finished_jobs_and_reuses_weights(bioprior_home, write_submission):
    path = write_submission(tiny_submission())
    first = run_cli("score", str(path), "--device", "cpu")
    assert first.returncode == 0, first.stderr
    assert "1 jobs: 0 already done, 1 to run" in first.stdout
    again = run_cli("score", str(path), "--device", "cpu")
    assert again.returncode == 0 and "1 jobs: 1 already done, 0 to run" in again.stdout
    # the same job against another store runs again, from the cached weights: nothing trains,
    # no weight file is written, and the weights are the same
    weights = {f: f.stat().st_mtime_ns for f in (bioprior_home / "weights").glob("*")}
    reporter = RecordingReporter()
    (rerun,) = bioprior.score(
        path, device="cpu", db=bioprior_home / "other.sqlite", reporter=reporter
    )
    assert reporter.trainings == [] and rerun["status"] == "ok"
    assert {f: f.stat().st_mtime_ns for f in (bioprior_home / "weights").glob("*")} == weights
    (stored,) = bioprior.score(path, device="cpu")  # already done: the stored row
    assert rerun["weights_hash"] == stored["weights_hash"] and rerun["metrics"] == stored["metrics"]
    out = json.loads(run_cli("results", "--format", "json").stdout)
    assert len(out) == 1 and {
        "submission",
        "variant",
        "seed",
        "benchmark",
        "score",
        "metrics",
        "status",
    } <= set(out[0])


def test_same_job_twice_gives_same_numbers_on_cpu(tmp_path, monkeypatch, write_submission):
    path = write_submission(
        tiny_submission(constraints=[{"name": "internal_noise", "params": {"sigma": 0.3}}])
    )
    results = []
    for run in ("a", "b"):
        monkeypatch.setenv("BIOPRIOR_HOME", str(tmp_path / run))
        (row,) = bioprior.score(path, device="cpu")
        results.append((row["metrics"], row["weights_hash"], row["job_key"]))
    assert results[0] == results[1]


def test_failing_job_is_stored_and_others_go_on(bioprior_home, write_submission):
    good = write_submission(tiny_submission("good"))
    # 2 classes requested, but the model insists on 3: fails at build time, not validation
    bad = write_submission(
        tiny_submission(
            "bad",
            model={
                "name": "small_alexnet",
                "params": {"width": 0.1, "input_size": 8, "num_classes": 3},
            },
        )
    )
    out = run_cli("score", str(bad), str(good), "--device", "cpu")
    assert out.returncode == 1
    rows = {r["submission"]: r for r in json.loads(run_cli("results", "--format", "json").stdout)}
    assert rows["good"]["status"] == "ok"
    assert rows["bad"]["status"] == "failed" and "num_classes is 3" in rows["bad"]["error"]
    assert "\n" not in rows["bad"]["error"]


def test_results_formats_and_filters(bioprior_home, write_submission):
    bioprior.score(write_submission(tiny_submission("one")), device="cpu")
    bioprior.score(write_submission(tiny_submission("two")), device="cpu")
    only = json.loads(run_cli("results", "--submission", "two", "--format", "json").stdout)
    assert [r["submission"] for r in only] == ["two"]
    csv_out = run_cli("results", "--format", "csv").stdout.splitlines()
    assert (
        csv_out[0].startswith("submission,variant,seed,benchmark")
        and "metrics.natural_test_acc" in csv_out[0]
    )
    assert len(csv_out) == 3
    table = run_cli("results")
    assert table.returncode == 0 and "memorization" in table.stdout
    assert run_cli("results", "--format", "xml").returncode == 2


def test_score_bad_arguments_exit_2(bioprior_home, write_submission, tmp_path):
    path = write_submission(tiny_submission())
    for args, needle in [
        (["--device", "tpu"], "--device"),
        (["--data-root", str(tmp_path / "missing")], "--data-root"),
        (["--db", str(tmp_path / "f.txt" / "x.sqlite")], "--db"),
    ]:
        if "f.txt" in args[-1]:
            (tmp_path / "f.txt").write_text("not a folder")
        out = run_cli("score", str(path), *args)
        assert (
            out.returncode == 2
            and needle in out.stderr
            and len(out.stderr.strip().splitlines()) == 1
        )
    assert not (bioprior_home / "results.sqlite").exists()  # nothing was written


def test_dry_run_plans_without_running(bioprior_home, write_submission):
    path = write_submission(tiny_submission(seeds=[0, 1, 2]))
    out = run_cli("score", str(path), "--dry-run")
    assert (
        out.returncode == 0 and "3 jobs: 0 already done, 3 to run; 6 trainings to run" in out.stdout
    )
    assert not (bioprior_home / "weights").exists()


def test_score_in_memory_module(bioprior_home):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 64, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    rows = bioprior.score(
        net,
        name="my-net",
        benchmarks=["memorization"],
        constraints=[{"name": "internal_noise", "params": {"sigma": 0.1}}],
        training={"dataset": "digits", "epochs": 2, "lr": 0.05},
        device="cpu",
    )
    (row,) = rows
    assert row["status"] == "ok" and row["submission"] == "my-net"
    assert row["metrics"]["natural_test_acc"] > 0.5
    assert any(k.startswith("model:module:Sequential") for k in row["plugin_versions"])
    assert not any(
        isinstance(m, nn.Module) and type(m).__name__ == "HiddenActivation" for m in net.modules()
    )


@pytest.mark.parametrize("workers", [1, None], ids=["in-process", "auto-workers"])
def test_corrupt_cached_weights_are_retrained(bioprior_home, write_submission, workers):
    path = write_submission(tiny_submission())
    (first,) = bioprior.score(path, device="cpu", workers=workers)
    files = sorted((bioprior_home / "weights").glob("*.safetensors"))
    for f in files:
        f.write_bytes(b"garbage")
    with ResultStore(bioprior_home / "results.sqlite") as store:
        store.conn.execute("DELETE FROM results")
    reporter = RecordingReporter()
    (second,) = bioprior.score(path, device="cpu", reporter=reporter, workers=workers)
    # each unreadable file was noticed, its model retrained and the file rewritten (in a worker
    # the notice is all the driver hears of it; in this process the reporter sees the epochs)
    assert sum("unreadable cached weights" in m for m in reporter.messages) == len(files) == 2
    in_children = any(" CPU workers x " in m for m in reporter.messages if m.startswith("plan:"))
    assert len(reporter.trainings) == (0 if in_children else 2)
    assert not in_children or workers is None
    from safetensors.torch import load_file

    assert all(load_file(str(f)) for f in files)
    assert second["metrics"] == first["metrics"]
    assert second["weights_hash"] == first["weights_hash"]


@pytest.mark.parametrize("status", ["ok", "failed"])
def test_store_never_overwrites_ok_rows(bioprior_home, write_submission, status):
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.planning.outcomes import JobOutcome
    from bioprior.registry.submissions.loading import validate_submission_dict

    (job,) = plan([validate_submission_dict(tiny_submission(), get_registry())])
    with ResultStore(bioprior_home / "s.sqlite") as store:
        assert store.write(
            JobOutcome(
                job, status, metrics={"a": 1}, score=0.5, error=None if status == "ok" else "x"
            )
        )
        replaced = store.write(JobOutcome(job, "ok", metrics={"a": 2}, score=0.7))
        (row,) = store.rows()
        assert replaced == (status == "failed")
        assert row["metrics"] == ({"a": 1} if status == "ok" else {"a": 2})
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_missing_dataset_is_bad_input_exit_2(bioprior_home, write_submission, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    sub = tiny_submission("needs-cifar", training={"dataset": "cifar10", "epochs": 1})
    path = write_submission(sub)
    out = run_cli("score", str(path), "--device", "cpu", "--data-root", str(empty))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"{path}: training.dataset: cifar10: not found under {empty}")
    assert "bioprior download cifar10" in line
    with ResultStore(bioprior_home / "results.sqlite") as store:
        assert store.rows() == []  # nothing ran, nothing was written


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_training(bioprior_home, write_submission):
    sub = tiny_submission("gpu")
    sub["training"].update(precision="bf16", epochs=3)
    (row,) = bioprior.score(write_submission(sub), device="cuda")
    assert row["status"] == "ok" and row["device"].startswith("cuda")
    assert row["metrics"]["natural_test_acc"] > 0.3


def test_noisy_evaluation_is_seeded_whatever_ran_before(bioprior_home, write_submission):
    noisy = [{"name": "internal_noise", "params": {"sigma": 0.5, "at_inference": True}}]
    path = write_submission(tiny_submission(constraints=noisy))
    (first,) = bioprior.score(path, device="cpu")  # trains: the RNG has been used by training
    with ResultStore(bioprior_home / "results.sqlite") as store:
        store.conn.execute("DELETE FROM results")
    torch.rand(12345)
    (second,) = bioprior.score(path, device="cpu")  # loads cached weights: a different RNG history
    assert second["metrics"] == first["metrics"]


def test_module_with_bottleneck_is_rejected_at_validation(bioprior_home):
    from bioprior.registry.submissions.loading import InvalidSubmission

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(InvalidSubmission, match="bottleneck needs model parameter"):
        bioprior.score(
            net,
            benchmarks=["memorization"],
            constraints=["bottleneck"],
            training={"dataset": "digits"},
        )
