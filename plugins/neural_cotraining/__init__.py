"""safarani2021's V1 co-training (Sec. 2 "Architecture" and "Training", Fig. 1): the network is
trained on image classification and, jointly, to predict neural responses from one of its
layers through a Gaussian readout; the two losses are balanced by learned observation noise.

At every training step ``round(neural_batch_ratio * batch_size)`` neural stimuli (at least one;
drawn without replacement, epoch after epoch, from a seeded generator) are passed through the
whole model (its input normalization included) up to ``layer``, whose output is captured by a
forward hook that then stops the pass (the layers above the shared part get neither the neural
images nor gradients from them, as in the paper where only the layers up to conv-3-1 are shared).
The loss minimized is (Kendall, Gal & Cipolla 2018; the paper's combined loss and its code's
``XEntropyLossWrapper`` / ``MSELossWrapper``), with learned ``s = log sigma^2``::

    L = exp(-s_task) * L_task + s_task / 2  +  c * exp(-s_neural) * L_neural + s_neural / 2

classification (a softmax likelihood scaled by 1 / sigma^2): ``exp(-s) L_CE + s / 2``;
regression (Gaussian likelihood, ``loss: mse``): ``c = 1/2``, ``exp(-s) L_MSE / 2 + s / 2``;
Poisson (``loss: poisson``): ``c = 1``, treated as the classification term (a tempered
likelihood). ``L_task`` is the loss handed over by the trainer (cross-entropy plus the terms of
objectives listed before this one). ``weighting: equal`` sums the two losses instead (the code's
``loss_weighing: False``); the log-variances are then not trained.

Neural loss: ``poisson`` (default) is the full Poisson negative log-likelihood,
``mean(rate - y * log(rate + 1e-8) + lgamma(y + 1))`` (neuralpredictors ``PoissonLoss`` plus its
dropped constant; the paper's single-task loss and the natural one for spike counts; responses
must be non-negative). The constant matters here: the learned weighting needs a loss bounded
below by 0 (without it the loss goes negative and ``exp(-s) L`` drives ``s`` to minus infinity);
the reference code, when it weighs a count loss, also uses a full likelihood (negative binomial).
``mse`` is what the paper used in MTL, where the targets are a Monkey Predictor's noise-free
predictions. Targets are the trial-averaged responses (``NeuralData.mean_responses``; the NLL is
evaluated at the non-integer mean count through ``lgamma``); NaN targets are left out.

Readout (:class:`GaussianReadout`, compact version of Lurz et al. 2021 / sinzlab
neuralpredictors): per neuron a learned position ``mu`` in [-1, 1]^2 of the feature map; in
training the position is sampled, ``mu + sigma * N(0, I)`` per image (isotropic learned
``sigma``, as the legacy ``Gaussian2d`` used by safarani's code; neuralpredictors'
``FullGaussian2d`` learns a full covariance); at evaluation the mean ``mu`` is used. The map is
read at that position by bilinear interpolation (``F.grid_sample``, ``align_corners=True``),
weighted by per-neuron feature weights (init 1 / channels), plus a bias, then ``ELU + 1`` for
non-negative rates. Initialization as safarani's ``MTL_VGG``: mu ~ U(-0.4, 0.4), sigma ~
U(0, 0.6); the bias is initialized so that the initial rate is the mean training response (the
code sets the bias to the mean and uses ``ELU(x - 1) + 1``). No L1 penalty on the feature
weights (the published MTL configuration does not add it: ``scale_loss`` is off).

``layer`` is resolved in the network's ``named_modules()`` (before input normalization): an
exact name (``features.conv3_1``), else the unique module whose name ends with ``.<layer>``
(``conv3_1``), else ``conv:N``, the output of the N-th ``nn.Conv2d`` in module order (raw
convolution output). For ``vgg19_bn_fcn`` the default ``conv3_1`` is conv-3-1 after its BatchNorm
and ReLU (safarani's code: ``vgg.features[:17]``); for other models give a module name or
``conv:N`` (``conv:5`` is conv3_1's raw output in VGG-19).

Data: ``data`` names a ``neural_data`` plugin; ``test_fraction`` of its stimuli (seeded by
``split_seed``) are held out for evaluation (``epoch_metrics`` after every epoch and the
``neural_predictivity`` benchmark). Stimuli are fitted to the model's input (channels, size) as
the task images are. ``shuffle`` is the paper's MTL-Shuffled control: the training responses
are permuted across stimuli, independently for every neuron (seeded by ``split_seed``; all
repeats of a stimulus move together), so each neuron keeps its set of responses but loses the
stimulus they belong to; held-out responses are never shuffled.

BatchNorm: the neural pass runs in training mode, so the shared BatchNorm layers normalize
neural batches with their own statistics and their running averages mix task and neural images
(as in the reference code). Task images and neural stimuli should therefore come from similar
distributions (the paper: Tiny ImageNet and ImageNet); with very different ones the evaluation
statistics fit neither (the quick submission draws its synthetic stimuli from the digits).

Deviations (documented): the paper co-trains on a Monkey Predictor's responses to the
classification images (Tiny ImageNet) and measures FEV on recorded test images; here the readout
learns the given data's own stimulus-response pairs (a ``neural_file`` of predictor responses to
task images reproduces the paper's setup; ``neural_predictivity``'s ``data`` evaluates on
recordings). The readout's parameters and the log-variances are part of the model's weights
(saved and cached with them); positions, sigmas and log-variances get no weight decay.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import Field

from bioprior.registry.constraint import Constraint, ConstraintError
from bioprior.registry.entries import PluginParams
from bioprior.registry.hookspecs import hookimpl
from bioprior.registry.neural import NeuralDataRef

SAFARANI2021 = (
    "Safarani, Nix, Willeke, Cadena, Restivo, Denfield, Tolias & Sinz (2021), Towards robust "
    "vision by multi-task learning on monkey visual cortex (NeurIPS); Kendall, Gal & Cipolla "
    "(2018); Lurz et al. (2021) Gaussian readout"
)


def _default_data() -> NeuralDataRef:
    # Not validated here (that would load the registry while it registers this plugin); a
    # submission's own ``data`` is validated against the registry.
    return NeuralDataRef.model_construct(name="synthetic_v1", params={})


class NeuralCoTrainingParams(PluginParams):
    layer: str = Field(
        default="conv3_1",
        description="Shared layer read by the readout: a module name in net.named_modules() "
        "(exact, or the unique one ending with it) or 'conv:N' (the N-th Conv2d's output). "
        "vgg19_bn_fcn: conv3_1 = conv-3-1 after BN + ReLU (the paper's layer).",
    )
    data: NeuralDataRef = Field(
        default_factory=_default_data,
        description="Neural data {name, params} (stimuli + responses; default synthetic_v1, "
        "SYNTHETIC, not recordings).",
    )
    neural_batch_ratio: float = Field(
        default=1.0,
        gt=0,
        le=64,
        description="Neural stimuli per task image at every step (the paper's batch ratio, "
        "1:15 to 5:1; its code's default 1:1).",
    )
    shuffle: bool = Field(
        default=False,
        description="MTL-Shuffled control: training responses permuted across stimuli, per neuron.",
    )
    loss: Literal["poisson", "mse"] = Field(
        default="poisson",
        description="Neural loss: Poisson NLL (spike counts) or MSE (the paper's MTL, on a "
        "predictor's noise-free responses).",
    )
    weighting: Literal["learned", "equal"] = Field(
        default="learned",
        description="learned: Kendall et al. observation-noise weighting; equal: task + neural.",
    )
    test_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Fraction of neural stimuli held out for evaluation."
    )
    split_seed: int = Field(
        default=0,
        description="Seed of the held-out split and of the shuffle permutation (fixed across "
        "training seeds: every model is evaluated on the same stimuli).",
    )
    init_mu_range: float = Field(
        default=0.4, gt=0, le=1, description="Readout positions start in U(-r, r)^2 (code: 0.4)."
    )
    init_sigma: float = Field(
        default=0.6, ge=0, le=2, description="Readout sigmas start in U(0, s) (code: 0.6)."
    )


class NeuralCoTraining(Constraint):
    """Attach a :class:`NeuralCoTrainingObjective` (readout + learned loss weights) to the net."""

    def __init__(self, params: NeuralCoTrainingParams):
        super().__init__(params)
        self._geometry: tuple[int | None, int | None] = (None, None)

    def configure(self, model_name: str, model_params: dict[str, Any]) -> dict[str, Any]:
        self._geometry = (model_params.get("in_channels"), model_params.get("input_size"))
        return model_params

    def apply(self, module):
        return attach(module, self.params, self._geometry)


# -- pure helpers (torch imported on call) --------------------------------------------------


def kendall_loss(task_loss, neural_loss, log_var_task, log_var_neural, neural: str = "poisson"):
    """``exp(-s_t) L_t + s_t / 2 + c exp(-s_n) L_n + s_n / 2`` with c = 1/2 for a Gaussian (mse)
    and 1 for a Poisson / classification-like neural term (Kendall et al. 2018, Eq. 7 / 10)."""
    import torch

    c = 0.5 if neural == "mse" else 1.0
    return (
        torch.exp(-log_var_task) * task_loss
        + 0.5 * log_var_task
        + c * torch.exp(-log_var_neural) * neural_loss
        + 0.5 * log_var_neural
    )


def neural_loss(rates, target, kind: str = "poisson"):
    """Mean Poisson NLL ``rate - y log(rate) + lgamma(y + 1)`` or MSE over the finite targets."""
    import torch

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
    import torch

    n, k = responses.shape[-2:]
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(k)], 1)  # (N, K)
    index = perms.to(responses.device).expand(*responses.shape[:-2], n, k)
    return torch.gather(responses, -2, index)


def inverse_elu1(rate):
    """z with ELU(z) + 1 = rate (rate clamped to >= 1e-4)."""
    import torch

    rate = rate.clamp_min(1e-4)
    return torch.where(rate >= 1, rate - 1, torch.log(rate))


def resolve_layer(net, layer: str) -> str:
    """The qualified module name ``layer`` designates in ``net`` (module docstring)."""
    from torch import nn

    from bioprior.registry.objective import TrainingObjective

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


def cotraining_objectives(model) -> list:
    """The ``neural_cotraining`` objectives attached anywhere in ``model``."""
    cls = _impl()["NeuralCoTrainingObjective"]
    return [m for m in model.modules() if isinstance(m, cls)]


def attach(net, params: NeuralCoTrainingParams, geometry=(None, None)):
    """Resolve the layer, load the data, build the objective and add it to ``net``."""
    from bioprior.registry.neural import load_neural_data

    name = resolve_layer(net, params.layer)
    data = load_neural_data(params.data)
    if data.responses is None:
        raise ConstraintError(f"{data.name}: neural_cotraining needs responses, not a similarity")
    train, _ = data.split(params.test_fraction, params.split_seed)
    if train.num_stimuli == 0:
        raise ConstraintError(f"{data.name}: no training stimuli left after the held-out split")
    channels = _probe_channels(net, name, geometry)
    mean = train.mean_responses().nanmean(0)
    objective = _impl()["NeuralCoTrainingObjective"](params, name, channels, data, mean)
    objective._root = [net]  # a plain reference: not a submodule (no module cycle)
    label, i = "neural_cotraining", 1
    while hasattr(net, label):
        label, i = f"neural_cotraining_{i}", i + 1
    net.add_module(label, objective)
    return net


def _probe_channels(net, name: str, geometry) -> int:
    """Channels of ``name``'s output, from one forward pass in eval mode (state restored)."""
    import torch
    from torch import nn

    in_channels, size = geometry
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
            out = capture(net, net.get_submodule(name), x)
    finally:
        for m, mode in modes:
            m.training = mode
    if out.ndim != 4:
        raise ConstraintError(f"layer {name!r} outputs {tuple(out.shape)}, not a (N, C, H, W) map")
    return int(out.shape[1])


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass above the chosen layer."""


def capture(model, layer, x):
    """``layer``'s output when ``model`` runs on ``x``; the pass stops right after the layer."""
    box: list = []

    def hook(module, inputs, output):
        box.append(output)
        raise _Captured

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"the layer {type(layer).__name__} was not reached in the forward pass")
    return box[0]


