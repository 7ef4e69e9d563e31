"""``bioprior preview``: a grid of example stimuli per condition of a benchmark (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from bioprior.registry.toolkit.data import ImageData, fit_images


def preview_grid(
    benchmark,
    data: ImageData,
    output: Path,
    count: int = 6,
    size: int = 32,
    seed: int = 0,
    max_rows: int = 200,
) -> int:
    """Write a PNG with one row per condition and ``count`` test images per row; returns the row count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = fit_images(data.test_x[:count], data.channels, size)
    conditions = list(benchmark.preview(images, seed).items())[:max_rows]
    if not conditions:
        raise ValueError("the benchmark returned no conditions to preview")
    rows, cols = len(conditions), images.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.8, 1.3 * rows), squeeze=False)
    for r, (label, batch) in enumerate(conditions):
        for c in range(cols):
            ax = axes[r][c]
            img = batch[c].detach().float().clamp(0, 1).cpu()
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return rows


__all__ = ["preview_grid"]
