"""Check the files a submission names, by content, before anything trains.

Each check reads headers only (never the data, never a pickle) and compares the sizes they claim
with the file's real size, so a renamed pickle, a ``.npy`` posing as an ``.npz`` or a header that
claims 373 GiB is one line of bad input instead of a traceback, a failed job or an allocation:

- :func:`check_safetensors`: the 8-byte header length, the JSON header, every tensor's dtype,
  shape and byte range against the file (the safetensors format, huggingface/safetensors);
- :func:`check_npz`: a zip archive of ``.npy`` members, each header parsed by numpy's own
  reader, no object (pickled) dtype, shape x itemsize equal to the member's size;
- :func:`check_image_folder`: ``<folder>/<class>/<image>`` with images recognised by PIL from
  their headers (no pixels decoded) and of bounded size.

A plugin marks a parameter that names such a file with ``Field(json_schema_extra={"file":
"safetensors" | "npz" | "image_folder"})``; :func:`check_fields` finds the marked fields of a
parsed parameter model, and ``validate`` and ``score`` run them. Every check raises
:class:`FileCheckError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bioprior.registry.base.paths import data_root

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_NPY_HEADER = 64 * 1024
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "C64": 8, "C128": 16,
}  # fmt: skip
_SUB_BYTE = {"F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75}


class FileCheckError(ValueError):
    """A file that is not what its parameter says it is (one line)."""


def _what_is(head: bytes) -> str:
    """A guess at a file's real type from its first bytes, for the message."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive (e.g. torch.save's format, which would be unpickled)"
    if head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
        return "a Python pickle (never loaded)"
    if head.startswith(b"\x93NUMPY"):
        return "a .npy array"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return "an image"
    if not head:
        return "empty"
    return "not recognised"


