"""The adversarial benchmark on real digits, on CPU: curves, transfer, minimal perturbations,
EOT on a noisy model and the sanity flags (gradient masking)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import bioprior
from bioprior.registry.hooks.loading import get_registry

MODEL = {
    "name": "small_alexnet",
    "params": {"width": 0.25, "input_size": 16, "local_response_norm": False},
}
TRAINING = {"dataset": "digits", "epochs": 8, "batch_size": 64, "lr": 0.01, "momentum": 0.9}
FAST_UNBOUNDED = {"name": "pgd_linf", "params": {"steps": 20, "rel_stepsize": 0.1}}


def _submission(name: str, params: dict, constraints: list | None = None) -> dict:
    return {
        "name": name,
        "model": MODEL,
        "constraints": constraints or [],
        "training": TRAINING,
        "seeds": [0],
        "benchmarks": [{"name": "adversarial", "params": params}],
    }


def _non_increasing(values: list[float]) -> bool:
    return all(b <= a + 1e-12 for a, b in itertools.pairwise(values))


def test_curves_transfer_and_minimal_perturbations_are_stored(bioprior_home):
    params = {
        "images": 48,
        "curves": {
            "fgsm": {"attack": {"name": "fgsm"}, "epsilons": [0.0, 0.05, 0.1, 0.2, 0.5, 1.0]},
            "pgd_linf": {
                "attack": {"name": "pgd_linf", "params": {"steps": 10}},
                "epsilons": [0.0, 0.01, 0.031, 0.1],
            },
            "pgd_l2": {
                "attack": {"name": "pgd_l2", "params": {"steps": 10}},
                "epsilons": [0.0, 0.5, 1.0, 2.0],
            },
        },
        "unbounded": FAST_UNBOUNDED,
        "surrogate_params": {"width": 0.25},
        "minimal_images": 16,
        "minimal_attacks": [
            {"name": "pgd_linf_search", "params": {"steps": 10, "search_steps": 6}},
            {"name": "pgd_l2_search", "params": {"steps": 10, "search_steps": 6}},
            {"name": "cw_l2", "params": {"binary_search_steps": 3, "steps": 30}},
            {"name": "ddn", "params": {"steps": 30}},
            {"name": "fmn_l1", "params": {"steps": 20}},
            {"name": "fmn_l0", "params": {"steps": 20}},
        ],
    }
    (row,) = bioprior.score(_submission("adv-plain", params), device="cpu")
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    assert m["stochastic"] is False and list(m["modes"]) == ["deterministic"]
    mode = m["modes"]["deterministic"]
    assert mode["clean_accuracy"] >= 0.8
    for curve in mode["curves"].values():
        assert _non_increasing(curve["accuracy"])
        assert curve["accuracy"][0] == pytest.approx(mode["clean_accuracy"])
        assert all(e <= r + 1e-12 for e, r in zip(curve["accuracy"], curve["accuracy_raw"]))
    # a strong enough attack works: FGSM at eps 1 and PGD at 0.1 cut accuracy substantially
    assert mode["curves"]["fgsm"]["accuracy"][-1] < 0.5
    assert mode["curves"]["pgd_linf"]["accuracy"][-1] < mode["clean_accuracy"] - 0.2
    assert mode["unbounded_accuracy"] <= 0.05
    # black-box transfer from the cw_conv2d surrogate: weaker than white-box, not flagged
    transfer = mode["transfer"]["accuracy"]
    assert len(transfer) == 4 and _non_increasing(transfer)
    assert m["surrogate"]["model"] == "cw_conv2d" and m["surrogate"]["clean_accuracy"] >= 0.8
    # minimal perturbations: every norm, median over images, consistent with the curves
    norms = mode["minimal"]["norms"]
    assert set(norms) == {"linf", "l2", "l1", "l0"}
    assert 0 < m["median_minimal_linf"] <= m["median_minimal_l2"] <= norms["l1"]["median"]
    assert norms["l2"]["failed"] == 0 and norms["linf"]["failed"] == 0
    flags = m["flags"]
    assert not flags["vanishing_gradients"] and not flags["unbounded_not_zero"]
    assert not flags["stochastic_outputs"]
    assert row["score"] == pytest.approx(mode["robust_accuracy"] / mode["clean_accuracy"])


def test_eot_attack_is_stronger_on_a_noisy_model(bioprior_home):
    params = {
        "images": 64,
        "curves": {
            "pgd_linf": {
                "attack": {"name": "pgd_linf", "params": {"steps": 5}},
                "epsilons": [0.0, 0.05],
            }
        },
        "score_epsilon": 0.05,
        "eot_samples": 8,
        "unbounded": FAST_UNBOUNDED,
        "transfer": False,
        "minimal_images": 0,
    }
    noise = [{"name": "internal_noise", "params": {"sigma": 0.3, "at_inference": True}}]
    (row,) = bioprior.score(_submission("adv-noisy", params, noise), device="cpu")
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    assert m["stochastic"] and not m["stochastic_without_switch"] and m["switches_turned_off"] > 0
    assert set(m["modes"]) == {"deterministic", "stochastic"} and m["score_mode"] == "stochastic"
    assert (
        m["flags"]["stochastic_outputs"]
        and not m["modes"]["deterministic"]["flags"]["stochastic_outputs"]
    )
    stoch = m["modes"]["stochastic"]
    assert stoch["eot_samples"] == 8
    assert stoch["robust_accuracy"] < stoch["single_sample_robust_accuracy"]


class RoundingFrontEnd(nn.Module):
    """Quantizes its input to a few levels (torch.round: zero input gradient), then an MLP."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 2) / 2)


