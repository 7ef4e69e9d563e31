"""Neural predictivity: FEVE and correlations (Cadena et al. 2019, Methods; safarani2021 Fig. 3C)
and the small readout protocol through which any constraint's readout is scored.

- ``correlation``: Pearson correlation across stimuli between prediction and trial-averaged
  response, per neuron, averaged over neurons;
- ``feve``: fraction of explainable variance explained (Cadena et al. 2019), per neuron::

      FEVE = 1 - (MSE - noise_var) / (total_var - noise_var)

  with MSE the mean squared error over single trials, ``total_var`` the unbiased variance (ddof
  1) of all single-trial responses around the neuron's grand mean and ``noise_var`` the mean over
  stimuli of the unbiased across-repeat variance (ddof 1); NaN trials are missing and every
  count is over the trials present. This is Cadena et al.'s published code (``fev`` and
  ``explainable_var`` of their analysis, as in neuralpredictors: ``np.var(..., ddof=1)``); until
  ``neural_predictivity`` version 2 ``total_var`` divided by the number of trials, which moved
  FEV by about (1 - FEV) / trials and neurons across the 15 % filter. A perfect prediction of
  the noise-free mean scores 1 in expectation; a constant prediction at the grand mean scores
  ``total_var / trials / (total_var - noise_var)``, just above 0. Averaged over the neurons whose
  explainable fraction ``fev = (total_var - noise_var) / total_var`` exceeds ``min_fev`` (Cadena
  et al. kept neurons above 15 %). FEVE needs >= 2 repeats of a stimulus; otherwise only the
  correlation is reported and ``feve_note`` says why.

A module attached to a model (typically a constraint's training objective) that predicts neural
responses is a :class:`NeuralReadout`: it says how many neurons it predicts, which data it is
evaluated on by default (:meth:`~NeuralReadout.held_out`) and predicts rates for stimuli
(:meth:`~NeuralReadout.predict_neural`). :func:`readouts` finds them in a model and
:func:`evaluate_readout` scores one (evaluation mode, RNG seeded and restored). The
``neural_predictivity`` benchmark scores any model that carries one.

torch is imported inside the functions (this module is imported by torch-free plugin modules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bioprior.registry.contracts.neural_data import NeuralData


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
    (total_var - noise_var) / total_var, all over single trials, variances with ddof 1 (module
    docstring). Needs >= 2 repeats of at least one stimulus (else both are NaN).
    """
    import torch

    y = responses.double()
    valid = torch.isfinite(y)
    y0 = torch.where(valid, y, 0.0)
    trials = valid.sum((0, 1)).clamp_min(1)  # per neuron
    mse = (torch.where(valid, y - pred.double()[None], 0.0).square()).sum((0, 1)) / trials
    grand = y0.sum((0, 1)) / trials
    # unbiased (ddof 1) as Cadena et al.'s code; NaN where a neuron has a single trial
    total_var = torch.where(valid, y - grand, 0.0).square().sum((0, 1)) / (trials - 1)
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


@runtime_checkable
class NeuralReadout(Protocol):
    """What :func:`evaluate_readout` needs of a readout attached to a model."""

    @property
    def num_neurons(self) -> int:
        """Neurons it predicts (those of its data)."""
        ...

    @property
    def readout_seed(self) -> int:
        """Seed of the RNG while it is evaluated (stochastic models give the same numbers)."""
        ...

    def held_out(self) -> tuple[NeuralData, str]:
        """The data it is evaluated on by default and a phrase saying which (e.g. "held-out
        0.2 of the stimuli")."""
        ...

    def predict_neural(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Rates (N, neurons) for stimuli ``x`` already fitted to the model's input."""
        ...


def readouts(model: nn.Module) -> list[NeuralReadout]:
    """Every :class:`NeuralReadout` among ``model``'s modules, in module order."""
    return [m for m in model.modules() if isinstance(m, NeuralReadout)]


def evaluate_readout(
    readout: NeuralReadout,
    model: nn.Module,
    channels: int,
    size: int,
    data: NeuralData | None = None,
    min_fev: float = 0.15,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Correlation and FEVE of ``readout`` on its held-out data (or on ``data``, the same
    neurons), stimuli fitted to ``channels`` x ``size``; in evaluation mode with the RNG seeded
    from ``readout.readout_seed`` and restored, the modules' modes restored after."""
    import torch

    from bioprior.registry.toolkit.data import fit_images  # lazy: torch

    if data is None:
        data, which = readout.held_out()
    else:
        which = "all stimuli"
    info = {"data": data.name, "synthetic": bool(data.synthetic), "evaluated_on": which}
    if data.num_stimuli == 0:
        return {**info, "correlation": None, "feve": None, "note": "no held-out stimuli"}
    if data.responses is None or data.num_neurons != readout.num_neurons:
        raise ValueError(
            f"{data.name}: {data.num_neurons} neurons with responses, the readout has "
            f"{readout.num_neurons}"
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(readout.readout_seed)
            preds = []
            with torch.no_grad():
                for i in range(0, data.num_stimuli, batch_size):
                    x = fit_images(data.stimuli[i : i + batch_size], channels, size)
                    preds.append(readout.predict_neural(model, x.to(device)).cpu())
    finally:
        for m, mode in modes:
            m.training = mode
    return {**info, **predictivity_metrics(torch.cat(preds), data.responses, min_fev)}


__all__ = [
    "NeuralReadout",
    "evaluate_readout",
    "feve_per_neuron",
    "neuron_correlations",
    "predictivity_metrics",
    "readouts",
]
