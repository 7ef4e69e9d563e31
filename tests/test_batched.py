"""Batched training (registry.batched): each member of a K-member batched model trains as the same
spec trained alone would, and a batch is reproducible.

Tolerances: without randomness in the model (sigma = 0) the init, the data order and the
per-member hyperparameters are the solo training's exactly; only the float rounding of batched
kernels differs, so the loss curve agrees to rtol 1e-3 and the final running accuracy to 1 image
in 100. With internal noise the noise stream differs from the solo one (one generator split per
member by vmap): the loss curve agrees to 15% and the final accuracy to 0.15.
"""

from __future__ import annotations

import pytest
import torch

from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.service import TrainingService, weights_hash
from bioprior.registry.engine.trainer import train_model
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.submissions.loading import resolve_component
from bioprior.registry.submissions.schema import PluginRef, TrainingRecipe


def _component(kind: str, name: str, params: dict):
    errors: list = []
    c = resolve_component(get_registry(), kind, PluginRef(name=name, params=params), (), errors)
    assert c is not None, errors
    return c


def _spec(seed=0, sigma=0.0, lr=0.05, dataset="digits", **recipe):
    model = _component("model", "small_alexnet", {"width": 0.1, "input_size": 8})
    noise = _component("constraint", "internal_noise", {"sigma": sigma})
    digits = _component("dataset", "digits", {})
    subset = _component("dataset", "subset", {"examples_per_class": 30})
    data = type(subset)(subset.entry, subset.params, digits)  # 300 images: seconds per test
    if dataset != "digits":
        derived = _component("dataset", dataset, {})
        data = type(derived)(derived.entry, derived.params, data)
    r = TrainingRecipe(dataset="digits", epochs=3, batch_size=32, lr=lr, **recipe)
    return TrainingSpec(model, (noise,), r, data, seed)


@pytest.fixture
def service(tmp_path):
    return TrainingService(tmp_path, torch.device("cpu"))


def _solo_and_batched(service, specs):
    datas = [service.data(s) for s in specs]
    solo = [service.build(s, d) for s, d in zip(specs, datas)]
    batched = [service.build(s, d) for s, d in zip(specs, datas)]
    for a, b in zip(solo, batched):  # same init: each built from its own seed
        assert weights_hash(a) == weights_hash(b)
    solo_h = [
        train_model(m, d.train_x, d.train_y, s.recipe, s.seed)
        for m, s, d in zip(solo, specs, datas)
    ]
    batched_h = train_batched(
        batched,
        [d.train_x for d in datas],
        [d.train_y for d in datas],
        [s.recipe for s in specs],
        [s.seed for s in specs],
    )
    return solo, batched, solo_h, batched_h


def test_deterministic_members_match_solo(service):
    specs = [
        _spec(seed=0, lr=0.05),
        _spec(seed=1, lr=0.02, momentum=0.5),
        _spec(seed=2, dataset="gaussian_noise", weight_decay=1e-3),
        _spec(seed=3, lr=0.03, schedule={"name": "inverse_time", "decay": 0.5}),
    ]
    solo, batched, solo_h, batched_h = _solo_and_batched(service, specs)
    for s, b in zip(solo_h, batched_h):
        assert b["loss"] == pytest.approx(s["loss"], rel=1e-3)
        assert abs(b["accuracy"][-1] - s["accuracy"][-1]) <= 0.01
        assert b["lr"] == s["lr"]
    for a, b in zip(solo, batched):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(pb, pa, rtol=1e-2, atol=1e-3, msg=name)


def test_adam_members_match_solo(service):
    specs = [_spec(seed=0, optimizer="adam", lr=1e-3), _spec(seed=1, optimizer="adam", lr=2e-3)]
    _, _, solo_h, batched_h = _solo_and_batched(service, specs)
    for s, b in zip(solo_h, batched_h):
        assert b["loss"] == pytest.approx(s["loss"], rel=1e-3)


def test_noise_is_per_member(service):
    """Members with sigma 0 and 0.6 in one batch: each behaves as its own solo training."""
    specs = [_spec(seed=0, sigma=0.0), _spec(seed=0, sigma=0.6)]
    _, _, solo_h, batched_h = _solo_and_batched(service, specs)
    assert batched_h[0]["loss"] == pytest.approx(solo_h[0]["loss"], rel=1e-3)  # no noise: exact-ish
    assert batched_h[1]["loss"] == pytest.approx(solo_h[1]["loss"], rel=0.15)
    assert abs(batched_h[1]["accuracy"][-1] - solo_h[1]["accuracy"][-1]) <= 0.15
    assert batched_h[1]["loss"][-1] > batched_h[0]["loss"][-1] * 1.05  # the noise is there


def test_same_batch_twice_is_identical(service):
    specs = [_spec(seed=0, sigma=0.3), _spec(seed=1, sigma=0.6)]
    runs = []
    for _ in range(2):
        datas = [service.data(s) for s in specs]
        modules = [service.build(s, d) for s, d in zip(specs, datas)]
        h = train_batched(
            modules,
            [d.train_x for d in datas],
            [d.train_y for d in datas],
            [s.recipe for s in specs],
            [s.seed for s in specs],
        )
        runs.append(([weights_hash(m) for m in modules], [x["loss"] for x in h]))
    assert runs[0] == runs[1]


def test_members_saved_under_their_own_keys(service, tmp_path):
    specs = [_spec(seed=0), _spec(seed=1, sigma=0.6), _spec(seed=0, dataset="gaussian_noise")]
    trained = service.train(specs)
    assert [t.history["batched_members"] for t in trained] == [3, 3, 3]
    fresh = TrainingService(tmp_path, torch.device("cpu"))
    for spec, t in zip(specs, trained):
        assert service.weights_path(spec).exists()
        again = fresh.trained(spec)  # loaded as a solo training's weights would be
        assert again.from_cache and again.weights_hash == t.weights_hash


@pytest.mark.gpu
def test_batched_on_gpu_matches_solo(tmp_path):
    """K = 16 members on CUDA (bf16 autocast off: fp32 numbers comparable with the solo runs)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    gpu = TrainingService(tmp_path, torch.device("cuda"))
    specs = [_spec(seed=s, lr=0.01 * (1 + s % 4)) for s in range(16)]
    _, _, solo_h, batched_h = _solo_and_batched(gpu, specs)
    for s, b in zip(solo_h, batched_h):
        assert b["loss"] == pytest.approx(s["loss"], rel=1e-2)
