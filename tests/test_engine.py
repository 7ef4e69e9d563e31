"""The training engine's fast paths (registry.trainer): uint8 data converted per batch on the
device, channels_last with a fallback for models that need NCHW, streaming from host memory,
evaluation under inference_mode. The CPU path is the same code as the GPU one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bioprior import create_model
from bioprior.registry.engine.service import weights_hash
from bioprior.registry.engine.trainer import bf16_kernels, predict, train_model
from bioprior.registry.submissions.schema import TrainingRecipe

RECIPE = TrainingRecipe(dataset="digits", epochs=2, batch_size=32, lr=0.05)


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=g)


def _net(seed=0):
    torch.manual_seed(seed)
    return create_model("small_alexnet", in_channels=1, num_classes=10, input_size=8, width=0.1)


def test_uint8_data_trains_as_its_float_version():
    x, y = _data()
    a, b = _net(), _net()
    ha = train_model(a, x, y, RECIPE, seed=0)
    hb = train_model(b, x.float() / 255, y, RECIPE, seed=0)
    assert ha["loss"] == hb["loss"] and weights_hash(a) == weights_hash(b)


def test_channels_last_training_ends_in_standard_layout():
    x, y = _data()
    net = _net()
    train_model(net, x, y, RECIPE, seed=0)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous() for m in convs)


class ViewNet(nn.Module):
    """``.view`` after a conv: needs NCHW, so the engine must not force channels_last on it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(len(x), -1))


def test_model_that_needs_nchw_still_trains():
    x, y = _data()
    torch.manual_seed(0)
    history = train_model(ViewNet(), x, y, RECIPE, seed=0)
    assert len(history["loss"]) == 2 and history["loss"][-1] < history["loss"][0]


def test_predict_matches_a_plain_forward_and_accepts_uint8():
    x, _ = _data(100)
    net = _net().eval()
    with torch.no_grad():
        expected = net(x.float() / 255)
    torch.testing.assert_close(predict(net, x, batch_size=32), expected)


@pytest.mark.gpu
def test_gpu_streaming_from_host_memory_matches_device_resident():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    x, y = _data(1024)
    a, b = _net().cuda(), _net().cuda()
    recipe = RECIPE.model_copy(update={"precision": "bf16"})
    ha = train_model(a, x, y, recipe, seed=0)  # host uint8, pinned, streamed per batch
    hb = train_model(b, x.cuda(), y.cuda(), recipe, seed=0)  # device-resident uint8
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-2)
    assert predict(a, x).shape == (1024, 10)


def _bf16_against_fp32():
    """Six epochs on real digits with ``precision: fp32`` and ``bf16``: nets, histories, test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    recipe = TrainingRecipe(dataset="digits", epochs=6, batch_size=32, lr=0.05)
    fp32, bf16 = _net(), _net()
    h32 = train_model(fp32, x[:1200], y[:1200], recipe, seed=0)
    h16 = train_model(
        bf16, x[:1200], y[:1200], recipe.model_copy(update={"precision": "bf16"}), seed=0
    )
    return (fp32, bf16), (h32, h16), (x[1200:], y[1200:])


def test_bf16_recipe_trains_fp32_where_bf16_is_not_the_faster_arithmetic(monkeypatch):
    """``precision: bf16`` autocasts only where bf16 is faster than fp32 (a GPU, a CPU with AMX);
    on a CPU without AMX it is the fp32 training, bit for bit, and the history says fp32."""
    monkeypatch.delenv("BIOPRIOR_CPU_BF16", raising=False)
    (fp32, bf16), (h32, h16), _ = _bf16_against_fp32()
    amx = torch.cpu._is_amx_tile_supported() and bf16_kernels(torch.device("cpu"))
    assert h32["autocast"] == "fp32" and h16["autocast"] == ("bf16" if amx else "fp32")
    if not amx:
        assert weights_hash(bf16) == weights_hash(fp32)


@pytest.mark.skipif(not bf16_kernels(torch.device("cpu")), reason="this CPU has no bf16 kernels")
def test_bf16_on_a_cpu_that_opts_in_really_autocasts_and_still_learns_digits(monkeypatch):
    """``BIOPRIOR_CPU_BF16=1`` trains bf16 on any CPU with bf16 kernels (AVX-512 BF16 or AMX):
    the arithmetic really changes and the net learns real digits as fp32 does."""
    from bioprior.registry.engine.trainer import accuracy

    monkeypatch.setenv("BIOPRIOR_CPU_BF16", "1")
    (fp32, bf16), (h32, h16), (x, y) = _bf16_against_fp32()
    assert (h16["autocast"], h32["autocast"]) == ("bf16", "fp32")
    assert h16["loss"] != h32["loss"]  # the arithmetic really changed
    acc32, acc16 = accuracy(fp32, x, y), accuracy(bf16, x, y)
    assert min(acc32, acc16) > 0.75, (acc32, acc16)  # chance: 0.1
