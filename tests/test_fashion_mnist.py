"""MNIST and Fashion-MNIST from their IDX files, gzipped or not: the reader on hostile files (one
line naming the file), where the files are looked for (the data root's torchvision layout, then
Debian's ``/usr/share/datasets/fashion-mnist``), the real Fashion-MNIST when Debian's
``dataset-fashion-mnist`` is installed, and a real model trained on it through ``bioprior score``."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bioprior.plugins.datasets import idx, sources
from bioprior.registry.cli.app import app
from bioprior.registry.toolkit.data import DataUnavailable

runner = CliRunner()

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NOT_INSTALLED = (
    "Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist"
)
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def images_bytes(images: np.ndarray) -> bytes:
    return idx_bytes(idx.IMAGES_MAGIC, images.shape, images.astype(np.uint8).tobytes())


def labels_bytes(labels: np.ndarray) -> bytes:
    return idx_bytes(idx.LABELS_MAGIC, labels.shape, labels.astype(np.uint8).tobytes())


def write(path: Path, data: bytes, gz: bool | None = None) -> Path:
    """``data`` at ``path``, gzipped when the name ends in .gz (unless ``gz`` says otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gz = path.suffix == ".gz" if gz is None else gz
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def write_folder(folder: Path, seed: int = 0, gz: bool = True) -> dict[str, tuple]:
    """Four small valid IDX files (20 train, 10 test images) in ``folder``; their arrays."""
    arrays = {"train": fake_split(20, seed), "test": fake_split(10, seed + 1)}
    suffix = ".gz" if gz else ""
    for split, (images, labels) in arrays.items():
        write(folder / f"{STEMS[split][0]}{suffix}", images_bytes(images))
        write(folder / f"{STEMS[split][1]}{suffix}", labels_bytes(labels))
    return arrays


@pytest.fixture
def system(tmp_path, monkeypatch) -> Path:
    """An empty stand-in for /usr/share/datasets (``$BIOPRIOR_SYSTEM_DATA``)."""
    folder = tmp_path / "system"
    folder.mkdir()
    monkeypatch.setenv(sources.SYSTEM_DATA_ENV, str(folder))
    return folder


# -- the reader on hostile files -----------------------------------------------------------------
IMAGES = np.zeros((3, 28, 28), np.uint8)
HOSTILE = {  # name -> (file name, its bytes (gzipped when the name ends in .gz), reader, message)
    "labels_as_images": (
        "train-images-idx3-ubyte.gz",
        labels_bytes(np.zeros(3)),
        idx.read_images,
        "magic 0x00000801, expected 0x00000803 (IDX images)",
    ),
    "images_as_labels": (
        "train-labels-idx1-ubyte",
        images_bytes(IMAGES),
        idx.read_labels,
        "magic 0x00000803, expected 0x00000801 (IDX labels)",
    ),
    "text": ("t10k-images-idx3-ubyte", b"<html>not found</html>", idx.read_images, "magic 0x3c68"),
    "float_elements": (
        "t10k-images-idx3-ubyte",
        idx_bytes(0x00000D03, (1, 28, 28), bytes(4 * 784)),
        idx.read_images,
        "element type 0x0d, expected 0x08 (unsigned byte)",
    ),
    "empty": ("t10k-labels-idx1-ubyte", b"", idx.read_labels, "0 bytes, too short"),
    "header_cut": (
        "t10k-images-idx3-ubyte",
        idx.IMAGES_MAGIC.to_bytes(4, "big") + bytes(6),
        idx.read_images,
        "truncated: 10 bytes, the header alone needs 16",
    ),
    "truncated": (
        "train-images-idx3-ubyte.gz",
        images_bytes(IMAGES)[:-1],
        idx.read_images,
        "truncated: 2367 bytes, the header (3, 28, 28) needs 2368",
    ),
    "extra_bytes": (
        "train-labels-idx1-ubyte.gz",
        labels_bytes(np.zeros(3)) + b"\0\0",
        idx.read_labels,
        "2 extra bytes after the 11 its header (3,) needs",
    ),
    "label_out_of_range": (
        "train-labels-idx1-ubyte",
        labels_bytes(np.array([0, 9, 10, 3])),
        idx.read_labels,
        "label 10 at index 2 out of range 0..9",
    ),
    "wrong_image_size": (
        "train-images-idx3-ubyte",
        images_bytes(np.zeros((2, 32, 32))),
        idx.read_images,
        "images of 32x32, expected 28x28",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_bad_idx_file_is_one_line_naming_the_file(tmp_path, case):
    name, data, reader, message = HOSTILE[case]
    path = write(tmp_path / name, data)
    with pytest.raises(DataUnavailable) as info:
        reader(path)
    text = info.value.describe()
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text
    assert info.value.dataset is None  # no advice: downloading would not replace the file


def test_gzip_trouble_is_one_line_naming_the_file(tmp_path):
    plain = write(tmp_path / "train-images-idx3-ubyte.gz", images_bytes(IMAGES), gz=False)
    cut = write(
        tmp_path / "t10k-images-idx3-ubyte.gz", gzip.compress(images_bytes(IMAGES))[:-20], gz=False
    )
    for path, message in [(plain, "not a gzip file"), (cut, "corrupt gzip data")]:
        with pytest.raises(DataUnavailable) as info:
            idx.read_images(path)
        text = str(info.value)
        assert text.startswith(f"{path}: {message}") and "\n" not in text, text


def test_images_and_labels_must_agree_in_count(tmp_path):
    images = write(tmp_path / "train-images-idx3-ubyte", images_bytes(IMAGES))
    labels = write(tmp_path / "train-labels-idx1-ubyte", labels_bytes(np.zeros(4)))
    with pytest.raises(DataUnavailable) as info:
        idx.read_split(images, labels)
    assert str(info.value) == f"{images}: 3 images but {labels} has 4 labels"


def test_gzipped_and_uncompressed_give_the_same_tensors(tmp_path):
    arrays = write_folder(tmp_path / "gz", gz=True)
    write_folder(tmp_path / "plain", gz=False)
    for split, (images, labels) in arrays.items():
        stem_x, stem_y = STEMS[split]
        x, y = idx.read_split(tmp_path / "gz" / f"{stem_x}.gz", tmp_path / "gz" / f"{stem_y}.gz")
        px, py = idx.read_split(tmp_path / "plain" / stem_x, tmp_path / "plain" / stem_y)
        assert torch.equal(x, px) and torch.equal(y, py)
        assert x.dtype == torch.uint8 and x.shape == (len(images), 1, 28, 28)
        assert y.dtype == torch.int64 and torch.equal(x[:, 0], torch.from_numpy(images))
        assert y.tolist() == labels.tolist()


# -- where the files are looked for ---------------------------------------------------------------
def _build(registry, name="fashion_mnist", **params):
    return registry.get("dataset", name).build(params)


def test_the_data_root_comes_before_the_system_copy(registry, tmp_path, system, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("BIOPRIOR_DATA", str(root))
    from_system = write_folder(system / "fashion-mnist", seed=10)
    data = _build(registry)  # nothing under the root: the system's copy, read in place
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(from_system["train"][0]))
    assert data.classes == sources.CLASSES["fashion_mnist"] and data.num_classes == 10
    assert not (root / "FashionMNIST").exists()  # nothing extracted or copied
    from_root = write_folder(root / "FashionMNIST" / "raw", seed=20)
    assert torch.equal(_build(registry).test_x[:, 0], torch.from_numpy(from_root["test"][0]))


def test_an_incomplete_root_folder_falls_back_to_the_system_copy(
    registry, tmp_path, system, monkeypatch
):
    monkeypatch.setenv("BIOPRIOR_DATA", str(tmp_path / "data"))
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_folder(raw, seed=20)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    from_system = write_folder(system / "fashion-mnist", seed=10)
    assert torch.equal(_build(registry).test_y, torch.from_numpy(from_system["test"][1]).long())


def test_uncompressed_is_preferred_when_both_are_there(registry, tmp_path, system):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_folder(raw, seed=1, gz=True)
    plain = write_folder(raw, seed=2, gz=False)
    data = _build(registry, root=str(tmp_path))
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(plain["train"][0]))


def test_a_root_given_in_the_params_is_the_only_folder(registry, tmp_path, system):
    write_folder(system / "fashion-mnist")
    with pytest.raises(DataUnavailable) as info:
        _build(registry, root=str(tmp_path / "mine"))
    message = info.value.describe("training.dataset")
    assert str(tmp_path / "mine" / "FashionMNIST" / "raw") in message
    assert str(system) not in message and "apt-get" not in message


def test_missing_everywhere_says_where_it_looked_and_how_to_get_it(
    registry, tmp_path, system, monkeypatch
):
    monkeypatch.setenv("BIOPRIOR_DATA", str(tmp_path / "data"))
    with pytest.raises(DataUnavailable) as info:
        _build(registry)
    line = info.value.describe("training.dataset")
    assert "\n" not in line
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in line
    assert str(system / "fashion-mnist") in line and "train-images-idx3-ubyte" in line
    assert "`apt-get install dataset-fashion-mnist`" in line
    assert "download: true" in line and "bioprior download fashion_mnist" in line
    with pytest.raises(DataUnavailable) as info:  # MNIST: no system package, the root only
        _build(registry, "mnist")
    assert str(system) not in str(info.value) and "apt-get" not in str(info.value)
    assert str(tmp_path / "data" / "MNIST" / "raw") in str(info.value)


def test_mnist_reads_the_root_layout_with_torchvisions_classes(registry, tmp_path, system):
    arrays = write_folder(tmp_path / "MNIST" / "raw", gz=False)
    data = _build(registry, "mnist", root=str(tmp_path))
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(arrays["test"][0]))
    assert data.classes[0] == "0 - zero" and data.classes[9] == "9 - nine"


def test_class_names_are_torchvisions():
    from bioprior.plugin import ensure_torchvision

    ensure_torchvision()
    datasets = pytest.importorskip("torchvision.datasets")
    assert list(sources.CLASSES["fashion_mnist"]) == datasets.FashionMNIST.classes
    assert list(sources.CLASSES["mnist"]) == datasets.MNIST.classes


def test_download_fetches_into_the_root_then_reads_it(registry, tmp_path, system, monkeypatch):
    """``download: true`` only when no folder has the files (torchvision's download replaced by
    one that writes small files where it would)."""
    fetched = []

    def fake_download(name, root):
        fetched.append(name)
        write_folder(root / "FashionMNIST" / "raw", seed=5, gz=False)

    monkeypatch.setattr(sources, "_download", fake_download)
    data = _build(registry, root=str(tmp_path), download=True)
    assert fetched == ["fashion_mnist"] and len(data.train_x) == 20
    _build(registry, root=str(tmp_path), download=True)
    assert fetched == ["fashion_mnist"]  # there now: not fetched again


def test_a_bad_file_stops_scoring_before_training_with_one_line(tmp_path, system, write_submission):
    write_folder(tmp_path / "FashionMNIST" / "raw", gz=True)
    bad = write(tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", b"\0\0\x08\x03")
    sub = {
        "name": "bad-file",
        "model": {"name": "flexible_small_net", "params": {"width": 0.25}},
        "training": {"dataset": {"name": "fashion_mnist", "params": {"root": str(tmp_path)}}},
        "benchmarks": [{"name": "memorization"}],
    }
    out = runner.invoke(app, ["score", str(write_submission(sub)), "--device", "cpu"])
    assert out.exit_code == 2, out.output
    errors = [line for line in out.output.splitlines() if str(bad) in line]
    assert len(errors) == 1 and "magic 0x00000803, expected 0x00000801" in errors[0], out.output


def test_cli_download_says_a_system_copy_is_already_there(tmp_path, system, monkeypatch):
    write_folder(system / "fashion-mnist")
    monkeypatch.setattr(sources, "_download", lambda *a: pytest.fail("downloaded"))
    out = runner.invoke(app, ["download", "fashion_mnist", "--data-root", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "fashion_mnist: 20 training and 10 test images already available" in out.output
    assert not (tmp_path / "FashionMNIST").exists()


# -- the real Fashion-MNIST (Debian's dataset-fashion-mnist) ---------------------------------------
TRAIN_PIXEL_SUM = 3_431_114_169  # sums of all pixels of the real files (= torchvision's)
TEST_PIXEL_SUM = 573_469_082


@pytest.fixture
def debian(monkeypatch):
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(NOT_INSTALLED)
    monkeypatch.delenv(sources.SYSTEM_DATA_ENV, raising=False)  # the real /usr/share/datasets
    return DEBIAN


def test_debians_files_are_the_real_fashion_mnist(debian):
    start = time.perf_counter()
    x, y = idx.read_split(
        debian / "train-images-idx3-ubyte.gz", debian / "train-labels-idx1-ubyte.gz"
    )
    seconds = time.perf_counter() - start
    tx, ty = idx.read_split(
        debian / "t10k-images-idx3-ubyte.gz", debian / "t10k-labels-idx1-ubyte.gz"
    )
    assert x.shape == (60_000, 1, 28, 28) and tx.shape == (10_000, 1, 28, 28)
    assert x.dtype == tx.dtype == torch.uint8 and y.dtype == ty.dtype == torch.int64
    assert torch.bincount(y).tolist() == [6_000] * 10
    assert torch.bincount(ty).tolist() == [1_000] * 10
    assert int(x.sum(dtype=torch.int64)) == TRAIN_PIXEL_SUM
    assert int(tx.sum(dtype=torch.int64)) == TEST_PIXEL_SUM
    assert seconds < 10, f"60,000 images took {seconds:.1f} s"  # whole arrays, no Python loop


def test_the_plugin_loads_debians_copy_with_no_data_root(registry, debian, bioprior_home):
    data = registry.get("dataset", "fashion_mnist").build({})
    assert not (bioprior_home / "data").exists()  # read in place
    assert len(data.train_x) == 60_000 and len(data.test_x) == 10_000
    assert data.classes == sources.CLASSES["fashion_mnist"]
    assert int(data.test_x.sum(dtype=torch.int64)) == TEST_PIXEL_SUM


def test_a_real_model_learns_real_fashion_mnist_through_bioprior_score(
    debian, write_submission, bioprior_home
):
    """flexible_small_net (width 0.5) on 200 real images per class for 8 epochs, scored by
    ``bioprior score`` on all 10,000 real test images: clean accuracy well above chance (0.1).
    About 10 s on two CPU cores."""
    sub = {
        "name": "fmnist-real",
        "model": {"name": "flexible_small_net", "params": {"width": 0.5}},
        "training": {
            "dataset": {
                "name": "subset",
                "params": {"source": {"name": "fashion_mnist"}, "examples_per_class": 200},
            },
            "epochs": 8,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 0.003,
        },
        "seeds": [0],
        "benchmarks": [
            {
                "name": "adversarial",
                "params": {  # clean accuracy only: FGSM at epsilon 0, nothing else attacked
                    "images": 10_000,
                    "curves": {"fgsm": {"attack": {"name": "fgsm"}, "epsilons": [0.0]}},
                    "score_curve": "fgsm",
                    "score_epsilon": 0.0,
                    "unbounded": {"name": "fgsm"},
                    "transfer": False,
                    "minimal_images": 0,
                },
            }
        ],
    }
    out = runner.invoke(app, ["score", str(write_submission(sub)), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["results", "--submission", "fmnist-real", "--format", "json"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert row["status"] == "ok" and row["metrics"]["images"] == 10_000
    assert row["metrics"]["clean_accuracy"] > 0.6, row["metrics"]
