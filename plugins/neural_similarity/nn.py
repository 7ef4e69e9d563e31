"""The tensors of li2019's neural similarity regularizer: Eq. 1, 2, 8, 9, 10, layer selection,
the training objective and the constraint (parameters, deviations and choices:
:mod:`bioprior.plugins.neural_similarity`; kept apart so that listing plugins never imports torch).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bioprior.plugin import (
    ACTIVATION_TYPES,
    UNKNOWN_GEOMETRY,
    Batch,
    Constraint,
    ConstraintError,
    HiddenActivation,
    InputGeometry,
    ObjectiveContext,
    TrainingObjective,
    attach_objective,
    capture,
    exclude_from_weight_decay,
)
from bioprior.plugins.neural_similarity import FeatureTarget, NeuralSimilarityParams

RESIDUAL_BLOCKS = ("BasicBlock", "Bottleneck", "PreActBlock", "PreActBottleneck")


# -- the paper's definitions on tensors ------------------------------------------------------


def snr_weights(responses: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 1: ``w_a = sigma_a / eta_a`` from (repeats, N, neurons) responses (NaN = missing).

    ``sigma_a^2 = Var_i(E_t[r_ait])``; ``eta_a^2 = E_i[Var_t(r_ait)]`` over the stimuli with at
    least two repeats (unbiased variances). With no such stimulus the weights are uniform (1).
    """
    r = responses.double()
    valid = ~torch.isnan(r)
    count = valid.sum(0)  # (N, neurons)
    mean = torch.where(valid, r, 0.0).sum(0) / count.clamp_min(1)
    signal = mean.var(0)  # over stimuli
    sq = torch.where(valid, (r - mean) ** 2, 0.0).sum(0)
    multi = count >= 2
    if not multi.any():
        return torch.ones(r.shape[2], dtype=responses.dtype)
    trial_var = sq / (count - 1).clamp_min(1)
    noise = torch.where(multi, trial_var, 0.0).sum(0) / multi.sum(0).clamp_min(1)
    w = signal.sqrt() / noise.sqrt().clamp_min(eps)
    return w.to(responses.dtype)


def centred_unit(x: torch.Tensor, mean: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x_i - mean) / ||x_i - mean||`` for rows x_i of (B, D) features (Eq. 2 / Eq. 9)."""
    d = x - mean
    return d / d.norm(dim=1, keepdim=True).clamp_min(eps)


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """(N, N) centred cosine similarity of N feature vectors, centred on their mean (Eq. 2 / 9)."""
    x = x.flatten(1).double()
    e = centred_unit(x, x.mean(0))
    return (e @ e.T).clamp(-1, 1).float()


def response_similarity(responses: torch.Tensor, weighted: bool = True) -> torch.Tensor:
    """The (N, N) target of Eq. 2 from (repeats, N, neurons) responses (trial averages, Eq. 1
    weights when ``weighted``)."""
    mean = responses.nanmean(0)
    if weighted:
        mean = mean * snr_weights(responses)
    return similarity_matrix(mean)


def fisher_z(s: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """arctanh of similarities clipped to [-1 + clip_eps, 1 - clip_eps] (Eq. 8)."""
    return torch.atanh(s.clamp(-1 + clip_eps, 1 - clip_eps))


def similarity_loss(s_cnn: torch.Tensor, s_neural: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Eq. 8 averaged over pairs: mean [arctanh(S_cnn) - arctanh(S_neural)]^2."""
    return (fisher_z(s_cnn, clip_eps) - fisher_z(s_neural, clip_eps)).pow(2).mean()


def shuffled(target: torch.Tensor, seed: int) -> torch.Tensor:
    """The 'Shuffle' control: rows and columns permuted by one seeded stimulus permutation."""
    perm = torch.randperm(len(target), generator=torch.Generator().manual_seed(seed))
    return target[perm][:, perm.to(target.device)]


# -- layer selection -------------------------------------------------------------------------


