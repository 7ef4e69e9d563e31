"""Constraint checks: applies to an ``nn.Sequential``, a timm model and ``small_alexnet``
without changing the output shape, composes with ``internal_noise``, honours ``at_inference``
when stochastic, and an objective constraint adds a finite loss term."""

from __future__ import annotations

from typing import Any

from bioprior import plugin

from .model_checks import forward, images
from .subject import CheckFailed, CheckSkipped, Subject

#: (in_channels, num_classes, input_size) of every host model
GEOMETRY = (1, 10, 16)
#: the registry host and its small parameters
REGISTRY_HOST = ("small_alexnet", {"width": 0.25, "local_response_norm": False})
TIMM_HOST = "test_resnet"


def sequential_host(geometry=GEOMETRY):
    from torch import nn

    channels, classes, _ = geometry
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, classes),
    )


def timm_host(geometry=GEOMETRY):
    plugin.ensure_torchvision()
    import timm

    channels, classes, _ = geometry
    return timm.create_model(TIMM_HOST, num_classes=classes, in_chans=channels)


def constraint_of(s: Subject, **override: Any):
    constraint = s.entry.build({**s.params, **override})
    if not isinstance(constraint, plugin.Constraint):
        raise CheckFailed(
            f"the factory returned {type(constraint).__name__}: return a "
            "bioprior.plugin.Constraint subclass instance"
        )
    return constraint


def needed_model_params(s: Subject, constraint) -> tuple[str, ...]:
    return tuple(
        getattr(constraint, "requires_model_params", ())
        or s.entry.extra.get("requires_model_params", ())
    )


def apply_constraint(constraint, net, geometry=GEOMETRY, model: str = ""):
    """``constraint.apply`` as the trainer calls it (the one place the kit does), with the
    :class:`~bioprior.plugin.InputGeometry` of the images the network receives (a constraint
    written against the first contract, ``apply(self, module)``, gets the module only)."""
    from bioprior.registry.contracts import constraint as core  # lazy: core helper (pydantic)

    channels, classes, size = geometry
    geometry = plugin.InputGeometry(channels, size, classes, model)
    return core.apply_constraint(constraint, net, geometry)


def hosted(s: Subject, host: str, constraints, seed: int = 0):
    """(unconstrained host, constrained host) built with ``seed``."""
    import torch

    if host == "small_alexnet":
        name, small = REGISTRY_HOST
        entry = s.registry.get("model", name)
        channels, classes, size = GEOMETRY
        params = entry.params.model_validate(
            {**small, "in_channels": channels, "num_classes": classes, "input_size": size}
        ).model_dump()
        torch.manual_seed(seed)
        plain = entry.build(params)
        for c in constraints:
            params = c.configure(name, params)
        torch.manual_seed(seed)
        net = entry.build(params)
    else:
        make = sequential_host if host == "sequential" else timm_host
        for c in constraints:
            if needed_model_params(s, c):
                raise CheckSkipped(
                    f"needs model parameters {', '.join(needed_model_params(s, c))}: applies to "
                    "registry models that declare them"
                )
        torch.manual_seed(seed)
        plain = make()
        torch.manual_seed(seed)
        net = make()
    for c in constraints:
        try:
            net = apply_constraint(
                c, net, model=REGISTRY_HOST[0] if host == "small_alexnet" else ""
            )
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(
                f"apply() on {host} raised {type(exc).__name__}: {' '.join(str(exc).split())}; "
                "a constraint should work on any network with hidden activations (or raise "
                "ConstraintError naming what it needs, and list this check in "
                "expected_failed_checks)"
            ) from None
        from torch import nn

        if not isinstance(net, nn.Module):
            raise CheckFailed(f"apply() returned {type(net).__name__}: return the nn.Module")
    return plain, net


def constrained_model(
    constraint: str,
    params: dict[str, Any] | None = None,
    model: str = REGISTRY_HOST[0],
    model_params: dict[str, Any] | None = None,
    geometry: tuple[int, int, int] = GEOMETRY,
    seed: int = 0,
):
    """A registry model with one registered constraint configured and applied, as the trainer
    builds it (for speed tests: ``plugin_forward_benchmark(constrained_model("my_noise"), ...)``)."""
    import torch

    registry = plugin.get_registry()
    c = registry.get("constraint", constraint).build(params or {})
    entry = registry.get("model", model)
    small = REGISTRY_HOST[1] if model == REGISTRY_HOST[0] and model_params is None else {}
    channels, classes, size = geometry
    raw = {**small, **(model_params or {})}
    raw.update(
        {
            k: v
            for k, v in (("in_channels", channels), ("num_classes", classes), ("input_size", size))
            if k in entry.params.model_fields
        }
    )
    resolved = c.configure(model, entry.params.model_validate(raw).model_dump())
    torch.manual_seed(seed)
    return apply_constraint(c, entry.build(resolved), geometry, model)


