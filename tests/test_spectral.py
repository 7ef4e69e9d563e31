"""The spectral benchmark on real digits, on CPU: full-bandwidth filters equal clean accuracy,
band-pass curve, corruption bandwidths reuse the corruption benchmark's cached sets, FWHM."""

from __future__ import annotations

import numpy as np
import pytest
from test_corruption import learner

import bioprior
from bioprior.benchmarks.spectral import fourier
from bioprior.benchmarks.stimuli import Condition

SPECTRAL = {
    "centres": [1, 41, 81, 121, 161, 201],
    "lowpass_cutoffs": [0.1, 0.5, 1.0],
    "highpass_cutoffs": [0.0, 0.5],
    "bandwidth_corruptions": ["gaussian_noise", "contrast"],
    "bandwidth_severities": [1, 5],
    "preset": "imagenet_c",  # as the corruption benchmark of test_corruption (shared stimuli)
    "heatmap_images": 40,
    "heatmap_stride": 2,
    "max_images": 150,
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    home = tmp_path_factory.mktemp("spectral-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPRIOR_HOME", str(home))
        sub = learner("spectral")
        sub["benchmarks"].append({"name": "spectral", "params": SPECTRAL})
        out = {r["benchmark"]: r for r in bioprior.score(sub, device="cpu")}
    return out


def test_full_bandwidth_filters_equal_clean_accuracy(rows):
    row = rows["spectral"]
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    assert m["lowpass"]["cutoffs"][-1] == 1.0
    assert m["lowpass"]["accuracy"][-1] == m["clean_acc"]
    assert m["highpass"]["accuracy"][0] == m["clean_acc"]
    assert m["lowpass"]["accuracy"][0] < m["clean_acc"]  # little but the mean is left
    assert len(m["bandpass"]["accuracy"]) == 6 and m["bandpass"]["bandwidth"] == 1.0
    assert m["bandpass"]["centres"][1] == pytest.approx(41 * 8 / 224)
    assert row["score"] == pytest.approx(m["mean_band_acc"] / m["clean_acc"])
    heat = m["fourier_heatmap"]
    assert len(heat["error"]) == len(heat["frequencies"]) == 4
    assert all(0 <= e <= 1 for line in heat["error"] for e in line)


def test_corruption_bandwidth_reuses_the_corruption_sets(rows):
    m, c = rows["spectral"]["metrics"], rows["corruption"]["metrics"]
    # only the 11 filter conditions are new: corruptions and the resampling reference are reused
    assert m["stimuli"] == {"generated": 11, "reused": 5}
    table = m["corruption_bandwidth"]
    for name in ("gaussian_noise", "contrast"):
        for s in ("1", "5"):
            assert table[name][s]["accuracy"] == c["accuracy"][name][s]
    assert m["bandwidth_reference"] == "upsampling_round_trip"
    assert table["gaussian_noise"]["5"]["bandwidth_ratio"] > 1.0


def test_fwhm_of_noise_is_wider_than_of_smooth_images():
    rng = np.random.default_rng(0)
    noise = np.uint8(rng.integers(0, 256, size=(8, 1, 32, 32)))
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 60.0)
    smooth = np.uint8(np.broadcast_to(blob * 255, (8, 1, 32, 32)))
    assert (
        fourier.fwhm(fourier.radial_amplitude(noise)).mean()
        > 3 * fourier.fwhm(fourier.radial_amplitude(smooth)).mean()
    )
    assert fourier.bandwidth_ratio(noise, smooth) > 3
    assert np.isnan(fourier.fwhm(fourier.radial_amplitude(np.zeros((1, 1, 8, 8), np.uint8))))[0]


def test_filters_keep_the_mean_and_pass_everything_at_full_band():
    rng = np.random.default_rng(1)
    x = np.uint8(rng.integers(0, 256, size=(4, 3, 16, 16)))
    assert np.array_equal(fourier.transform(x, Condition("fourier", "lowpass", 1.0), 0, 0), x)
    assert np.array_equal(fourier.transform(x, Condition("fourier", "highpass", 0.0), 0, 0), x)
    band = Condition("fourier", "bandpass", 4.0, (("bandwidth", 2.0),))
    y = fourier.transform(x, band, 0, 0)
    assert abs(y.astype(float).mean() - x.astype(float).mean()) < 2
    assert y.std() < x.std()


