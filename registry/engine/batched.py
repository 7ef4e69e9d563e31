"""Batched training: K trainings of one architecture and recipe shape as one model (torch.func).

The members' parameters and buffers are stacked (``stack_module_state``) and one
``functional_call`` runs under ``vmap`` (``randomness="different"``: every member draws its own
noise), so a sweep over constraint strengths, seeds, learning rates or derived datasets costs about
one launch-bound training instead of K. Each member keeps its own initialization (built from its
own seed), its own data and data order (its seed's generator, as a solo training), its own
augmentation draws and its own learning rate, momentum, weight decay and schedule.

Per-member values that live in Python attributes rather than tensors (e.g. internal noise's sigma)
are declared by the module as ``batch_attributes``; they become per-member buffers of the batched
model, so the module's ``forward`` must accept a 0-d tensor for them. Under a bf16 recipe the
members' convolutions are cast by :class:`~.batched_autocast.ConvAutocast` (vmap would leave
them fp32), so a member trains in the precision its solo training would. What differs from a
solo training: the noise stream (one generator for the batch, split per member by ``vmap``) and
the float rounding of batched kernels; ``tests/test_batched.py`` states the tolerances.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bioprior.registry.engine import batched_layout, streaming
from bioprior.registry.engine.batched_autocast import ConvAutocast
from bioprior.registry.engine.checkpoint import (
    Checkpointer,
    Unusable,
    check_like,
    global_rng_state,
    set_global_rng_state,
)
from bioprior.registry.engine.trainer import (
    augment_batch,
    like_param,
    lr_factor,
    model_device,
    uses_bf16,
)
from bioprior.registry.submissions.schema import TrainingRecipe
from bioprior.registry.toolkit.data import to_float
from bioprior.registry.toolkit.objective import excluded_from_weight_decay, objectives

MemberCallback = Callable[[int, int, dict[str, float]], None]  # member, epoch, stats


def structure(module: nn.Module) -> tuple:
    """What must agree between members: module types, tensor names / shapes / dtypes, and the
    non-batch attributes of every submodule."""
    parts: list = []
    for name, sub in module.named_modules():
        skip = set(getattr(sub, "batch_attributes", ()))
        attrs = sorted(
            (k, repr(v))
            for k, v in vars(sub).items()
            if not k.startswith("_") and k not in skip and k != "training"
        )
        parts.append((name, type(sub).__qualname__, tuple(attrs)))
    for name, t in module.state_dict().items():
        parts.append((name, tuple(t.shape), str(t.dtype)))
    return tuple(parts)


def can_batch(module: nn.Module) -> bool:
    """Objectives (extra loss terms) train alone: they see the whole model at every step."""
    return not objectives(module)


def _attribute_buffers(base: nn.Module, members: Sequence[nn.Module], device) -> dict:
    """Turn each declared ``batch_attributes`` value into a per-member buffer of ``base``."""
    out: dict[str, torch.Tensor] = {}
    for name, sub in base.named_modules():
        for attr in getattr(sub, "batch_attributes", ()):
            values = [float(getattr(m.get_submodule(name), attr)) for m in members]
            delattr(sub, attr)
            sub.register_buffer(attr, torch.tensor(values[0], device=device), persistent=False)
            out[f"{name}.{attr}" if name else attr] = torch.tensor(values, device=device)
    return out


class BatchedOptimizer:
    """SGD (momentum, L2 weight decay) / Adam / AdamW as torch.optim computes them, with every
    hyperparameter a per-member tensor broadcast over the stacked parameters."""

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        recipes: Sequence[TrainingRecipe],
        exempt,
        fused: bool | None = None,
    ):
        self.params = params
        self.kind = recipes[0].optimizer
        device = next(iter(params.values())).device
        self.momentum = torch.tensor([r.momentum for r in recipes], device=device)
        self.wd = torch.tensor([r.weight_decay for r in recipes], device=device)
        self.exempt = exempt  # parameter names without weight decay
        self.lr = torch.zeros(len(recipes), device=device)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.steps = 0
        # one momentum and weight decay for every member: SGD steps through torch's fused kernel
        # on CUDA (as a solo training there), unless ``fused`` says otherwise
        shared = {(r.momentum, r.weight_decay) for r in recipes}
        fused = device.type == "cuda" if fused is None else fused
        one = len(shared) == 1 and self.kind == "sgd" and fused
        self._shared = next(iter(shared)) if one else None

    @property
    def lr(self) -> torch.Tensor:
        return self._lr

    @lr.setter
    def lr(self, value: torch.Tensor) -> None:
        """Each member's learning rate (set once per epoch)."""
        self._lr = value
        values = set(value.tolist())
        self._shared_lr = next(iter(values)) if len(values) == 1 else None

    @staticmethod
    def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (like.dim() - 1)))

    def _fused_sgd_step(self) -> None:
        """SGD with the members' shared momentum, weight decay and learning rate: one fused
        kernel per group (decayed or exempt; first step or not) over the stacked parameters."""
        momentum, weight_decay = self._shared
        groups: dict[tuple[bool, bool], list[str]] = {}
        for name, p in self.params.items():
            if p.grad is not None:
                first = bool(momentum) and "buf" not in self.state.get(name, {})
                groups.setdefault((name in self.exempt, first), []).append(name)
        for (exempt, first), names in groups.items():
            params = [self.params[n] for n in names]
            if first:
                for n, p in zip(names, params, strict=True):
                    self.state.setdefault(n, {})["buf"] = torch.empty_like(p)
            torch._fused_sgd_(
                params,
                [p.grad for p in params],
                [self.state[n]["buf"] for n in names] if momentum else [],
                weight_decay=0.0 if exempt else weight_decay,
                momentum=momentum,
                lr=self._shared_lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=first,
            )

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self._shared is not None and self._shared_lr is not None:
            self._fused_sgd_step()
            return
        for name, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            lr = self._b(self.lr, p)
            wd = None if name in self.exempt else self._b(self.wd, p)
            state = self.state.setdefault(name, {})
            if self.kind == "sgd":
                if wd is not None:
                    g = g.addcmul(wd, p)
                if "buf" in state:
                    state["buf"].mul_(self._b(self.momentum, p)).add_(g)
                else:
                    state["buf"] = g.clone()
                p.addcmul_(state["buf"], lr, value=-1.0)
                continue
            b1, b2, eps = 0.9, 0.999, 1e-8
            if wd is not None and self.kind == "adamw":
                p.mul_(1 - lr * wd)
            elif wd is not None:
                g = g.addcmul(wd, p)
            m = state.setdefault("m", torch.zeros_like(p))
            v = state.setdefault("v", torch.zeros_like(p))
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = lr / (1 - b1**self.steps)
            denom = (v.sqrt() / math.sqrt(1 - b2**self.steps)).add_(eps)
            p.addcmul_(m / denom, step_size, value=-1.0)


