"""li2019's neural similarity regularizer: Eq. 1, 2, 8, 9, 10 on small tensors, the controls,
layer selection, the objective's hooks and a short training that moves S_cnn to the target."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import run_cli
from torch import nn

from bioprior.plugins.neural_similarity.nn import (
    NeuralSimilarityObjective,
    feature_similarity,
    fisher_z,
    neural_target,
    response_similarity,
    select_layers,
    shuffled,
    similarity_loss,
    similarity_matrix,
    snr_weights,
)
from bioprior.registry.contracts.constraint import ConstraintError
from bioprior.registry.contracts.neural_data import NeuralData
from bioprior.registry.engine.trainer import Normalized, train_model
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.objective import (
    Batch,
    ObjectiveContext,
    excluded_from_weight_decay,
    objectives,
)

DATA = {"name": "synthetic_v1", "params": {"num_stimuli": 40, "num_neurons": 30, "size": 8}}


def tiny_net() -> nn.Sequential:
    """A BatchNorm-free conv net on 1 x 8 x 8 images (features independent of the batch)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 64, 10),
    )


def ctx(batch_size: int = 32, seed: int = 0) -> ObjectiveContext:
    return ObjectiveContext(
        channels=1,
        size=8,
        device=torch.device("cpu"),
        seed=seed,
        epochs=1,
        steps_per_epoch=1,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
    )


def attach(registry, net: nn.Module, **params) -> tuple[nn.Module, NeuralSimilarityObjective]:
    constraint = registry.get("constraint", "neural_similarity").build({"data": DATA, **params})
    model = Normalized(constraint.apply(net), torch.zeros(1), torch.ones(1))
    (objective,) = objectives(model)
    return model, objective


# -- definitions --------------------------------------------------------------------------------


def test_centred_cosine_similarity_by_hand():
    # mean (2, 2); centred: (0, -1), (-1, 0), (1, 1)
    s = similarity_matrix(torch.tensor([[2.0, 1.0], [1.0, 2.0], [3.0, 3.0]]))
    h = -1 / math.sqrt(2)
    assert torch.allclose(s, torch.tensor([[1, 0, h], [0, 1, h], [h, h, 1]]), atol=1e-6)


def test_snr_weights_eq1_by_hand():
    # (repeats 2, stimuli 3, neurons 2); neuron 1 misses a repeat of stimulus 0
    r = torch.tensor(
        [[[1.0, 4.0], [2.0, 0.0], [5.0, 2.0]], [[3.0, float("nan")], [2.0, 2.0], [7.0, 4.0]]]
    )
    # neuron 0: trial means 2, 2, 6 -> signal var 48/9; trial vars 2, 0, 2 -> noise 4/3
    # neuron 1: trial means 4, 1, 3 -> signal var 21/9; trial vars (stimuli 1, 2) 2, 2 -> 2
    expected = torch.tensor([math.sqrt((48 / 9) / (4 / 3)), math.sqrt((21 / 9) / 2)])
    assert torch.allclose(snr_weights(r), expected, atol=1e-5)
    assert torch.equal(snr_weights(r[:1]), torch.ones(2))  # one repeat: no noise estimate


def test_response_similarity_is_eq2_on_weighted_trial_means():
    r = torch.rand(3, 10, 6)
    r[1, 2, 3] = float("nan")
    weighted = r.nanmean(0) * snr_weights(r)
    assert torch.allclose(response_similarity(r), similarity_matrix(weighted), atol=1e-6)
    assert torch.allclose(response_similarity(r, weighted=False), similarity_matrix(r.nanmean(0)))
    s = response_similarity(r)
    assert torch.allclose(s, s.T) and torch.allclose(s.diagonal(), torch.ones(10), atol=1e-5)


def test_arctanh_clipping():
    z = fisher_z(torch.tensor([1.0, -1.0, 0.5, 0.9999]), 1e-3)
    assert torch.isfinite(z).all()
    limit = math.atanh(1 - 1e-3)
    assert torch.allclose(z, torch.tensor([limit, -limit, math.atanh(0.5), limit]), atol=1e-4)


def test_similarity_loss_eq8():
    s = torch.tensor([0.2, -0.4, 0.99])
    assert similarity_loss(s, s, 1e-3) == 0
    t = torch.tensor([0.3, -0.4, 0.0])
    expected = ((torch.atanh(s) - torch.atanh(t)) ** 2).mean()
    assert torch.allclose(similarity_loss(s, t, 1e-3), expected, atol=1e-5)


def test_shuffle_permutes_the_target_but_keeps_its_values():
    target = response_similarity(torch.rand(2, 12, 5))
    a, b = shuffled(target, 0), shuffled(target, 0)
    assert torch.equal(a, b) and not torch.equal(a, target)
    assert torch.equal(a.flatten().sort().values, target.flatten().sort().values)
    assert torch.allclose(a, a.T) and torch.allclose(a.diagonal(), target.diagonal())
    assert not torch.equal(shuffled(target, 1), a)


# -- targets ------------------------------------------------------------------------------------


