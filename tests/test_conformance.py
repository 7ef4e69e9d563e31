"""The conformance kit over every built-in entry (the registry is the test matrix, as in timm),
and the kit itself catching broken plugins with messages that say what to fix."""

from __future__ import annotations

import types

import pytest
from pydantic import Field

from bioprior.registry.hooks.entries import ImageModelParams, PluginParams
from bioprior.registry.hooks.loading import Registry, get_registry
from bioprior.registry.hooks.specs import hookimpl
from bioprior.testing import checks_for, parametrize_with_checks, run_checks
from bioprior.testing.builtin import EXPECTED_FAILED_CHECKS, PARAMS, SLOW_CHECKS


@parametrize_with_checks(
    "bioprior",
    expected_failed_checks=EXPECTED_FAILED_CHECKS,
    slow_checks=SLOW_CHECKS,
    params=PARAMS,
    family_members={"timm": "test_resnet"},
)
def test_builtin_entry(check, one_thread):
    check()


def test_the_matrix_covers_every_kind_and_paper_entry():
    ids = {c.entry_id for c in checks_for(distribution="bioprior")}
    for wanted in [
        "model:small_alexnet",
        "model:vgg16_flex",
        "model:hmax",
        "model:resnet18_cifar",
        "model:vgg19_bn_fcn",
        "model:timm",
        "constraint:internal_noise",
        "constraint:flexible_layer",
        "constraint:neural_similarity",
        "constraint:neural_cotraining",
        "constraint:vone_block",
        "dataset:digits",
        "dataset:gaussian_noise",
        "neural_data:synthetic_v1",
        "benchmark:memorization",
        "benchmark:neural_predictivity",
        "attack:pgd_linf",
    ]:
        assert wanted in ids, wanted
    assert get_registry().failures == []


# -- the kit finds what is wrong ---------------------------------------------------------------
class NetParams(ImageModelParams):
    width: float = Field(default=1.0, gt=0, description="Width.")


class Unused:
    """A model with a head that never sees a gradient and a wrong output size."""

    @staticmethod
    def build(params):
        from torch import nn

        class Head(nn.Module):
            def __init__(self, pixels: int):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 3))
                self.unused = nn.Linear(2, 2)

            def forward(self, x):
                return self.body(x)

        g = params.geometry({"in_channels": 1, "num_classes": 10, "input_size": 16})
        return Head(g["in_channels"] * g["input_size"] ** 2)


class NoiseParams(PluginParams):
    sigma: float = Field(default=0.5, description="Noise std.")