# -- torch modules (defined on first use: listing plugins never imports torch) ----------------


@functools.cache
def _impl() -> dict[str, type]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from bioprior.registry.data import fit_images
    from bioprior.registry.objective import TrainingObjective, exclude_from_weight_decay

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
            from bioprior.registry.neural import load_neural_data

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
            features = capture(model, self.layer(), x)
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

        # -- evaluation ----------------------------------------------------------------------
        @torch.no_grad()
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
            evaluation mode with the RNG state preserved."""
            from bioprior.benchmarks.neural_predictivity import predictivity_metrics

            if data is None:
                _, data = self.splits()
                which = f"held-out {self.config.test_fraction:g} of the stimuli"
            else:
                which = "all stimuli"
            info = {"data": data.name, "synthetic": bool(data.synthetic), "evaluated_on": which}
            if data.num_stimuli == 0:
                return {**info, "correlation": None, "feve": None, "note": "no held-out stimuli"}
            if data.responses is None or data.num_neurons != self.readout.features.shape[0]:
                raise ValueError(
                    f"{data.name}: {data.num_neurons} neurons with responses, the readout has "
                    f"{self.readout.features.shape[0]}"
                )
            device = next(self.readout.parameters()).device
            modes = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(self.config.split_seed)
                    preds = []
                    for i in range(0, data.num_stimuli, batch_size):
                        x = fit_images(data.stimuli[i : i + batch_size], channels, size)
                        preds.append(self.predict(model, x.to(device)).cpu())
            finally:
                for m, mode in modes:
                    m.training = mode
            return {**info, **predictivity_metrics(torch.cat(preds), data.responses, min_fev)}

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

    for cls in (GaussianReadout, NeuralCoTrainingObjective):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__  # picklable by name
    return {
        "GaussianReadout": GaussianReadout,
        "NeuralCoTrainingObjective": NeuralCoTrainingObjective,
    }


def __getattr__(name: str) -> Any:  # PEP 562: ``from ...neural_cotraining import GaussianReadout``
    if name in ("GaussianReadout", "NeuralCoTrainingObjective"):
        return _impl()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_constraints(register):
    register(
        name="neural_cotraining",
        factory=NeuralCoTraining,
        params=NeuralCoTrainingParams,
        version="1",
        citation=SAFARANI2021,
        description="Co-train a Gaussian readout of a layer (default conv3_1) on neural responses, "
        "losses weighted by learned observation noise; shuffle control.",
    )