def _regular(path: Path) -> os.stat_result:
    try:
        info = path.stat()
    except OSError as exc:
        raise FileCheckError(f"{path}: {exc.strerror or 'cannot read'}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileCheckError(f"{path}: not a regular file")
    return info


def _read_head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise FileCheckError(f"{path}: {exc.strerror or 'cannot read'}") from None


# -- safetensors -----------------------------------------------------------------------------
def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a ``.safetensors`` file's header against its size; return the tensor table."""
    path = Path(path)
    size = _regular(path).st_size
    head = _read_head(path, 8)
    if len(head) < 8:
        raise FileCheckError(f"{path}: not a safetensors file ({_what_is(head)}, {size} bytes)")
    n = int.from_bytes(head, "little")
    if n < 2 or n > min(size - 8, MAX_SAFETENSORS_HEADER):
        raise FileCheckError(
            f"{path}: not a safetensors file ({_what_is(head)}; its header would be {n:,} "
            f"bytes of a {size:,}-byte file)"
        )
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FileCheckError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FileCheckError(f"{path}: not a safetensors file (header is not a JSON object)")
    data_size = size - 8 - n
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        where = f"{path}: tensor {name[:60]!r}"
        if not isinstance(info, dict):
            raise FileCheckError(f"{where}: malformed header entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES and dtype not in _SUB_BYTE:
            raise FileCheckError(f"{where}: unknown dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and all(_is_size(d) for d in shape)):
            raise FileCheckError(f"{where}: malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))):
            raise FileCheckError(f"{where}: malformed data_offsets")
        begin, end = offsets
        itemsize = SAFETENSORS_DTYPES.get(dtype) or _SUB_BYTE[dtype]
        nbytes = math.prod(shape) * itemsize
        if begin > end or end > data_size:
            raise FileCheckError(
                f"{where}: bytes {begin:,}..{end:,} lie outside the {data_size:,} bytes of data "
                "(truncated file?)"
            )
        if end - begin != nbytes:
            raise FileCheckError(
                f"{where}: shape {tuple(shape)} {dtype} needs {nbytes:,} bytes, the header "
                f"gives {end - begin:,}"
            )
    return tensors


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


# -- npz ---------------------------------------------------------------------------------------
def check_npz(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """Validate an ``.npz`` archive without reading its arrays: ``{name: (shape, dtype)}``."""
    import numpy as np
    from numpy.lib import format as npy_format

    path = Path(path)
    size = _regular(path).st_size
    head = _read_head(path, 8)
    if not head.startswith(b"PK"):
        hint = " (save arrays with numpy.savez)" if head.startswith(b"\x93NUMPY") else ""
        raise FileCheckError(f"{path}: not an .npz archive ({_what_is(head)}){hint}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileCheckError(f"{path}: not a readable .npz archive ({exc})") from None
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    with archive:
        for info in archive.infolist():
            name = info.filename
            label = name.removesuffix(".npy")[:60]
            where = f"{path}: array {label!r}"
            if not name.endswith(".npy"):
                raise FileCheckError(f"{path}: member {name[:60]!r} is not an .npy array")
            if info.compress_size > size:
                raise FileCheckError(f"{where}: member larger than the file (corrupt archive)")
            try:
                with archive.open(info) as f:
                    version = npy_format.read_magic(f)
                    if version not in {(1, 0), (2, 0), (3, 0)}:
                        raise ValueError(f"unknown .npy version {version}")
                    reader = (
                        npy_format.read_array_header_1_0
                        if version == (1, 0)
                        else npy_format.read_array_header_2_0
                    )
                    shape, _, dtype = reader(f, max_header_size=MAX_NPY_HEADER)
                    header_end = f.tell()
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, SyntaxError) as exc:
                msg = " ".join(str(exc).split())[:120]
                raise FileCheckError(f"{where}: not a valid .npy header ({msg})") from None
            if dtype.hasobject:
                raise FileCheckError(f"{where}: object arrays (pickles) are not allowed")
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size - header_end != nbytes:
                raise FileCheckError(
                    f"{where}: header claims shape {tuple(shape)} {dtype} ({_gib(nbytes)}), "
                    f"the archive holds {_gib(info.file_size - header_end)}"
                )
            out[label] = (tuple(shape), np.dtype(dtype).str)
    return out


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n:,} bytes"


# -- image folders -----------------------------------------------------------------------------
def check_image_folder(path: str | os.PathLike) -> dict[str, int]:
    """``<path>/<class>/<image>``: ``{class: images}``; every image's header read by PIL."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise FileCheckError(f"{path}: not a folder")
    counts: dict[str, int] = {}
    seen = 0
    for folder in sorted(d for d in path.iterdir() if d.is_dir()):
        counts[folder.name] = 0
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            seen += 1
            if seen > MAX_IMAGES:
                raise FileCheckError(f"{path}: more than {MAX_IMAGES:,} images")
            _regular(f)
            try:
                with Image.open(f) as im:  # reads the header only
                    w, h = im.size
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                kind = _what_is(_read_head(f, 8))
                raise FileCheckError(f"{f}: not a readable image ({kind}; {type(exc).__name__})")
            if w * h > MAX_IMAGE_PIXELS:
                raise FileCheckError(f"{f}: {w} x {h} px is over {MAX_IMAGE_PIXELS:,} pixels")
            counts[folder.name] += 1
    if not any(counts.values()):
        raise FileCheckError(f"{path}: no images in <class>/ sub-folders (ImageFolder layout)")
    return counts


CHECKS: dict[str, Callable[[Path], Any]] = {
    "safetensors": check_safetensors,
    "npz": check_npz,
    "image_folder": check_image_folder,
}


def resolve(value: str) -> Path | None:
    """A path parameter as plugins resolve it (as given, else under the data root); None if it
    does not exist (a missing file is reported by the plugin at preflight, with its own hint)."""
    given = Path(value).expanduser()
    if given.exists():
        return given
    if not given.is_absolute():
        rooted = data_root() / given
        if rooted.exists():
            return rooted
    return None


_CACHE: dict[tuple[str, str, int, int], str | None] = {}


def check(kind: str, value: str) -> None:
    """Run the ``kind`` check on the file ``value`` names, if it exists (cached by mtime)."""
    path = resolve(value)
    if path is None:
        return
    try:
        info = path.stat()
    except OSError:
        return
    key = (kind, str(path), info.st_mtime_ns, info.st_size)
    if key not in _CACHE:
        try:
            CHECKS[kind](path)
            _CACHE[key] = None
        except FileCheckError as exc:
            _CACHE[key] = str(exc)
    if _CACHE[key] is not None:
        raise FileCheckError(_CACHE[key])


def check_fields(params: BaseModel, depth: int = 0) -> Iterator[tuple[tuple[Any, ...], str]]:
    """``(location, message)`` for every marked file field of ``params`` (and nested models)
    whose file fails its check."""
    if depth > 8:
        return
    for name, field in type(params).model_fields.items():
        value = getattr(params, name, None)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind = extra.get("file")
        if isinstance(kind, str) and kind in CHECKS and isinstance(value, str):
            try:
                check(kind, value)
            except FileCheckError as exc:
                yield (name,), str(exc)
        for loc, item in models_in(value):
            for sub, msg in check_fields(item, depth + 1):
                yield (name, *loc, *sub), msg


def models_in(value: Any) -> Iterator[tuple[tuple[Any, ...], BaseModel]]:
    """(location, model) of the pydantic models in a field's value: itself, or the items of a
    list, tuple or dict (one level)."""
    if isinstance(value, BaseModel):
        yield (), value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, BaseModel):
                yield (i,), v
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, BaseModel):
                yield (k,), v


def writable_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into ``folder``, or None; creates nothing. An existing folder
    is tried with a temporary file (which the permission bits alone cannot tell, e.g. on a
    read-only mount); a missing one needs its nearest existing ancestor to be a writable folder."""
    import tempfile

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot write to {folder}: {probe} is not a folder"
    if probe == folder:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".bioprior-write-test-"):
                pass
        except OSError as exc:
            return f"cannot write to {folder}: {exc.strerror or exc}"
    elif not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write to {folder}: {probe} is not writable"
    return None
