"""A small compatibility layer over ``imagecorruptions`` 1.1.2 (Michaelis et al. 2019's packaging of
Hendrycks & Dietterich 2019's ImageNet-C corruptions), so that all 19 corruptions run on current
numpy / scikit-image / setuptools and are reproducible from a seed.

The library is used as is: its functions are *copied* with patched globals (the installed module
is never modified), and only what is broken is replaced:

- ``from pkg_resources import resource_filename`` (setuptools >= 81 has no ``pkg_resources``): a
  stub module answering ``resource_filename`` from ``importlib`` is put in ``sys.modules`` only
  while the library imports (``frost`` uses it to find its images).
- ``skimage.filters.gaussian(..., multichannel=True)`` (removed in scikit-image 0.19+; used by
  ``glass_blur`` and ``gaussian_blur``): a wrapper maps it to ``channel_axis=-1``.
- ``np.float_`` (removed in numpy 2; used by ``fog``'s ``plasma_fractal``): a numpy proxy with
  ``float_ = float64``.
- ``impulse_noise`` calls ``skimage.util.random_noise`` without ``rng``, which draws from a fresh
  unseeded generator: the copy passes ``rng`` drawn from ``np.random``, so ``np.random.seed`` fixes it.

:func:`corrupt` seeds ``np.random`` per call (and restores the caller's state), so a corruption of
an image is a pure function of (image, name, severity, seed, preset).

Presets: ``imagenet_c`` (the library's constants, ImageNet-C at 224 px) and ``cifar10_c`` (the
milder constants of Hendrycks' ``make_cifar_c.py`` for CIFAR-10-C at 32 px), substituted in the
copied function's constant table. ``zoom_blur`` (its table is built from ``np.arange`` calls, not a
constant) keeps the ImageNet-C definition in the ``cifar10_c`` preset. ``elastic_transform`` of
``cifar10_c`` is CIFAR-10-C's own algorithm (:func:`cifar10_c_elastic`: a random affine warp, then
a smooth elastic field; constants relative to the image side, as at 32 px): the library's version
sets the field's smoothing to 1% of the side, which at 16-32 px is a third of a pixel, so its
displacements (up to 2-5 px) are independent per pixel and scramble the pixels at every severity.

The library rejects images under 32 px (:data:`MIN_SIZE`); callers upsample (see
``run.py``). This module imports no torch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
import warnings
import zlib
from pathlib import Path

COMMON = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON + EXTRA
PRESETS = ("imagenet_c", "cifar10_c")
MIN_SIZE = 32

# Hendrycks & Dietterich, make_cifar_c.py: the CIFAR-10-C severity tables (severity 1..5).
CIFAR10_C: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}


def _resource_filename(package: str, resource: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} not found")
    return str(Path(spec.origin).parent / resource)


@functools.lru_cache(maxsize=1)
def library() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported even where ``pkg_resources`` is gone."""
    stub = None
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = stub
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("imagecorruptions.corruptions")
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]


class _NumpyCompat(types.ModuleType):
    """numpy with the aliases numpy 2 removed (``np.float_``)."""

    def __init__(self, np):
        super().__init__("numpy")
        self._np = np
        self.float_ = np.float64

    def __getattr__(self, name):
        return getattr(self._np, name)


def _gaussian(image, sigma=1, *args, multichannel=None, **kwargs):
    from skimage.filters import gaussian

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return gaussian(image, sigma, *args, **kwargs)


def _seeded_skimage():
    """``skimage`` whose ``util.random_noise`` takes its ``rng`` from ``np.random``."""
    import numpy as np
    import skimage
    import skimage.util

    def random_noise(image, mode="gaussian", rng=None, clip=True, **kwargs):
        if rng is None:
            rng = int(np.random.randint(0, 2**31 - 1))
        return skimage.util.random_noise(image, mode=mode, rng=rng, clip=clip, **kwargs)

    util = types.SimpleNamespace(random_noise=random_noise)
    return types.SimpleNamespace(util=util, color=skimage.color, filters=skimage.filters)


def _replace_table(code: types.CodeType, old: tuple, new: tuple) -> types.CodeType:
    """``code`` with its severity table constant ``old`` replaced by ``new`` (exactly one match)."""
    consts = list(code.co_consts)
    hits = [i for i, c in enumerate(consts) if type(c) is tuple and c == old]
    if len(hits) != 1:
        raise RuntimeError(f"{code.co_name}: severity table {old!r} not found in the library code")
    consts[hits[0]] = tuple(new)
    return code.replace(co_consts=tuple(consts))


