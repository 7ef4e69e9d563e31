"""Built-in datasets: scikit-learn's digits (offline, the embedded default), torchvision's
CIFAR-10/100 from a data root, MNIST and Fashion-MNIST from their IDX files (gzipped or not) in a
data root or, for Fashion-MNIST, Debian's copy (``apt-get install dataset-fashion-mnist``: read in
place from /usr/share/datasets/fashion-mnist; ``$BIOPRIOR_SYSTEM_DATA`` overrides
/usr/share/datasets), and derivations of any dataset: the random data of Zhang et al. (2017) and
tsvetkov2020 (Methods), and class / example subsets (Exp. 2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bioprior.plugin import PluginParams, hookimpl

ZHANG2017 = "Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking generalization"


class DigitsParams(PluginParams):
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Held-out fraction (stratified)."
    )
    split_seed: int = Field(default=0, description="Seed of the fixed train/test split.")


class TorchvisionParams(PluginParams):
    root: str | None = Field(
        default=None,
        description="Data root (None: $BIOPRIOR_DATA or $BIOPRIOR_HOME/data, then a system copy "
        "such as Debian's Fashion-MNIST; given: this folder only).",
    )
    download: bool = Field(default=False, description="Download into the root if missing.")


class ImagenetteParams(TorchvisionParams):
    variant: Literal["160px", "320px", "full"] = Field(
        default="160px", description="Which Imagenette release (torchvision `size`)."
    )
    image_size: int = Field(
        default=64, ge=8, le=512, description="Stored size: shorter side resized, centre crop."
    )


class TinyImagenetParams(PluginParams):
    root: str | None = Field(
        default=None, description="Data root (None: $BIOPRIOR_DATA or $BIOPRIOR_HOME/data)."
    )
    image_size: int = Field(default=64, ge=8, le=512, description="Stored size (native: 64).")


class DerivationParams(PluginParams):
    source: Any = Field(
        default=None, description="Dataset this is derived from ({name, params}; default digits)."
    )
    seed: int | None = Field(
        default=None, description="Seed of the random draw (None: the job's seed)."
    )


class GaussianNoiseParams(DerivationParams):
    include_test: bool = Field(default=True, description="Replace the test images with noise too.")


class RandomLabelsParams(DerivationParams):
    fraction: float = Field(
        default=1.0, ge=0, le=1, description="Fraction of training labels replaced."
    )


class ShuffledPixelsParams(DerivationParams):
    per_image: bool = Field(
        default=False, description="A new permutation per image (Zhang's 'random pixels')."
    )


class SubsetParams(DerivationParams):
    num_classes: int | None = Field(
        default=None, ge=2, description="Keep the first N classes (None: all)."
    )
    examples_per_class: int | None = Field(
        default=None, ge=1, description="Training examples kept per class."
    )


TORCHVISION = {
    "cifar10": (
        "CIFAR10",
        "Krizhevsky (2009), Learning multiple layers of features from tiny images",
    ),
    "cifar100": (
        "CIFAR100",
        "Krizhevsky (2009), Learning multiple layers of features from tiny images",
    ),
    "mnist": ("MNIST", "LeCun, Bottou, Bengio & Haffner (1998)"),
    "fashion_mnist": ("FashionMNIST", "Xiao, Rasul & Vollgraf (2017), Fashion-MNIST"),
}

DERIVATIONS = {
    "gaussian_noise": (
        GaussianNoiseParams,
        "Pixels drawn per channel from N(mean, std) of the source (same shape, count, classes).",
    ),
    "random_labels": (RandomLabelsParams, "Training labels replaced by uniform random classes."),
    "shuffled_pixels": (
        ShuffledPixelsParams,
        "One fixed pixel permutation applied to every image.",
    ),
    "subset": (
        SubsetParams,
        "First N classes and M training examples per class (tsvetkov2020 Exp. 2).",
    ),
}


DESCRIPTIONS = {
    "mnist": "MNIST's IDX files (gzipped or not) from <data root>/MNIST/raw.",
    "fashion_mnist": "Fashion-MNIST's IDX files (gzipped or not) from <data root>/FashionMNIST/raw, "
    "else Debian's /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist).",
}

GEOMETRY = {  # (in_channels, input_size, num_classes) of the torchvision datasets
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "mnist": (1, 28, 10),
    "fashion_mnist": (1, 28, 10),
}


@hookimpl
def register_datasets(register):
    register(
        name="digits",
        factory="bioprior.plugins.datasets.sources:load_digits",
        params=DigitsParams,
        version="1",
        citation="scikit-learn's copy of the UCI optical digits (Alpaydin & Kaynak 1998)",
        description="1,797 real 8x8 grayscale digits, 10 classes; offline.",
    )
    for name, (cls_name, citation) in TORCHVISION.items():
        register(
            name=name,
            factory=f"bioprior.plugins.datasets.sources:load_{name}",
            params=TorchvisionParams,
            version="1",  # the IDX reader gives torchvision's bytes: same data, same version
            citation=citation,
            description=DESCRIPTIONS.get(name, f"torchvision {cls_name} from a data root."),
            extra={"geometry": GEOMETRY[name]},  # create_model(..., dataset=name) without data
        )
    register(
        name="imagenette",
        factory="bioprior.plugins.datasets.image_folders:load_imagenette",
        params=ImagenetteParams,
        version="1",
        citation="Howard (2019), Imagenette, https://github.com/fastai/imagenette (evanson)",
        description="10 ImageNet classes (torchvision Imagenette), in memory at image_size.",
    )
    register(
        name="tiny_imagenet",
        factory="bioprior.plugins.datasets.image_folders:load_tiny_imagenet",
        params=TinyImagenetParams,
        version="1",
        citation="Le & Yang (2015), Tiny ImageNet Visual Recognition Challenge (safarani2021)",
        description="200 classes, 64 px, from the tiny-imagenet-200 folder (val as test).",
    )
    for name, (params, description) in DERIVATIONS.items():
        register(
            name=name,
            factory=f"bioprior.plugins.datasets.derivations:{name}",
            params=params,
            version="1",
            citation=ZHANG2017,
            description=description,
            extra={"derivation": True, "default_source": "digits"},
        )