def _radial_amplitude_per_image(images: np.ndarray) -> np.ndarray:
    """The radially averaged amplitude spectrum written out image by image."""
    x = images.astype(np.float64).mean(1)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    amp = np.abs(np.fft.fft2(x, axes=(-2, -1)))
    bins = np.rint(fourier.radius(*x.shape[-2:])).astype(int).ravel()
    counts = np.bincount(bins)
    sums = np.stack([np.bincount(bins, weights=a.ravel(), minlength=len(counts)) for a in amp])
    return sums / np.maximum(counts, 1)


def _fwhm_per_profile(profile: np.ndarray) -> np.ndarray:
    """The FWHM written out profile by profile: the first bin past the peak below half of it."""
    out = np.full(len(profile), np.nan)
    for i, p in enumerate(profile):
        p = p[1:]
        peak = p.max()
        if peak <= 0:
            continue
        k = int(p.argmax())
        below = np.nonzero(p[k:] < peak / 2)[0]
        if len(below) == 0:
            r = float(len(p))
        else:
            j = k + int(below[0])
            a, b = p[j - 1], p[j]
            r = (j - 1) + (a - peak / 2) / (a - b) if a != b else float(j)
        out[i] = 2 * (r + 1)
    return out


def test_bandwidth_of_whole_sets_equals_the_per_image_formula_bit_for_bit():
    """radial_amplitude and fwhm work on whole sets at once (the corruption bandwidth table
    runs them on each of 75 corrupted sets of 10,000 images): the same numbers, bit for bit, as
    the definitions image by image, on digits, noise, flat and half-flat images."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(2)
    digits = np.uint8(load_digits().images[:300, None] * 255 / 16)
    noise = np.uint8(rng.integers(0, 256, size=(40, 3, 28, 28)))
    flat = np.full((3, 1, 8, 8), 7, np.uint8)
    step = np.zeros((2, 1, 8, 8), np.uint8)
    step[:, :, :, 4:] = 255
    for images in (digits, noise, flat, step, np.concatenate([flat, step])):
        profile = fourier.radial_amplitude(images)
        assert np.array_equal(profile, _radial_amplitude_per_image(images))
        assert np.array_equal(fourier.fwhm(profile), _fwhm_per_profile(profile), equal_nan=True)
    per_image = _fwhm_per_profile(_radial_amplitude_per_image(digits[40:80]))
    ratio = per_image / _fwhm_per_profile(_radial_amplitude_per_image(digits[:40]))
    assert fourier.bandwidth_ratio(digits[40:80], digits[:40]) == float(ratio.mean())


def test_corrupted_sets_fwhm_computed_once_per_set_and_recomputed_when_damaged(tmp_path):
    """The corruption bandwidth's per-image FWHMs depend on a set alone: the first spectral run
    of a seed computes them, later ones (other models) read them from beside the set; a damaged
    file is computed again, and the cached values are the computed ones."""
    from sklearn.datasets import load_digits

    from bioprior.benchmarks.corruption.run import TRANSFORM
    from bioprior.benchmarks.stimuli import StimulusSet

    src = np.uint8(load_digits().images[:64, None] * 255 / 16)
    cond = Condition("imagecorruptions", "gaussian_noise", 3, (("preset", "imagenet_c"),))
    calls = []

    def counted(images):
        calls.append(len(images))
        return fourier.image_fwhm(images)

    def fwhms():
        stim = StimulusSet(src, [cond], TRANSFORM, seed=1, workers=1, cache_dir=tmp_path)
        return stim.ensure().derived(cond, fourier.FWHM, counted), stim

    first, stim = fwhms()
    again, _ = fwhms()
    assert calls == [64]
    assert np.array_equal(first, again, equal_nan=True)
    assert np.array_equal(first, fourier.image_fwhm(np.asarray(stim[cond])), equal_nan=True)
    cached = stim.path(cond).with_suffix(f".{fourier.FWHM}.npy")
    cached.write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(fwhms()[0], first, equal_nan=True)
    assert calls == [64, 64]
    ratio = fourier.mean_ratio(first, fourier.image_fwhm(src))
    assert ratio == fourier.bandwidth_ratio(np.asarray(stim[cond]), src)