def _table(func) -> tuple | None:
    """The library function's severity table: the 5-element constant tuple in its code."""
    tables = [c for c in func.__code__.co_consts if type(c) is tuple and len(c) == 5]
    return tables[0] if len(tables) == 1 else None


# make_cifar_c.py's elastic_transform (severity 1..5): (alpha, sigma, affine jitter) / image side
CIFAR10_C_ELASTIC = (
    (0, 0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)


def cifar10_c_elastic(image, severity: int = 1):
    """CIFAR-10-C's elastic transform (Hendrycks & Dietterich 2019, make_cifar_c.py), with
    scikit-image in place of OpenCV (``warp`` with the inverse map, linear, reflect-101 borders)."""
    import numpy as np
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian
    from skimage.transform import AffineTransform, warp

    image = np.array(image, dtype=np.float32) / 255.0
    side = min(image.shape[:2])
    alpha, sigma, jitter = (side * v for v in CIFAR10_C_ELASTIC[severity - 1])
    center = np.float32(image.shape[:2]) // 2
    square = side // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    pts2 = pts1 + np.random.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    affine = AffineTransform()
    affine.estimate(pts1, pts2)
    image = warp(image, affine.inverse, order=1, mode="reflect", preserve_range=True)
    shape = image.shape
    dx, dy = (
        (
            gaussian(np.random.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3)
            * alpha
        ).astype(np.float32)[..., None]
        for _ in range(2)
    )
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (y + dy).reshape(-1, 1), (x + dx).reshape(-1, 1), z.reshape(-1, 1)
    warped = map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
    return np.clip(warped, 0, 1) * 255


@functools.cache
def function(name: str, preset: str = "imagenet_c"):
    """The library's corruption ``name`` (a function of a PIL image and a severity), patched."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    import numpy as np

    if name == "elastic_transform" and preset == "cifar10_c":
        return cifar10_c_elastic
    lib = library()
    original = getattr(lib, name)
    env = dict(original.__globals__)
    np_compat = _NumpyCompat(np)
    env["gaussian"] = _gaussian
    env["plasma_fractal"] = types.FunctionType(
        lib.plasma_fractal.__code__,
        {**lib.plasma_fractal.__globals__, "np": np_compat},
        "plasma_fractal",
        lib.plasma_fractal.__defaults__,
    )
    env["resource_filename"] = _resource_filename
    if name == "impulse_noise":
        env["sk"] = _seeded_skimage()
    code = original.__code__
    if preset == "cifar10_c" and name in CIFAR10_C:
        code = _replace_table(code, _table(original), CIFAR10_C[name])
    return types.FunctionType(code, env, name, original.__defaults__)


def image_seed(seed: int, name: str, severity: int, index: int) -> int:
    """The seed of one image's corruption: independent of batching and of the worker."""
    import numpy as np

    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(name.encode()), severity, index])
    return int(ss.generate_state(1)[0])


def corrupt(image, name: str, severity: int, seed: int, preset: str = "imagenet_c"):
    """Corrupt one uint8 image (H, W, 3) or (H, W), H, W >= 32; returns uint8 of the same shape.

    ``np.random`` is seeded with ``seed`` for the call and the caller's state is restored after.
    """
    import numpy as np
    from PIL import Image

    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if min(image.shape[:2]) < MIN_SIZE:
        raise ValueError(f"imagecorruptions needs images >= {MIN_SIZE} px, got {image.shape[:2]}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity}")
    gray = image.ndim == 2
    rgb = np.stack([image] * 3, axis=-1) if gray else image
    func = function(name, preset)
    state = np.random.get_state()
    try:
        np.random.seed(seed & 0xFFFFFFFF)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = func(Image.fromarray(rgb), severity)
    finally:
        np.random.set_state(state)
    # NaN (e.g. spatter on a flat image divides by a zero maximum) -> 0, as the library's own
    # uint8 cast gives, without the warning
    out = np.nan_to_num(np.asarray(out, dtype=np.float64), nan=0.0)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    out = np.uint8(np.clip(out, 0, 255))
    if gray:
        out = np.uint8(np.clip(np.rint(out.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255))
    return out


__all__ = [
    "CIFAR10_C",
    "CIFAR10_C_ELASTIC",
    "COMMON",
    "CORRUPTIONS",
    "EXTRA",
    "MIN_SIZE",
    "PRESETS",
    "cifar10_c_elastic",
    "corrupt",
    "function",
    "image_seed",
    "library",
]
