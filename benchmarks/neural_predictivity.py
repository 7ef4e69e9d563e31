"""Neural predictivity of a co-trained readout (safarani2021 Fig. 3C; Cadena et al. 2019, Methods).

For a model trained with the ``neural_cotraining`` constraint, the readout's predictions for
held-out stimuli (the constraint's ``test_fraction`` split, same seed; or another data set of the
same neurons named by ``data``) are compared with the recorded responses:

- ``correlation``: Pearson correlation across stimuli between prediction and trial-averaged
  response, per neuron, averaged over neurons;
- ``feve``: fraction of explainable variance explained (Cadena et al. 2019), per neuron::

      FEVE = 1 - (MSE - noise_var) / (total_var - noise_var)

  with MSE the squared error over single trials, ``total_var`` the variance of all single-trial
  responses (around the neuron's grand mean, divided by the number of trials) and ``noise_var``
  the mean over stimuli of the across-repeat variance (unbiased, over the repeats present; NaN
  repeats are missing). A perfect prediction of the noise-free mean scores 1 in expectation and
  a constant prediction at the grand mean scores exactly 0. Averaged over the neurons whose
  explainable fraction ``fev = (total_var - noise_var) / total_var`` exceeds ``min_fev`` (Cadena
  et al. kept neurons above 15 %). FEVE needs >= 2 repeats of a stimulus: "when the data
  allows"; otherwise only the correlation is reported and ``feve_note`` says why.

Metrics always say which data was used and whether it is ``synthetic``. Score: the mean FEVE
clipped to [0, 1]; the mean correlation clipped to [0, 1] when FEVE is not available
(``score_basis``).

A model without a ``neural_cotraining`` readout (the baseline variant of a sweep) is not an
error: the result has ``readout: false``, a ``note`` saying so, and no score; set
``require_readout: true`` to make it a failed job instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bioprior.registry.benchmark import Benchmark, BenchmarkResult
from bioprior.registry.entries import PluginParams
from bioprior.registry.hookspecs import hookimpl
from bioprior.registry.neural import NeuralDataRef

CITATION = (
    "Safarani et al. (2021), NeurIPS (Fig. 3C); Cadena et al. (2019), Deep convolutional models "
    "improve predictions of macaque V1 responses to natural images, PLoS Comput Biol"
)
NO_READOUT = (
    "the model has no neural_cotraining readout (e.g. the baseline of a sweep): nothing to "
    "predict neural responses with"
)


def neuron_correlations(pred, target):
    """Pearson correlation across stimuli per neuron: pred, target (N, neurons) -> (neurons,).

    NaN target entries are left out; a neuron with constant prediction or target gets NaN.
    """
    import torch

    pred, target = pred.double(), target.double()
    valid = torch.isfinite(target)
    n = valid.sum(0).clamp_min(1)
    t = torch.where(valid, target, 0.0)
    p = torch.where(valid, pred, 0.0)
    pm, tm = p.sum(0) / n, t.sum(0) / n
    dp, dt = torch.where(valid, pred - pm, 0.0), torch.where(valid, target - tm, 0.0)
    cov = (dp * dt).sum(0)
    denom = (dp.square().sum(0) * dt.square().sum(0)).sqrt()
    return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.nan).float()


def feve_per_neuron(pred, responses):
    """(FEVE, FEV) per neuron for pred (N, neurons) and responses (repeats, N, neurons).

    Cadena et al. (2019): FEVE = 1 - (MSE - noise_var) / (total_var - noise_var) and FEV =
    (total_var - noise_var) / total_var, all over single trials (module docstring). Needs >= 2
    repeats of at least one stimulus (else both are NaN).
    """
    import torch

    y = responses.double()
    valid = torch.isfinite(y)
    y0 = torch.where(valid, y, 0.0)
    trials = valid.sum((0, 1)).clamp_min(1)  # per neuron
    mse = (torch.where(valid, y - pred.double()[None], 0.0).square()).sum((0, 1)) / trials
    grand = y0.sum((0, 1)) / trials
    total_var = torch.where(valid, y - grand, 0.0).square().sum((0, 1)) / trials
    reps = valid.sum(0)  # (N, neurons)
    stim_mean = y0.sum(0) / reps.clamp_min(1)
    ss = torch.where(valid, y - stim_mean[None], 0.0).square().sum(0)
    has_noise = reps >= 2
    stim_var = torch.where(has_noise, ss / (reps - 1).clamp_min(1), 0.0)
    counted = has_noise.sum(0)
    noise_var = torch.where(counted > 0, stim_var.sum(0) / counted.clamp_min(1), torch.nan)
    explainable = total_var - noise_var
    fev = torch.where(total_var > 0, explainable / total_var.clamp_min(1e-300), torch.nan)
    feve = torch.where(
        explainable > 0, 1 - (mse - noise_var) / explainable.clamp_min(1e-300), torch.nan
    )
    return feve.float(), fev.float()


def predictivity_metrics(pred, responses, min_fev: float = 0.15) -> dict[str, Any]:
    """Correlation and (when >= 2 repeats) FEVE of predictions ``pred`` (N, neurons) for
    ``responses`` (repeats, N, neurons); see the module docstring."""
    import torch

    mean = responses.nanmean(0)
    corr = neuron_correlations(pred, mean)
    finite = torch.isfinite(corr)
    metrics: dict[str, Any] = {
        "correlation": corr[finite].mean().item() if finite.any() else None,
        "neurons": int(responses.shape[2]),
        "stimuli": int(responses.shape[1]),
        "repeats": int(responses.shape[0]),
    }
    if int(torch.isfinite(responses).sum(0).max()) < 2:
        metrics.update(
            feve=None,
            feve_note="FEVE needs >= 2 repeats of a stimulus to estimate the noise variance; this "
            "data has one per stimulus: correlation only",
        )
        return metrics
    feve, fev = feve_per_neuron(pred, responses)
    keep = torch.isfinite(feve) & torch.isfinite(fev) & (fev > min_fev)
    metrics.update(
        feve=feve[keep].mean().item() if keep.any() else None,
        fev=fev[torch.isfinite(fev)].mean().item() if torch.isfinite(fev).any() else None,
        neurons_feve=int(keep.sum()),
        min_fev=min_fev,
    )
    if not keep.any():
        metrics["feve_note"] = f"no neuron has an explainable variance fraction above {min_fev}"
    return metrics


class NeuralPredictivityParams(PluginParams):
    min_fev: float = Field(
        default=0.15,
        ge=0,
        lt=1,
        description="FEVE is averaged over neurons whose explainable variance fraction exceeds "
        "this (Cadena et al. 2019: 15 %).",
    )
    data: NeuralDataRef | None = Field(
        default=None,
        description="Evaluate on this neural data (the same neurons, e.g. recorded test images "
        "when the readout was co-trained on a predictor's responses, safarani2021 Sec. 2) instead "
        "of the constraint's held-out split (null).",
    )
    require_readout: bool = Field(
        default=False,
        description="A model without a neural_cotraining readout is a failed job (true) or a "
        "result with readout: false and no score (false).",
    )


class NeuralPredictivity(Benchmark):
    def run(self, ctx) -> BenchmarkResult:
        from bioprior.plugins.neural_cotraining import cotraining_objectives

        trained = ctx.trained()
        found = cotraining_objectives(trained.module)
        if not found:
            if self.params.require_readout:
                raise ValueError(NO_READOUT)
            return BenchmarkResult({"readout": False, "note": NO_READOUT}, None)
        objective = found[0]
        data = None
        if self.params.data is not None:
            from bioprior.registry.neural import load_neural_data

            data = load_neural_data(self.params.data)
        metrics = objective.evaluate(
            trained.module,
            trained.data.channels,
            trained.data.size,
            data=data,
            min_fev=self.params.min_fev,
        )
        metrics = {"readout": True, **metrics}
        if len(found) > 1:
            metrics["note"] = f"{len(found)} neural_cotraining readouts: the first is evaluated"
        if metrics.get("feve") is not None:
            metrics["score_basis"] = "feve"
            score = metrics["feve"]
        elif metrics.get("correlation") is not None:
            metrics["score_basis"] = "correlation"
            score = metrics["correlation"]
        else:
            metrics["score_basis"] = None
            score = None
        return BenchmarkResult(metrics, None if score is None else min(max(score, 0.0), 1.0))


@hookimpl
def register_benchmarks(register):
    register(
        name="neural_predictivity",
        factory=NeuralPredictivity,
        params=NeuralPredictivityParams,
        version="1",
        citation=CITATION,
        description="Held-out FEVE (Cadena et al. 2019) and correlation of a neural_cotraining "
        "readout (score: FEVE, else correlation).",
        extra={"score": "mean held-out FEVE in [0, 1] (correlation without repeats)"},
    )