def train_batched(
    modules: Sequence[nn.Module],
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    recipes: Sequence[TrainingRecipe],
    seeds: Sequence[int],
    on_epoch: MemberCallback | None = None,
    checkpoint: Checkpointer | None = None,
) -> list[dict[str, list[float]]]:
    """Train ``modules`` (same :func:`structure`, on one device) in place, member k on
    ``(xs[k], ys[k])`` with ``recipes[k]`` and ``seeds[k]``; returns each member's history.
    With a ``checkpoint`` (:mod:`.checkpoint`, of the whole batch) the training resumes from its
    saved state, if any, and saves its state between steps when it is due (and at a stop)."""
    k = len(modules)
    device = model_device(modules[0], xs[0])
    first = recipes[0]
    n = len(xs[0])
    if any(len(x) != n or x.shape != xs[0].shape for x in xs):
        raise ValueError("batched members need training sets of one shape")
    base = batched_layout.prepare(copy.deepcopy(modules[0]))
    extra = _attribute_buffers(base, modules, device)
    params, buffers = stack_module_state(list(modules))
    params = {name: p.detach().requires_grad_(p.requires_grad) for name, p in params.items()}
    buffers = {**buffers, **extra}
    trainable = {name: p for name, p in params.items() if p.requires_grad}
    exempt = {name for name, p in modules[0].named_parameters() if excluded_from_weight_decay(p)}
    for prefix, sub in modules[0].named_modules():
        if callable(getattr(sub, "no_weight_decay", None)):
            exempt |= {f"{prefix}.{name}" if prefix else name for name in sub.no_weight_decay()}
    optimizer = BatchedOptimizer(trainable, recipes, exempt)
    factors = [lr_factor(r.schedule, r.epochs) for r in recipes]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    torch.manual_seed(seeds[0])
    autocast = uses_bf16(first, device)
    if len({x.dtype for x in xs}) > 1:  # uint8 and float members (e.g. digits and its noise)
        xs = [to_float(x) for x in xs]
    batches = streaming.member_batches(xs, ys, device, first.batch_size)

    def member_loss(p, b, xb, yb):
        with ConvAutocast() if autocast else contextlib.nullcontext():
            logits = functional_call(base, (p, b), (xb,))
        return F.cross_entropy(logits.float(), yb), logits

    batched_loss = vmap(member_loss, randomness="different")
    histories: list[dict[str, list[float]]] = [
        {"loss": [], "accuracy": [], "lr": [], "seconds": []} for _ in range(k)
    ]

    def fits(saved: dict) -> None:  # before anything of it is applied
        check_like("weights", saved["params"], params)
        check_like("buffers", saved["buffers"], buffers)
        if len(saved["rng"]["members"]) != k:
            raise Unusable("its members are not this training's")

    saved = checkpoint.resume(fits, device) if checkpoint is not None else None
    if saved is not None:  # everything a step depends on, as it was
        with torch.no_grad():
            for name, t in saved["params"].items():
                params[name].copy_(t)
            for name, t in saved["buffers"].items():
                buffers[name].copy_(t)
        optimizer.state = {
            name: {k: like_param(v, params[name]) for k, v in state.items()}
            for name, state in saved["optimizer"]["state"].items()
        }
        optimizer.steps = saved["optimizer"]["steps"]
        for g, state in zip(gens, saved["rng"]["members"], strict=True):
            g.set_state(state)
        set_global_rng_state(saved["rng"]["global"], device)
        histories = saved["histories"]
        for h in histories:
            h.setdefault("resumed", []).append([saved["epoch"], saved["position"]])
            h.setdefault("resumed_software", []).append(checkpoint.resumed_software)

    def state(epoch, position, perms, loss_sum, correct, seconds) -> dict:
        return {
            "epoch": epoch,
            "position": position,
            "seconds": seconds,
            "perms": perms,
            "loss_sum": loss_sum,
            "correct": correct,
            "histories": histories,
            "params": params,
            "buffers": buffers,
            "optimizer": {"state": optimizer.state, "steps": optimizer.steps},
            "rng": {"members": [g.get_state() for g in gens], "global": global_rng_state(device)},
        }

    base.train()
    with checkpoint.stops() if checkpoint is not None else contextlib.nullcontext():
        for epoch in range(saved["epoch"] if saved else 0, first.epochs):
            start = time.perf_counter()
            lrs = [r.lr * f(epoch) for r, f in zip(recipes, factors, strict=True)]
            optimizer.lr = torch.tensor(lrs, device=device)
            if saved is not None:  # the epoch the checkpoint was saved in, where it was
                perms = saved["perms"].to(batches.index_device)
                loss_sum, correct = saved["loss_sum"].to(device), saved["correct"].to(device)
                start -= saved["seconds"]
                begin, saved = saved["position"], None
            else:
                perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
                perms = perms.to(batches.index_device)
                loss_sum = torch.zeros(k, device=device)
                correct = torch.zeros(k, device=device, dtype=torch.long)
                begin = 0
            for i in range(begin, n, first.batch_size):
                if checkpoint is not None and checkpoint.due(epoch, i):
                    seconds = time.perf_counter() - start
                    checkpoint.save(state(epoch, i, perms, loss_sum, correct, seconds))
                idx = perms[:, i : i + first.batch_size]
                xb, yb = batches.batch(idx)
                if xb.dtype == torch.uint8:  # uint8 data, converted per batch on the device
                    xb = to_float(xb)
                if first.augment:
                    xb = torch.stack(
                        [augment_batch(xb[j], first.augment, gens[j]) for j in range(k)]
                    )
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    losses, logits = batched_loss(params, buffers, xb, yb)
                optimizer.zero_grad()
                losses.sum().backward()
                optimizer.step()
                loss_sum += losses.detach() * idx.shape[1]
                correct += (logits.detach().argmax(-1) == yb).sum(1)
            seconds = time.perf_counter() - start
            losses_e, correct_e = (loss_sum / n).tolist(), (correct.double() / n).tolist()
            for j in range(k):
                stats = {"loss": losses_e[j], "accuracy": correct_e[j], "lr": lrs[j]}
                stats["seconds"] = seconds
                for key, value in stats.items():
                    histories[j][key].append(value)
                if on_epoch is not None:
                    on_epoch(j, epoch, stats)
    with torch.no_grad():
        for j, module in enumerate(modules):
            own = dict(module.named_parameters())
            for name, p in params.items():
                own[name].copy_(p[j])
            own_buffers = dict(module.named_buffers())
            for name, b in buffers.items():
                if name in own_buffers:
                    own_buffers[name].copy_(b[j])
            module.eval()
    for h in histories:
        h["batched_members"] = k  # type: ignore[assignment]
        h["autocast"] = "bf16" if autocast else "fp32"  # type: ignore[assignment]
    return histories
