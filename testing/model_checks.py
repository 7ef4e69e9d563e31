"""Model checks (timm's registry tests): builds for several geometries, output shape, finite
outputs, backward reaches every trainable parameter, seeded weights, safetensors round-trip."""

from __future__ import annotations

from typing import Any

from .subject import CheckFailed, Subject

BATCH = 4


def geometry_params(entry, geometry: tuple[int, int, int]) -> dict[str, Any]:
    """The geometry as the entry's parameters (only the fields it has)."""
    channels, classes, size = geometry
    fields = entry.params.model_fields
    wanted = {"in_channels": channels, "num_classes": classes, "input_size": size}
    return {k: v for k, v in wanted.items() if k in fields}


def build(s: Subject, geometry: tuple[int, int, int], seed: int = 0):
    import torch
    from torch import nn

    params = {**s.params, **geometry_params(s.target, geometry)}
    torch.manual_seed(seed)
    try:
        net = s.target.build(params)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(
            f"building {s.target.name} with {params} raised {type(exc).__name__}: "
            f"{' '.join(str(exc).split())}; take in_channels / num_classes / input_size from "
            "ImageModelParams.geometry, or pass geometries=... listing the ones you support"
        ) from None
    if not isinstance(net, nn.Module):
        raise CheckFailed(f"the factory returned {type(net).__name__}, not a torch.nn.Module")
    return net


def images(geometry: tuple[int, int, int], batch: int = BATCH, seed: int = 0):
    import torch

    channels, _, size = geometry
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def forward(net, x, train: bool = False, seed: int = 0):
    import torch

    net.train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return net(x)


def builds_for_geometries(s: Subject) -> None:
    """Builds for every geometry (channels, classes, input size)."""
    for geometry in s.config.geometries_for(s.entry):
        build(s, geometry)


def output_shape(s: Subject) -> None:
    """Logits of shape (batch, num_classes) for every geometry."""
    for geometry in s.config.geometries_for(s.entry):
        out = forward(build(s, geometry), images(geometry))
        classes = geometry[1] if "num_classes" in s.target.params.model_fields else None
        if out.ndim != 2 or out.shape[0] != BATCH or (classes and out.shape[1] != classes):
            raise CheckFailed(
                f"input {tuple(images(geometry).shape)} gave output {tuple(out.shape)}; "
                f"expected logits ({BATCH}, {classes or 'classes'}): end with a classifier "
                "of num_classes outputs, no softmax"
            )


def finite_outputs(s: Subject) -> None:
    """No NaN / inf in training or evaluation mode."""
    import torch

    for geometry in s.config.geometries_for(s.entry):
        net = build(s, geometry)
        for train in (True, False):
            out = forward(net, images(geometry), train=train)
            if not torch.isfinite(out).all():
                raise CheckFailed(
                    f"non-finite outputs in {'training' if train else 'eval'} mode for "
                    f"geometry {geometry}: check initialization, divisions and logs"
                )


def backward_reaches_every_parameter(s: Subject) -> None:
    """A backward pass gives every trainable parameter a finite gradient."""
    import torch
    import torch.nn.functional as F

    geometry = s.config.geometries_for(s.entry)[0]
    net = build(s, geometry)
    net.train()
    out = net(images(geometry))
    loss = F.cross_entropy(out, torch.arange(BATCH) % out.shape[1])
    loss.backward()
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not params:
        raise CheckFailed("no trainable parameters: a model that cannot learn cannot be scored")
    missing = [n for n, p in params if p.grad is None]
    if missing:
        raise CheckFailed(
            f"no gradient reaches {len(missing)} trainable parameter(s): {', '.join(missing[:5])}"
            " ...; remove unused modules, or freeze them with requires_grad_(False)"
        )
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    if bad:
        raise CheckFailed(f"non-finite gradients in {', '.join(bad[:5])}")


def seeded_weights(s: Subject) -> None:
    """The same seed gives the same weights."""
    import torch

    geometry = s.config.geometries_for(s.entry)[0]
    a, b = build(s, geometry, seed=0).state_dict(), build(s, geometry, seed=0).state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ or a.keys() != b.keys():
        raise CheckFailed(
            f"two builds with torch.manual_seed(0) differ in {', '.join(differ[:5])}: draw every "
            "random initial value from torch's global generator (no numpy / random / time seeds)"
        )


def safetensors_roundtrip(s: Subject) -> None:
    """Weights saved as safetensors load into a fresh build and give the same outputs."""
    import tempfile
    from pathlib import Path

    import torch
    from safetensors.torch import load_file, save_file

    geometry = s.config.geometries_for(s.entry)[0]
    net = build(s, geometry, seed=0)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        try:
            save_file(state, str(path))
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"state_dict does not save as safetensors: {exc}") from None
        fresh = build(s, geometry, seed=1)
        try:
            fresh.load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise CheckFailed(
                f"saved weights do not load into a fresh build: {' '.join(str(exc).split())[:300]}"
                "; build the same modules in the same order for the same parameters"
            ) from None
    x = images(geometry)
    if not torch.allclose(forward(net, x), forward(fresh, x), atol=1e-5, rtol=1e-4):
        raise CheckFailed(
            "a fresh build with the saved weights gives different outputs: keep all state in "
            "parameters or registered buffers (not plain tensor attributes)"
        )


CHECKS = [
    ("builds_for_geometries", builds_for_geometries),
    ("output_shape", output_shape),
    ("finite_outputs", finite_outputs),
    ("backward_reaches_every_parameter", backward_reaches_every_parameter),
    ("seeded_weights", seeded_weights),
    ("safetensors_roundtrip", safetensors_roundtrip),
]