class AlwaysNoisy:
    """A stochastic constraint without an at_inference switch, that also widens the output."""

    requires_model_params = ()

    def __init__(self, params):
        self.params = params

    def configure(self, name, params):
        return params

    def apply(self, module, geometry=None):
        import torch
        from torch import nn

        class Noisy(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                out = self.net(x)
                return torch.cat([out, out + torch.randn_like(out)], 1)

        return Noisy(module)


class BadDataParams(PluginParams):
    scale: float = Field(default=2.0, description="Brightness.")


def bad_data(params):
    import torch

    from bioprior.registry.toolkit.data import ImageData

    x = torch.rand(20, 1, 8, 8) * params.scale
    y = torch.arange(20) % 2
    return ImageData("bad", x, y.int(), x, y, num_classes=2)


class StimuliWithoutPreview:
    """A benchmark whose work() says its run generates stimuli, with no preview of them."""

    def __init__(self, params):
        self.params = params

    def trainings(self, needs):
        return []

    def work(self, needs):
        from bioprior.plugin import Work

        return Work(forward=3, stimuli=True)

    def preview(self, images, seed):
        raise NotImplementedError

    def run(self, ctx):
        from bioprior.plugin import BenchmarkResult

        return BenchmarkResult({"conditions": 3}, 0.5)


def _broken_registry() -> Registry:
    from bioprior.registry.contracts.constraint import Constraint

    Noisy = type("AlwaysNoisyConstraint", (AlwaysNoisy, Constraint), {})

    def register_models(register):
        register(name="bad_net", factory=Unused.build, params=NetParams, version="1")

    def register_constraints(register):
        register(name="bad_noise", factory=Noisy, params=NoiseParams, citation="c")

    def register_datasets(register):
        register(
            name="bad_data",
            factory=bad_data,
            params=BadDataParams,
            citation="c",
            extra={"expected_failed_checks": {"dtypes": "int32 labels, declared by the entry"}},
        )

    def register_benchmarks(register):
        register(name="bad_bench", factory=StimuliWithoutPreview, params=NoiseParams, citation="c")

    module = types.ModuleType("broken_plugin")
    for fn in (register_models, register_constraints, register_datasets, register_benchmarks):
        setattr(module, fn.__name__, hookimpl(fn))
    reg = Registry(strict=False, prefer={})
    reg.add_plugin(module, provider="bioprior-broken", provider_version="0.1")
    builtin = get_registry()
    for entry in (
        builtin.list("model", "small_alexnet")
        + builtin.list("constraint", "internal_noise")
        + builtin.list("dataset", "digits")
    ):  # hosts the constraint checks use, the benchmark checks' model and data
        reg._entries[(entry.kind, entry.name)] = entry
    return reg


def test_the_kit_reports_what_to_fix(one_thread):
    results = run_checks(checks_for(distribution="bioprior-broken", registry=_broken_registry()))
    found = {(r.entry, r.check): r for r in results}

    def failed(entry, check, *words):
        r = found[(entry, check)]
        assert r.status == "failed", r
        assert all(w in r.message for w in words), r.message

    failed("model:bad_net", "version_and_citation", "citation=")
    failed("model:bad_net", "output_shape", "expected logits (4, 10)")
    failed("model:bad_net", "backward_reaches_every_parameter", "unused.weight")
    failed("constraint:bad_noise", "applies_to_sequential", "must not change the model's output")
    failed("constraint:bad_noise", "at_inference_switch", "no at_inference parameter")
    dtypes = found[("dataset:bad_data", "dtypes")]
    assert dtypes.status == "expected failure" and "int64" in dtypes.message
    failed("dataset:bad_data", "value_range", "[0, 1]")
    assert found[("model:bad_net", "seeded_weights")].status == "ok"
    failed("model:bad_net", "imports_without_torch", "broken_plugin fails to import")
    failed("benchmark:bad_bench", "declares_its_work", "Work.stimuli", "no preview")
    assert found[("benchmark:bad_bench", "runs_end_to_end")].status == "ok"


def test_expected_failures_and_ids():
    reg = _broken_registry()
    mark = parametrize_with_checks(
        "bioprior-broken",
        names=["bad_net"],
        registry=reg,
        expected_failed_checks={"model:bad_net": {"output_shape": "three outputs on purpose"}},
    )
    params = {p.id: p for p in mark.args[1]}
    assert "model:bad_net::backward_reaches_every_parameter" in params
    (xfail,) = params["model:bad_net::output_shape"].marks
    assert xfail.name == "xfail" and xfail.kwargs["reason"] == "three outputs on purpose"
    check = params["model:bad_net::output_shape"].values[0]
    assert check.outcome()[0] == "expected failure"
    with pytest.raises(LookupError, match="is it installed"):
        checks_for(distribution="bioprior-not-installed")


@pytest.mark.gpu
def test_speed_fixtures_on_gpu(plugin_forward_benchmark, plugin_train_step_benchmark):
    """The pytest11 fixtures time a CUDA model with the device synchronized in the timed call."""
    import torch

    import bioprior

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")

    net = bioprior.create_model("small_alexnet", width=0.25, in_channels=1, num_classes=10)
    out = plugin_forward_benchmark(net, (64, 1, 32, 32), device="cuda")
    assert out.shape == (64, 10) and out.is_cuda
    loss = plugin_train_step_benchmark(net, (64, 1, 32, 32), num_classes=10, device="cuda")
    assert loss > 0
