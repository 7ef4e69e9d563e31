"""The HMAX network (torch side of :mod:`bioprior.plugins.hmax`, which documents the model and
its deviations from the paper; kept apart so that listing plugins never imports torch)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bioprior.plugins.flexible_layer.nn import FlexibleLayer

if TYPE_CHECKING:
    from bioprior.plugins.hmax import HmaxParams

#: pytorch_hmax's geometry: a model built without a dataset gets FMNIST's
DEFAULT_GEOMETRY = {"in_channels": 1, "num_classes": 10, "input_size": 28}
ORIENTATIONS = (90.0, -45.0, 0.0, 45.0)
REFERENCE_SIZE = 28  # input size at which the paper's filter sizes apply (FMNIST)


# -- S1 ---------------------------------------------------------------------------------------
def gabor_filter(size: int, wavelength: float, orientation: float) -> torch.Tensor:
    """pytorch_hmax's S1 Gabor: ``wavelength`` relative to half the size (2 = one period across
    the filter), orientation in degrees (0: vertical bars); zero mean, unit norm."""
    lam = size * 2.0 / wavelength
    sigma, gamma = 0.8 * lam, 0.3
    theta = math.radians(orientation + 90.0)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    x, y = torch.meshgrid(r, r, indexing="ij")  # x: row, y: column
    rotx = x * math.cos(theta) + y * math.sin(theta)
    roty = -x * math.sin(theta) + y * math.cos(theta)
    filt = torch.exp(-(rotx**2 + gamma**2 * roty**2) / (2 * sigma**2))
    filt = filt * torch.cos(2 * math.pi * rotx / lam)
    filt[torch.sqrt(x**2 + y**2) > size / 2] = 0
    filt = filt - filt.mean()
    return (filt / filt.norm()).float()


class S1(nn.Module):
    """Fixed Gabor filters at several sizes and orientations, ``|conv| / local energy``.

    All scales run as one convolution: each bank is zero-padded to the largest size (same
    output: the input is replicate-padded once by the largest radius). Output
    (N, scales, orientations, H, W), same H, W as the input; values in [0, 1].
    """

    def __init__(
        self,
        sizes: list[int],
        wavelengths: list[float],
        orientations: tuple[float, ...] = ORIENTATIONS,
    ):
        super().__init__()
        self.sizes, self.orientations = list(sizes), tuple(orientations)
        big = max(sizes)
        gabors, boxes = [], []
        for size, wl in zip(sizes, wavelengths):
            m = (big - size) // 2
            bank = torch.stack([gabor_filter(size, wl, o) for o in orientations])
            gabors.append(F.pad(bank, (m, m, m, m)))
            boxes.append(F.pad(torch.ones(1, size, size), (m, m, m, m)))
        self.register_buffer("gabor", torch.cat(gabors).unsqueeze(1))  # (S*O, 1, K, K)
        self.register_buffer("box", torch.stack(boxes))  # (S, 1, K, K)

    def filters(self, scale: int) -> torch.Tensor:
        """The (orientations, k, k) Gabor bank of one scale."""
        o, k, big = len(self.orientations), self.sizes[scale], max(self.sizes)
        m = (big - k) // 2
        return self.gabor[scale * o : (scale + 1) * o, 0, m : m + k, m : m + k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = max(self.sizes) // 2
        gray = F.pad(x.mean(1, keepdim=True), (p, p, p, p), mode="replicate")
        response = F.conv2d(gray, self.gabor).abs()
        energy = F.conv2d(gray.square(), self.box).clamp_min(1e-12).sqrt()
        n, _, h, w = response.shape
        o = len(self.orientations)
        return response.view(n, -1, o, h, w) / energy.unsqueeze(2)


# -- C1 ---------------------------------------------------------------------------------------
class C1(nn.Module):
    """One C1 band: max over its two S1 scales, then ``spatial`` (a max-pool, or a Flexible
    Layer around it). Input (N, 2, O, H, W)."""

    def __init__(self, spatial: nn.Module):
        super().__init__()
        self.spatial = spatial

    def forward(self, s1_pair: torch.Tensor) -> torch.Tensor:
        return self.spatial(s1_pair.amax(1))


def c1_pool(size: int) -> nn.MaxPool2d:
    return nn.MaxPool2d(size, stride=max(1, size // 2), padding=size // 2)


def c1_conv(size: int, channels: int) -> nn.Conv2d:
    """The convolution the Flexible Layer adds in parallel with a C1 pool (same geometry)."""
    return nn.Conv2d(channels, channels, size, stride=max(1, size // 2), padding=size // 2)


# -- S2 ---------------------------------------------------------------------------------------
def correlate(x: torch.Tensor, w: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, w, padding=padding)`` (stride 1), with the map as the kernel where it is at
    most half the patch in both directions (C1 maps of 3-8 units against 12-16 unit prototypes at
    28 px): then the padded windows are mostly zeros, and sliding each image over each zero-padded
    (or cropped) prototype takes (map / patch)^2 of the multiply-adds. The same sums in another
    order, so equal up to float rounding; other geometries take ``F.conv2d`` itself."""
    (s_h, s_w), (k_h, k_w) = x.shape[-2:], w.shape[-2:]
    if 2 * s_h > k_h or 2 * s_w > k_w:
        return F.conv2d(x, w, None, 1, padding)
    # output (i, j) is sum over the map's (a, b) of x[a, b] w[a - i + p, b - j + p]: pad (or crop,
    # where negative) the prototypes to the rows a - i + p can reach, correlate, flip
    t_h, t_w = s_h + padding[0] - k_h, s_w + padding[1] - k_w
    swapped = F.conv2d(F.pad(w, (t_w, t_w, t_h, t_h)), x)  # (prototypes, images, h', w')
    return swapped.flip(2, 3).transpose(0, 1)


