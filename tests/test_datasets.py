"""Datasets: digits offline, derivations (Zhang et al. 2017), fitting, and missing real datasets."""

from __future__ import annotations

import pytest
import torch

from bioprior.registry.toolkit.data import DataUnavailable, fit_data, fit_images


def _digits(registry):
    return registry.get("dataset", "digits").build({})


def _derive(registry, name, source, seed=0, **params):
    return registry.get("dataset", name).build(params, source=source, seed=seed)


def test_digits_is_real_and_split(registry):
    data = _digits(registry)
    assert len(data.train_x) + len(data.test_x) == 1797 and data.train_x.shape[1:] == (1, 8, 8)
    assert data.train_x.dtype == torch.uint8 and data.num_classes == 10
    assert torch.equal(data.train_x, _digits(registry).train_x)  # fixed split


def test_gaussian_noise_matches_source_channel_stats(registry):
    source = fit_data(_digits(registry), 3, 16)
    noise = _derive(registry, "gaussian_noise", source, seed=3)
    assert noise.train_x.shape == source.train_x.shape and torch.equal(
        noise.train_y, source.train_y
    )
    mean, std = source.channel_stats()
    nmean, nstd = noise.channel_stats()
    assert torch.allclose(mean, nmean, atol=0.01) and torch.allclose(std, nstd, atol=0.01)
    assert torch.equal(noise.train_x, _derive(registry, "gaussian_noise", source, seed=3).train_x)
    assert not torch.equal(
        noise.train_x, _derive(registry, "gaussian_noise", source, seed=4).train_x
    )


def test_random_labels_and_shuffled_pixels(registry):
    source = fit_data(_digits(registry), 1, 8)
    rl = _derive(registry, "random_labels", source)
    agree = (rl.train_y == source.train_y).float().mean().item()
    assert 0.03 < agree < 0.2  # about chance
    sp = _derive(registry, "shuffled_pixels", source)
    assert torch.equal(
        sp.train_x.flatten(1).sort(1).values, source.train_x.flatten(1).sort(1).values
    )
    assert not torch.equal(sp.train_x, source.train_x)


def test_subset_classes_and_examples(registry):
    source = fit_data(_digits(registry), 1, 8)
    sub = _derive(registry, "subset", source, num_classes=3, examples_per_class=20)
    assert sub.num_classes == 3 and len(sub.train_x) == 60
    assert torch.bincount(sub.train_y).tolist() == [20, 20, 20] and int(sub.test_y.max()) == 2
    with pytest.raises(ValueError, match="requested"):
        _derive(registry, "subset", source, examples_per_class=10_000)


def test_fit_images_gray_rgb_and_resize():
    gray = torch.rand(2, 1, 8, 8)
    rgb = fit_images(gray, 3, 16)
    assert rgb.shape == (2, 3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 1])
    back = fit_images(rgb, 1, 8)
    assert back.shape == (2, 1, 8, 8)
    assert torch.allclose(fit_images(gray, 1, 8), gray)


def test_uint8_data_that_fits_stays_uint8(registry):
    """Digits at their own 8 px stay uint8 (also repeated to RGB): a quarter of the memory on the
    device, the same floats once converted; resized ones become float."""
    from bioprior.benchmarks.stimuli import to_uint8
    from bioprior.registry.toolkit.data import to_float

    digits = _digits(registry)
    gray, rgb, big = fit_data(digits, 1, 8), fit_data(digits, 3, 8), fit_data(digits, 1, 16)
    assert (
        gray.train_x.dtype == rgb.test_x.dtype == torch.uint8
        and big.train_x.dtype.is_floating_point
    )
    assert torch.equal(gray.train_x, digits.train_x) and torch.equal(
        rgb.test_x[:, 2:], digits.test_x
    )
    assert torch.equal(to_float(gray.test_x), fit_images(digits.test_x, 1, 8))
    assert (to_uint8(gray.test_x) == to_uint8(to_float(gray.test_x))).all()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist"])
def test_missing_torchvision_dataset_says_how_to_get_it(registry, tmp_path, name):
    with pytest.raises(DataUnavailable) as info:
        registry.get("dataset", name).build({"root": str(tmp_path)})
    message = info.value.describe("training.dataset")  # the advice for where it is named
    assert (
        str(tmp_path) in message
        and "download: true" in message
        and f"bioprior download {name}" in message
    )
