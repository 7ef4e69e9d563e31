"""The ood_stylized benchmark on real digits, on CPU: procedural renderings, an external
ImageFolder set (with a class map), cue-conflict shape bias, and the missing-set message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_corruption import learner

import bioprior
from bioprior.benchmarks.ood_stylized import renderings
from bioprior.benchmarks.stimuli import Condition, to_uint8

STYLES = ["edges", "contours", "line_drawing", "silhouette", "phase_scrambled", "amplitude_swapped"]


def digits_test_images():
    from bioprior.registry.hooks.loading import get_registry
    from bioprior.registry.toolkit.data import fit_images

    data = get_registry().get("dataset", "digits").build({})
    return to_uint8(fit_images(data.test_x, 1, 8)), data.test_y.numpy()


def write_folder(root, images, labels, names=None, stem=lambda i, c: f"img{i}"):
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        cls = names[int(y)] if names else str(int(y))
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(root / cls / f"{stem(i, cls)}.png")


def ood(name, **params):
    sub = learner(name)
    sub["benchmarks"] = [{"name": "ood_stylized", "params": {"max_images": 150, **params}}]
    return sub


def test_renderings_and_external_sets(tmp_path):
    images, labels = digits_test_images()
    plain = tmp_path / "plain"
    write_folder(plain, images[:100], labels[:100])
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    renamed = tmp_path / "renamed"
    write_folder(renamed, images[:100], labels[:100], names)
    # cue conflict: real 3s (shape three, texture seven) and real 7s filed as three-with-seven
    conflict = tmp_path / "conflict"
    threes, sevens = images[labels == 3][:12], images[labels == 7][:6]
    for i, img in enumerate(threes):
        (conflict / "three").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(conflict / "three" / f"three{i}-seven{i}.png")
    for i, img in enumerate(sevens):
        Image.fromarray(img[0]).save(conflict / "three" / f"three{100 + i}-seven{i}.png")
    (conflict / "seven").mkdir()
    Image.fromarray(sevens[0][0]).save(conflict / "seven" / "seven1-seven2.png")  # no conflict
    external = [
        {"name": "plain", "path": str(plain)},
        {
            "name": "renamed",
            "path": str(renamed),
            "class_map": {n: str(i) for i, n in enumerate(names)},
        },
        {
            "name": "conflict",
            "path": str(conflict),
            "class_map": {"three": 3, "seven": "7"},
            "cue_conflict": True,
        },
    ]
    (row,) = bioprior.score(ood("ood", external=external), device="cpu")
    assert row["status"] == "ok", row["error"]
    m = row["metrics"]
    assert sorted(m["accuracy"]) == sorted(STYLES)
    assert all(0 <= a <= 1 for a in m["accuracy"].values())
    assert m["accuracy"]["phase_scrambled"] < m["clean_acc"]
    ext = m["external"]
    assert ext["plain"]["images"] == 100 and ext["renamed"]["accuracy"] == ext["plain"]["accuracy"]
    assert ext["plain"]["accuracy"] >= 0.7  # the test images themselves, as PNG files
    cc = ext["conflict"]
    assert cc["conflict_images"] == 18
    assert cc["shape_bias"] == pytest.approx(
        cc["shape_match"] / (cc["shape_match"] + cc["texture_match"])
    )
    assert 0.3 < cc["shape_bias"] < 1  # 12 shape-consistent images, 6 texture-consistent
    accs = list(m["accuracy"].values()) + [e["accuracy"] for e in ext.values()]
    assert row["score"] == pytest.approx(np.mean(accs))


def test_missing_external_set_says_where_to_get_it(tmp_path):
    missing = {"name": "sil", "path": str(tmp_path / "nope"), "source": "evans2022"}
    (row,) = bioprior.score(ood("missing", styles=["silhouette"], external=[missing]), device="cpu")
    assert row["status"] != "ok"
    assert "Evans, Malhotra & Bowers" in row["error"] and "<class name>/<image>.png" in row["error"]


def test_renderings_are_binary_shapes_in_the_dataset_polarity():
    images, _ = digits_test_images()
    x = images[:20]
    base = (("canny_sigma", 2.0), ("polarity", "dataset"), ("render_size", 64))
    extra = base + (("strength", 1.0), ("xdog_sigma", 2.5))
    sil = renderings.transform(x, Condition("rendering", "silhouette", 0, extra), 0, 0)
    con = renderings.transform(x, Condition("rendering", "contours", 0, extra), 0, 0)
    assert sil.shape == x.shape and sil.dtype == np.uint8
    # digits have a dark background: light shapes on black; contours lie inside silhouettes
    assert np.median(sil[:, 0, 0, 0]) == 0 and sil.max() == 255
    assert con.astype(float).mean() < sil.astype(float).mean()
    flipped = tuple((k, "dark_on_light") if k == "polarity" else (k, v) for k, v in extra)
    dark = renderings.transform(x, Condition("rendering", "silhouette", 0, flipped), 0, 0)
    assert np.median(dark[:, 0, 0, 0]) == 255
    a = renderings.transform(x, Condition("rendering", "phase_scrambled", 0, extra), 5, 0)
    b = renderings.transform(x, Condition("rendering", "phase_scrambled", 0, extra), 5, 0)
    assert np.array_equal(a, b) and not np.array_equal(a, x)


def test_preview_writes_a_png_per_family(tmp_path, registry):
    """`bioprior preview` on the command line (corruption) and its grid writer (all three)."""
    from conftest import run_cli

    from bioprior.registry.cli.preview import preview_grid

    out = tmp_path / "corruption.png"
    args = ["-p", "corruptions=[contrast, fog]", "-p", "severities=[1, 5]"]
    args += ["-p", "noise_sweeps=[uniform_noise]"]
    res = run_cli("preview", "corruption", *args, "--count", "3", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "16 conditions" in res.stdout
    data = registry.get("dataset", "digits").build({})
    for name, params in [("spectral", {"centres": [1, 81, 161]}), ("ood_stylized", {})]:
        png = tmp_path / f"{name}.png"
        rows = preview_grid(registry.get("benchmark", name).build(params), data, png, count=3)
        assert rows >= 7 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
