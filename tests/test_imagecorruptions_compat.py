"""The imagecorruptions compatibility module: all 19 corruptions x severities 1-5 run on this
machine's numpy / scikit-image / setuptools, and are reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pytest

from bioprior.benchmarks.corruption import imagecorruptions_compat as ic


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.random((8, 8, 3)), np.ones((4, 4, 1)))  # 32 x 32, some structure
    return np.uint8(np.clip((0.8 * blocks + 0.2 * rng.random((32, 32, 3))) * 255, 0, 255))


def test_names_are_the_librarys():
    assert len(ic.CORRUPTIONS) == 19 and len(set(ic.CORRUPTIONS)) == 19
    ic.library()  # the package imports once the shim has run
    from imagecorruptions import get_corruption_names

    assert tuple(get_corruption_names("all")) == ic.CORRUPTIONS


@pytest.mark.parametrize("preset", ic.PRESETS)
def test_every_corruption_at_every_severity_runs_and_is_seeded(image, preset):
    for name in ic.CORRUPTIONS:
        previous = None
        for severity in range(1, 6):
            a = ic.corrupt(image, name, severity, seed=7, preset=preset)
            b = ic.corrupt(image, name, severity, seed=7, preset=preset)
            assert a.shape == image.shape and a.dtype == np.uint8, (name, severity)
            assert np.array_equal(a, b), f"{name} severity {severity} not reproducible"
            previous = a
        gray = ic.corrupt(image[..., 0], name, 5, seed=7, preset=preset)
        assert gray.shape == image.shape[:2] and gray.dtype == np.uint8
        assert not np.array_equal(previous, image), f"{name} left the image unchanged"


def test_random_corruptions_depend_on_the_seed_and_restore_global_state(image):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    for name in ("gaussian_noise", "impulse_noise", "glass_blur", "frost", "fog", "spatter"):
        a = ic.corrupt(image, name, 3, seed=1)
        b = ic.corrupt(image, name, 3, seed=2)
        assert not np.array_equal(a, b), name
    assert np.random.rand() == expected  # the caller's np.random state is untouched


def test_cifar10_c_preset_is_milder(image):
    def change(name, preset):
        out = ic.corrupt(image, name, 5, seed=0, preset=preset)
        return np.abs(out.astype(int) - image.astype(int)).mean()

    for name in ("gaussian_noise", "impulse_noise", "contrast", "jpeg_compression"):
        assert change(name, "cifar10_c") < change(name, "imagenet_c"), name
    assert ic.function("zoom_blur", "cifar10_c").__code__ is ic.library().zoom_blur.__code__


def test_rejects_small_images_and_bad_severities(image):
    with pytest.raises(ValueError, match="32 px"):
        ic.corrupt(image[:16, :16], "contrast", 1, seed=0)
    with pytest.raises(ValueError, match="severity"):
        ic.corrupt(image, "contrast", 0, seed=0)
    with pytest.raises(ValueError, match="unknown corruption"):
        ic.function("rain")
