"""The trainer: supervised training and evaluation on device-resident tensors.

The fast path for in-memory datasets: the whole split lives on the device, each epoch draws a
seeded permutation and batches are gathered by index (no per-sample DataLoader). bf16 autocast
is used on CUDA when the recipe asks for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .schemas import Schedule, TrainingRecipe

EpochCallback = Callable[[int, dict[str, float]], None]


class Normalized(nn.Module):
    """Standardizes [0, 1] images per channel with the training set's statistics, then ``net``.

    Benchmarks therefore feed images in [0, 1] pixel units; the statistics travel with the weights.
    """

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("input_mean", mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("input_std", std.detach().clone().float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.input_mean) / self.input_std)


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(device)


def lr_factor(schedule: Schedule, epochs: int) -> Callable[[int], float]:
    """Multiplier of the initial learning rate at a given epoch."""
    name = schedule.name
    if name == "inverse_time":
        return lambda e: 1.0 / (1.0 + schedule.decay * e)
    if name == "exponential":
        return lambda e: schedule.gamma**e
    if name == "step":
        return lambda e: schedule.gamma ** (e // schedule.step_size)
    if name == "cosine":
        return lambda e: 0.5 * (1 + math.cos(math.pi * e / max(1, epochs)))
    return lambda e: 1.0


def make_optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place on ``(x, y)`` (already on the model's device); returns the history."""
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    factor = lr_factor(recipe.schedule, recipe.epochs)
    autocast = recipe.precision == "bf16" and device.type == "cuda"
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "lr": [], "seconds": []}
    n = len(x)
    model.train()
    for epoch in range(recipe.epochs):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * factor(epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i in range(0, n, recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            xb, yb = x[idx], y[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        stats = {
            "loss": loss_sum.item() / n,
            "accuracy": correct.item() / n,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        for key, value in stats.items():
            history[key].append(value)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    model.eval()
    return history


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with the global RNG seeded (stochastic constraints at inference), restoring the
    caller's RNG state after: evaluations give the same numbers whatever ran before them."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for ``x`` in evaluation mode, in batches."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)]
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    if len(x) == 0:
        return float("nan")
    logits = predict(model, x, batch_size)
    return (logits.argmax(1) == y.to(logits.device)).float().mean().item()
