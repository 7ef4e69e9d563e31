"""The Flexible Layer module (torch side of ``bioprior.plugins.flexible_layer``).

evanson's Flexible Layer (Methods, "Flexible Layer Structure" and "Operation Selection
Implementation", Eq. 1, Fig. 1): a convolution and a max-pooling computed in parallel on the
same input; each output unit takes the max-pooling result when it is below the unit's threshold
T and the convolution result otherwise:

    f_flex = sigmoid((T - f_max) * s) * f_max + sigmoid(-(T - f_max) * s) * f_conv,  s = 50.

Threshold modes (Methods): ``learned`` (one trainable threshold per output unit, no weight
decay; Experiment Details), ``uniform`` (a fixed value, not trained), ``random`` (0 or 1 with
probability 1/2, drawn again at every forward pass, in training and at inference), the
``reverse`` variant (max-pooling above the threshold, convolution below; Table 2), and two fixed
branches: ``conv`` (T = -inf, the paper's baseline: always the convolution) and ``pool``
(T = +inf: always the max-pooling).

Choices the paper leaves open (documented deviations):

* The "(c) Sigmoid()" listed under every Flexible Layer in the Supplementary network definitions
  is read as the sigma of Eq. 1 (a printed sub-module of the layer, like its conv and pool), not
  as an output nonlinearity: the layer adds no activation; the models put their own after it.
* Channels: max-pooling keeps the input's channels while the convolution has ``out_channels``.
  Output channel ``j`` takes pooled input channel ``j mod in_channels``: the identity when they
  are equal, a broadcast of the single channel for the FMNIST network (Conv2d(1, 12, 5) with
  MaxPool2d(5, 1, 0)), a cyclic repeat otherwise (extra input channels are not pooled when
  ``out_channels < in_channels``).
* Learned thresholds have the shape of one example's output, (C, H, W): "the threshold at the
  level of a single unit (neuron)". Their size needs the layer's input size: pass ``input_size``
  (the constraint measures it with one forward pass at apply time); without it the parameter is
  an ``UninitializedParameter`` materialized in place on the first forward pass, so an optimizer
  built before that (as the trainer does) still trains it.
* Random thresholds are drawn independently for every example of a batch, shape (N, C, H, W),
  so that one batched pass of K copies (expectation over transformation,
  ``bioprior.benchmarks.adversarial.eot``) averages over K draws. ``at_inference=False`` (the EOT contract)
  makes evaluation deterministic: the layer outputs its expected value over T, the mean of the
  T = 0 and T = 1 outputs. Training always draws.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from bioprior.plugin import exclude_from_weight_decay

THRESHOLD_MODES = ("learned", "uniform", "random", "conv", "pool")

#: attribute a model sets on the Conv2d modules the paper turns into Flexible Layers
FLEXIBLE_SITE = "bioprior_flexible_site"


def mark_flexible_site(conv: nn.Conv2d) -> nn.Conv2d:
    """Mark ``conv`` as a site where the paper puts a Flexible Layer (placement ``"paper"``)."""
    setattr(conv, FLEXIBLE_SITE, True)
    return conv


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if isinstance(conv.padding, str):  # "valid" or "same" (odd kernels)
        if conv.padding == "valid":
            return (0, 0)
        (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return _pair(conv.padding)


def default_pool(conv: nn.Conv2d) -> nn.MaxPool2d:
    """The max-pooling that runs in parallel with ``conv``: same kernel, stride, padding and
    dilation, so both outputs have the same spatial size (Conv2d(64, 64, 3, 1, 0) with
    MaxPool2d(3, 1, 0) in the paper)."""
    return nn.MaxPool2d(conv.kernel_size, conv.stride, _conv_padding(conv), dilation=conv.dilation)


def conv_output_size(conv: nn.Conv2d, size: int | tuple[int, int]) -> tuple[int, int]:
    """Spatial output size of ``conv`` for an input of ``size`` (PyTorch's formula)."""
    h, w = _pair(size)
    pad = _conv_padding(conv)
    out = []
    for n, p, d, k, s in zip((h, w), pad, conv.dilation, conv.kernel_size, conv.stride):
        out.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _shiftable(pool: nn.Module) -> bool:
    return (
        type(pool) is nn.MaxPool2d
        and _pair(pool.stride) == (1, 1)
        and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1)
        and not pool.return_indices
    )


