"""The torch side of safarani2021's co-training (:mod:`bioprior.plugins.neural_cotraining`, which
documents the readout, the loss and the deviations): the Gaussian readout, the training
objective (a :class:`~bioprior.plugin.NeuralReadout`, so the
``neural_predictivity`` benchmark scores it) and :func:`attach`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bioprior.plugin import (
    UNKNOWN_GEOMETRY,
    ConstraintError,
    InputGeometry,
    TrainingObjective,
    attach_objective,
    capture,
    evaluate_readout,
    exclude_from_weight_decay,
    fit_images,
    load_neural_data,
)
from bioprior.plugins.neural_cotraining import NeuralCoTrainingParams


def kendall_loss(task_loss, neural_loss, log_var_task, log_var_neural, neural: str = "poisson"):
    """``exp(-s_t) L_t + s_t / 2 + c exp(-s_n) L_n + s_n / 2`` with c = 1/2 for a Gaussian (mse)
    and 1 for a Poisson / classification-like neural term (Kendall et al. 2018, Eq. 7 / 10)."""
    c = 0.5 if neural == "mse" else 1.0
    return (
        torch.exp(-log_var_task) * task_loss
        + 0.5 * log_var_task
        + c * torch.exp(-log_var_neural) * neural_loss
        + 0.5 * log_var_neural
    )


def neural_loss(rates, target, kind: str = "poisson"):
    """Mean Poisson NLL ``rate - y log(rate) + lgamma(y + 1)`` or MSE over the finite targets."""
    valid = torch.isfinite(target)
    t = torch.where(valid, target, 0.0)
    if kind == "mse":
        per = (rates - t).square()
    else:
        per = rates - t * torch.log(rates + 1e-8) + torch.lgamma(t + 1)
    return torch.where(valid, per, 0.0).sum() / valid.sum().clamp_min(1)


def shuffle_responses(responses, generator):
    """Permute responses (..., N, neurons) across the N stimuli, independently per neuron (the
    same permutation for every leading index, e.g. all repeats of a stimulus)."""
    n, k = responses.shape[-2:]
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(k)], 1)  # (N, K)
    index = perms.to(responses.device).expand(*responses.shape[:-2], n, k)
    return torch.gather(responses, -2, index)


def inverse_elu1(rate):
    """z with ELU(z) + 1 = rate (rate clamped to >= 1e-4)."""
    rate = rate.clamp_min(1e-4)
    return torch.where(rate >= 1, rate - 1, torch.log(rate))


def resolve_layer(net, layer: str) -> str:
    """The qualified module name ``layer`` designates in ``net`` (module docstring)."""
    skip = [n for n, m in net.named_modules() if isinstance(m, TrainingObjective)]
    names = {
        n: m
        for n, m in net.named_modules()
        if n and not any(n == s or n.startswith(s + ".") for s in skip)
    }
    if layer.startswith("conv:"):
        try:
            k = int(layer.split(":", 1)[1])
        except ValueError:
            raise ConstraintError(f"layer {layer!r}: expected conv:N with N an integer") from None
        convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
        if not 1 <= k <= len(convs):
            raise ConstraintError(f"layer {layer!r}: the model has {len(convs)} Conv2d layers")
        return convs[k - 1]
    if layer in names:
        return layer
    ends = [n for n in names if n.endswith("." + layer)]
    if len(ends) == 1:
        return ends[0]
    if len(ends) > 1:
        raise ConstraintError(f"layer {layer!r} is ambiguous: {ends[:6]}; give the full name")
    sample = [n for n in names if n.count(".") <= 1][:12]
    raise ConstraintError(
        f"{type(net).__name__} has no module {layer!r}: give a name from net.named_modules() "
        f"(e.g. {sample}) or conv:N (the N-th Conv2d)"
    )


def _layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output when ``model`` runs on ``x``; the pass stops right after the layer."""
    (out,) = capture(model, [layer], x, stop=True)
    if out is None:
        raise RuntimeError(f"the layer {type(layer).__name__} was not reached in the forward pass")
    return out


