"""Dataset, derivation and neural-data checks: shapes, dtypes, value range, seeded determinism."""

from __future__ import annotations

from bioprior import plugin

from .subject import CheckFailed, CheckSkipped, Subject

#: derivations are applied to this source, fitted to (channels, size)
SOURCE = ("digits", 1, 8)


def _build(s: Subject, seed: int = 0):
    try:
        if s.entry.extra.get("derivation"):
            name, channels, size = SOURCE
            source = plugin.fit_data(s.registry.get("dataset", name).build({}), channels, size)
            data = s.entry.build(s.params, source=source, seed=seed)
        else:
            data = s.entry.build(s.params)
    except plugin.DataUnavailable as exc:
        raise CheckSkipped(f"data not available here: {' '.join(str(exc).split())}") from None
    if not isinstance(data, plugin.ImageData):
        raise CheckFailed(
            f"the factory returned {type(data).__name__}: return bioprior.plugin.ImageData"
        )
    return data


def data(s: Subject, seed: int = 0):
    key = ("data", seed)
    if key not in s.cache:
        s.cache[key] = _build(s, seed)
    return s.cache[key]


def shapes(s: Subject) -> None:
    """(N, C, H, W) images with one label each; labels in [0, num_classes)."""
    d = data(s)
    for split in ("train", "test"):
        x, y = getattr(d, f"{split}_x"), getattr(d, f"{split}_y")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise CheckFailed(f"{split}_x has shape {tuple(x.shape)}: want (N, 1 or 3, H, W)")
        if y.ndim != 1 or len(y) != len(x) or len(x) == 0:
            raise CheckFailed(
                f"{split}_y has shape {tuple(y.shape)} for {len(x)} images: one label per image"
            )
        if int(y.min()) < 0 or int(y.max()) >= d.num_classes:
            raise CheckFailed(f"{split}_y outside [0, {d.num_classes}): check num_classes")
    if d.num_classes < 2:
        raise CheckFailed(f"num_classes is {d.num_classes}: a classification task needs >= 2")
    if d.train_x.shape[1:] != d.test_x.shape[1:]:
        raise CheckFailed("train and test images differ in shape")


def dtypes(s: Subject) -> None:
    """Images uint8 (0-255) or float32 (0-1); labels int64."""
    import torch

    d = data(s)
    for split in ("train", "test"):
        x, y = getattr(d, f"{split}_x"), getattr(d, f"{split}_y")
        if x.dtype not in (torch.uint8, torch.float32):
            raise CheckFailed(f"{split}_x is {x.dtype}: use uint8 in [0, 255] or float32 in [0, 1]")
        if y.dtype != torch.int64:
            raise CheckFailed(f"{split}_y is {y.dtype}: labels must be int64 (torch.long)")


def value_range(s: Subject) -> None:
    """Float images are finite and in [0, 1]."""
    import torch

    d = data(s)
    for split in ("train", "test"):
        x = getattr(d, f"{split}_x")
        if x.dtype.is_floating_point:
            if not torch.isfinite(x).all():
                raise CheckFailed(f"{split}_x has NaN / inf")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise CheckFailed(
                    f"{split}_x spans [{lo:.3g}, {hi:.3g}]: float images must be in [0, 1] "
                    "(divide uint8 by 255), or list this check as an expected failure if the "
                    "dataset is deliberately unbounded (e.g. Gaussian noise images)"
                )


def seeded_determinism(s: Subject) -> None:
    """Building twice gives identical tensors; a derivation's seed changes its draw."""
    import torch

    a = data(s)
    b = _build(s)
    for f in ("train_x", "train_y", "test_x", "test_y"):
        if not torch.equal(getattr(a, f), getattr(b, f)):
            raise CheckFailed(
                f"two builds differ in {f}: draw from a torch.Generator seeded from the params "
                "(or the job's seed), never from global state"
            )
    if (
        s.entry.extra.get("derivation")
        and getattr(s.entry.parse_params(s.params), "seed", 0) is None
    ):
        other = data(s, seed=1)
        if all(torch.equal(getattr(a, f), getattr(other, f)) for f in ("train_x", "train_y")):
            raise CheckFailed("the job's seed does not change the derivation: use it")


CHECKS = [
    ("shapes", shapes),
    ("dtypes", dtypes),
    ("value_range", value_range),
    ("seeded_determinism", seeded_determinism),
]


# -- neural data ------------------------------------------------------------------------------
def _neural(s: Subject, fresh: bool = False):
    if "neural" in s.cache and not fresh:
        return s.cache["neural"]
    try:
        nd = s.entry.build(s.params)
    except plugin.DataUnavailable as exc:
        raise CheckSkipped(f"data not available here: {' '.join(str(exc).split())}") from None
    if not isinstance(nd, plugin.NeuralData):
        raise CheckFailed(
            f"the factory returned {type(nd).__name__}: return bioprior.plugin.NeuralData"
        )
    if not fresh:
        s.cache["neural"] = nd
    return nd


def neural_shapes(s: Subject) -> None:
    """Stimuli (N, C, H, W); responses (repeats, N, neurons) and/or similarity (N, N)."""
    nd = _neural(s)
    if nd.stimuli.shape[1] not in (1, 3) or nd.num_stimuli < 2:
        raise CheckFailed(
            f"stimuli {tuple(nd.stimuli.shape)}: want N >= 2 images of 1 or 3 channels"
        )


def neural_dtypes(s: Subject) -> None:
    """Stimuli uint8 or float32; responses / similarity floating point."""
    import torch

    nd = _neural(s)
    if nd.stimuli.dtype not in (torch.uint8, torch.float32):
        raise CheckFailed(f"stimuli are {nd.stimuli.dtype}: use uint8 or float32")
    for name in ("responses", "similarity"):
        t = getattr(nd, name)
        if t is not None and not t.dtype.is_floating_point:
            raise CheckFailed(f"{name} are {t.dtype}: use float32 (NaN for missing repeats)")


def neural_value_range(s: Subject) -> None:
    """Float stimuli in [0, 1]; responses finite where present (NaN = missing repeat)."""
    import torch

    nd = _neural(s)
    if nd.stimuli.dtype.is_floating_point and (nd.stimuli.min() < 0 or nd.stimuli.max() > 1):
        raise CheckFailed("float stimuli must be in [0, 1]")
    if nd.responses is not None and torch.isinf(nd.responses).any():
        raise CheckFailed("responses contain inf: use NaN for missing values")


def neural_seeded_determinism(s: Subject) -> None:
    """Building twice gives the same stimuli and responses."""
    import torch

    a, b = _neural(s), _neural(s, fresh=True)
    for name in ("stimuli", "responses", "similarity"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (
            x is not None and not torch.equal(torch.nan_to_num(x), torch.nan_to_num(y))
        ):
            raise CheckFailed(f"two builds differ in {name}: seed every random draw")


NEURAL_CHECKS = [
    ("shapes", neural_shapes),
    ("dtypes", neural_dtypes),
    ("value_range", neural_value_range),
    ("seeded_determinism", neural_seeded_determinism),
]
