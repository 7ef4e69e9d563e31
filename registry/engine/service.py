"""Trained models, shared and cached: one training per content key (model, constraints, recipe,
dataset, seed) serves every benchmark; weights are cached as safetensors under BIOPRIOR_HOME."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bioprior.registry.base import atomic, denormals
from bioprior.registry.base.allocator import keep_freed_memory
from bioprior.registry.base.hashing import content_hash
from bioprior.registry.base.progress import Reporter
from bioprior.registry.contracts.constraint import InputGeometry, apply_constraint
from bioprior.registry.engine.checkpoint import Checkpointer
from bioprior.registry.engine.output_check import check_logits
from bioprior.registry.engine.streaming import place
from bioprior.registry.engine.trainer import Normalized, train_model
from bioprior.registry.planning.spec import TrainingSpec, dataset_label, root_dataset
from bioprior.registry.store.weights import (
    checkpoint_file,
    not_regular,
    remove_finished_checkpoints,
    state_hash,
    weights_file,
)
from bioprior.registry.submissions.loading import Component
from bioprior.registry.toolkit.data import ImageData, fit_data

__all__ = ["TrainedModel", "TrainingService", "TrainingSpec", "dataset_label", "weights_hash"]


def weights_hash(module: nn.Module) -> str:
    """A hash of the weights' content (names, dtypes, shapes, values), independent of the file:
    :func:`~bioprior.registry.store.weights.state_hash` of its state dict, as the store checks it."""
    return state_hash(module.state_dict())


@dataclass
class TrainedModel:
    spec: TrainingSpec
    module: nn.Module
    data: ImageData
    history: dict[str, Any]
    weights_hash: str
    from_cache: bool


class TrainingService:
    """Loads data, builds constrained models, trains them once and caches the weights."""

    def __init__(
        self,
        home: Path,
        device: torch.device,
        reporter: Reporter | None = None,
        keep_in_memory: int = 4,
    ) -> None:
        keep_freed_memory()  # steps reuse their buffers' pages instead of faulting them in again
        self.weights_dir = Path(home) / "weights"
        atomic.remove_orphans(self.weights_dir)  # temp files of writers that were killed
        remove_finished_checkpoints(self.weights_dir)  # killed between weights and cleanup
        self.device = device
        self.reporter = reporter or Reporter()
        self._base: dict[str, ImageData] = {}
        self._fitted: OrderedDict[str, ImageData] = OrderedDict()
        self._models: OrderedDict[str, TrainedModel] = OrderedDict()
        self.keep = keep_in_memory
        self.trainings_run = 0

    # -- data ----------------------------------------------------------------------------------
    def base_data(self, c: Component) -> ImageData:
        key = content_hash(c.spec)
        if key not in self._base:
            self._base[key] = c.entry.build(c.params)
        return self._base[key]

    def geometry(self, spec: TrainingSpec) -> tuple[int, int]:
        base = self.base_data(root_dataset(spec.dataset))
        params = spec.model.params
        return (
            getattr(params, "in_channels", None) or base.channels,
            getattr(params, "input_size", None) or base.size,
        )

    def data(self, spec: TrainingSpec) -> ImageData:
        """The training data fitted to the model's input, derivations applied, on the device (a
        training split too big for it stays in host memory: :func:`.streaming.place`)."""
        channels, size = self.geometry(spec)
        seed = spec.seed if spec.dataset.source is not None else None  # only derivations draw
        key = content_hash([spec.dataset.spec, channels, size, seed])
        if key not in self._fitted:
            self._fitted[key] = place(
                self._derive(spec.dataset, channels, size, spec.seed), self.device
            )
            while len(self._fitted) > self.keep:
                self._fitted.popitem(last=False)
        self._fitted.move_to_end(key)
        return self._fitted[key]

    def _derive(self, c: Component, channels: int, size: int, seed: int) -> ImageData:
        if c.source is None:
            return fit_data(self.base_data(c), channels, size)
        source = self._derive(c.source, channels, size, seed)
        return c.entry.build(c.params, source=source, seed=seed)

    # -- models --------------------------------------------------------------------------------
    def build(self, spec: TrainingSpec, data: ImageData) -> nn.Module:
        """The constrained, input-normalized model, freshly initialized from the spec's seed."""
        model_entry = spec.model.entry
        params = spec.model.params.model_dump()
        fill = {
            "in_channels": data.channels,
            "input_size": data.size,
            "num_classes": data.num_classes,
        }
        for name, value in fill.items():
            if name in params and params[name] is None:
                params[name] = value
        if params.get("num_classes") not in (None, data.num_classes):
            raise ValueError(
                f"model.params.num_classes is {params['num_classes']} but {data.name} has {data.num_classes} classes"
            )
        constraints = [c.entry.build(c.params) for c in spec.constraints]
        geometry = InputGeometry.of(model_entry.name, params)
        for constraint in constraints:
            params = constraint.configure(model_entry.name, params)
        torch.manual_seed(spec.seed)
        net = model_entry.build(model_entry.params.model_validate(params))
        for constraint in constraints:
            net = apply_constraint(constraint, net, geometry)
        mean, std = data.channel_stats()
        return Normalized(net, mean, std).to(self.device)

    def weights_path(self, spec: TrainingSpec) -> Path:
        return weights_file(self.weights_dir, spec.key)

    def is_cached(self, spec: TrainingSpec) -> bool:
        if spec.key in self._models:
            return True
        path = self.weights_path(spec)
        return path.exists() and not_regular(path) is None

    def trained(self, spec: TrainingSpec) -> TrainedModel:
        """The trained model of ``spec``: from memory, from the weights cache, or (when no step
        trained it, e.g. a direct call) trained now."""
        found = self.cached(spec)
        return found if found is not None else self.train([spec])[0]

    def cached(self, spec: TrainingSpec) -> TrainedModel | None:
        """The trained model of ``spec`` from memory or the weights cache; None (nothing
        trained) where neither has it or its file cannot be read."""
        key = spec.key
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        data = self.data(spec)
        module = self.build(spec, data)
        history = self._load(self.weights_path(spec), module)
        if history is None:
            return None
        return self._remember(TrainedModel(spec, module, data, history, weights_hash(module), True))

    def train(self, specs: list[TrainingSpec]) -> list[TrainedModel]:
        """Train ``specs`` and save each member's weights under its own key: one batched model
        when there are several of one structure and data shape (:mod:`.batched`), else alone.

        One bad member does not take the others down: a member that cannot be built, or a batch
        that fails, falls back to training each member alone; members that still fail are left
        out (their evaluations train them again and fail with their own error). Raises only when
        every member failed."""
        from bioprior.registry.engine.batched import can_batch, structure  # lazy: torch

        out: dict[int, TrainedModel] = {}
        errors: list[Exception] = []
        built: list[tuple[int, Any, Any]] = []
        for i, spec in enumerate(specs):
            try:
                data = self.data(spec)
                module = self.build(spec, data)
                check_logits(module, data, finite=False)  # a wrong shape fails before training
                built.append((i, module, data))
            except Exception as exc:  # noqa: BLE001 - this member only
                errors.append(exc)
        groups: dict[Any, list[tuple[int, Any, Any]]] = {}
        for i, module, data in built:
            sig = (structure(module), tuple(data.train_x.shape)) if can_batch(module) else i
            groups.setdefault(sig, []).append((i, module, data))
        for members in groups.values():
            try:
                self._train_group(specs, members, out)
            except Exception as exc:  # noqa: BLE001
                if len(members) == 1:
                    errors.append(exc)
                    continue
                for i, _, _ in members:  # alone, from a fresh build (same seed, same init)
                    try:
                        data = self.data(specs[i])
                        self._train_group(specs, [(i, self.build(specs[i], data), data)], out)
                    except Exception as alone:  # noqa: BLE001
                        errors.append(alone)
        if not out and errors:
            raise errors[0]
        return [out[i] for i in range(len(specs)) if i in out]

    def _train_group(self, specs, members, out: dict[int, TrainedModel]) -> None:
        group = [specs[i] for i, _, _ in members]
        checkpoint = self.checkpointer(group)
        histories = self._train(
            group,
            [module for _, module, _ in members],
            [data for _, _, data in members],
            checkpoint,
        )
        for (i, module, data), history in zip(members, histories, strict=True):
            self._save(self.weights_path(specs[i]), module, specs[i], history)
            self.trainings_run += 1
            out[i] = self._remember(
                TrainedModel(specs[i], module, data, history, weights_hash(module), False)
            )
        checkpoint.finish()  # removed (a stop asked at the very end happens now)

    def checkpointer(self, specs: list[TrainingSpec]) -> Checkpointer:
        """The checkpoints of one training step (:mod:`.checkpoint`): beside the weights, under
        its first member's key; trusted only for the same members, recipes, seeds, device."""
        identity = {
            "trainer": "solo" if len(specs) == 1 else "batched",
            "keys": [s.key for s in specs],
            "recipes": [s.recipe.model_dump(mode="json") for s in specs],
            "seeds": [s.seed for s in specs],
            "device": self.device.type,
        }
        path = checkpoint_file(self.weights_dir, specs[0].key)
        return Checkpointer.from_env(path, identity, self.reporter.message, _label(specs))

    def _train(self, specs, modules, datas, checkpoint=None) -> list[dict[str, Any]]:
        first = specs[0]
        self.reporter.training_started(_label(specs), first.recipe.epochs)
        start = time.perf_counter()
        try:
            if len(specs) == 1:
                histories = [
                    train_model(
                        modules[0],
                        datas[0].train_x,
                        datas[0].train_y,
                        first.recipe,
                        first.seed,
                        self.reporter.epoch_done,
                        checkpoint,
                    )
                ]
            else:
                from bioprior.registry.engine.batched import train_batched  # lazy: torch

                def on_epoch(member: int, epoch: int, stats: dict[str, float]) -> None:
                    if member == 0:
                        self.reporter.epoch_done(epoch, stats)

                histories = train_batched(
                    modules,
                    [d.train_x for d in datas],
                    [d.train_y for d in datas],
                    [s.recipe for s in specs],
                    [s.seed for s in specs],
                    on_epoch,
                    checkpoint,
                )
        finally:
            self.reporter.training_finished()
        seconds = time.perf_counter() - start
        for history in histories:
            history["train_seconds"] = seconds / len(specs)
            history["step_seconds"] = seconds
        return histories

    def _remember(self, trained: TrainedModel) -> TrainedModel:
        trained.module.eval()
        check_logits(trained.module, trained.data)  # NaN / wrong-shape logits: invalid_output
        self._models[trained.spec.key] = trained
        while len(self._models) > self.keep:
            self._models.popitem(last=False)
        return trained

    def _load(self, path: Path, module: nn.Module) -> dict[str, Any] | None:
        if not path.exists():
            return None
        problem = not_regular(path)  # a FIFO would block its reader: never opened
        if problem:
            self.reporter.message(
                f"warning: ignoring unreadable cached weights {path}: {problem}; retraining"
            )
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as fh:
                metadata = fh.metadata() or {}
                history = json.loads(metadata["history"])
            state = load_file(str(path), device=str(self.device))
            atomic.check_tensors(path, state, metadata)
            module.load_state_dict(state)
            return history
        except (SafetensorError, KeyError, RuntimeError, ValueError, OSError) as exc:
            self.reporter.message(
                f"warning: ignoring unreadable cached weights {path}: {exc}; retraining"
            )
            return None

    def _save(
        self, path: Path, module: nn.Module, spec: TrainingSpec, history: dict[str, Any]
    ) -> None:
        """Atomically write weights + provenance + tensors' hash (temp file, fsync, rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # clone: tensors shared between modules must not share storage in the file
        state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
        metadata = {
            "history": json.dumps(history),
            "spec": json.dumps(spec.identity(), default=str),
            atomic.TENSORS_HASH_KEY: atomic.tensors_hash(state),
        }
        if str(self.device) == "cpu":  # what can change a CPU training's last bits
            metadata["denormals"] = denormals.state()
        atomic.write_with(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def _label(specs: list[TrainingSpec]) -> str:
    first = specs[0]
    return first.label if len(specs) == 1 else f"{len(specs)} x {first.model.entry.name}"
