"""Imagenette and Tiny ImageNet load from their standard folders (small fake trees here; tests
never download) and say how to get them when they are missing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bioprior.registry.toolkit.data import DataUnavailable

IMAGENETTE_WNIDS = ["n01440764", "n02102040", "n02979186"]


def write_image(path, value: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, "JPEG")


def test_tiny_imagenet_from_its_folder_layout(registry, tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    for c, wnid in enumerate(["n001", "n002"]):
        for i in range(3):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 + 100 * c)
    lines = []
    for i, wnid in enumerate(["n002", "n001"]):
        write_image(base / "val" / "images" / f"val_{i}.JPEG", 140 if wnid == "n002" else 40)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = registry.get("dataset", "tiny_imagenet").build({"root": str(tmp_path), "image_size": 16})
    assert data.train_x.shape == (6, 3, 16, 16) and data.train_x.dtype.is_floating_point is False
    assert data.num_classes == 2 and data.classes == ("n001", "n002")
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and data.test_y.tolist() == [1, 0]
    # labels follow the images: class 1 images are the brighter ones
    assert data.test_x[0].float().mean() > data.test_x[1].float().mean() + 50


def test_imagenette_through_torchvision(registry, tmp_path):
    base = tmp_path / "imagenette2-160"
    for split, n in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(IMAGENETTE_WNIDS):
            for i in range(n):
                write_image(base / split / wnid / f"{wnid}_{i}.JPEG", 30 + 80 * c, (50, 40))
    data = registry.get("dataset", "imagenette").build({"root": str(tmp_path), "image_size": 24})
    assert data.train_x.shape == (6, 3, 24, 24) and data.test_x.shape == (3, 3, 24, 24)
    assert data.classes == ("tench", "English springer", "cassette player")
    assert data.test_y.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "name, hint", [("imagenette", "imagenette2-160"), ("tiny_imagenet", "tiny-imagenet-200.zip")]
)
def test_missing_folder_says_how_to_get_it(registry, tmp_path, name, hint):
    with pytest.raises(DataUnavailable, match=hint):
        registry.get("dataset", name).build({"root": str(tmp_path)})
