"""safarani2021's V1 co-training (Sec. 2): Gaussian readout, Kendall weighting, shuffle control,
batch ratio, saving, and a short co-training run on tiny synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from bioprior.plugins.neural_cotraining import NeuralCoTrainingParams
from bioprior.plugins.neural_cotraining.nn import (
    GaussianReadout,
    cotraining_objectives,
    kendall_loss,
    neural_loss,
    resolve_layer,
    shuffle_responses,
)
from bioprior.registry.contracts.constraint import ConstraintError, InputGeometry
from bioprior.registry.contracts.neural_data import NeuralData, NeuralDataRef, load_neural_data
from bioprior.registry.engine.trainer import Normalized
from bioprior.registry.toolkit.objective import Batch, ObjectiveContext, excluded_from_weight_decay

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = {"num_stimuli": 60, "num_neurons": 6, "size": 16, "repeats": 3}


def _model(registry, shuffle=False, ratio=1.0, data=None, **extra):
    """vgg19_bn_fcn (width 1/8, gray 16 px) with the constraint applied, inside Normalized."""
    net = registry.get("model", "vgg19_bn_fcn").build(
        {"width": 0.125, "in_channels": 1, "num_classes": 4, "input_size": 16}
    )
    params = {
        "data": data or {"name": "synthetic_v1", "params": SMALL},
        "shuffle": shuffle,
        "neural_batch_ratio": ratio,
        **extra,
    }
    constraint = registry.get("constraint", "neural_cotraining").build(params)
    net = constraint.apply(net, InputGeometry(1, 16))
    return Normalized(net, torch.tensor([0.5]), torch.tensor([0.25]))


def _prepare(model, batch_size=8, seed=0):
    (objective,) = cotraining_objectives(model)
    objective.prepare(
        ObjectiveContext(
            channels=1,
            size=16,
            device=torch.device("cpu"),
            seed=seed,
            epochs=1,
            steps_per_epoch=1,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
        )
    )
    return objective


def _step_loss(model, objective, batch_size=8):
    x = torch.rand(batch_size, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch_size) % 4
    logits = model(x)
    task = F.cross_entropy(logits, y)
    return task, objective.total_loss(model, task, Batch(x, y, logits))


# -- Gaussian readout ---------------------------------------------------------------------------


def test_readout_at_eval_reads_the_map_bilinearly_at_the_learned_position():
    readout = GaussianReadout(channels=2, neurons=3, mean_response=None).eval()
    fmap = torch.zeros(1, 2, 5, 5)
    fmap[0, 0, 1, 3] = 1.0  # channel 0: one-hot at row 1, column 3
    with torch.no_grad():
        readout.features.copy_(torch.tensor([[1.0, 0.0], [2.0, 5.0], [1.0, 0.0]]))
        readout.bias.zero_()
        # grid_sample (x, y) with align_corners=True: pixel j of 5 sits at -1 + 2 j / 4
        readout.mu.copy_(torch.tensor([[0.5, -0.5], [0.5, -0.5], [0.75, -0.5]]))
        readout.sigma.fill_(0.3)  # ignored at evaluation
    out = readout(fmap)
    # neuron 0: on the hot pixel -> 1; neuron 1: feature weight 2 (channel 1 is zero);
    # neuron 2: half-way to column 4 -> bilinear 0.5. Rates are ELU(z) + 1.
    z = torch.tensor([[1.0, 2.0, 0.5]])
    assert torch.allclose(out, F.elu(z) + 1, atol=1e-6)
    assert torch.equal(out, readout(fmap))  # deterministic at evaluation


def test_readout_samples_positions_in_training_and_not_with_zero_sigma():
    readout = GaussianReadout(channels=1, neurons=4)
    fmap = torch.randn(8, 1, 6, 6)
    readout.train()
    torch.manual_seed(0)
    assert not torch.allclose(readout(fmap), readout(fmap))
    with torch.no_grad():
        readout.sigma.zero_()
    assert torch.allclose(readout(fmap), readout.eval()(fmap))


def test_readout_bias_starts_at_the_mean_response():
    mean = torch.tensor([0.2, 1.0, 3.5])
    readout = GaussianReadout(channels=4, neurons=3, mean_response=mean).eval()
    with torch.no_grad():
        readout.features.zero_()
    assert torch.allclose(readout(torch.rand(2, 4, 3, 3)), mean.expand(2, 3), atol=1e-5)


# -- losses -------------------------------------------------------------------------------------


def test_kendall_weighting_formula_on_numbers():
    t, n = torch.tensor(2.0), torch.tensor(3.0)
    st, sn = torch.tensor(0.5), torch.tensor(-1.0)
    # classification term exp(-s) L + s/2 (= L / sigma^2 + log sigma), regression term
    # exp(-s) L / 2 + s/2 (= L / (2 sigma^2) + log sigma); Poisson weighted like classification
    mse = math.exp(-0.5) * 2 + 0.25 + 0.5 * math.exp(1.0) * 3 - 0.5
    poisson = math.exp(-0.5) * 2 + 0.25 + math.exp(1.0) * 3 - 0.5
    assert kendall_loss(t, n, st, sn, "mse").item() == pytest.approx(mse)
    assert kendall_loss(t, n, st, sn, "poisson").item() == pytest.approx(poisson)
    # at s = 0 the weights are 1 and 1/2: the plain sum (classification + half the MSE)
    zero = torch.tensor(0.0)
    assert kendall_loss(t, n, zero, zero, "mse").item() == pytest.approx(2 + 1.5)
    # the learned noise settles where d/ds = 0, s* = log(2 c L): a minimum of the total loss
    for kind, c in (("poisson", 1.0), ("mse", 0.5)):
        s = torch.tensor(math.log(2 * c * 3.0), requires_grad=True)
        kendall_loss(zero, n, zero, s, kind).backward()
        assert s.grad.item() == pytest.approx(0.0, abs=1e-6)
        at = kendall_loss(zero, n, zero, s.detach(), kind)
        for ds in (-0.1, 0.1):
            assert kendall_loss(zero, n, zero, s.detach() + ds, kind) > at


def test_neural_losses_are_full_likelihoods_and_skip_nan_targets():
    rate = torch.tensor([[2.0, 0.5], [1.0, 4.0]])
    target = torch.tensor([[3.0, float("nan")], [0.0, 4.0]])
    expected = torch.tensor(
        [
            -torch.distributions.Poisson(r).log_prob(torch.tensor(y)).item()
            for r, y in [(2.0, 3.0), (1.0, 0.0), (4.0, 4.0)]
        ]
    ).mean()
    assert neural_loss(rate, target, "poisson").item() == pytest.approx(expected.item(), rel=1e-5)
    assert neural_loss(rate, target, "mse").item() == pytest.approx((1 + 1 + 0) / 3)


# -- data, layer, batch ratio -------------------------------------------------------------------


def test_shuffle_permutes_across_stimuli_per_neuron_and_keeps_the_values():
    g = torch.Generator().manual_seed(0)
    responses = torch.rand(3, 20, 5, generator=g)  # (repeats, stimuli, neurons)
    out = shuffle_responses(responses, torch.Generator().manual_seed(1))
    assert not torch.equal(out, responses)
    for k in range(5):  # each neuron keeps its multiset of values (per repeat)
        for r in range(3):
            assert torch.equal(out[r, :, k].sort().values, responses[r, :, k].sort().values)
    # all repeats of a stimulus move together (the same permutation per neuron)
    match = (out[0, :, None, :] == responses[0, None, :, :]).float().argmax(1)  # (20, 5)
    for r in range(3):
        assert torch.equal(out[r], responses[r].gather(0, match))
    # neurons are permuted independently
    assert not all(torch.equal(match[:, 0], match[:, k]) for k in range(1, 5))


def test_shuffle_control_trains_on_shuffled_targets(registry):
    plain = _prepare(_model(registry))
    shuffled = _prepare(_model(registry, shuffle=True))
    assert torch.equal(plain._x, shuffled._x)
    assert not torch.equal(plain._y, shuffled._y)
    assert torch.equal(plain._y.sort(0).values, shuffled._y.sort(0).values)


def test_neural_batch_ratio_sets_the_neural_batch_size(registry):
    for ratio, expected in [(1.0, 8), (0.25, 2), (1 / 15, 1), (3.0, 24)]:
        model = _model(registry, ratio=ratio)
        objective = _prepare(model, batch_size=8)
        seen: list[int] = []
        layer = model.net.net.get_submodule("features.conv3_1")
        handle = layer.register_forward_hook(lambda m, i, o, seen=seen: seen.append(len(o)))
        _step_loss(model, objective)
        handle.remove()
        assert seen == [8, expected]  # the task batch, then the neural batch


def test_neural_pass_stops_at_the_chosen_layer_and_gradients_reach_it(registry):
    model = _model(registry)
    objective = _prepare(model)
    x = objective._x[:4]
    model.zero_grad()
    neural = neural_loss(objective.predict(model, x), objective._y[:4])
    neural.backward()
    net = model.net.net  # Normalized(WithObjectives(vgg))
    assert net.features.conv3_1.conv.weight.grad.abs().sum() > 0
    assert net.features.conv1_1.conv.weight.grad.abs().sum() > 0
    assert net.features.conv3_2.conv.weight.grad is None  # above the shared part
    assert net.classifier.fc8.weight.grad is None
    for p in (objective.readout.mu, objective.readout.features, objective.readout.bias):
        assert p.grad.abs().sum() > 0
    model.zero_grad()
    _, total = _step_loss(model, objective)
    total.backward()
    assert objective.log_var_task.grad.abs() > 0 and objective.log_var_neural.grad.abs() > 0
    assert net.classifier.fc8.weight.grad.abs().sum() > 0  # the task loss
    assert excluded_from_weight_decay(objective.log_var_neural)
    assert excluded_from_weight_decay(objective.readout.mu)
    assert not excluded_from_weight_decay(objective.readout.features)


def test_equal_weighting_is_the_plain_sum(registry):
    model = _model(registry, weighting="equal").eval()  # deterministic: no dropout, mean positions
    objective = _prepare(model)
    task, total = _step_loss(model, objective)
    assert not objective.log_var_task.requires_grad
    idx = objective._order[: objective._batch]  # the neural batch that step drew
    neural = neural_loss(objective.predict(model, objective._x[idx]), objective._y[idx])
    assert total.item() == pytest.approx(task.item() + neural.item(), rel=1e-5)


def test_layer_resolution(registry):
    net = registry.get("model", "vgg19_bn_fcn").build({"width": 0.125, "in_channels": 1})
    assert resolve_layer(net, "conv3_1") == "features.conv3_1"
    assert resolve_layer(net, "features.conv3_1.bn") == "features.conv3_1.bn"
    assert resolve_layer(net, "conv:5") == "features.conv3_1.conv"
    with pytest.raises(ConstraintError, match="ambiguous"):
        resolve_layer(net, "conv")
    with pytest.raises(ConstraintError, match="conv:N"):
        resolve_layer(net, "conv9_9")
    with pytest.raises(ConstraintError, match="Conv2d layers"):
        resolve_layer(net, "conv:99")
    alexnet = registry.get("model", "small_alexnet").build({"width": 0.1, "input_size": 16})
    with pytest.raises(ConstraintError, match="no module 'conv3_1'"):
        resolve_layer(alexnet, "conv3_1")
    assert resolve_layer(alexnet, "conv:2") == "features.4"


def test_constraint_on_another_model_by_conv_index(registry):
    net = registry.get("model", "small_alexnet").build(
        {"width": 0.1, "in_channels": 1, "input_size": 16, "num_classes": 4}
    )
    constraint = registry.get("constraint", "neural_cotraining").build(
        {"layer": "conv:1", "data": {"name": "synthetic_v1", "params": SMALL}}
    )
    model = Normalized(
        constraint.apply(net, InputGeometry(1, 16)), torch.tensor([0.5]), torch.tensor([0.25])
    )
    objective = _prepare(model)
    assert objective.readout.features.shape == (6, 20)  # 6 neurons x 200 * 0.1 channels
    _, total = _step_loss(model, objective)
    assert torch.isfinite(total)


def test_params_schema_defaults_and_data_validation(registry):
    entry = registry.get("constraint", "neural_cotraining")
    summary = entry.summary()["params"]
    assert summary["layer"]["default"] == "conv3_1"
    assert summary["data"]["default"] == {"name": "synthetic_v1", "params": {}}
    assert {"neural_batch_ratio", "shuffle", "loss", "weighting", "test_fraction"} <= set(summary)
    with pytest.raises(ValidationError, match="unknown neural_data"):
        NeuralCoTrainingParams(data={"name": "no_such_data"})
    with pytest.raises(ValidationError):
        NeuralCoTrainingParams(neural_batch_ratio=0)


def test_similarity_only_data_is_rejected(registry, monkeypatch):
    from bioprior.plugins.neural_cotraining import nn as cotraining

    fake = NeuralData("sim", torch.rand(10, 1, 8, 8), similarity=torch.eye(10))
    monkeypatch.setattr(cotraining, "load_neural_data", lambda ref: fake)
    with pytest.raises(ConstraintError, match="needs responses"):
        _model(registry)


def test_readout_is_saved_with_the_weights_and_survives_reload(registry, tmp_path):
    model = _model(registry)
    objective = _prepare(model)
    with torch.no_grad():
        objective.readout.mu.uniform_(-0.9, 0.9)
        objective.readout.features.normal_()
        objective.log_var_neural.fill_(0.7)
    state = model.state_dict()
    assert {"net.objectives.0.readout.mu", "net.objectives.0.log_var_task"} <= set(state)
    assert not any(k.endswith(("_x", "_y")) for k in state)  # data is not saved
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    fresh = _model(registry)
    fresh.load_state_dict(load_file(tmp_path / "w.safetensors"))
    (again,) = cotraining_objectives(fresh)
    x = objective._x[:5]
    model.eval()
    fresh.eval()
    assert torch.equal(objective.predict(model, x), again.predict(fresh, x))
    assert again.log_var_neural.item() == pytest.approx(0.7)
    # the cached model can be evaluated without prepare(): the held-out split is recomputed
    assert again.evaluate(fresh, 1, 16)["correlation"] == pytest.approx(
        objective.evaluate(model, 1, 16)["correlation"]
    )


# -- a short co-training run ----------------------------------------------------------------------


def _cotrain(registry, shuffle: bool):
    from bioprior.registry.engine.trainer import train_model
    from bioprior.registry.submissions.schema import TrainingRecipe

    data = {
        "name": "synthetic_v1",
        "params": {"num_stimuli": 300, "num_neurons": 12, "size": 16, "repeats": 4},
    }
    # task images from the same distribution as the neural stimuli (both natural patches, as
    # Tiny ImageNet and the monkey's ImageNet images), random labels
    task = load_neural_data(
        NeuralDataRef(name="synthetic_v1", params={**data["params"], "num_stimuli": 256, "seed": 5})
    ).stimuli
    labels = torch.randint(0, 4, (256,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = registry.get("model", "vgg19_bn_fcn").build(
        {"width": 0.125, "in_channels": 1, "num_classes": 4, "input_size": 16}
    )
    constraint = registry.get("constraint", "neural_cotraining").build(
        {"data": data, "shuffle": shuffle}
    )
    model = Normalized(
        constraint.apply(net, InputGeometry(1, 16)), task.mean((0, 2, 3)), task.std((0, 2, 3))
    )
    (objective,) = cotraining_objectives(model)
    recipe = TrainingRecipe(dataset="digits", epochs=4, batch_size=16, optimizer="adam", lr=3e-3)

    def train_loss() -> float:  # the neural loss on the (unshuffled) training stimuli, eval mode
        train, _ = objective.splits()
        model.eval()
        with torch.no_grad():
            return neural_loss(
                objective.predict(model, train.stimuli), train.mean_responses()
            ).item()

    before = train_loss()
    history = train_model(model, task, labels, recipe, seed=0)
    return before, train_loss(), history


def test_short_cotraining_learns_and_beats_the_shuffled_control(registry):
    before, after, history = _cotrain(registry, shuffle=False)
    _, _, control = _cotrain(registry, shuffle=True)
    assert after < before - 0.05
    assert {"neural_loss", "neural_log_var", "task_log_var", "neural_test_correlation"} <= set(
        history
    )
    assert len(history["neural_test_feve"]) == 4
    corr = history["neural_test_correlation"][-1]
    assert corr > 0.2 and corr > control["neural_test_correlation"][-1] + 0.1


def test_deep_copy_keeps_the_objective_on_its_own_copy(registry):
    import copy

    model = _model(registry)
    objective = _prepare(model)
    _step_loss(model, objective)
    clone = copy.deepcopy(model).eval()  # as benchmarks' deterministic copies do
    (twin,) = cotraining_objectives(clone)
    assert twin.layer() is clone.net.net.features.conv3_1  # not the original's layer
    assert twin._root[0] is clone.net.net and twin not in list(model.modules())
    model.eval()
    x = objective._x[:3]
    assert torch.equal(twin.predict(clone, x), objective.predict(model, x))
    assert torch.equal(clone(x), clone(x))  # deterministic at evaluation
