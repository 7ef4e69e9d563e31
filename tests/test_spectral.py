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
