"""Which device a run asks for: checked once, before planning, with a typed error."""

from __future__ import annotations

import re

_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A ``--device`` that is malformed or not present on this machine (bad input, exit 2)."""


def check_device(device: str, here: bool = True) -> str:
    """Return ``device`` if it is well formed and (``here``) present on this machine: ``auto``,
    ``cpu``, ``cuda`` or ``cuda:N``. Raises :class:`DeviceError` naming the device exactly as
    given. ``here=False`` (the Ray executor: the steps run on the cluster's GPUs, which the
    cluster checks) checks the form only."""
    if not _PATTERN.match(device):
        raise DeviceError(f"must be auto, cpu, cuda or cuda:N (got {device!r})")
    if not device.startswith("cuda") or not here:
        return device
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"{device}: no CUDA device is available (use auto or cpu)")
    index = int(device.split(":")[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        names = ", ".join(f"cuda:{i}" for i in range(count))
        raise DeviceError(f"{device}: this machine has {count} CUDA device(s) ({names})")
    return device
