"""Corruptions on small images (16-32 px): the preset follows the image size and CIFAR-10-C's
elastic_transform deforms smoothly instead of scrambling pixels."""

from __future__ import annotations

import numpy as np
import pytest

from bioprior.benchmarks.corruption import imagecorruptions_compat as ic


@pytest.fixture(scope="module")
def digit32() -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_digits

    img = np.uint8(load_digits().images[0] * 255 / 16)
    big = np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR))
    return np.stack([big] * 3, axis=-1)


def _roughness(a: np.ndarray) -> float:
    """Mean absolute difference of horizontal neighbours: pixel scrambling raises it."""
    return float(np.abs(np.diff(a[..., 0].astype(float), axis=1)).mean())


def test_cifar10_c_elastic_deforms_smoothly_at_every_severity(digit32):
    base = _roughness(digit32)
    for severity in (1, 2, 3, 4, 5):
        small = ic.corrupt(digit32, "elastic_transform", severity, seed=3, preset="cifar10_c")
        assert _roughness(small) < 1.25 * base, severity  # the strokes stay strokes
        assert not np.array_equal(small, digit32)  # and it does deform
        assert np.array_equal(
            small, ic.corrupt(digit32, "elastic_transform", severity, seed=3, preset="cifar10_c")
        )
    # the library's (ImageNet-C, 224 px) constants scramble a 32 px image even at severity 1
    scrambled = ic.corrupt(digit32, "elastic_transform", 1, seed=3, preset="imagenet_c")
    assert _roughness(scrambled) > 1.4 * base


def test_auto_preset_follows_the_image_size(monkeypatch):
    from bioprior.benchmarks.corruption import run as impl

    used = []
    monkeypatch.setattr(
        impl.ic, "corrupt", lambda img, n, s, seed, preset: used.append(preset) or img
    )
    impl.imagecorruption(np.zeros((1, 1, 16, 16), np.uint8), "contrast", 1, 0, 0, "auto")
    impl.imagecorruption(np.zeros((1, 3, 128, 128), np.uint8), "contrast", 1, 0, 0, "auto")
    impl.imagecorruption(np.zeros((1, 1, 16, 16), np.uint8), "contrast", 1, 0, 0, "imagenet_c")
    assert used == ["cifar10_c", "imagenet_c", "imagenet_c"]


def test_contours_are_the_foreground_minus_its_erosion():
    from bioprior.benchmarks.ood_stylized.renderings import render

    img = np.zeros((1, 16, 16), np.uint8)
    img[0, 4:12, 5:11] = 255
    p = {"render_size": 16, "polarity": "light_on_dark"}
    out = render(img, "contours", p, np.random.default_rng(0))
    fg = img[0] > 0
    inner = np.zeros_like(fg)
    inner[5:11, 6:10] = True  # the rectangle eroded by a cross
    assert ((out[0] > 0.5) == (fg & ~inner)).all()