def candidate_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers ``auto`` and integer indices choose from, in module order.

    ResNets: the stem's last activation before the first residual block, then every residual
    block. Other nets: the hidden activation modules (outermost wrapper when wrapped).
    """
    named = list(net.named_modules())
    blocks = [(n, m) for n, m in named if type(m).__name__ in RESIDUAL_BLOCKS]
    acts: list[tuple[str, nn.Module]] = []
    for name, module in named:
        if isinstance(module, (HiddenActivation, *ACTIVATION_TYPES)) and not any(
            name.startswith(a + ".") for a, _ in acts
        ):
            acts.append((name, module))
    if not blocks:
        return acts
    order = {n: i for i, (n, _) in enumerate(named)}
    first = order[blocks[0][0]]
    inside = tuple(b + "." for b, _ in blocks)
    stem = [(n, m) for n, m in acts if order[n] < first and not n.startswith(inside)]
    return stem[-1:] + blocks


def select_layers(net: nn.Module, spec: str | list[str | int]) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs ``layers`` names (see :class:`NeuralSimilarityParams`)."""
    candidates = candidate_layers(net)
    if spec == "auto":
        if not candidates:
            raise ConstraintError(
                f"{type(net).__name__}: no activation or residual block to take layers from; "
                "name them in `layers`"
            )
        k = min(5, len(candidates))
        index = sorted({round(i * (len(candidates) - 1) / max(1, k - 1)) for i in range(k)})
        return [candidates[i] for i in index]
    modules = dict(net.named_modules())
    chosen: list[tuple[str, nn.Module]] = []
    for item in spec:
        if isinstance(item, int):
            if not -len(candidates) <= item < len(candidates):
                raise ConstraintError(
                    f"layers: index {item} out of range; {type(net).__name__} has "
                    f"{len(candidates)} candidate layers: {[n for n, _ in candidates]}"
                )
            found = [candidates[item]]
        else:
            found = [(n, m) for n, m in modules.items() if n and fnmatch.fnmatchcase(n, item)]
            if not found:
                raise ConstraintError(
                    f"layers: {item!r} matches no module of {type(net).__name__} "
                    f"(candidates: {[n for n, _ in candidates]})"
                )
        chosen += [f for f in found if all(f[1] is not c[1] for c in chosen)]
    return chosen


# -- the objective ---------------------------------------------------------------------------


