"""Training data too big for the device (registry.streaming): the training split stays in host
memory and each batch is gathered into one of two reused (on a GPU pinned) buffers, then copied
to the device. A streamed training gives the device-resident one's numbers; on this CPU the
host path is forced (there is no device to stream to), the GPU tests run it for real."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_submission
from sklearn.datasets import load_digits

from bioprior import create_model
from bioprior.registry.engine import streaming
from bioprior.registry.engine.batched import train_batched
from bioprior.registry.engine.service import weights_hash
from bioprior.registry.engine.trainer import predict, train_model
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.data import ImageData

RECIPE = TrainingRecipe(dataset="digits", epochs=2, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    """Real digits as uint8, 8 px: 1,797 images (the last batch of an epoch is partial)."""
    d = load_digits()
    x = torch.tensor(d.images * 255 / 16, dtype=torch.uint8)[:, None]
    return x, torch.tensor(d.target)


def _net(seed):
    torch.manual_seed(seed)
    return create_model("small_alexnet", in_channels=1, num_classes=10, input_size=8, width=0.1)


def _streamed(monkeypatch):
    """From here on every training streams from host memory, as it would to a GPU."""
    monkeypatch.setattr(
        streaming, "member_batches", lambda xs, ys, dev, bs: streaming.HostBatches(xs, ys, dev, bs)
    )


def test_host_batches_gather_each_members_rows_into_two_reused_buffers(digits):
    x, y = digits
    xs, ys = [x, x.flip(0), x.roll(7, 0)], [y, y.flip(0), y.roll(7, 0)]
    batches = streaming.HostBatches(xs, ys, torch.device("cpu"), batch_size=64)
    g = torch.Generator().manual_seed(0)
    buffers = set()
    for m in (64, 64, 64, 5):  # the last batch of an epoch is smaller
        idx = torch.stack([torch.randperm(len(x), generator=g)[:m] for _ in xs])
        xb, yb = batches.batch(idx)
        assert torch.equal(xb, torch.stack([xj[i] for xj, i in zip(xs, idx)]))
        assert torch.equal(yb, torch.stack([yj[i] for yj, i in zip(ys, idx)]))
        buffers.add(xb.untyped_storage().data_ptr())
    assert len(buffers) == 2  # no allocation per batch: two buffers, taken in turn


def test_a_streamed_training_gives_the_resident_numbers(digits, monkeypatch):
    x, y = digits
    resident, streamed = _net(0), _net(0)
    h_resident = train_model(resident, x, y, RECIPE, seed=3)
    _streamed(monkeypatch)
    h_streamed = train_model(streamed, x, y, RECIPE, seed=3)
    assert h_streamed["loss"] == h_resident["loss"]
    assert h_streamed["accuracy"] == h_resident["accuracy"]
    assert weights_hash(streamed) == weights_hash(resident)


def test_a_streamed_batched_training_gives_the_resident_numbers(digits, monkeypatch):
    """Three members, each with its own data (natural, flipped order, shuffled labels), seed and
    learning rate."""
    x, y = digits
    g = torch.Generator().manual_seed(1)
    xs, ys = [x, x.flip(0), x], [y, y.flip(0), y[torch.randperm(len(y), generator=g)]]
    recipes = [RECIPE.model_copy(update={"lr": lr}) for lr in (0.05, 0.02, 0.1)]

    def run():
        modules = [_net(s) for s in range(3)]
        histories = train_batched(modules, xs, ys, recipes, [0, 1, 2])
        return histories, [weights_hash(m) for m in modules]

    resident = run()
    _streamed(monkeypatch)
    streamed = run()
    assert [h["loss"] for h in streamed[0]] == [h["loss"] for h in resident[0]]
    assert streamed[1] == resident[1]


def test_place_keeps_a_training_split_too_big_for_the_device_in_host_memory(digits):
    """``meta`` stands in for a GPU: what moves there, and what stays on the host."""
    x, y = digits
    data = ImageData("digits", x[:1500], y[:1500], x[1500:], y[1500:], 10)
    size = streaming.nbytes(x, y)
    meta = torch.device("meta")
    roomy = streaming.place(data, meta, free=4 * size)
    assert {roomy.train_x.device.type, roomy.test_x.device.type} == {"meta"}
    tight = streaming.place(data, meta, free=size)  # the whole dataset over half the free memory
    assert tight.train_x.device.type == tight.train_y.device.type == "cpu"
    assert tight.test_x.device.type == tight.test_y.device.type == "meta"  # benchmarks use it there
    cpu = streaming.place(data, torch.device("cpu"), free=0)
    assert cpu.train_x is data.train_x  # on a CPU the host is the device


def test_a_streamed_members_device_memory_does_not_grow_with_its_training_set():
    """So a sweep over a dataset too big for the GPU still batches (--batch auto): each member
    holds two batches of it on the device, not the split."""
    from types import SimpleNamespace

    from bioprior.registry.engine.estimate import Profile, member_bytes

    spec = SimpleNamespace(recipe=RECIPE)  # what member_bytes reads of a TrainingSpec

    def need(images, streamed):
        p = Profile(10**6, 10**5, 10**5, 5, images, 10**4, 3 * 32 * 32, streamed)
        return member_bytes(p, spec)

    assert need(10**7, streamed=True) == need(10**4, streamed=True)
    assert need(10**7, streamed=False) > 10**10  # resident: the split counts in full


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_streamed_batched_training_and_prediction_match_resident(digits):
    x, y = digits
    cuda = torch.device("cuda")
    recipes = [RECIPE] * 4

    def run(data_x, data_y):
        modules = [_net(s).to(cuda) for s in range(4)]
        histories = train_batched(modules, [data_x] * 4, [data_y] * 4, recipes, [0, 1, 2, 3])
        return histories, modules

    h_host, m_host = run(x, y)  # host memory, gathered into pinned buffers
    h_device, _ = run(x.to(cuda), y.to(cuda))
    for a, b in zip(h_host, h_device):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    torch.testing.assert_close(predict(m_host[0], x), predict(m_host[0], x.to(cuda)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_service_streams_a_training_split_too_big_for_the_device(
    bioprior_home, write_submission, monkeypatch
):
    """A score whose dataset "does not fit" (no share of the GPU's memory allowed) trains from
    host memory and gives the resident run's metrics."""
    import bioprior
    from bioprior.registry.store.results import ResultStore

    path = write_submission(tiny_submission("stream"))
    (resident,) = bioprior.score(path, device="cuda")  # digits fit: nothing streams
    with ResultStore(bioprior_home / "results.sqlite") as store:
        store.conn.execute("DELETE FROM results")
    for f in (bioprior_home / "weights").glob("**/*"):
        if f.is_file():
            f.unlink()
    made = []

    class Counted(streaming.HostBatches):
        def __init__(self, *args):
            made.append(args[2])
            super().__init__(*args)

    monkeypatch.setattr(streaming, "HostBatches", Counted)
    monkeypatch.setattr(streaming, "RESIDENT_SHARE", 0.0)
    (streamed,) = bioprior.score(path, device="cuda")
    assert streamed["status"] == "ok"
    assert made and all(d.type == "cuda" for d in made)  # the trainings did stream
    for name, value in resident["metrics"].items():
        if isinstance(value, float):
            assert streamed["metrics"][name] == pytest.approx(value, abs=0.05), name
