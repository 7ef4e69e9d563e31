"""IDX files, the format of MNIST and Fashion-MNIST (LeCun et al.), read gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, the element type, the number of dimensions),
one big-endian uint32 per dimension, then the elements. Only what MNIST-like datasets use is
read: unsigned bytes (type 0x08), images ``0x00000803`` (N x 28 x 28) and labels ``0x00000801``
(N). A file that is not such a file raises :class:`DataUnavailable` with one line naming the file
and what is wrong with it (no advice: downloading again would not replace a file that exists).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from bioprior.plugin import DataUnavailable

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
UNSIGNED_BYTE = 0x08
IMAGE_SIDE = 28
NUM_CLASSES = 10


def _bad(path: Path, what: str) -> DataUnavailable:
    return DataUnavailable(f"{path}: {what}")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except gzip.BadGzipFile:
        raise _bad(path, "not a gzip file (the name ends in .gz)") from None
    except (EOFError, zlib.error) as exc:
        raise _bad(path, f"corrupt gzip data ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise _bad(path, f"cannot read it ({exc.strerror or exc})") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The array an IDX file of unsigned bytes holds, checked against ``magic`` (images or
    labels) and its header (dimension count, byte count). Read-only view of the file's bytes."""
    path = Path(path)
    kind = {IMAGES_MAGIC: "IDX images", LABELS_MAGIC: "IDX labels"}[magic]
    data = _read_bytes(path)
    if len(data) < 4:
        raise _bad(path, f"{len(data)} bytes, too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        if data[:2] == b"\0\0" and data[3] == magic & 0xFF:
            raise _bad(
                path,
                f"element type 0x{data[2]:02x}, expected 0x{UNSIGNED_BYTE:02x} (unsigned byte)",
            )
        raise _bad(path, f"magic 0x{found:08x}, expected 0x{magic:08x} ({kind})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad(path, f"truncated: {len(data)} bytes, the header alone needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) < expected:
        raise _bad(path, f"truncated: {len(data)} bytes, the header {shape} needs {expected}")
    if len(data) > expected:
        raise _bad(
            path,
            f"{len(data) - expected} extra bytes after the {expected} its header {shape} needs",
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected - header, offset=header).reshape(
        shape
    )


def read_images(path: str | Path) -> torch.Tensor:
    """IDX images as uint8 (N, 1, 28, 28)."""
    path = Path(path)
    array = read_idx(path, IMAGES_MAGIC)
    if array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        size = "x".join(map(str, array.shape[1:])) or "scalars"
        raise _bad(path, f"images of {size}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    return torch.from_numpy(array.copy())[:, None]


def read_labels(path: str | Path, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """IDX labels as int64 (N,), each in 0..num_classes-1."""
    path = Path(path)
    array = read_idx(path, LABELS_MAGIC)
    if array.size and int(array.max()) >= num_classes:
        at = int(np.argmax(array >= num_classes))
        raise _bad(path, f"label {int(array[at])} at index {at} out of range 0..{num_classes - 1}")
    return torch.from_numpy(array.astype(np.int64))


def read_split(
    images: str | Path, labels: str | Path, num_classes: int = NUM_CLASSES
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split: images (N, 1, 28, 28) uint8 and their labels (N,) int64, counts checked."""
    x, y = read_images(images), read_labels(labels, num_classes)
    if len(x) != len(y):
        raise _bad(Path(images), f"{len(x)} images but {labels} has {len(y)} labels")
    return x, y