class NeuralSimilarityObjective(TrainingObjective):
    """Adds ``alpha * L_similarity`` (Eq. 7-10) to the task loss; holds gamma's logits."""

    def __init__(self, params: NeuralSimilarityParams, layers: list[tuple[str, nn.Module]]):
        super().__init__()
        self.params = params
        self.layer_names = [n for n, _ in layers]
        # plain references (a tuple, not submodules: the objective lives inside the net)
        self._layers = tuple(m for _, m in layers)
        self.gamma_logits = exclude_from_weight_decay(nn.Parameter(torch.zeros(len(layers))))
        self._running: list[torch.Tensor | None] = [None] * len(layers)
        self.stimuli: torch.Tensor | None = None
        self.target_z: torch.Tensor | None = None
        self.target: torch.Tensor | None = None
        self.synthetic = False
        self.pair_batch = params.pair_batch or 32
        self.generator = torch.Generator().manual_seed(0)
        self._epochs_left = 0
        self._losses: list[torch.Tensor] = []
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def gamma(self) -> torch.Tensor:
        """Eq. 10's layer weights: positive, summing to one."""
        return torch.softmax(self.gamma_logits, 0)

    # features ------------------------------------------------------------------------------
    def layer_features(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, D_k) float features of the K layers when ``model`` runs on ``x`` (BatchNorm
        running statistics are left as they were)."""
        with kept_norm_statistics(model):
            feats = capture(model, self._layers, x, keep="last")
        missing = [n for n, f in zip(self.layer_names, feats, strict=True) if f is None]
        if missing:
            raise RuntimeError(f"neural_similarity: layers {missing} did not run in the forward")
        return [f.flatten(1).float() for f in feats]

    def pair_similarity(self, feats: list[torch.Tensor], n_pairs: int) -> torch.Tensor:
        """Eq. 9-10 for the pairs (rows b, n_pairs + b) of the stacked features, centred on
        ``m * batch mean + (1 - m) * running mean``; updates the running means."""
        per_layer = []
        for k, f in enumerate(feats):
            batch_mean = f.mean(0)
            running = self._running[k]
            m = self.params.centering_momentum
            if running is None or running.shape != batch_mean.shape:
                centre = batch_mean
            else:
                centre = m * batch_mean + (1 - m) * running
            self._running[k] = centre.detach()
            e = centred_unit(f, centre)
            per_layer.append((e[:n_pairs] * e[n_pairs:]).sum(1))
        return (torch.stack(per_layer, 1) * self.gamma.to(per_layer[0].device)).sum(1)

    @torch.no_grad()
    def init_centering(self, model: nn.Module, max_images: int = 1024) -> None:
        """Start the running means of Eq. 9 at the mean features of (up to ``max_images``)
        stimuli, computed without gradient in the model's current mode."""
        x = self.stimuli[:max_images]
        chunk = max(2, 2 * self.pair_batch)
        sums: list[torch.Tensor] | None = None
        for i in range(0, len(x), chunk):
            feats = [f.sum(0) for f in self.layer_features(model, x[i : i + chunk])]
            sums = feats if sums is None else [a + b for a, b in zip(sums, feats, strict=True)]
        self._running = [t / len(x) for t in sums]

    @torch.no_grad()
    def model_similarity(
        self, model: nn.Module, x: torch.Tensor, batch_size: int = 256
    ) -> torch.Tensor:
        """(N, N) S_cnn of Eq. 10 on images ``x``, centred on their own mean (evaluation)."""
        feats = [
            self.layer_features(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
        sims = [similarity_matrix(torch.cat(f)) for f in zip(*feats, strict=True)]
        gamma = self.gamma.detach().cpu()
        return sum(g * s.cpu() for g, s in zip(gamma, sims, strict=True))

    # training ------------------------------------------------------------------------------
    def prepare(self, ctx: ObjectiveContext) -> None:
        from bioprior.plugin import fit_images, load_neural_data

        data = load_neural_data(self.params.data)
        self.synthetic = data.synthetic
        self.stimuli = fit_images(data.stimuli, ctx.channels, ctx.size).to(ctx.device)
        if self.params.features is not None:
            target = feature_similarity(self.params.features, self.stimuli, ctx)
        else:
            target = neural_target(data, self.params.target, self.params.snr_weighting)
        if self.params.shuffle:
            seed = self.params.shuffle_seed if self.params.shuffle_seed is not None else ctx.seed
            target = shuffled(target, seed)
        self.target = target.to(ctx.device)
        self.target_z = fisher_z(self.target, self.params.clip_eps)
        self.pair_batch = self.params.pair_batch or max(1, ctx.batch_size // 2)
        self.generator = ctx.generator
        self._epochs_left = ctx.epochs
        self._running = [None] * len(self._layers)
        self._losses, self._pairs = [], []

    def release(self) -> None:
        """Drop the stimuli, target and running means (training is over; the trained model keeps
        only gamma)."""
        self.stimuli = self.target = self.target_z = None
        self._running = [None] * len(self._layers)
        self._losses, self._pairs = [], []

    def sample_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``pair_batch`` stimulus pairs (i, j), i != j, uniformly (CPU indices)."""
        n = len(self.stimuli)
        i = torch.randint(n, (self.pair_batch,), generator=self.generator)
        j = (i + torch.randint(1, n, (self.pair_batch,), generator=self.generator)) % n
        return i, j

    def total_loss(self, model: nn.Module, task_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.params.alpha == 0:
            return task_loss
        if self.stimuli is None:
            raise RuntimeError("neural_similarity: prepare() was not called before training")
        i, j = self.sample_pairs()
        dev = self.stimuli.device
        i, j = i.to(dev), j.to(dev)
        if any(r is None for r in self._running):
            self.init_centering(model)
        feats = self.layer_features(model, torch.cat([self.stimuli[i], self.stimuli[j]]))
        s_cnn = self.pair_similarity(feats, len(i))
        z_cnn = fisher_z(s_cnn, self.params.clip_eps)
        loss = (z_cnn - self.target_z[i, j]).pow(2).mean()
        # kept on the device (no synchronization per step); read once per epoch
        self._losses.append(loss.detach())
        self._pairs.append((s_cnn.detach(), self.target[i, j]))
        return task_loss + self.params.alpha * loss

    def training_state(self) -> dict[str, Any]:
        """The running means of Eq. 9, the epochs left and the epoch's pairs so far (checkpoints)."""
        return {
            "running": list(self._running),
            "epochs_left": self._epochs_left,
            "losses": list(self._losses),
            "pairs": list(self._pairs),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self._running = list(state["running"])
        self._epochs_left = int(state["epochs_left"])
        self._losses = list(state["losses"])
        self._pairs = [tuple(pair) for pair in state["pairs"]]

    def epoch_metrics(self) -> dict[str, float]:
        """Mean similarity loss, Pearson r of S_cnn with the target over the epoch's pairs, and
        gamma per layer; the training data are released after the last epoch."""
        out: dict[str, float] = {}
        if self._losses:
            out["similarity_loss"] = float(torch.stack(self._losses).mean())
            s, t = (torch.cat(v).cpu() for v in zip(*self._pairs, strict=True))
            out["similarity_r"] = _pearson(s, t)
            for name, g in zip(self.layer_names, self.gamma.detach().cpu().tolist(), strict=True):
                out[f"gamma_{name}"] = g
        self._losses, self._pairs = [], []
        self._epochs_left -= 1
        if self._epochs_left == 0:
            self.release()
        return out


@contextmanager
def kept_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run a block in which BatchNorm layers may use batch statistics (training mode) but their
    running statistics (used at inference) are restored afterwards.

    The saved copies are swapped in as the buffers (not copied into them): the autograd graph of
    the block still holds the updated tensors, which must not change in place.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [
        (m, {n: getattr(m, n).clone() for n in names if getattr(m, n, None) is not None})
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
    ]
    try:
        yield
    finally:
        for m, state in saved:
            for n, old in state.items():
                setattr(m, n, old)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else math.nan


def neural_target(data, target: str, weighted: bool) -> torch.Tensor:
    """S_neural from a :class:`~bioprior.plugin.NeuralData` (module docstring)."""
    if target == "similarity" or (target == "auto" and data.similarity is not None):
        if data.similarity is None:
            raise ValueError(f"{data.name}: target 'similarity' but the data has no matrix")
        return data.similarity.float()
    if data.responses is None:
        raise ValueError(f"{data.name}: target 'responses' but the data has none")
    return response_similarity(data.responses, weighted and data.repeats >= 2)


@torch.no_grad()
def feature_similarity(spec: FeatureTarget, stimuli: torch.Tensor, ctx: ObjectiveContext):
    """The 'features' control target: Eq. 9 on ``spec.layer`` of a seeded ``spec.model``."""
    from bioprior.plugin import fit_images, get_registry

    entry = get_registry().get("model", spec.model)
    params = dict(spec.params)
    fields = entry.params.model_fields
    for name, value in (("in_channels", ctx.channels), ("input_size", ctx.size)):
        if name in fields and params.get(name) is None:
            params[name] = value
    stimuli = fit_images(
        stimuli, params.get("in_channels") or ctx.channels, params.get("input_size") or ctx.size
    )
    if "num_classes" in fields and params.get("num_classes") is None:
        params["num_classes"] = 10
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = entry.build(params).to(ctx.device).eval()
    modules = dict(net.named_modules())
    if spec.layer not in modules:
        raise ValueError(
            f"features.layer: {spec.layer!r} is not a module of {spec.model}; some names: "
            f"{[n for n in modules if n][:30]}"
        )
    mean = stimuli.mean(dim=(0, 2, 3), keepdim=True)
    std = stimuli.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    layer = modules[spec.layer]
    captured = [
        capture(net, [layer], (stimuli[i : i + 256] - mean) / std)[0].flatten(1).float()
        for i in range(0, len(stimuli), 256)
    ]
    return similarity_matrix(torch.cat(captured))


# -- the constraint --------------------------------------------------------------------------


class NeuralSimilarity(Constraint):
    """Attach :class:`NeuralSimilarityObjective` on the chosen layers of the built net."""

    def apply(self, module: nn.Module, geometry: InputGeometry = UNKNOWN_GEOMETRY) -> nn.Module:
        layers = select_layers(module, self.params.layers)
        return attach_objective(module, NeuralSimilarityObjective(self.params, layers))