class PrototypeDistance(nn.Conv2d):
    """S2 units: response to the distance between each C1 patch and each learned prototype.

    A Conv2d whose ``weight`` (prototypes, in_channels, k, k) holds the prototypes (so a Flexible
    Layer can wrap it); ``d^2 = |x|^2 - 2 <x, w> + |w|^2`` over each k x k window (pytorch_hmax
    ``S2``), padding k // 2, stride 1. ``gaussian``: ``exp(-d^2 / (2 sigma^2 n))``, n = values
    per patch (maximal, 1, where the patch equals the prototype); ``euclidean``: ``-d``.
    """

    def __init__(
        self,
        in_channels: int,
        prototypes: int,
        size: int,
        activation: Literal["gaussian", "euclidean"] = "gaussian",
        sigma: float = 0.3,
    ):
        super().__init__(in_channels, prototypes, size, padding=size // 2, bias=False)
        self.activation, self.sigma = activation, float(sigma)
        self.register_buffer("window", torch.ones(1, 1, size, size), persistent=False)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, 0.0, 1.0)  # C1's range

    def squared_distance(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x, w = x.float(), self.weight.float()
            xw = correlate(x, w, self.padding)
            x2 = F.conv2d(x.square().sum(1, keepdim=True), self.window, None, 1, self.padding)
            w2 = w.square().sum((1, 2, 3)).view(1, -1, 1, 1)
            # x2 - 2 xw + w2 with one pass fewer over the maps, forward and backward (add's
            # backward scales by alpha in one pass; sub's negates, then scales): doubling is
            # exact in floats, so a + (-2 b) rounds as a - 2 b does, fused or not (bit for bit)
            return torch.add(x2, xw, alpha=-2).add(w2).clamp_min(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d2 = self.squared_distance(x)
        if self.activation == "euclidean":
            return -d2.clamp_min(1e-12).sqrt()
        n = self.weight[0].numel()
        # exp(-d2 / (2 sigma^2 n)) without the pass that negates d2 (and its backward's):
        # (-a) / c and a / (-c) are the same float
        return torch.exp(d2 / -(2 * self.sigma**2 * n))


class AfferentMax(nn.MaxPool2d):
    """The max-pool a Flexible Layer runs in parallel with S2: the max over a unit's receptive
    field (k x k window, all orientations), repeated on the input's channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).amax(1, keepdim=True).expand(-1, x.shape[1], -1, -1)


class PrototypeView(nn.Conv2d):
    """A Conv2d-shaped handle on another layer's prototypes (no weights of its own), so each
    band's Flexible Layer can wrap the shared prototypes while they are stored once (a
    state_dict without aliased tensors, as safetensors requires)."""

    def __init__(self, owner: PrototypeDistance):
        super().__init__(
            owner.in_channels,
            owner.out_channels,
            owner.kernel_size,
            padding=owner.padding,
            bias=False,
        )
        self.weight = None
        self._owner = (owner,)  # a tuple: not registered as a submodule

    def reset_parameters(self) -> None:
        pass  # no weights (and no draw from the RNG)

    @property
    def owner(self) -> PrototypeDistance:
        return self._owner[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.owner(x)


class S2(nn.Module):
    """One prototype size: the same prototypes on every C1 band; ``units[b]`` is band b's layer
    (the distance itself, or a Flexible Layer wrapping it). Without units (the baseline) the
    bands run in one zero-padded pass where none is smaller than the patch, else band by band."""

    def __init__(self, prototypes: PrototypeDistance, units: list[nn.Module] | None = None):
        super().__init__()
        self.prototypes = prototypes
        self.units = nn.ModuleList(units) if units is not None else None

    def forward(self, c1: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.units is not None:
            return [unit(c) for unit, c in zip(self.units, c1)]
        if self.prototypes.kernel_size[0] > min(c.shape[-1] for c in c1):
            # padding small maps to the largest would undo `correlate`'s saving
            return [self.prototypes(c) for c in c1]
        return self.one_pass(c1)

    def one_pass(self, c1: list[torch.Tensor]) -> list[torch.Tensor]:
        """All bands in one pass: zero-pad the maps to a common size (the convolution's own
        padding is zeros too, so each band's output region is unchanged), then crop."""
        sizes = [c.shape[-1] for c in c1]
        big, n = max(sizes), c1[0].shape[0]
        out = self.prototypes(
            torch.cat([F.pad(c, (0, big - c.shape[-1], 0, big - c.shape[-1])) for c in c1])
        )
        k, p = self.prototypes.kernel_size[0], self.prototypes.padding[0]
        # split by band before cropping: the crops' backward then fills one band's zeros each,
        # not the whole output's (the same gradient, bit for bit)
        return [
            band[:, :, : s + 2 * p - k + 1, : s + 2 * p - k + 1]
            for band, s in zip(out.split(n), sizes, strict=True)
        ]


# -- the model --------------------------------------------------------------------------------
def _odd(v: float) -> int:
    return max(3, 2 * round((v - 1) / 2) + 1)


def hmax_sizes(bands: int, scale: float) -> tuple[list[int], list[float], list[int]]:
    """(S1 filter sizes, S1 relative wavelengths, C1 pool sizes) of pytorch_hmax, scaled."""
    s1 = [_odd((7 + 2 * i) * scale) for i in range(2 * bands)]
    wavelengths = [4.0 - 0.05 * i for i in range(2 * bands)]
    c1 = [max(2, round((8 + 2 * b) * scale)) for b in range(bands)]
    return s1, wavelengths, c1


class HMAX(nn.Module):
    """S1 -> C1 -> S2 -> C2 -> linear classifier; see the module docstring."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        *,
        variant: Literal["baseline", "convolutional", "flexible"] = "baseline",
        bands: int = 8,
        patch_sizes: tuple[int, ...] = (4, 8, 12, 16),
        num_prototypes: int = 400,
        filter_scale: float | None = None,
        s2_activation: Literal["gaussian", "euclidean"] = "gaussian",
        s2_sigma: float = 0.3,
        c2_norm: bool = True,
        threshold: str = "learned",
        threshold_init: float = 0.5,
        reverse: bool = False,
        sharpness: float = 50.0,
        at_inference: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels  # the images it takes (S1 is not an nn.Conv2d)
        self.variant = variant
        scale = filter_scale if filter_scale is not None else input_size / REFERENCE_SIZE
        s1_sizes, wavelengths, c1_sizes = hmax_sizes(bands, scale)
        self.s1 = S1(s1_sizes, wavelengths)
        orient = len(ORIENTATIONS)
        flexible = variant != "baseline"
        if flexible:
            mode = "conv" if variant == "convolutional" else threshold

            def flex(conv: nn.Conv2d, pool: nn.MaxPool2d, size: int) -> nn.Module:
                return FlexibleLayer(
                    conv,
                    pool,
                    threshold=mode,
                    init=threshold_init,
                    reverse=reverse,
                    sharpness=sharpness,
                    input_size=size,
                    at_inference=at_inference,
                )

        c1_out = []
        c1_layers = []
        for k in c1_sizes:
            pool = c1_pool(k)
            c1_out.append((input_size + 2 * (k // 2) - k) // max(1, k // 2) + 1)
            c1_layers.append(C1(flex(c1_conv(k, orient), pool, input_size) if flexible else pool))
        self.c1 = nn.ModuleList(c1_layers)
        s2_layers = []
        for k in patch_sizes:
            protos = PrototypeDistance(orient, num_prototypes, k, s2_activation, s2_sigma)
            units = None
            if flexible:
                pool = AfferentMax(k, stride=1, padding=k // 2)
                units = [flex(PrototypeView(protos), pool, size) for size in c1_out]
            s2_layers.append(S2(protos, units))
        self.s2 = nn.ModuleList(s2_layers)
        features = len(patch_sizes) * num_prototypes
        head = nn.Linear(features, num_classes)
        self.classifier = (
            nn.Sequential(nn.LayerNorm(features, elementwise_affine=False), head)
            if c2_norm
            else head
        )

    @classmethod
    def from_params(cls, params: HmaxParams) -> HMAX:
        g = params.geometry(DEFAULT_GEOMETRY)
        return cls(
            g["in_channels"],
            g["num_classes"],
            g["input_size"],
            variant=params.variant,
            bands=params.bands,
            patch_sizes=tuple(params.patch_sizes),
            num_prototypes=params.num_prototypes,
            filter_scale=params.filter_scale,
            s2_activation=params.s2_activation,
            s2_sigma=params.s2_sigma,
            c2_norm=params.c2_norm,
            threshold=params.threshold,
            threshold_init=params.threshold_init,
            reverse=params.reverse,
            sharpness=params.sharpness,
            at_inference=params.at_inference,
        )

    def stages(self, x: torch.Tensor) -> dict[str, object]:
        """Every stage: s1 (N, scales, O, H, W); c1, one (N, O, h, w) per band; s2, per patch
        size a list over bands of (N, P, h', w'); c2 (N, patch sizes * P)."""
        s1 = self.s1(x)
        c1 = [c1(s1[:, 2 * b : 2 * b + 2]) for b, c1 in enumerate(self.c1)]
        s2 = [layer(c1) for layer in self.s2]
        c2 = torch.cat([torch.stack([m.amax((2, 3)) for m in maps], 0).amax(0) for maps in s2], 1)
        return {"s1": s1, "c1": c1, "s2": s2, "c2": c2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(x)["c2"])
