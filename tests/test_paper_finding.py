"""tsvetkov2020's main finding (Exp. 1, Fig. 2) at small scale on real digits, on CPU.

The quickstart submission is the experiment: a small AlexNet without internal noise memorizes
Gaussian random images; with the paper's high noise level (sigma = 0.6, ReLU) it does not, while
it still generalizes on real digits.
"""

from __future__ import annotations

import pytest
from conftest import ROOT

import bioprior


def test_internal_noise_blocks_memorization_but_not_learning(bioprior_home):
    rows = bioprior.score(ROOT / "submissions" / "quickstart.yaml", device="cpu")
    by_sigma = {r["variant"]["constraints.0.params.sigma"]: r for r in rows}
    assert set(by_sigma) == {0.0, 0.6} and all(r["status"] == "ok" for r in rows)

    plain, noisy = by_sigma[0.0]["metrics"], by_sigma[0.6]["metrics"]
    chance = noisy["chance"]
    assert plain["random_train_acc"] >= 0.90  # the unconstrained network memorizes random images
    assert noisy["random_train_acc"] <= chance + 0.15  # with internal noise it stays near chance
    assert noisy["natural_test_acc"] >= 0.80  # ... while it still learns real digits
    assert by_sigma[0.6]["score"] > by_sigma[0.0]["score"] + 0.5


def test_capacity_sweep_cells(bioprior_home):
    sub = {
        "name": "capacity",
        "model": {"name": "small_alexnet", "params": {"width": 0.1, "input_size": 8}},
        "training": {"dataset": "digits", "epochs": 2, "batch_size": 32, "lr": 0.02},
        "benchmarks": [
            {
                "name": "memorization_capacity",
                "params": {"classes": [2, 5], "examples_per_class": [10, 20]},
            }
        ],
    }
    (row,) = bioprior.score(sub, device="cpu")
    cells = row["metrics"]["cells"]
    assert [(c["classes"], c["examples_per_class"]) for c in cells] == [
        (2, 10),
        (2, 20),
        (5, 10),
        (5, 20),
    ]
    assert all(c["chance"] == 1 / c["classes"] for c in cells)

    def cell_score(c):  # learned (training accuracy) * (1 - memorized), chance-normalized
        def norm(acc):
            return min(max((acc - c["chance"]) / (1 - c["chance"]), 0.0), 1.0)

        return norm(c["natural_train_acc"]) * (1 - norm(c["random_train_acc"]))

    assert row["score"] == pytest.approx(sum(map(cell_score, cells)) / len(cells))
    assert len(list((bioprior_home / "weights").glob("*.safetensors"))) == 8
