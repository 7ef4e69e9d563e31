"""Derived datasets (Zhang et al. 2017 Sec. 2; tsvetkov2020 Methods). Each takes the source data
already fitted to the model's input and the job's seed, and returns a new :class:`ImageData`."""

from __future__ import annotations

from dataclasses import replace

import torch

from bioprior.plugin import ImageData, to_float


def _generator(params, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(params.seed if params.seed is not None else seed)


def gaussian_noise(params, source: ImageData, seed: int) -> ImageData:
    """Random images: every pixel drawn from N(mean_c, std_c) of the source's training images,
    computed per channel; same shape, count and labels (tsvetkov2020, Methods)."""
    g = _generator(params, seed)
    mean, std = source.channel_stats()

    def draw(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g)
        return noise * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)

    test_x = draw(source.test_x) if params.include_test else to_float(source.test_x)
    return replace(
        source, name=f"gaussian_noise({source.name})", train_x=draw(source.train_x), test_x=test_x
    )


def random_labels(params, source: ImageData, seed: int) -> ImageData:
    """A ``fraction`` of training labels replaced by uniformly random classes."""
    g = _generator(params, seed)
    y = source.train_y.clone()
    chosen = torch.rand(len(y), generator=g) < params.fraction
    y[chosen] = torch.randint(0, source.num_classes, (int(chosen.sum()),), generator=g)
    return replace(source, name=f"random_labels({source.name})", train_y=y)


def shuffled_pixels(params, source: ImageData, seed: int) -> ImageData:
    """One fixed permutation of pixel positions (or a new one per image: 'random pixels')."""
    g = _generator(params, seed)

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        if params.per_image:
            idx = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
            return torch.gather(flat, 2, idx[:, None, :].expand(n, c, h * w)).reshape(x.shape)
        return flat[:, :, torch.randperm(h * w, generator=g)].reshape(x.shape)

    return replace(
        source,
        name=f"shuffled_pixels({source.name})",
        train_x=shuffle(source.train_x),
        test_x=shuffle(source.test_x),
    )


def subset(params, source: ImageData, seed: int) -> ImageData:
    """The first ``num_classes`` classes, ``examples_per_class`` random training examples each."""
    g = _generator(params, seed)
    k = params.num_classes or source.num_classes
    if k > source.num_classes:
        raise ValueError(f"subset: {k} classes requested, {source.name} has {source.num_classes}")
    keep = []
    for c in range(k):
        idx = torch.nonzero(source.train_y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        if params.examples_per_class is not None:
            if params.examples_per_class > len(idx):
                raise ValueError(
                    f"subset: class {c} has {len(idx)} examples, {params.examples_per_class} requested"
                )
            idx = idx[: params.examples_per_class]
        keep.append(idx)
    train_idx = torch.cat(keep).sort().values
    test_mask = source.test_y < k
    return replace(
        source,
        name=f"subset({source.name})",
        train_x=source.train_x[train_idx],
        train_y=source.train_y[train_idx],
        test_x=source.test_x[test_mask],
        test_y=source.test_y[test_mask],
        num_classes=k,
        classes=source.classes[:k],
    )
