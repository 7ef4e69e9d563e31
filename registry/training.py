"""Trained models, shared and cached: one training per content key (model, constraints, recipe,
dataset, seed) serves every benchmark; weights are cached as safetensors under BIOPRIOR_HOME."""

from __future__ import annotations

import hashlib
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

from . import atomic
from .constraint import InputGeometry
from .data import ImageData, fit_data
from .hashing import content_hash
from .output_check import check_logits
from .progress import Reporter
from .schemas import TrainingRecipe
from .submission import Component
from .trainer import Normalized, train_model


@dataclass(frozen=True)
class TrainingSpec:
    """Everything that determines a trained model."""

    model: Component
    constraints: tuple[Component, ...]
    recipe: TrainingRecipe
    dataset: Component
    seed: int

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model.spec,
            "constraints": [c.spec for c in self.constraints],
            "recipe": self.recipe.model_dump(
                mode="json",
                exclude={"dataset"} | ({"augment"} if not self.recipe.augment else set()),
            ),
            "dataset": self.dataset.spec,
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        return content_hash(self.identity())

    @property
    def label(self) -> str:
        return f"{self.model.entry.name} on {dataset_label(self.dataset)} (seed {self.seed})"


def weights_hash(module: nn.Module) -> str:
    """A hash of the weights' content (names, dtypes, shapes, values), independent of the file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:20]


def dataset_label(c: Component) -> str:
    return f"{c.entry.name}({dataset_label(c.source)})" if c.source is not None else c.entry.name


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
        self.weights_dir = Path(home) / "weights"
        atomic.remove_orphans(self.weights_dir)  # temp files of writers that were killed
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
        root = spec.dataset
        while root.source is not None:
            root = root.source
        base = self.base_data(root)
        params = spec.model.params
        return (
            getattr(params, "in_channels", None) or base.channels,
            getattr(params, "input_size", None) or base.size,
        )

    def data(self, spec: TrainingSpec) -> ImageData:
        """The training data fitted to the model's input, derivations applied, on the device."""
        channels, size = self.geometry(spec)
        seed = spec.seed if spec.dataset.source is not None else None  # only derivations draw
        key = content_hash([spec.dataset.spec, channels, size, seed])
        if key not in self._fitted:
            self._fitted[key] = self._derive(spec.dataset, channels, size, spec.seed).to(
                self.device
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
            net = constraint.apply(net, geometry)
        mean, std = data.channel_stats()
        return Normalized(net, mean, std).to(self.device)

    def trained(self, spec: TrainingSpec) -> TrainedModel:
        key = spec.key
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        data = self.data(spec)
        module = self.build(spec, data)
        path = self.weights_dir / f"{key}.safetensors"
        history = self._load(path, module)
        from_cache = history is not None
        if history is None:
            self.reporter.training_started(spec.label, spec.recipe.epochs)
            start = time.perf_counter()
            try:
                history = train_model(
                    module,
                    data.train_x,
                    data.train_y,
                    spec.recipe,
                    spec.seed,
                    self.reporter.epoch_done,
                )
            finally:
                self.reporter.training_finished()
            history["train_seconds"] = time.perf_counter() - start
            self._save(path, module, spec, history)
            self.trainings_run += 1
        module.eval()
        check_logits(module, data)  # NaN / wrong-shape logits: the job fails as invalid_output
        trained = TrainedModel(spec, module, data, history, weights_hash(module), from_cache)
        self._models[key] = trained
        while len(self._models) > self.keep:
            self._models.popitem(last=False)
        return trained

    def _load(self, path: Path, module: nn.Module) -> dict[str, Any] | None:
        if not path.exists():
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
        atomic.write_with(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
