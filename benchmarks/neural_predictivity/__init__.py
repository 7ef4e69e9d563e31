"""Neural predictivity of a model's neural readout (safarani2021 Fig. 3C; Cadena et al. 2019).

Any constraint that attaches a :class:`~bioprior.plugin.NeuralReadout` (the
``neural_cotraining`` readout is one) is scored: the readout's predictions for its held-out
stimuli (for ``neural_cotraining``, the constraint's ``test_fraction`` split, same seed; or
another data set of the same neurons named by ``data``) are compared with the recorded
responses by :func:`~bioprior.plugin.evaluate_readout`: ``correlation``
(Pearson, per neuron, averaged) and ``feve`` (fraction of explainable variance explained,
Cadena et al. 2019, over neurons whose explainable fraction exceeds ``min_fev``; needs >= 2
repeats, "when the data allows"; otherwise ``feve_note`` says why). The metrics' definitions are
in :mod:`bioprior.registry.toolkit.neural_metrics`.

Metrics always say which data was used and whether it is ``synthetic``. Score: the mean FEVE
clipped to [0, 1]; the mean correlation clipped to [0, 1] when FEVE is not available
(``score_basis``).

A model without a readout (the baseline variant of a sweep) is not an error: the result has
``readout: false``, a ``note`` saying so, and no score; set ``require_readout: true`` to make it
a failed job instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bioprior.plugin import Benchmark, BenchmarkResult, NeuralDataRef, PluginParams, hookimpl

CITATION = (
    "Safarani et al. (2021), NeurIPS (Fig. 3C); Cadena et al. (2019), Deep convolutional models "
    "improve predictions of macaque V1 responses to natural images, PLoS Comput Biol"
)
NO_READOUT = (
    "the model has no neural_cotraining readout (e.g. the baseline of a sweep): nothing to "
    "predict neural responses with"
)


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


class NoReadoutError(LookupError):
    """The model carries no neural readout and the benchmark was told to require one."""


class NeuralPredictivity(Benchmark):
    def run(self, ctx) -> BenchmarkResult:
        from bioprior.plugin import evaluate_readout, load_neural_data, readouts

        trained = ctx.trained()
        found = readouts(trained.module)
        if not found:
            if self.params.require_readout:
                raise NoReadoutError(NO_READOUT)
            return BenchmarkResult({"readout": False, "note": NO_READOUT}, None)
        data = None if self.params.data is None else load_neural_data(self.params.data)
        metrics = evaluate_readout(
            found[0],
            trained.module,
            trained.data.channels,
            trained.data.size,
            data=data,
            min_fev=self.params.min_fev,
        )
        metrics = {"readout": True, **metrics}
        if len(found) > 1:
            metrics["note"] = f"{len(found)} neural readouts: the first is evaluated"
        return BenchmarkResult(metrics, _score(metrics))


def _score(metrics: dict[str, Any]) -> float | None:
    """FEVE, else the correlation, clipped to [0, 1]; records which in ``score_basis``."""
    basis = next((k for k in ("feve", "correlation") if metrics.get(k) is not None), None)
    metrics["score_basis"] = basis
    return None if basis is None else min(max(metrics[basis], 0.0), 1.0)


@hookimpl
def register_benchmarks(register):
    register(
        name="neural_predictivity",
        factory=NeuralPredictivity,
        params=NeuralPredictivityParams,
        version="2",  # 2: total variance with ddof 1, as Cadena et al.'s code (FEV, FEVE)
        citation=CITATION,
        description="Held-out FEVE (Cadena et al. 2019) and correlation of a model's neural "
        "readout, e.g. neural_cotraining's (score: FEVE, else correlation).",
        extra={"score": "mean held-out FEVE in [0, 1] (correlation without repeats)"},
    )