class GaussianReadout(nn.Module):
    """Per neuron: bilinear read of the map at a (sampled in training) Gaussian position,
    feature weights, bias, ELU + 1 (module docstring; Lurz et al. 2021)."""

    def __init__(
        self,
        channels: int,
        neurons: int,
        init_mu_range: float = 0.4,
        init_sigma: float = 0.6,
        mean_response: torch.Tensor | None = None,
    ):
        super().__init__()
        self.mu = exclude_from_weight_decay(
            nn.Parameter(torch.empty(neurons, 2).uniform_(-init_mu_range, init_mu_range))
        )
        self.sigma = exclude_from_weight_decay(
            nn.Parameter(torch.empty(neurons).uniform_(0, init_sigma))
        )
        self.features = nn.Parameter(torch.full((neurons, channels), 1.0 / channels))
        bias = torch.zeros(neurons)
        if mean_response is not None:
            bias = inverse_elu1(torch.nan_to_num(mean_response.float(), nan=1.0))
        self.bias = nn.Parameter(bias)

    def grid(self, n: int, sample: bool) -> torch.Tensor:
        """(n, neurons, 1, 2) positions in grid_sample's [-1, 1] (x, y) coordinates."""
        mu = self.mu.expand(n, *self.mu.shape)
        if sample:
            noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype)
            mu = mu + self.sigma.clamp_min(0)[None, :, None] * noise
        return mu.clamp(-1, 1).unsqueeze(2)

    def forward(self, x: torch.Tensor, sample: bool | None = None) -> torch.Tensor:
        sample = self.training if sample is None else sample
        x = x.float()
        y = F.grid_sample(x, self.grid(len(x), sample), mode="bilinear", align_corners=True)
        z = torch.einsum("nck,kc->nk", y[..., 0], self.features) + self.bias  # y: (n, C, K, 1)
        return F.elu(z) + 1