def shifted_max(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """``max_pool2d(x, kernel, stride=1)`` (no padding) as running maxima of shifted slices:
    rows, then columns. Not for gradients: ``torch.maximum`` splits a tie's gradient between
    both sides where max-pooling gives it to one input."""
    (kh, kw), (h, w) = kernel, x.shape[-2:]
    rows = x[..., : h - kh + 1, :]
    for i in range(1, kh):
        rows = torch.maximum(rows, x[..., i : h - kh + 1 + i, :])
    out = rows[..., : w - kw + 1]
    for j in range(1, kw):
        out = torch.maximum(out, rows[..., j : w - kw + 1 + j])
    return out


class FlexibleLayer(nn.Module):
    """Eq. 1 of evanson: ``conv`` and ``pool`` in parallel, mixed unit by unit by a threshold.

    ``conv``: the convolution it wraps (its weights are kept). ``pool``: the parallel
    max-pooling (default :func:`default_pool`). ``threshold``: ``learned`` | ``uniform`` |
    ``random`` | ``conv`` | ``pool``. ``init``: the learned thresholds' initial value and the
    uniform threshold (the paper gives none for learned thresholds; Fig. 3 uses 0.1 and 0.6 for
    uniform ones). ``reverse``: max-pooling above the threshold instead of below (Table 2's
    "Standard Reverse Threshold"); ignored by the fixed ``conv`` / ``pool`` branches. ``sharpness``:
    s of Eq. 1 (paper: 50). ``input_size``: the layer's input height (= width, or (H, W)), to
    create learned thresholds now. ``at_inference``: random thresholds at evaluation (paper: yes).
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        pool: nn.MaxPool2d | None = None,
        threshold: str = "learned",
        init: float = 0.5,
        reverse: bool = False,
        sharpness: float = 50.0,
        *,
        input_size: int | tuple[int, int] | None = None,
        at_inference: bool = True,
    ):
        super().__init__()
        if threshold not in THRESHOLD_MODES:
            raise ValueError(f"threshold must be one of {THRESHOLD_MODES}, got {threshold!r}")
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"FlexibleLayer wraps an nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv
        self.pool = pool if pool is not None else default_pool(conv)
        self.mode = threshold
        self.init = float(init)
        self.reverse = reverse
        self.sharpness = float(sharpness)
        # only random thresholds are stochastic (the switch of bioprior.benchmarks.adversarial.eot)
        self.at_inference = at_inference if threshold == "random" else False
        cin, cout = conv.in_channels, conv.out_channels
        self.register_buffer("channel_index", torch.arange(cout) % cin, persistent=False)
        self.threshold: torch.Tensor | None
        if threshold == "learned":
            # size unknown: an uninitialized parameter, materialized in place on the first
            # forward pass (an optimizer built before that still holds and trains it)
            self.threshold = exclude_from_weight_decay(UninitializedParameter())
            if input_size is not None:
                self._materialize((cout, *conv_output_size(conv, input_size)))
        elif threshold == "uniform":
            self.register_buffer("threshold", torch.tensor(self.init))
        else:
            self.threshold = None

    def _materialize(self, shape: tuple[int, ...], device=None) -> None:
        self.threshold.materialize(shape, device=device)
        exclude_from_weight_decay(self.threshold)  # again: a deep copy drops the tag
        with torch.no_grad():
            self.threshold.fill_(self.init)

    # -- Eq. 1 ------------------------------------------------------------------------------
    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_max, f_conv), f_max mapped onto the convolution's channels."""
        f_conv = self.conv(x)
        f_max = self._pooled(x)
        cin, cout = self.conv.in_channels, self.conv.out_channels
        if cin != cout and cin != 1:
            f_max = f_max.index_select(1, self.channel_index)
        if f_max.shape[-2:] != f_conv.shape[-2:]:
            raise ValueError(
                f"FlexibleLayer: max-pool output {tuple(f_max.shape[-2:])} and conv output "
                f"{tuple(f_conv.shape[-2:])} differ in size; give a pool with matching "
                "kernel/stride/padding"
            )
        return f_max, f_conv

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``self.pool(x)``; where no gradient reaches ``x`` (the network's input, as in the
        FMNIST network, or under ``no_grad``) a stride-1 pooling is taken as running maxima of
        shifted slices, the same values (a maximum is exact) about 30x faster on a CPU than
        ``max_pool2d``, whose kernel also finds every window's index."""
        if (x.requires_grad and torch.is_grad_enabled()) or not _shiftable(self.pool):
            return self.pool(x)
        return shifted_max(x, _pair(self.pool.kernel_size))

    def mix(self, f_max: torch.Tensor, f_conv: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eq. 1 with threshold ``t`` (reverse: the two branches swapped)."""
        z = (t - f_max) * self.sharpness
        below, above = torch.sigmoid(z), torch.sigmoid(-z)
        if self.reverse:
            return below * f_conv + above * f_max
        return below * f_max + above * f_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return self.conv(x)
        f_max, f_conv = self.branches(x)
        if self.mode == "pool":
            return f_max.expand_as(f_conv)
        if self.mode == "random":
            if self.training or self.at_inference:
                shape = (f_conv.shape[0], *f_conv.shape[1:])
                t = torch.randint(0, 2, shape, device=x.device).to(f_conv.dtype)
                return self.mix(f_max, f_conv, t)
            zero, one = torch.zeros((), device=x.device), torch.ones((), device=x.device)
            return 0.5 * (self.mix(f_max, f_conv, zero) + self.mix(f_max, f_conv, one))
        if is_lazy(self.threshold):  # learned, size unknown until now
            self._materialize(tuple(f_conv.shape[1:]), device=x.device)
        return self.mix(f_max, f_conv, self.threshold)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "threshold"
        if self.mode == "learned" and is_lazy(self.threshold) and key in state_dict:
            self._materialize(tuple(state_dict[key].shape), device=state_dict[key].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        t = self.threshold
        shape = None if t is None or is_lazy(t) else tuple(t.shape)
        return (
            f"threshold={self.mode}, init={self.init}, reverse={self.reverse}, "
            f"sharpness={self.sharpness}, at_inference={self.at_inference}, T_shape={shape}"
        )
