"""Dataset loaders. Whole splits become tensors at once: no per-sample DataLoader.

MNIST and Fashion-MNIST are read with :mod:`.idx` from their four IDX files, each gzipped or not
(the uncompressed one when both are there), in place, from the first folder that has all four:
``<data root>/MNIST/raw`` or ``<data root>/FashionMNIST/raw`` (torchvision's layout), then, for
Fashion-MNIST, Debian's copy (``apt-get install dataset-fashion-mnist``):
``/usr/share/datasets/fashion-mnist``. ``$BIOPRIOR_SYSTEM_DATA`` replaces ``/usr/share/datasets``
(tests); a ``root`` given in the params is the only folder looked in. ``download: true`` has
torchvision fetch the files into the data root when no folder has them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bioprior.plugin import DataUnavailable, ImageData, data_root
from bioprior.plugins.datasets.idx import read_split


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
    "mnist": "'MNIST/raw' with the four idx files (gzipped or not)",
    "fashion_mnist": "'FashionMNIST/raw' with the four idx files (gzipped or not), or Debian's "
    "copy: `apt-get install dataset-fashion-mnist` (read in place from "
    "/usr/share/datasets/fashion-mnist)",
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


#: where system packages put datasets; ``$BIOPRIOR_SYSTEM_DATA`` overrides it (tests)
SYSTEM_DATA = Path("/usr/share/datasets")
SYSTEM_DATA_ENV = "BIOPRIOR_SYSTEM_DATA"

IDX_FILES = {  # split -> (images, labels), as LeCun's site, torchvision and Debian name them
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IDX_DATASETS = {  # name -> (torchvision's folder under the data root, system folder or None)
    "mnist": ("MNIST", None),  # Debian packages no MNIST
    "fashion_mnist": ("FashionMNIST", "fashion-mnist"),  # Debian: dataset-fashion-mnist
}
SYSTEM_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

CLASSES = {  # as torchvision's MNIST.classes and FashionMNIST.classes
    "mnist": (
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def system_data() -> Path:
    """``$BIOPRIOR_SYSTEM_DATA`` if set, else ``/usr/share/datasets`` (Debian's datasets)."""
    env = os.environ.get(SYSTEM_DATA_ENV)
    return Path(env).expanduser() if env else SYSTEM_DATA


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` in ``folder``, uncompressed preferred over ``stem.gz``; None if neither."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four files of ``folder`` by split, or None unless all four are there."""
    found = {
        split: (_idx_file(folder, images), _idx_file(folder, labels))
        for split, (images, labels) in IDX_FILES.items()
    }
    if any(p is None for pair in found.values() for p in pair):
        return None
    return found  # type: ignore[return-value]


def idx_folders(name: str, params) -> list[Path]:
    """Where ``name`` is looked for, in order: ``<data root>/<torchvision folder>/raw``, then
    (unless ``params.root`` pins the folder) the system's copy, e.g. Debian's
    ``/usr/share/datasets/fashion-mnist``."""
    tv_folder, system = IDX_DATASETS[name]
    folders = [data_root(params.root) / tv_folder / "raw"]
    if system is not None and not params.root:
        folders.append(system_data() / system)
    return folders


def _idx(name: str, params) -> ImageData:
    """MNIST or Fashion-MNIST from the four IDX files (gzipped or not) of the first folder of
    :func:`idx_folders` that has all four, read in place (nothing is extracted or copied). With
    ``download``, torchvision fetches them into the data root when no folder has them."""
    folders = idx_folders(name, params)
    files = next((f for f in map(_idx_folder, folders) if f is not None), None)
    root = data_root(params.root)
    if files is None and params.download:
        _download(name, root)
        files = _idx_folder(folders[0])
    if files is None:
        looked = " or ".join(str(f) for f in folders)
        stems = ", ".join(stem for pair in IDX_FILES.values() for stem in pair)
        expected = f"'{IDX_DATASETS[name][0]}/raw' with them under {root}"
        if len(folders) > 1:  # the system's copy was looked for too
            expected += f", or `apt-get install {SYSTEM_PACKAGES[name]}` (Debian)"
        raise DataUnavailable(
            f"{name}: not found in {looked} (looked for {stems}, each gzipped or not); "
            f"expected {expected}",
            dataset=name,
            downloadable=True,
            root=root,
        )
    train_x, train_y = read_split(*files["train"])
    test_x, test_y = read_split(*files["test"])
    return ImageData(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(CLASSES[name]),
        classes=CLASSES[name],
    )


def _download(name: str, root: Path) -> None:
    """torchvision's download of the four files into ``<root>/<folder>/raw`` (kept gzipped and
    extracted there, as torchvision leaves them)."""
    from bioprior.plugin import ensure_torchvision

    ensure_torchvision()
    import torchvision.datasets as tvd

    cls = getattr(tvd, IDX_DATASETS[name][0])
    folder = root / IDX_DATASETS[name][0] / "raw"
    try:
        cls(str(root), train=True, download=True)
    except RuntimeError:  # torchvision: "Error downloading ..."
        raise DataUnavailable(
            f"{name}: could not download it into {folder}; expected {HOW_TO_GET[name]}",
            dataset=name,
            downloadable=True,
            root=root,
        ) from None


def load_mnist(params) -> ImageData:
    return _idx("mnist", params)


def load_fashion_mnist(params) -> ImageData:
    return _idx("fashion_mnist", params)