def test_target_from_matrix_or_responses():
    stimuli = torch.rand(4, 1, 8, 8)
    sim = torch.eye(4) * 0.5 + 0.5
    resp = torch.rand(2, 4, 3)
    both = NeuralData("d", stimuli, responses=resp, similarity=sim)
    assert torch.equal(neural_target(both, "auto", True), sim)
    assert torch.allclose(neural_target(both, "responses", True), response_similarity(resp))
    with pytest.raises(ValueError, match="no matrix"):
        neural_target(NeuralData("r", stimuli, responses=resp), "similarity", True)


def test_features_control_is_the_seeded_layer_similarity(registry):
    from bioprior.plugins.neural_similarity import FeatureTarget

    stimuli = torch.rand(12, 1, 8, 8)
    spec = FeatureTarget(model="small_alexnet", params={"width": 0.1}, layer="features.1")
    a = feature_similarity(spec, stimuli, ctx())
    assert torch.equal(a, feature_similarity(spec, stimuli, ctx()))  # seeded
    torch.manual_seed(spec.seed)
    net = registry.get("model", "small_alexnet").build(
        {"width": 0.1, "in_channels": 1, "input_size": 8}
    )
    z = (stimuli - stimuli.mean()) / stimuli.std()
    expected = similarity_matrix(net.features[:2].eval()(z))
    assert torch.allclose(a, expected, atol=1e-5)
    with pytest.raises(ValueError, match="no_such_layer"):
        feature_similarity(spec.model_copy(update={"layer": "no_such_layer"}), stimuli, ctx())
    with pytest.raises(ValueError):
        FeatureTarget(model="no_such_model", layer="x")


# -- layers and the objective -------------------------------------------------------------------


def test_auto_layers_match_li2019_on_resnet18(registry):
    net = registry.get("model", "resnet18_cifar").build({"in_channels": 1, "width": 0.125})
    names = [n for n, _ in select_layers(net, "auto")]
    # the outputs of ResNet18's conv layers 1, 5, 9, 13, 17 (li2019 Sec. 3)
    assert names == ["act1", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert [n for n, _ in select_layers(net, ["layer2", 0, -1])] == ["layer2", "act1", "layer4.1"]
    assert [n for n, _ in select_layers(net, ["layer3.*.act2"])] == [
        "layer3.0.act2",
        "layer3.1.act2",
    ]
    with pytest.raises(ConstraintError, match="matches no module"):
        select_layers(net, ["nope*"])
    with pytest.raises(ConstraintError, match="out of range"):
        select_layers(net, [9])


def test_gamma_is_a_trainable_softmax_saved_with_the_weights(registry):
    model, obj = attach(registry, tiny_net())
    assert obj.layer_names == ["1", "3"]  # the hidden activations
    assert torch.allclose(obj.gamma, torch.full((2,), 0.5))  # equal at the start (supplement)
    assert any(p is obj.gamma_logits for p in model.parameters())
    assert excluded_from_weight_decay(obj.gamma_logits)
    assert any(k.endswith("objectives.0.gamma_logits") for k in model.state_dict())
    assert model.net.net is not None  # the Sequential net is wrapped, not run with the objective
    obj.prepare(ctx())
    x, y = torch.rand(8, 1, 8, 8), torch.randint(10, (8,))
    loss = obj.total_loss(model, torch.zeros(()), Batch(x, y, model(x)))
    loss.backward()
    assert obj.gamma_logits.grad is not None and obj.gamma_logits.grad.abs().sum() > 0
    with torch.no_grad():
        obj.gamma_logits.copy_(torch.tensor([3.0, -1.0]))
    assert torch.isclose(obj.gamma.sum(), torch.tensor(1.0)) and (obj.gamma > 0).all()


def test_loss_is_zero_when_the_target_is_the_models_own_similarity(registry):
    model, obj = attach(registry, tiny_net(), centering_momentum=1e-12, alpha=5.0)
    obj.prepare(ctx())
    model.eval()
    own = obj.model_similarity(model, obj.stimuli)  # Eq. 10 over all stimuli
    obj.target, obj.target_z = own, fisher_z(own, obj.params.clip_eps)
    x = torch.rand(4, 1, 8, 8)
    task = torch.tensor(1.5)
    total = obj.total_loss(model, task, Batch(x, torch.zeros(4, dtype=torch.long), model(x)))
    assert torch.isclose(total, task, atol=1e-5)
    assert obj.epoch_metrics()["similarity_loss"] < 1e-6


def test_capture_is_a_no_op_outside_the_objective(registry):
    net = tiny_net()
    reference = Normalized(tiny_net(), torch.zeros(1), torch.ones(1))
    reference.load_state_dict(
        {k: v for k, v in Normalized(net, torch.zeros(1), torch.ones(1)).state_dict().items()}
    )
    model, obj = attach(registry, net)
    obj.prepare(ctx())
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(model(x), reference(x))
    assert not any(layer._forward_hooks for layer in obj._layers)  # no hook left behind


def test_data_released_after_training_and_model_deep_copies(registry):
    """After the last epoch only gamma stays; benchmarks deep-copy the model (EOT, attacks)."""
    import copy

    model, obj = attach(registry, tiny_net())
    obj.prepare(ctx())  # one epoch
    obj.total_loss(model, torch.zeros(()), None).backward()
    metrics = obj.epoch_metrics()
    assert {"similarity_loss", "similarity_r", "gamma_1", "gamma_3"} <= set(metrics)
    assert obj.stimuli is None and obj.target is None
    twin = copy.deepcopy(model).eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(twin(x), model.eval()(x))
    (twin_obj,) = objectives(twin)
    assert twin_obj is not obj and torch.equal(twin_obj.gamma, obj.gamma)
    feats = twin_obj.layer_features(twin, x)  # the copy's hooks serve the copy's objective
    assert [f.shape for f in feats] == [(3, 8 * 64), (3, 8 * 64)]


def test_stimulus_pass_keeps_batchnorm_running_statistics(registry):
    """The stimulus pass normalizes with batch statistics but leaves the running statistics (used
    at inference) to the task batches."""
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    model, obj = attach(registry, net)
    obj.prepare(ctx())
    model.train()
    bn = net[1]
    x = torch.rand(8, 1, 8, 8)
    model(x)  # a task batch updates them
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    obj.total_loss(model, torch.zeros(()), None).backward()
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])
    assert bn.weight.grad is not None  # the stimulus pass still trains the layer


