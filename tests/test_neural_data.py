"""Neural data plugins: the labelled synthetic V1 population and the .npz file loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from bioprior.plugins.neural_data import SYNTHETIC_LABEL
from bioprior.plugins.neural_data.files import save_neural_file
from bioprior.registry.contracts.neural_data import NeuralData, NeuralDataRef, load_neural_data
from bioprior.registry.toolkit.data import DataUnavailable

SMALL = {"num_stimuli": 24, "num_neurons": 12, "repeats": 3, "size": 16}


def build(registry, name: str, params: dict) -> NeuralData:
    """A fresh build (not the per-process cache of load_neural_data)."""
    return registry.get("neural_data", name).build(params)


def test_synthetic_is_deterministic_per_seed_and_labelled(registry):
    a = build(registry, "synthetic_v1", SMALL)
    b = build(registry, "synthetic_v1", SMALL)
    c = build(registry, "synthetic_v1", {**SMALL, "seed": 1})
    assert torch.equal(a.stimuli, b.stimuli) and torch.equal(a.responses, b.responses)
    assert not torch.equal(a.stimuli, c.stimuli)
    assert not torch.equal(a.responses, c.responses)
    assert a.synthetic is True
    assert SYNTHETIC_LABEL in a.name and SYNTHETIC_LABEL in a.description
    assert "synthetic" in registry.get("neural_data", "synthetic_v1").description.lower()


def test_synthetic_shapes_ranges_and_poisson_counts(registry):
    d = build(registry, "synthetic_v1", {**SMALL, "channels": 3})
    assert d.stimuli.shape == (24, 3, 16, 16)
    assert d.stimuli.min() >= 0 and d.stimuli.max() <= 1 and d.stimuli.std() > 0.02
    assert torch.equal(d.stimuli[:, 0], d.stimuli[:, 2])  # gray repeated to RGB
    assert d.responses.shape == (3, 24, 12) and d.similarity is None
    r = d.responses
    assert (r >= 0).all() and torch.equal(r, r.round())  # spike counts
    assert not torch.equal(r[0], r[1])  # trial-to-trial (Poisson) variability


def test_synthetic_responses_are_stimulus_driven(registry):
    """Repeats of the same stimulus agree more than responses to different stimuli: the
    population has a signal shared across trials (what Eq. 1 measures)."""
    d = build(registry, "synthetic_v1", {"num_stimuli": 60, "num_neurons": 30, "repeats": 2})
    a, b = d.responses[0].flatten(), d.responses[1].flatten()
    same = torch.corrcoef(torch.stack([a, b]))[0, 1]
    other = torch.corrcoef(torch.stack([a, d.responses[1].roll(1, 0).flatten()]))[0, 1]
    assert same > 0.5 and same > other + 0.2


def test_synthetic_digit_stimuli(registry):
    d = build(registry, "synthetic_v1", {**SMALL, "stimuli": "digits", "size": 8})
    assert d.stimuli.shape == (24, 1, 8, 8) and d.synthetic


def test_file_round_trip_keeps_arrays_and_synthetic_flag(registry, tmp_path):
    d = build(registry, "synthetic_v1", SMALL)
    path = save_neural_file(tmp_path / "syn.npz", d)
    back = build(registry, "neural_file", {"path": str(path)})
    assert torch.equal(back.stimuli, d.stimuli) and torch.equal(back.responses, d.responses)
    assert back.synthetic and SYNTHETIC_LABEL in back.description


def test_file_formats_uint8_stimuli_2d_responses_and_similarity(registry, tmp_path):
    rng = np.random.default_rng(0)
    stim = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    resp = rng.random((5, 7))
    resp_path = tmp_path / "rec.npz"
    np.savez(resp_path, stimuli=stim, responses=resp, description=np.asarray("V1, mouse 3"))
    d = build(registry, "neural_file", {"path": str(resp_path)})
    assert d.stimuli.dtype == torch.uint8 and d.stimuli.shape == (5, 1, 8, 8)
    assert d.responses.shape == (1, 5, 7) and not d.synthetic
    assert d.description == "V1, mouse 3"
    sim = np.eye(5) * 0.5 + 0.5
    sim_path = tmp_path / "sim.npz"
    np.savez(sim_path, stimuli=stim.astype(np.float32) / 255, similarity=sim)
    d = build(registry, "neural_file", {"path": str(sim_path), "synthetic": True})
    assert d.responses is None and torch.allclose(d.similarity, torch.tensor(sim).float())
    assert d.synthetic


def test_relative_path_is_looked_up_under_the_data_root(registry, tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "neural").mkdir(parents=True)
    np.savez(
        root / "neural" / "x.npz", stimuli=np.zeros((3, 4, 4), np.uint8), responses=np.ones((3, 2))
    )
    monkeypatch.setenv("BIOPRIOR_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    assert build(registry, "neural_file", {"path": "neural/x.npz"}).num_stimuli == 3


def test_missing_file_is_data_unavailable_naming_it(registry, tmp_path):
    with pytest.raises(DataUnavailable, match="nowhere.npz"):
        build(registry, "neural_file", {"path": str(tmp_path / "nowhere.npz")})


@pytest.mark.parametrize(
    ("arrays", "field", "message"),
    [
        ({"responses": np.ones((4, 3))}, "stimuli", "missing"),
        ({"stimuli": np.zeros((4, 8, 8), np.uint8)}, "responses", "neither"),
        (
            {"stimuli": np.zeros((4, 8, 8), np.uint8), "responses": np.ones((2, 5, 3))},
            "responses",
            "repeats, 4, neurons",
        ),
        (
            {"stimuli": np.zeros((4, 8, 8), np.uint8), "similarity": np.ones((4, 3))},
            "similarity",
            r"\(4, 4\)",
        ),
        (
            {"stimuli": np.zeros((4, 8, 8), np.uint8), "similarity": 2 * np.ones((4, 4))},
            "similarity",
            r"\[-1, 1\]",
        ),
        (
            {"stimuli": np.full((4, 8, 8), 3.0), "responses": np.ones((4, 3))},
            "stimuli",
            r"\[0, 1\]",
        ),
        (
            {"stimuli": np.zeros((4, 2, 8, 8), np.uint8), "responses": np.ones((4, 3))},
            "stimuli",
            "must be",
        ),
    ],
)
def test_bad_arrays_name_the_file_and_the_field(registry, tmp_path, arrays, field, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"bad\.npz: array '{field}': .*{message}"):
        build(registry, "neural_file", {"path": str(path)})


def test_pickled_arrays_are_refused(registry, tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, stimuli=np.array([object()] * 4, dtype=object), responses=np.ones((4, 2)))
    with pytest.raises(ValueError, match="pickled.npz"):
        build(registry, "neural_file", {"path": str(path)})


def test_reference_is_validated_against_the_registry(registry):
    with pytest.raises(ValidationError, match="num_stimuli"):
        NeuralDataRef(name="synthetic_v1", params={"num_stimuli": 1})
    with pytest.raises(ValidationError):
        NeuralDataRef(name="no_such_data")
    d = load_neural_data(NeuralDataRef(name="synthetic_v1", params=SMALL))
    assert d.num_neurons == 12 and d.repeats == 3