def test_masked_input_gradient_is_flagged(bioprior_home):
    torch.manual_seed(0)
    params = {
        "images": 48,
        "curves": {
            "pgd_linf": {
                "attack": {"name": "pgd_linf", "params": {"steps": 5}},
                "epsilons": [0.0, 0.031],
            }
        },
        "unbounded": FAST_UNBOUNDED,
        "transfer": False,
        "minimal_images": 0,
    }
    (row,) = bioprior.score(
        RoundingFrontEnd(),
        benchmarks=[{"name": "adversarial", "params": params}],
        training={"dataset": "digits", "epochs": 10, "batch_size": 64, "lr": 0.05},
        name="masked",
        device="cpu",
    )
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    mode = m["modes"]["deterministic"]
    assert mode["clean_accuracy"] >= 0.7
    assert mode["zero_gradient_fraction"] == 1.0 and m["flags"]["vanishing_gradients"]
    assert m["flags"]["unbounded_not_zero"]  # gradient steps go nowhere


def test_bad_attack_name_gives_close_matches(bioprior_home):
    params = {"curves": {"pgd_linf": {"attack": {"name": "pgd_lnf"}, "epsilons": [0.0, 0.031]}}}
    sub = _submission("adv-bad", params)
    sub["training"] = {**TRAINING, "epochs": 1}
    from bioprior.registry.submissions.loading import InvalidSubmission

    # refused when the submission is validated, before anything trains
    with pytest.raises(InvalidSubmission, match="did you mean pgd_linf"):
        bioprior.score(sub, device="cpu")


def test_attack_plugins_and_surrogate_registered(registry):
    attacks = set(registry.names("attack"))
    assert {"fgsm", "pgd_linf", "pgd_l2", "cw_l2", "ddn", "fmn_l2", "bb_l2"} <= attacks
    net = bioprior.create_model("cw_conv2d", in_channels=3, num_classes=10, input_size=32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert (len(convs), len(pools), len(linears)) == (4, 2, 2)
    assert linears[0].in_features == 8192  # evanson's Linear(8192, 256)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_brendel_bethge_minimal_perturbation(bioprior_home):
    """Brendel-Bethge needs numba and compiles for 30-60 s on first use in a process."""
    params = {
        "images": 16,
        "curves": {"pgd_linf": {"attack": {"name": "pgd_linf"}, "epsilons": [0.0, 0.031]}},
        "unbounded": FAST_UNBOUNDED,
        "transfer": False,
        "minimal_images": 8,
        "minimal_attacks": [
            {"name": "fmn_l2", "params": {"steps": 50}},
            {"name": "bb_l2", "params": {"steps": 100}},
            {"name": "bb_linf", "params": {"steps": 100}},
        ],
    }
    (row,) = bioprior.score(_submission("adv-bb", params), device="cpu")
    assert row["status"] == "ok", row["error"]
    attacks = row["metrics"]["modes"]["deterministic"]["minimal"]["attacks"]
    assert attacks["bb_l2"]["success_rate"] > 0.5 and attacks["bb_linf"]["success_rate"] > 0.5
    get_registry()  # registry still loads after numba compiled
