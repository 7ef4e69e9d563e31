"""FEVE and correlation (Cadena et al. 2019) and the neural_predictivity benchmark end to end."""

from __future__ import annotations

import pytest
import torch

import bioprior
from bioprior.registry.toolkit.neural_metrics import (
    feve_per_neuron,
    neuron_correlations,
    predictivity_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _hand_made():
    """Noise-free means mu (6 stimuli x 2 neurons) and two repeats mu and mu + 2 d."""
    mu = torch.tensor([[1.0, 5.0], [2.0, 3.0], [4.0, 4.0], [0.5, 6.0], [3.0, 2.0], [2.5, 1.0]])
    d = torch.tensor([[0.3, -0.2], [-0.1, 0.4], [0.2, 0.1], [-0.3, -0.3], [0.1, 0.2], [0.2, -0.1]])
    return mu, torch.stack([mu, mu + 2 * d])


def test_feve_is_1_for_the_noise_free_mean_and_about_0_for_the_grand_mean():
    mu, responses = _hand_made()
    # with repeats (mu, mu + 2d) the squared error of mu over trials (2 d^2 / 2) equals the
    # unbiased across-repeat variance (2 d^2): FEVE = 1 - (MSE - noise) / (total - noise) = 1
    feve, fev = feve_per_neuron(mu, responses)
    assert torch.allclose(feve, torch.ones(2), atol=1e-6)
    assert ((fev > 0) & (fev < 1)).all()
    grand = responses.mean((0, 1)).expand(6, 2)  # constant prediction at each neuron's mean
    total = responses.flatten(0, 1).var(0, unbiased=True).double()
    noise = responses.var(0, unbiased=True).mean(0).double()
    just_above_0 = (total / 12 / (total - noise)).float()  # the grand mean's biased MSE
    assert torch.allclose(feve_per_neuron(grand, responses)[0], just_above_0, atol=1e-6)
    # an explicit computation for neuron 0
    y = responses[:, :, 0]
    noise = y.var(0, unbiased=True).mean()
    total = (y - y.mean()).square().sum() / (y.numel() - 1)
    pred = mu[:, 0] + 0.5
    mse = (y - pred).square().mean()
    expected = 1 - (mse - noise) / (total - noise)
    assert feve_per_neuron(pred[:, None], responses[:, :, :1])[0].item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_feve_of_the_true_mean_is_about_1_with_many_noisy_repeats():
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(50, 3, generator=g) * 4
    responses = mu + 0.8 * torch.randn(200, 50, 3, generator=g)
    feve, _ = feve_per_neuron(mu, responses)
    assert torch.allclose(feve, torch.ones(3), atol=0.03)
    noisy = mu + torch.randn(50, 3, generator=g)  # a worse prediction explains less
    assert (feve_per_neuron(noisy, responses)[0] < 0.9).all()


def test_missing_repeats_are_ignored():
    mu, responses = _hand_made()
    extra = torch.full((1, 6, 2), float("nan"))
    feve, _ = feve_per_neuron(mu, torch.cat([responses, extra]))
    assert torch.allclose(feve, torch.ones(2), atol=1e-6)


def test_correlations_and_metrics_with_and_without_repeats():
    mu, responses = _hand_made()
    assert torch.allclose(neuron_correlations(3 * mu + 1, mu), torch.ones(2), atol=1e-6)
    assert torch.allclose(neuron_correlations(-mu, mu), -torch.ones(2), atol=1e-6)
    assert torch.isnan(neuron_correlations(torch.ones(6, 2), mu)).all()
    full = predictivity_metrics(mu, responses)
    assert full["feve"] == pytest.approx(1.0, abs=1e-6) and full["repeats"] == 2
    assert full["neurons_feve"] == 2 and 0 < full["fev"] < 1
    single = predictivity_metrics(mu, responses[:1])
    assert single["feve"] is None and "2 repeats" in single["feve_note"]
    assert single["correlation"] == pytest.approx(neuron_correlations(mu, responses[0]).mean())
    none_kept = predictivity_metrics(mu, responses, min_fev=0.999)
    assert none_kept["feve"] is None and none_kept["neurons_feve"] == 0


def _submission(write_submission, neural_params):
    return write_submission(
        {
            "name": "tiny-cotraining",
            "model": {
                "name": "vgg19_bn_fcn",
                "params": {"width": 0.0625, "input_size": 16, "in_channels": 1},
            },
            "constraints": [
                {
                    "name": "neural_cotraining",
                    "params": {
                        "data": {"name": "synthetic_v1", "params": neural_params},
                        "neural_batch_ratio": 0.25,
                    },
                }
            ],
            "training": {
                "dataset": {
                    "name": "subset",
                    "params": {"examples_per_class": 20, "source": "digits"},
                },
                "epochs": 1,
                "batch_size": 32,
                "optimizer": "adam",
                "lr": 0.003,
            },
            "sweep": {"constraints.0.enabled": [False, True]},
            "seeds": [0],
            "benchmarks": [{"name": "neural_predictivity"}],
        }
    )


def test_benchmark_end_to_end_with_and_without_readout(bioprior_home, write_submission, tmp_path):
    data = {"num_stimuli": 80, "num_neurons": 5, "size": 16, "repeats": 3, "stimuli": "digits"}
    path = _submission(write_submission, data)
    rows = bioprior.score(path, device="cpu", db=tmp_path / "a.sqlite")
    by = {r["variant"]["constraints.0.enabled"]: r for r in rows}
    assert {r["status"] for r in rows} == {"ok"}
    baseline, cotrained = by[False], by[True]
    assert (
        baseline["metrics"]["readout"] is False
        and "no neural_cotraining readout" in (baseline["metrics"]["note"])
    )
    assert baseline["score"] is None
    m = cotrained["metrics"]
    assert m["readout"] is True and m["synthetic"] is True and "SYNTHETIC" in m["data"]
    assert m["stimuli"] == 16 and m["neurons"] == 5 and m["repeats"] == 3  # 20 % held out
    assert isinstance(m["correlation"], float) and m["score_basis"] in ("feve", "correlation")
    # the score is the FEVE (else the correlation) of the held-out split, clipped to [0, 1]
    assert cotrained["score"] == pytest.approx(min(max(m[m["score_basis"]], 0.0), 1.0))
    # a second run from the cached weights (readout included) gives the same numbers
    again = bioprior.score(path, device="cpu", db=tmp_path / "b.sqlite")
    cached = next(r for r in again if r["variant"]["constraints.0.enabled"])
    assert cached["metrics"]["correlation"] == m["correlation"]
    assert cached["weights_hash"] == cotrained["weights_hash"]


def test_single_repeat_data_reports_correlation_only(bioprior_home, write_submission, tmp_path):
    data = {"num_stimuli": 60, "num_neurons": 4, "size": 16, "repeats": 1, "stimuli": "digits"}
    rows = bioprior.score(_submission(write_submission, data), device="cpu")
    m = next(r for r in rows if r["variant"]["constraints.0.enabled"])["metrics"]
    assert m["feve"] is None and "repeats" in m["feve_note"] and m["score_basis"] == "correlation"


def _neuralpredictors_fev(targets, predictions):
    """FEVE and FEV as Cadena et al.'s published code computes them (neuralpredictors'
    ``measures.np_functions.fev`` and ``explainable_var``), written out with numpy: ``targets``
    and ``predictions`` are lists over images of (repeats, neurons) arrays."""
    import numpy as np

    img_var, pred_var = [], []
    for target, prediction in zip(targets, predictions, strict=True):
        pred_var.append((target - prediction) ** 2)
        img_var.append(np.var(target, axis=0, ddof=1))
    pred_var, img_var = np.vstack(pred_var), np.vstack(img_var)
    total_var = np.var(np.vstack(targets), axis=0, ddof=1)
    noise_var = np.mean(img_var, axis=0)
    feve = 1 - (pred_var.mean(axis=0) - noise_var) / (total_var - noise_var)
    return feve, (total_var - noise_var) / total_var


@pytest.mark.parametrize("missing", [False, True])
def test_feve_and_fev_agree_with_cadenas_published_code(missing):
    """Variances with ddof 1 throughout, also when images have different numbers of repeats
    (missing trials are NaN here, absent there)."""
    import numpy as np

    g = np.random.default_rng(0)
    images, neurons, repeats = 40, 5, 4
    mu = g.uniform(0, 3, (images, neurons))
    responses = mu + 0.7 * g.standard_normal((repeats, images, neurons))
    pred = mu + 0.3 * g.standard_normal((images, neurons))
    kept = np.full(images, repeats)
    if missing:  # 2, 3 or 4 repeats per image
        kept = g.integers(2, repeats + 1, images)
        for i, k in enumerate(kept):
            responses[k:, i] = np.nan
    targets = [responses[: kept[i], i] for i in range(images)]
    predictions = [np.repeat(pred[i][None], kept[i], 0) for i in range(images)]
    feve_ref, fev_ref = _neuralpredictors_fev(targets, predictions)
    feve, fev = feve_per_neuron(torch.from_numpy(pred), torch.from_numpy(responses))
    np.testing.assert_allclose(feve.numpy(), feve_ref, rtol=1e-5)
    np.testing.assert_allclose(fev.numpy(), fev_ref, rtol=1e-5)