def test_shuffle_and_data_flags_in_prepare(registry):
    _, plain = attach(registry, tiny_net())
    _, shuf = attach(registry, tiny_net(), shuffle=True, shuffle_seed=3)
    plain.prepare(ctx())
    shuf.prepare(ctx())
    assert plain.synthetic and shuf.synthetic
    assert not torch.equal(plain.target, shuf.target)
    assert torch.equal(plain.target.flatten().sort().values, shuf.target.flatten().sort().values)
    assert plain.stimuli.shape == (40, 1, 8, 8)
    assert plain.pair_batch == 16  # half the task batch (li2019 Sec. 4.1)


def correlation_with_target(model: nn.Module, obj: NeuralSimilarityObjective) -> float:
    """Pearson r between S_cnn (Eq. 10, all stimuli) and the target over distinct pairs."""
    s = obj.model_similarity(model.eval(), obj.stimuli)
    iu = torch.triu_indices(len(s), len(s), 1)
    return float(torch.corrcoef(torch.stack([s[iu[0], iu[1]], obj.target[iu[0], iu[1]]]))[0, 1])


def test_similarity_steps_move_the_model_similarity_toward_the_target(registry):
    """Gradient steps on alpha * L_similarity (Eq. 7-8) raise the correlation of S_cnn with
    S_neural; alpha = 0 leaves the model (and the correlation) as it was."""
    torch.manual_seed(0)
    r = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        model, obj = attach(registry, tiny_net(), alpha=alpha, pair_batch=32)
        obj.prepare(ctx())
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(25):
            loss = obj.total_loss(model, torch.zeros((), requires_grad=True), None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        r[alpha] = correlation_with_target(model, obj)
    assert r[1.0] > r[0.0] + 0.15, r


def test_training_moves_the_model_similarity_toward_the_target(registry):
    """The trainer with alpha > 0 ends with S_cnn closer to the target than alpha = 0."""
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    recipe = TrainingRecipe(dataset="digits", epochs=15, batch_size=8, optimizer="adam", lr=3e-3)
    r = {}
    for alpha in (0.0, 2.0):
        torch.manual_seed(0)
        model, obj = attach(registry, tiny_net(), alpha=alpha, pair_batch=32)
        history = train_model(model, x, y, recipe, seed=0)
        obj.prepare(ctx())  # stimuli and target without training (alpha = 0 never used them)
        r[alpha] = correlation_with_target(model, obj)
        if alpha:
            assert history["similarity_loss"][-1] < history["similarity_loss"][0]
            assert "similarity_r" in history and "gamma_1" in history
    assert r[2.0] > r[0.0] + 0.3, r


def test_constraint_errors_and_params(registry):
    entry = registry.get("constraint", "neural_similarity")
    with pytest.raises(Exception, match="layers"):
        entry.parse_params({"layers": []})
    with pytest.raises(Exception, match="num_stimuli"):
        entry.parse_params({"data": {"name": "synthetic_v1", "params": {"num_stimuli": 0}}})
    with pytest.raises(ConstraintError):
        entry.build({"layers": ["missing"]}).apply(tiny_net())


def test_plugins_listing_shows_every_entry_with_its_schema():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(out.stdout)}
    for key in [
        ("constraint", "neural_similarity"),
        ("model", "resnet18_cifar"),
        ("model", "resnet34_cifar"),
        ("neural_data", "synthetic_v1"),
        ("neural_data", "neural_file"),
    ]:
        assert key in rows and rows[key]["error"] is None, key
    params = rows[("constraint", "neural_similarity")]["params"]
    assert {"alpha", "layers", "data", "shuffle", "features", "pair_batch", "clip_eps"} <= set(
        params
    )
    assert params["data"]["default"] == {"name": "synthetic_v1", "params": {}}
    assert "width" in rows[("model", "resnet18_cifar")]["params"]
