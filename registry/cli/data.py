"""``bioprior preview`` (example stimuli of a benchmark) and ``bioprior download`` (a dataset
into the data root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from bioprior.registry.base.paths import using_data_root
from bioprior.registry.cli.common import fail
from bioprior.registry.hooks.loading import UnknownPluginError, get_registry


def preview(
    benchmark: str = typer.Argument(
        ..., help="A benchmark that transforms images, e.g. corruption."
    ),
    dataset: str = typer.Option(
        "digits", "--dataset", "-d", help="Dataset whose test images are shown."
    ),
    params: list[str] = typer.Option(
        [], "--params", "-p", help="Benchmark parameter KEY=VALUE (YAML value)."
    ),
    output: Path = typer.Option(Path("preview.png"), "--output", "-o", help="PNG to write."),
    count: int = typer.Option(6, "--count", min=1, max=32, help="Images per condition."),
    size: int = typer.Option(32, "--size", min=8, max=512, help="Image side in px."),
    seed: int = typer.Option(0, "--seed", help="Seed of random stimuli."),
    max_rows: int = typer.Option(
        200, "--max-rows", min=1, help="At most this many conditions (rows)."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where datasets live (default $BIOPRIOR_DATA)."
    ),
) -> None:
    """Write a grid of example stimuli per condition of a benchmark (what the model is tested on)."""
    raw: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--params: expected KEY=VALUE, got {item!r}")
        raw[key] = yaml.safe_load(value)
    registry = get_registry()
    try:
        entry = registry.get("benchmark", benchmark)
        data_entry = registry.get("dataset", dataset)
    except UnknownPluginError as exc:
        fail(f"{'BENCHMARK' if exc.kind == 'benchmark' else '--dataset'}: {exc}")
    try:
        bench = entry.build(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"--params: {'.'.join(map(str, err['loc']))}: {err['msg']}")
    from bioprior.registry.cli.preview import preview_grid  # lazy: matplotlib, torch
    from bioprior.registry.toolkit.data import DataUnavailable  # lazy: torch

    try:
        with using_data_root(data_root):
            data = data_entry.build({})
        rows = preview_grid(
            bench, data, output, count=count, size=size, seed=seed, max_rows=max_rows
        )
    except DataUnavailable as exc:
        fail(f"--dataset: {exc.describe()}")
    except NotImplementedError as exc:
        fail(f"BENCHMARK: {exc}")
    typer.echo(f"wrote {output} ({rows} conditions x {count} images)")


def download(
    name: str = typer.Argument(..., help="cifar10 | cifar100 | mnist | fashion_mnist."),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Where to put it (default $BIOPRIOR_DATA)."
    ),
) -> None:
    """Download a torchvision dataset into the data root (needs network access); nothing when
    it loads already (from the data root, or a system copy such as Debian's Fashion-MNIST)."""
    try:
        entry = get_registry().get("dataset", name)
    except UnknownPluginError as exc:
        fail(f"NAME: {exc}")
    if "download" not in entry.params.model_fields:
        fail(f"NAME: {name} is not downloadable")
    from bioprior.registry.toolkit.data import DataUnavailable  # lazy: torch

    with using_data_root(data_root):
        try:
            data = entry.build({})
            ready = "already available, nothing downloaded"
        except DataUnavailable:
            try:
                data = entry.build({"download": True})
            except DataUnavailable as exc:
                fail(f"NAME: {exc.message}")  # its advice would be this command
            ready = "ready"
    typer.echo(f"{name}: {len(data.train_x)} training and {len(data.test_x)} test images {ready}")


def register(app: typer.Typer) -> None:
    app.command()(preview)
    app.command()(download)
