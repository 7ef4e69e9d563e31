"""The first run as a new user lives it: progress when piped, quiet warnings, the
result table, typed --device errors, results --submission hints, plain --help, --verify."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import run_cli, tiny_submission
from typer.testing import CliRunner

import bioprior
from bioprior.registry.cli.app import app

runner = CliRunner()


def _sub(name="tiny", epochs=2, **over):
    training = {"dataset": "digits", "epochs": epochs, "batch_size": 128, "lr": 0.05}
    training.update(over.pop("training", {}))
    return tiny_submission(name, training=training, **over)


def test_piped_score_prints_a_line_per_step_and_epochs(bioprior_home, write_submission):
    path = write_submission(_sub(epochs=20, sweep={"constraints.0.params.sigma": [0.6, 0.0]}))
    out = runner.invoke(app, ["score", str(path), "--device", "cpu", "--threads", "1"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    plan = lines[0]
    assert plan.startswith("plan: 2 jobs") and "1 thread (--threads)" in plan
    # the run's estimate, then the planned work: the trainings run first (each announced), then
    # the jobs in the sweep's order
    assert lines[1].startswith("estimate: ~") and "of wall time, to about" in lines[1]
    assert lines[2].strip().startswith("train small_alexnet +internal_noise(sigma=0.6")
    first_job = next(line for line in lines if line.startswith("[1/2] start"))
    assert first_job == "[1/2] start tiny[sigma=0.6] seed=0 memorization"
    epochs = [line for line in lines if line.strip().startswith("epoch ")]
    # every 2 epochs of 20, for 4 trainings, each with loss and accuracy
    assert len(epochs) == 4 * 10 and all("loss" in e and "accuracy" in e for e in epochs)
    assert epochs[0].strip().startswith("epoch 2/20 loss ")
    assert sum(line.startswith("[2/2] done tiny[") for line in lines) == 1
    assert lines.index(epochs[0]) < lines.index(
        next(x for x in lines if x.startswith("[1/2] done"))
    )
    # the table: grouped running metrics, sorted variants, a legend for score
    assert "natural_train_acc" in out.output and "(running " in out.output
    assert "natural_train_acc_running" not in out.output
    table = out.output[out.output.index("2 results") :]
    assert table.index("sigma=0.0") < table.index("sigma=0.6")  # sorted by value in the table
    assert "score of memorization:" in out.output


def test_api_is_silent_by_default_and_reports_through_callback_and_logging(
    bioprior_home, write_submission, capsys, caplog
):
    path = write_submission(_sub())
    events = []
    with caplog.at_level(logging.INFO, logger="bioprior.progress"):
        bioprior.score(path, device="cpu", threads=1, progress=events.append)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["message", "jobs_started"] and "epoch" in kinds
    assert kinds[-1] == "job_finished" and events[-1].status == "ok"
    assert any("[1/1] done tiny" in r.getMessage() for r in caplog.records)


def test_results_unknown_submission_names_the_stored_ones(bioprior_home, write_submission):
    bioprior.score(write_submission(_sub("alpha", epochs=1)), device="cpu", threads=1)
    out = runner.invoke(app, ["results", "--submission", "nope"])
    assert out.exit_code == 2 and "no results for 'nope'" in out.output
    assert "stored: alpha" in out.output


def test_device_errors_are_typed_said_once_before_the_plan(bioprior_home, write_submission):
    import torch

    path = write_submission(_sub())
    for device, needle in [("cuda:1", "--device: cuda:1: "), ("gpu", "must be auto, cpu")]:
        if device.startswith("cuda") and torch.cuda.is_available():
            continue
        out = runner.invoke(app, ["score", str(path), "--device", device])
        assert out.exit_code == 2 and needle in out.output, out.output
        assert out.output.count("--device") == 1 and "plan:" not in out.output
    assert not (bioprior_home / "results.sqlite").exists()


def test_help_renders_plain_flags_and_files():
    out = runner.invoke(app, ["score", "--help"], terminal_width=200)
    assert out.exit_code == 0
    text = out.output
    assert "FILE..." in text and "{files}" not in text and "<list[Path]>" not in text
    assert "<bool>" not in text and "<str>" not in text and "<path>" not in text
    assert "--threads" in text and "--verify" in text


def test_data_root_is_an_argument_not_the_environment(bioprior_home, write_submission, tmp_path):
    import os

    empty = tmp_path / "data"
    empty.mkdir()
    path = write_submission(_sub("needs-cifar", training={"dataset": "cifar10", "epochs": 1}))
    out = runner.invoke(app, ["score", str(path), "--device", "cpu", "--data-root", str(empty)])
    assert out.exit_code == 2 and f"not found under {empty}" in out.output
    assert "BIOPRIOR_DATA" not in os.environ


def test_verify_reports_same_numbers_and_drift(bioprior_home, write_submission):
    path = write_submission(_sub(epochs=2))
    assert runner.invoke(app, ["score", str(path), "--threads", "1"]).exit_code == 0
    weights = sorted((bioprior_home / "weights").glob("*.safetensors"))
    same = runner.invoke(app, ["score", str(path), "--verify", "1", "--threads", "1"])
    assert same.exit_code == 0, same.output
    assert "same numbers, same weights" in same.output and "0 of 1 job(s) drifted" in same.output
    assert sorted((bioprior_home / "weights").glob("*.safetensors")) == weights  # cache untouched
    # a stored number that no rerun reproduces is drift: exit 1, what changed
    from bioprior.registry.store.results import ResultStore

    with ResultStore(bioprior_home / "results.sqlite") as store:
        store.conn.execute("UPDATE results SET score = score + 0.25")
    drift = runner.invoke(app, ["score", str(path), "--verify", "1", "--threads", "1"])
    assert drift.exit_code == 1 and "DRIFT: score" in drift.output


def test_verify_without_finished_jobs_is_bad_input(bioprior_home, write_submission):
    out = runner.invoke(app, ["score", str(write_submission(_sub())), "--verify", "2"])
    assert out.exit_code == 2 and "no finished jobs" in out.output


def test_cli_says_nothing_about_torchvision_unless_verbose(tmp_path):
    # a real subprocess: the shim decides at import, once per interpreter
    quiet = run_cli("preview", "ood_stylized", "--count", "1", "-o", str(tmp_path / "a.png"))
    assert quiet.returncode == 0, quiet.stderr
    assert "torchvision" not in quiet.stderr + quiet.stdout
    loud = run_cli("--verbose", "validate", "submissions/quickstart.yaml")
    assert loud.returncode == 0
    from bioprior.registry.base.torchvision_compat import ensure_torchvision

    if ensure_torchvision():  # this torch build cannot load torchvision's ops
        assert loud.stderr.count("torchvision's compiled ops") == 1


@pytest.mark.parametrize(
    ("dataset", "where"),
    [
        ("cifar10", "training.dataset"),
        ({"name": "subset", "params": {"source": "cifar10"}}, "training.dataset.params.source"),
        (
            {
                "name": "random_labels",
                "params": {"source": {"name": "subset", "params": {"source": "cifar10"}}},
            },
            "training.dataset.params.source.params.source",
        ),
    ],
)
def test_missing_data_advice_works_where_it_is_given(
    bioprior_home, write_submission, tmp_path, dataset, where
):
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.submissions.loading import validate_submission_dict

    empty = tmp_path / "data"
    empty.mkdir()
    sub = _sub("needs-data", training={"dataset": dataset, "epochs": 1})
    out = run_cli("score", str(write_submission(sub)), "--device", "cpu", "--data-root", str(empty))
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert f": {where}: cifar10: not found under {empty}" in line
    assert f"write {where} as `{{name: cifar10, params: {{download: true}}}}`" in line
    # following the advice gives a valid submission (no "unknown parameter")
    node = sub["training"]
    keys = where.split(".")[1:]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = {"name": "cifar10", "params": {"download": True}}
    loaded = validate_submission_dict(sub, get_registry())
    root = loaded.variants[0].dataset
    while root.source is not None:
        root = root.source
    assert root.entry.name == "cifar10" and root.params.download is True


def test_missing_folder_dataset_advice_root_works(bioprior_home, write_submission, tmp_path):
    """tiny_imagenet (a folder, not downloadable): the advice's `root: DIR` makes it load."""
    import numpy as np
    from PIL import Image

    sub = _sub(
        "folder",
        training={
            "dataset": {
                "name": "subset",
                "params": {"source": "tiny_imagenet", "examples_per_class": 1},
            },
            "epochs": 1,
        },
    )
    out = run_cli("score", str(write_submission(sub)), "--device", "cpu", "--dry-run")
    assert out.returncode == 0  # planning needs no data
    out = run_cli("score", str(write_submission(sub)), "--device", "cpu")
    line = out.stderr.strip().splitlines()[-1]
    where = "training.dataset.params.source"
    assert out.returncode == 2 and f"{where}: tiny_imagenet: not found" in line
    assert "download" not in line.split("To fix:")[1]  # nothing to download
    assert f"write {where} as `{{name: tiny_imagenet, params: {{root: DIR}}}}`" in line
    base = tmp_path / "folder" / "tiny-imagenet-200"
    rows = []
    for k, wnid in enumerate(("n01", "n02")):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            img = np.full((64, 64, 3), 40 + 100 * k + i, np.uint8)
            Image.fromarray(img).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (base / "val" / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 40 + 100 * k, np.uint8)).save(
            base / "val" / "images" / f"val_{k}.JPEG"
        )
        rows.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t1\t1")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows))
    sub["training"]["dataset"]["params"]["source"] = {
        "name": "tiny_imagenet",
        "params": {"root": str(tmp_path / "folder"), "image_size": 16},
    }
    sub["model"]["params"]["input_size"] = 8
    out = run_cli("score", str(write_submission(sub)), "--device", "cpu", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(run_cli("results", "--format", "json").stdout)[0]["status"] == "ok"
