"""The trainer: supervised training and evaluation on device-resident tensors.

The fast path for in-memory datasets: the whole split lives on the device (or, too big for it,
in host memory, streamed through pinned buffers: :mod:`.streaming`), each epoch draws a seeded
permutation and batches are gathered by index (no per-sample DataLoader). bf16 autocast
is used when the recipe asks for it and bf16 is the faster arithmetic on the device (CUDA, or a
CPU with AMX; :func:`bf16_is_faster`); the history records which (``autocast``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bioprior.registry.engine import streaming
from bioprior.registry.engine.checkpoint import (
    Checkpointer,
    Unusable,
    check_like,
    global_rng_state,
    set_global_rng_state,
)
from bioprior.registry.submissions.schema import Schedule, TrainingRecipe
from bioprior.registry.toolkit.data import to_float
from bioprior.registry.toolkit.objective import (
    Batch,
    ObjectiveContext,
    excluded_from_weight_decay,
    objectives,
)

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
    """The recipe's optimizer. Parameters tagged by ``exclude_from_weight_decay``, or named by a
    module's ``no_weight_decay()`` (timm's convention, relative names), get no weight decay."""
    named = dict(model.named_parameters())
    exempt_names = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for name in module.no_weight_decay()
    }
    trainable = [(n, p) for n, p in named.items() if p.requires_grad]
    is_exempt = [n in exempt_names or excluded_from_weight_decay(p) for n, p in trainable]
    decayed = [p for (_, p), ex in zip(trainable, is_exempt, strict=True) if not ex]
    exempt = [p for (_, p), ex in zip(trainable, is_exempt, strict=True) if ex]
    groups = [{"params": decayed}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    # one fused kernel per step on CUDA; foreach (the default) elsewhere (torch's fused CPU SGD
    # rounds some tensor sizes differently from foreach, which would change stored numbers)
    fused = {"fused": True} if all(p.is_cuda for _, p in trainable) and trainable else {}
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            **fused,
        )
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, **fused)


def augment_batch(xb: torch.Tensor, names: list[str], gen: torch.Generator) -> torch.Tensor:
    """The recipe's augmentations on one training batch, drawn from the trainer's generator."""
    n, _, h, w = xb.shape
    if "hflip" in names:
        flip = (torch.rand(n, generator=gen) < 0.5).to(xb.device).view(n, 1, 1, 1)
        xb = torch.where(flip, xb.flip(-1), xb)
    if "crop" in names:
        pad = max(1, h // 8)
        padded = F.pad(xb, (pad, pad, pad, pad))
        dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).to(xb.device)
        rows = (dy[:, None] + torch.arange(h, device=xb.device)).view(n, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=xb.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=xb.device).view(n, 1, 1, 1)
        chans = torch.arange(xb.shape[1], device=xb.device).view(1, -1, 1, 1)
        xb = padded[batch, chans, rows, cols]
    return xb


def only_input_convolutions(model: nn.Module) -> bool:
    """Whether every Conv2d of ``model`` (if any) takes fewer than 4 channels, as evanson's small
    net (Conv2d(1, 12, 5), then a 6,912-wide linear layer): such models stay NCHW, solo and as
    batched members. oneDNN gains little from channels_last on them, and the flatten after them
    would copy the activations back, forward and backward (an epoch of that net on 60,000
    Fashion-MNIST images: 4.7 s NCHW against 5.8-6.5 s channels_last, 2 threads)."""
    return all(m.in_channels < 4 for m in model.modules() if isinstance(m, nn.Conv2d))


def channels_last(model: nn.Module, sample: torch.Tensor) -> bool:
    """Switch a conv model to channels_last (faster convolutions and pooling on CPU oneDNN and on
    GPU tensor cores) when its forward accepts it; models whose code needs contiguous NCHW
    (``.view`` after a conv) stay as they are. The probe leaves the RNG and the model's state
    untouched: it runs in eval mode (a training-mode probe would fold its two images into
    BatchNorm's running statistics)."""
    if sample.dim() != 4 or only_input_convolutions(model):
        return False
    model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model(sample[:2].float().contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        model.to(memory_format=torch.contiguous_format)
        return False
    finally:
        model.train(was_training)
    return True


def _env_on(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1, true or yes."""
    return os.environ.get(name, "") in ("1", "true", "yes")


def bf16_kernels(device: torch.device) -> bool:
    """Whether ``device`` has bf16 kernels at all: a CUDA GPU that supports it, or a CPU whose
    oneDNN has them (AVX-512 BF16 or AMX). Elsewhere bf16 would be emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    return False


def bf16_is_faster(device: torch.device) -> bool:
    """Whether bf16 is the faster arithmetic on ``device``: a CUDA GPU that supports it, or a
    CPU with AMX tiles. A CPU with AVX-512 BF16 but no AMX has bf16 kernels whose training steps
    can be slower than fp32 (measured on a 2-vCPU Xeon, family 6 model 207, AMX not exposed:
    1.1-2.1x slower for small_alexnet, small_inception, resnet18_cifar and vgg16_flex), so there
    a ``precision: bf16`` recipe trains fp32 unless ``BIOPRIOR_CPU_BF16=1`` opts in."""
    if device.type == "cpu":
        if _env_on("BIOPRIOR_CPU_BF16"):
            return bf16_kernels(device)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(amx is not None and amx()) and bf16_kernels(device)
    return bf16_kernels(device)


def uses_bf16(recipe: TrainingRecipe, device: torch.device) -> bool:
    """bf16 autocast (BatchNorm and the loss stay fp32) when the recipe asks and bf16 is the
    faster arithmetic on the device (:func:`bf16_is_faster`); recorded in each training's
    history as ``autocast``."""
    return recipe.precision == "bf16" and bf16_is_faster(device)


def model_device(model: nn.Module, x: torch.Tensor) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else x.device


def compiled(model: nn.Module):
    """``torch.compile(model)`` when ``BIOPRIOR_COMPILE=1`` (same weights, same module)."""
    if _env_on("BIOPRIOR_COMPILE"):
        return torch.compile(model)
    return model


def like_param(value: Any, param: torch.Tensor) -> Any:
    """An optimizer state tensor restored from a checkpoint (saved contiguous) in the memory
    layout of its parameter, as the optimizer made it: fused kernels walk the parameter, its
    gradient and its state in one layout."""
    if not isinstance(value, torch.Tensor) or value.shape != param.shape:
        return value
    if value.stride() == param.stride():
        return value
    return torch.empty_like(param, dtype=value.dtype).copy_(value)


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
    seed: int,
    on_epoch: EpochCallback | None = None,
    checkpoint: Checkpointer | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place on ``(x, y)``; returns the history.

    ``x`` may be float in [0, 1] or uint8 (converted per batch on the device); on the model's
    device, or in host memory when it does not fit there: then each batch is gathered on the
    host into a pinned buffer and copied asynchronously (:mod:`.streaming`). Training
    objectives attached by constraints (:mod:`.objective`) add their terms to the loss. On
    CUDA: cudnn.benchmark, fused optimizers; bf16 autocast when the recipe asks and bf16 is the
    faster arithmetic there (:func:`uses_bf16`); ``BIOPRIOR_COMPILE=1`` compiles the forward
    (``torch.compile``); conv models train channels_last everywhere. With a ``checkpoint``
    (:mod:`.checkpoint`) the training resumes from its saved state, if any, and saves its state
    between steps when it is due (and at a stop).
    """
    device = model_device(model, x)
    batches = streaming.member_batches([x], [y], device, recipe.batch_size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    factor = lr_factor(recipe.schedule, recipe.epochs)
    autocast = uses_bf16(recipe, device)
    history: dict[str, Any] = {"loss": [], "accuracy": [], "lr": [], "seconds": []}
    history["autocast"] = "bf16" if autocast else "fp32"
    n = len(x)
    extra_terms = objectives(model)
    objective_gens = [
        torch.Generator().manual_seed(seed * 1000 + i + 1) for i in range(len(extra_terms))
    ]
    for objective, objective_gen in zip(extra_terms, objective_gens, strict=True):
        objective.prepare(
            ObjectiveContext(
                channels=int(x.shape[1]),
                size=int(x.shape[-1]),
                device=device,
                seed=seed,
                epochs=recipe.epochs,
                steps_per_epoch=math.ceil(n / recipe.batch_size),
                batch_size=recipe.batch_size,
                generator=objective_gen,
            )
        )
    layout = (
        torch.channels_last if channels_last(model, x[:2].to(device)) else torch.contiguous_format
    )
    forward = compiled(model)

    def fits(saved: dict[str, Any]) -> None:  # before anything of it is applied
        check_like("weights", saved["model"], model.state_dict())
        groups = saved["optimizer"]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
            raise Unusable("its optimizer is not this training's")
        if len(saved["objectives"]) != len(extra_terms):
            raise Unusable("its objectives are not this training's")

    saved = None
    if checkpoint is not None:
        stateless = [type(o).__name__ for o in extra_terms if o.training_state() is None]
        if stateless:
            checkpoint.disable(f"its objective {stateless[0]} gives no training_state()")
        saved = checkpoint.resume(fits, device)
    if saved is not None:  # everything a step depends on, as it was (prepare ran as it did)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for param, param_state in optimizer.state.items():
            for name, value in param_state.items():
                param_state[name] = like_param(value, param)
        gen.set_state(saved["rng"]["trainer"])
        set_global_rng_state(saved["rng"]["global"], device)
        for objective_gen, state in zip(objective_gens, saved["rng"]["objectives"], strict=True):
            objective_gen.set_state(state)
        for objective, state in zip(extra_terms, saved["objectives"], strict=True):
            objective.load_training_state(state)
        history = saved["history"]
        history.setdefault("resumed", []).append([saved["epoch"], saved["position"]])
        history.setdefault("resumed_software", []).append(checkpoint.resumed_software)

    def state(epoch, position, perm, loss_sum, correct, seconds) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "position": position,
            "seconds": seconds,
            "perm": perm,
            "loss_sum": loss_sum,
            "correct": correct,
            "history": history,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "objectives": [o.training_state() for o in extra_terms],
            "rng": {
                "trainer": gen.get_state(),
                "global": global_rng_state(device),
                "objectives": [g.get_state() for g in objective_gens],
            },
        }

    model.train()
    with checkpoint.stops() if checkpoint is not None else nullcontext():
        for epoch in range(saved["epoch"] if saved else 0, recipe.epochs):
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * factor(epoch)
            if saved is not None:  # the epoch the checkpoint was saved in, where it was
                perm = saved["perm"].to(batches.index_device)
                loss_sum, correct = saved["loss_sum"].to(device), saved["correct"].to(device)
                start -= saved["seconds"]
                begin, saved = saved["position"], None
            else:
                perm = torch.randperm(n, generator=gen).to(batches.index_device)
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device, dtype=torch.long)
                begin = 0
            for i in range(begin, n, recipe.batch_size):
                if checkpoint is not None and checkpoint.due(epoch, i):
                    seconds = time.perf_counter() - start
                    checkpoint.save(state(epoch, i, perm, loss_sum, correct, seconds))
                idx = perm[i : i + recipe.batch_size]
                xb, yb = batches.batch(idx[None])
                xb, yb = xb[0], yb[0]
                if xb.dtype == torch.uint8:
                    xb = to_float(xb)
                if recipe.augment:
                    xb = augment_batch(xb, recipe.augment, gen)
                xb = xb.contiguous(memory_format=layout)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = forward(xb)
                    loss = task_loss = F.cross_entropy(logits.float(), yb)
                    for objective in extra_terms:
                        loss = objective.total_loss(model, loss, Batch(xb, yb, logits))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += task_loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == yb).sum()
            stats = {
                "loss": loss_sum.item() / n,
                "accuracy": correct.item() / n,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            for objective in extra_terms:
                stats.update(objective.epoch_metrics())
            for key, value in stats.items():
                history.setdefault(key, []).append(value)
            if on_epoch is not None:
                on_epoch(epoch, stats)
    model.to(memory_format=torch.contiguous_format)  # evaluation as for a model loaded from disk
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


def eval_batch_size(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 1024


def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits for ``x`` in evaluation mode, under ``inference_mode``, in large batches (uint8
    images are converted on the device)."""
    model.eval()
    device = model_device(model, x)
    batch_size = batch_size or eval_batch_size(device)
    host = None
    if streaming.streams(x, device):
        host = streaming.HostBatches([x], None, device, min(batch_size, len(x)))
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            if host is not None:  # host memory: through a pinned buffer (:mod:`.streaming`)
                images, _ = host.batch(torch.arange(i, min(i + batch_size, len(x)))[None])
                xb = images[0]
            else:
                xb = x[i : i + batch_size].to(device)
            if xb.dtype == torch.uint8:
                xb = to_float(xb)
            out.append(model(xb).float())
    return torch.cat(out)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
) -> float:
    if len(x) == 0:
        return float("nan")
    logits = predict(model, x, batch_size)
    return (logits.argmax(1) == y.to(logits.device)).float().mean().item()
