"""Dataset loaders. Whole splits become tensors at once: no per-sample DataLoader."""

from __future__ import annotations

import numpy as np
import torch

from bioprior.plugin import DataUnavailable, ImageData, data_root


def load_digits(params) -> ImageData:
    """scikit-learn's 8x8 digits (values 0-16 scaled to uint8), a fixed stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    xtr, xte, ytr, yte = train_test_split(
        images,
        bunch.target,
        test_size=params.test_fraction,
        random_state=params.split_seed,
        stratify=bunch.target,
    )
    return ImageData(
        name="digits",
        train_x=torch.from_numpy(xtr),
        train_y=torch.from_numpy(ytr).long(),
        test_x=torch.from_numpy(xte),
        test_y=torch.from_numpy(yte).long(),
        num_classes=10,
        classes=tuple(str(c) for c in bunch.target_names),
    )


HOW_TO_GET = {
    "cifar10": "the extracted 'cifar-10-batches-py' folder",
    "cifar100": "the extracted 'cifar-100-python' folder",
    "mnist": "'MNIST/raw' with the four idx files",
    "fashion_mnist": "'FashionMNIST/raw' with the four idx files",
}


def _torchvision(name: str, cls_name: str, params) -> ImageData:
    from bioprior.plugin import ensure_torchvision

    ensure_torchvision()
    import torchvision.datasets as tvd

    root = data_root(params.root)
    cls = getattr(tvd, cls_name)
    try:
        train = cls(str(root), train=True, download=params.download)
        test = cls(str(root), train=False, download=params.download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted..."
        raise DataUnavailable(
            f"{name}: not found under {root}; expected {HOW_TO_GET[name]} there",
            dataset=name,
            downloadable=True,
            root=root,
        ) from None

    def images(ds) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(ds.data))
        return data.permute(0, 3, 1, 2).contiguous() if data.ndim == 4 else data[:, None]

    return ImageData(
        name=name,
        train_x=images(train),
        train_y=torch.as_tensor(np.asarray(train.targets)).long(),
        test_x=images(test),
        test_y=torch.as_tensor(np.asarray(test.targets)).long(),
        num_classes=len(train.classes),
        classes=tuple(train.classes),
    )


def load_cifar10(params) -> ImageData:
    return _torchvision("cifar10", "CIFAR10", params)


def load_cifar100(params) -> ImageData:
    return _torchvision("cifar100", "CIFAR100", params)


def load_mnist(params) -> ImageData:
    return _torchvision("mnist", "MNIST", params)


def load_fashion_mnist(params) -> ImageData:
    return _torchvision("fashion_mnist", "FashionMNIST", params)
