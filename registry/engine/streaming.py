"""Where a training set lives, and how its batches reach the device.

A dataset that fits stays on the device (as uint8, converted per batch there) and a batch is a
gather by index. A training split too big for the device stays in host memory: each batch is
gathered on the host into one of two pinned buffers and copied with ``non_blocking`` (a DMA
from pinned memory, queued on the compute stream: no staging, no wait), so the host gathers the
next batch while the device works on this one; a buffer is refilled only once the copy out of it
has finished (a CUDA event). Only the two buffers are pinned, never the dataset.
The same code serves a solo training (one member) and a batched one (K members, each with its
own data and order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from bioprior.registry.toolkit.data import ImageData

#: the share of a device's free memory a whole dataset may take and still live there; a bigger
#: one keeps its training split in host memory (training needs the rest)
RESIDENT_SHARE = 0.5


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.nbytes for t in tensors)


def fits_on_device(size: int, device: torch.device, free: int | None = None) -> bool:
    """Whether ``size`` bytes of data may live on ``device``: always on a CPU (the host is the
    device), on a GPU within :data:`RESIDENT_SHARE` of its free memory (``free``, else
    ``torch.cuda.mem_get_info``)."""
    if device.type == "cpu":
        return True
    if free is None:
        if device.type != "cuda":
            return True
        free, _total = torch.cuda.mem_get_info(device)
    return size <= RESIDENT_SHARE * free


def place(data: ImageData, device: torch.device, free: int | None = None) -> ImageData:
    """``data`` on ``device``, except a training split that does not fit (:func:`fits_on_device`
    for the whole dataset): it stays in host memory and streams per batch. The test split always
    moves: benchmarks slice it, perturb it and attack it on the device."""
    x, y = data.train_x, data.train_y
    if fits_on_device(nbytes(x, y, data.test_x, data.test_y), device, free):
        return data.to(device)
    host = torch.device("cpu")
    return replace(
        data,
        train_x=x.to(host),
        train_y=y.to(host),
        test_x=data.test_x.to(device),
        test_y=data.test_y.to(device),
    )


def streams(x: torch.Tensor, device: torch.device) -> bool:
    """Whether data ``x`` reaches ``device`` by streaming: it is in host memory, the device not."""
    return x.device.type == "cpu" and device.type != "cpu"


class HostBatches:
    """Batches of K members' host-memory data, gathered into pinned buffers and copied to
    ``device`` asynchronously. ``xs[j]`` / ``ys[j]`` are member j's images and labels (one shape
    for all members; ``ys`` None for images alone); ``batch(idx)`` takes a (K, m) index tensor
    (m <= ``batch_size``) and returns (K, m, ...) images and (K, m) labels (None) on ``device``.
    A batch stays valid until the call after next (on a CPU target the copy is the buffer)."""

    def __init__(
        self,
        xs: Sequence[torch.Tensor],
        ys: Sequence[torch.Tensor] | None,
        device: torch.device,
        batch_size: int,
    ):
        self.xs, self.ys, self.device = list(xs), list(ys) if ys is not None else None, device
        self.cuda = device.type == "cuda"
        k, shape = len(self.xs), tuple(self.xs[0].shape[1:])
        self.shape = shape

        def buffer(dtype: torch.dtype, *item: int) -> torch.Tensor:
            return torch.empty((k * batch_size, *item), dtype=dtype, pin_memory=self.cuda)

        self.slots = [
            (
                buffer(self.xs[0].dtype, *shape),
                buffer(self.ys[0].dtype) if self.ys is not None else None,
            )
            for _ in range(2)
        ]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0
        self.index_device = torch.device("cpu")  # where batch() wants its indices

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        slot = self.turn % 2
        self.turn += 1
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # its last copy to the device has finished
        k, m = idx.shape
        x_buffer, y_buffer = self.slots[slot]
        bx = x_buffer[: k * m].view(k, m, *self.shape)
        idx = idx.cpu()
        for j in range(k):
            torch.index_select(self.xs[j], 0, idx[j], out=bx[j])
        xb, yb = bx.to(self.device, non_blocking=True), None
        if self.ys is not None:
            by = y_buffer[: k * m].view(k, m)
            for j in range(k):
                torch.index_select(self.ys[j], 0, idx[j], out=by[j])
            yb = by.to(self.device, non_blocking=True)
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
            self.copied[slot] = event
        return xb, yb


class ResidentBatches:
    """Batches of K members' device-resident data: one gather by index (members that share one
    tensor, as a sweep over one dataset does, gather from it without a stacked copy)."""

    def __init__(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]):
        self.shared = all(x is xs[0] for x in xs) and all(y is ys[0] for y in ys)
        self.x = xs[0] if self.shared else torch.stack(list(xs))
        self.y = ys[0] if self.shared else torch.stack(list(ys))
        self.members = torch.arange(len(xs), device=xs[0].device)[:, None]
        self.index_device = xs[0].device  # where batch() wants its indices

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared:
            return self.x[idx], self.y[idx]
        return self.x[self.members, idx], self.y[self.members, idx]


def member_batches(
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    device: torch.device,
    batch_size: int,
) -> HostBatches | ResidentBatches:
    """The batch source for K members' data trained on ``device``: streamed when the data is in
    host memory and ``device`` is not, else resident (data on another accelerator moves first)."""
    if streams(xs[0], device):
        return HostBatches(xs, ys, device, batch_size)
    if xs[0].device != device:
        xs, ys = [x.to(device) for x in xs], [y.to(device) for y in ys]
    return ResidentBatches(xs, ys)