class NeuralCoTrainingObjective(TrainingObjective):
    """Readout + learned log-variances; adds the neural term to the trainer's loss."""

    def __init__(self, params, layer_name: str, channels: int, data, mean_response):
        super().__init__()
        self.config = params
        self.layer_name = layer_name
        self.readout = GaussianReadout(
            channels,
            data.num_neurons,
            params.init_mu_range,
            params.init_sigma,
            mean_response,
        )
        learned = params.weighting == "learned"
        self.log_var_task = exclude_from_weight_decay(
            nn.Parameter(torch.zeros(()), requires_grad=learned)
        )
        self.log_var_neural = exclude_from_weight_decay(
            nn.Parameter(torch.zeros(()), requires_grad=learned)
        )
        self._root: list[nn.Module] = []
        self._model: list[nn.Module] = []
        self._ready = False
        self._running = [0.0, 0]

    # -- data ------------------------------------------------------------------------
    def splits(self):
        data = load_neural_data(self.config.data)
        return data.split(self.config.test_fraction, self.config.split_seed)

    def neural_batch_size(self, batch_size: int) -> int:
        return max(1, round(self.config.neural_batch_ratio * batch_size))

    def prepare(self, ctx) -> None:
        train, _ = self.splits()
        targets = train.mean_responses()
        if self.config.loss == "poisson" and bool((targets < 0).any()):
            raise ValueError(
                f"{train.name}: negative responses cannot have a Poisson loss; use loss: mse"
            )
        if self.config.shuffle:
            gen = torch.Generator().manual_seed(self.config.split_seed)
            targets = shuffle_responses(targets, gen)
        self._x = fit_images(train.stimuli, ctx.channels, ctx.size).to(ctx.device)
        self._y = targets.float().to(ctx.device)
        self._channels, self._size = ctx.channels, ctx.size
        self._batch = self.neural_batch_size(ctx.batch_size)
        self._gen = ctx.generator
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self._running = [torch.zeros((), device=ctx.device), 0]
        self._ready = True

    def _indices(self, n: int) -> torch.Tensor:
        parts, need = [], n
        while need > 0:
            if self._pos >= len(self._order):
                self._order = torch.randperm(len(self._x), generator=self._gen)
                self._pos = 0
            take = self._order[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            parts.append(take)
        return torch.cat(parts).to(self._x.device)

    # -- forward -----------------------------------------------------------------------
    def layer(self) -> nn.Module:
        if not self._root:
            raise RuntimeError("neural_cotraining objective is not attached to a network")
        return self._root[0].get_submodule(self.layer_name)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Rates (N, neurons) for fitted stimuli ``x`` (model input units, [0, 1]); the
        shared layers run as the trainer runs them (bf16 autocast on CUDA if asked), the
        readout in float32."""
        features = _layer_output(model, self.layer(), x)
        with torch.autocast(x.device.type, enabled=False):
            return self.readout(features.float())

    def total_loss(self, model, task_loss, batch):
        if not self._ready:
            raise RuntimeError("neural_cotraining: prepare() was not called")
        self._model = [model]
        idx = self._indices(self._batch)
        rates = self.predict(model, self._x[idx])
        with torch.autocast(rates.device.type, enabled=False):
            loss_n = neural_loss(rates, self._y[idx], self.config.loss)
        self._running[0] = self._running[0] + loss_n.detach()
        self._running[1] += 1
        if self.config.weighting == "equal":
            return task_loss + loss_n
        return kendall_loss(
            task_loss, loss_n, self.log_var_task, self.log_var_neural, self.config.loss
        )

    # -- evaluation (the NeuralReadout protocol of bioprior.plugin) --------------------------------
    @property
    def num_neurons(self) -> int:
        return int(self.readout.features.shape[0])

    @property
    def readout_seed(self) -> int:
        return self.config.split_seed

    def held_out(self):
        _, test = self.splits()
        return test, f"held-out {self.config.test_fraction:g} of the stimuli"

    def predict_neural(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.predict(model, x)

    def evaluate(
        self,
        model: nn.Module,
        channels: int,
        size: int,
        data=None,
        min_fev: float = 0.15,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """Predictivity on the held-out split (or on ``data``, the same neurons), in
        evaluation mode with the RNG state preserved (:func:`evaluate_readout`)."""
        return evaluate_readout(self, model, channels, size, data, min_fev, batch_size)

    def training_state(self) -> dict[str, Any]:
        """Its own data order, the position in it and the epoch's running loss (checkpoints)."""
        return {"order": self._order, "pos": self._pos, "running": list(self._running)}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self._order, self._pos = state["order"], int(state["pos"])
        self._running = list(state["running"])

    def epoch_metrics(self) -> dict[str, float]:
        total, steps = self._running
        out = {
            "neural_loss": float(total) / steps if steps else float("nan"),
            "neural_log_var": self.log_var_neural.item(),
            "task_log_var": self.log_var_task.item(),
        }
        self._running = [torch.zeros_like(total) if steps else total, 0]
        if self._model and self.config.test_fraction > 0:
            held = self.evaluate(self._model[0], self._channels, self._size)
            for key in ("correlation", "feve"):
                if isinstance(held.get(key), float):
                    out[f"neural_test_{key}"] = held[key]
        return out


def cotraining_objectives(model: nn.Module) -> list[NeuralCoTrainingObjective]:
    """The ``neural_cotraining`` objectives attached anywhere in ``model``."""
    return [m for m in model.modules() if isinstance(m, NeuralCoTrainingObjective)]


def attach(
    net: nn.Module, params: NeuralCoTrainingParams, geometry: InputGeometry = UNKNOWN_GEOMETRY
) -> nn.Module:
    """Resolve the layer, load the data, build the objective and attach it to ``net``
    (``attach_objective``: the net's own forward is unchanged, a Sequential included)."""
    name = resolve_layer(net, params.layer)
    data = load_neural_data(params.data)
    if data.responses is None:
        raise ConstraintError(f"{data.name}: neural_cotraining needs responses, not a similarity")
    train, _ = data.split(params.test_fraction, params.split_seed)
    if train.num_stimuli == 0:
        raise ConstraintError(f"{data.name}: no training stimuli left after the held-out split")
    channels = _probe_channels(net, name, geometry)
    mean = train.mean_responses().nanmean(0)
    objective = NeuralCoTrainingObjective(params, name, channels, data, mean)
    objective._root = [net]  # a plain reference: not a submodule (no module cycle)
    return attach_objective(net, objective)


def _probe_channels(net: nn.Module, name: str, geometry: InputGeometry) -> int:
    """Channels of ``name``'s output, from one forward pass in eval mode (state restored)."""
    in_channels, size = geometry.in_channels, geometry.input_size
    if in_channels is None:
        conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = conv.in_channels if conv is not None else 3
    size = size or 32
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        param = next(net.parameters(), None)
        x = torch.zeros(
            1, in_channels, size, size, device=param.device if param is not None else None
        )
        with torch.no_grad():
            out = _layer_output(net, net.get_submodule(name), x)
    finally:
        for m, mode in modes:
            m.training = mode
    if out.ndim != 4:
        raise ConstraintError(f"layer {name!r} outputs {tuple(out.shape)}, not a (N, C, H, W) map")
    return int(out.shape[1])
