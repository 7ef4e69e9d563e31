"""In-memory image datasets and fitting them to a model's input (channels, size).

Every dataset plugin returns an :class:`ImageData`: whole splits as tensors (N, C, H, W), uint8
in [0, 255] or float in [0, 1] units, so training can run on device-resident data by index.
Consumers of an :class:`ImageData` convert with :func:`to_float` where they need floats.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F


class DataUnavailable(RuntimeError):
    """A dataset that is not on disk. The message says what is missing and where it was looked
    for; :meth:`advice` adds how to get it, worded for where the dataset is named (a submission
    field such as ``training.dataset.params.source``, or a CLI option), so that the advice works
    when followed: ``download: true`` belongs in the params of the dataset that has it, never in
    a derivation's (``subset``) that names it as its source.

    ``dataset`` is the plugin name, ``downloadable`` whether its params have ``download``, and
    ``folder`` the folder a user puts there by hand (for a dataset that is not downloadable).
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        downloadable: bool = False,
        root: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.dataset = dataset
        self.downloadable = downloadable
        self.root = root

    def advice(self, where: str | None = None) -> str:
        """How to make the data available. ``where``: the submission field naming the dataset
        (e.g. ``training.dataset.params.source``); None for a CLI option (``--dataset``)."""
        if self.dataset is None:
            return ""
        name = self.dataset
        ways = []
        if self.downloadable:
            root = f" --data-root {self.root}" if self.root is not None else ""
            ways.append(f"run `bioprior download {name}{root}`")
            if where is not None:
                ways.append(f"write {where} as `{{name: {name}, params: {{download: true}}}}`")
        elsewhere = "--data-root DIR or BIOPRIOR_DATA"
        if where is not None:
            elsewhere += f", or write {where} as `{{name: {name}, params: {{root: DIR}}}}`"
        ways.append(f"to load it from another folder: {elsewhere}")
        return "; ".join(ways)

    def describe(self, where: str | None = None) -> str:
        """The message and the advice on one line."""
        advice = self.advice(where)
        return f"{self.message}. To fix: {advice}" if advice else self.message


@dataclass(frozen=True)
class ImageData:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def size(self) -> int:
        return int(self.train_x.shape[-1])

    def as_float(self) -> ImageData:
        return replace(self, train_x=to_float(self.train_x), test_x=to_float(self.test_x))

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images (float units)."""
        x = to_float(self.train_x)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-6)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


_LUMA = torch.tensor([0.299, 0.587, 0.114])


def fit_images(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Convert float images to ``channels`` (gray <-> RGB) and resize to ``size`` x ``size``.

    Grayscale to RGB repeats the channel; RGB to grayscale uses ITU-R 601 luma weights; resizing
    is bilinear, anti-aliased when shrinking.
    """
    x = to_float(x)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * _LUMA.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if x.shape[-1] != size or x.shape[-2] != size:
        shrink = size < min(x.shape[-2:])
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
    return x.contiguous()


def fit_data(data: ImageData, channels: int, size: int) -> ImageData:
    """The splits fitted to a model's input. uint8 images that need no resizing or luma stay
    uint8 (a quarter of the memory on the device; the trainer and the evaluators convert each
    batch there, to the same floats as :func:`to_float`); the rest become float."""
    return replace(
        data,
        train_x=_fit_split(data.train_x, channels, size),
        test_x=_fit_split(data.test_x, channels, size),
    )


def _fit_split(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    same_size = x.shape[-2:] == (size, size)
    if x.dtype == torch.uint8 and same_size and x.shape[1] in (channels, 1):
        return x.expand(-1, channels, -1, -1).contiguous()
    return fit_images(x, channels, size)


def source_field(dataset, base: str = "training.dataset") -> str:
    """The submission field that names the source dataset under a chain of derivations:
    ``training.dataset`` for a plain dataset, ``training.dataset.params.source`` for
    ``subset(cifar10)``, one ``.params.source`` more per derivation."""
    while getattr(dataset, "source", None) is not None:
        dataset, base = dataset.source, f"{base}.params.source"
    return base