def _same_shape(s: Subject, host: str, extra=()) -> None:
    import torch

    constraints = [constraint_of(s), *extra]
    plain, net = hosted(s, host, constraints)
    x = images(GEOMETRY)
    want = forward(plain, x).shape
    for train in (False, True):
        try:
            got = forward(net, x, train=train)
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(
                f"the constrained {host} fails in {'training' if train else 'eval'} mode: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from None
        if got.shape != want:
            raise CheckFailed(
                f"constrained {host} outputs {tuple(got.shape)}, the plain one {tuple(want)}: "
                "a constraint must not change the model's output"
            )
        if not torch.isfinite(got).all():
            raise CheckFailed(f"the constrained {host} gives non-finite outputs")


def applies_to_sequential(s: Subject) -> None:
    """Applies to a plain ``nn.Sequential`` (conv, ReLU, linear) keeping its output shape."""
    _same_shape(s, "sequential")


def applies_to_timm(s: Subject) -> None:
    """Applies to a timm model (``test_resnet``) keeping its output shape."""
    _same_shape(s, "timm")


def applies_to_small_alexnet(s: Subject) -> None:
    """Applies to the registry's ``small_alexnet`` (configure, then apply)."""
    _same_shape(s, "small_alexnet")


def composes_with_internal_noise(s: Subject) -> None:
    """Stacks with ``internal_noise`` before and after it."""
    if not s.registry.has("constraint", "internal_noise"):
        raise CheckSkipped("internal_noise is not registered")
    noise = s.registry.get("constraint", "internal_noise").build({"sigma": 0.1})
    _same_shape(s, "small_alexnet", extra=[noise])
    import torch

    constraints = [noise, constraint_of(s)]
    plain, net = hosted(s, "small_alexnet", constraints)
    got = forward(net, images(GEOMETRY), train=True)
    if got.shape != forward(plain, images(GEOMETRY)).shape or not torch.isfinite(got).all():
        raise CheckFailed("after internal_noise the constraint changes the output or breaks it")


def at_inference_switch(s: Subject) -> None:
    """A stochastic constraint has ``at_inference``: off -> deterministic in eval, on -> not."""
    import torch

    has_switch = "at_inference" in s.entry.params.model_fields
    x = images(GEOMETRY)

    def twice(train: bool, **override):
        _, net = hosted(s, "small_alexnet", [constraint_of(s, **override)])
        return forward(net, x, train=train, seed=1), forward(net, x, train=train, seed=2)

    a, b = twice(True, **({"at_inference": False} if has_switch else {}))
    if torch.allclose(a, b):
        raise CheckSkipped("deterministic in training mode: no at_inference switch needed")
    if not has_switch:
        raise CheckFailed(
            "stochastic (two training-mode passes differ) but has no at_inference parameter: "
            "add at_inference: bool = Field(False, description=...) and draw noise only when "
            "`self.training or at_inference`"
        )
    a, b = twice(False, at_inference=False)
    if not torch.allclose(a, b):
        raise CheckFailed(
            "at_inference=False but eval-mode outputs still vary: switch the randomness off "
            "when not module.training"
        )
    a, b = twice(False, at_inference=True)
    if torch.allclose(a, b):
        raise CheckFailed("at_inference=True but eval-mode outputs are deterministic")


def objective_adds_finite_loss(s: Subject) -> None:
    """An objective constraint's term is finite, changes the loss and back-propagates."""
    import torch
    import torch.nn.functional as F

    _, net = hosted(s, "small_alexnet", [constraint_of(s)])
    found = plugin.objectives(net)
    if not found:
        raise CheckSkipped("attaches no training objective (not a loss-term constraint)")
    channels, classes, size = GEOMETRY
    ctx = plugin.ObjectiveContext(
        channels=channels,
        size=size,
        device=torch.device("cpu"),
        seed=0,
        epochs=1,
        steps_per_epoch=1,
        batch_size=8,
        generator=torch.Generator().manual_seed(0),
    )
    for objective in found:
        objective.prepare(ctx)
    net.train()
    x, y = images(GEOMETRY, batch=8), torch.arange(8) % classes
    logits = net(x)
    task = F.cross_entropy(logits, y)
    total = task
    for objective in found:
        total = objective.total_loss(net, total, plugin.Batch(x, y, logits))
    if not isinstance(total, torch.Tensor) or total.ndim != 0:
        raise CheckFailed("total_loss must return a scalar tensor (task loss plus the term)")
    if not torch.isfinite(total):
        raise CheckFailed("the objective's loss is not finite at the first step")
    if float(total.detach()) == float(task.detach()):
        raise CheckFailed("total_loss returns the task loss unchanged: add the objective's term")
    total.backward()


CHECKS = [
    ("applies_to_sequential", applies_to_sequential),
    ("applies_to_timm", applies_to_timm),
    ("applies_to_small_alexnet", applies_to_small_alexnet),
    ("composes_with_internal_noise", composes_with_internal_noise),
    ("at_inference_switch", at_inference_switch),
    ("objective_adds_finite_loss", objective_adds_finite_loss),
]
