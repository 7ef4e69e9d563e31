"""Image-folder datasets the papers use, loaded whole into memory at a chosen size:
Imagenette (evanson's frequency-response analysis; torchvision ``Imagenette``) and Tiny ImageNet
(safarani2021 Sec. 2: 200 classes x 500 training images, 64 x 64; the standard
``tiny-imagenet-200`` folder, whose labelled validation split serves as the test split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bioprior.plugin import DataUnavailable, ImageData, data_root


def _stack(paths: list[Path], labels: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, convert to RGB, resize (shorter side to ``size``, centre crop) and stack as uint8."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (w - size) // 2, (h - size) // 2
            out[i] = np.asarray(img.crop((left, top, left + size, top + size)))
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def load_imagenette(params) -> ImageData:
    """torchvision's Imagenette (10 ImageNet classes), train / val, resized to ``image_size``."""
    from bioprior.plugin import ensure_torchvision

    ensure_torchvision()
    from torchvision.datasets import Imagenette

    root = data_root(params.root)
    try:
        splits = {
            s: Imagenette(str(root), split=s, size=params.variant, download=params.download)
            for s in ("train", "val")
        }
    except RuntimeError:
        folder = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}
        raise DataUnavailable(
            f"imagenette: not found under {root}; expected the extracted "
            f"'{folder[params.variant]}' folder there (https://github.com/fastai/imagenette)",
            dataset="imagenette",
            downloadable=True,
            root=root,
        ) from None
    tensors = {}
    for split, ds in splits.items():
        paths, labels = zip(*ds._samples, strict=True) if ds._samples else ((), ())
        tensors[split] = _stack([Path(p) for p in paths], list(labels), params.image_size)
    train = splits["train"]
    return ImageData(
        name="imagenette",
        train_x=tensors["train"][0],
        train_y=tensors["train"][1],
        test_x=tensors["val"][0],
        test_y=tensors["val"][1],
        num_classes=len(train.wnids),
        classes=tuple(c[0] for c in train.classes),
    )


def load_tiny_imagenet(params) -> ImageData:
    """``tiny-imagenet-200``: train/<wnid>/images/*.JPEG and val/images + val_annotations.txt."""
    base = data_root(params.root) / "tiny-imagenet-200"
    annotations = base / "val" / "val_annotations.txt"
    if not (base / "train").is_dir() or not annotations.is_file():
        raise DataUnavailable(
            f"tiny_imagenet: not found under {base.parent} (expected 'tiny-imagenet-200' with "
            "train/ and val/val_annotations.txt); download and extract "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip there",
            dataset="tiny_imagenet",
            root=base.parent,
        )
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    train = [
        (p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*"))
    ]
    val = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in index:
            val.append((base / "val" / "images" / fields[0], index[fields[1]]))
    if not train or not val:
        raise DataUnavailable(f"tiny_imagenet: {base} has no images in train/ or val/")
    train_x, train_y = _stack([p for p, _ in train], [y for _, y in train], params.image_size)
    test_x, test_y = _stack([p for p, _ in val], [y for _, y in val], params.image_size)
    return ImageData("tiny_imagenet", train_x, train_y, test_x, test_y, len(wnids), tuple(wnids))
