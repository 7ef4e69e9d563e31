"""Shared stimulus-set machinery of the image-transform benchmarks (corruption, spectral,
ood_stylized): a set of *conditions x images*, generated once, cached by content, evaluated in
large batches.

- A :class:`Condition` is one transformation at one level (``family``, ``name``, ``level`` and
  extra parameters), e.g. ``imagecorruptions / fog / 3``.
- A transform is a ``"module:function"`` string naming a numpy-only function
  ``f(images, condition, seed, start) -> images`` on uint8 arrays (N, C, H, W); ``start`` is the
  index of ``images[0]`` in the whole set, so per-image randomness (seeded from ``seed``,
  the condition and the image index) does not depend on how the work was split.
- :class:`StimulusSet` generates the missing conditions (in parallel across cores with a
  process pool; ``fork`` context where available; serially inside one of the scorer's CPU
  workers, which may not start processes) and caches each as a uint8
  ``.npy`` under ``$BIOPRIOR_HOME/stimuli``, keyed by the content hash of (source images,
  transform, version, condition, seed) and written atomically (temp file + ``os.replace``).
  Processes generating the same set at once split its conditions between them (a lock file
  per condition) instead of each generating all of them.
  Any model whose fitted test images are the same reuses them; ``generated`` / ``reused`` count
  what happened.
- :func:`evaluate` runs a model on every condition in large batches with the RNG seeded per
  condition (stochastic models give the same numbers whatever the order).

This module imports no torch at top level (the process-pool workers import it).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Below this many images to generate, the process pool costs more than it saves.
PARALLEL_MIN_IMAGES = 4000


@dataclass(frozen=True)
class Condition:
    """One transformation at one level; ``params`` are extra (key, value) pairs."""

    family: str
    name: str
    level: float = 0
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        level = f"{self.level:g}" if isinstance(self.level, float) else str(self.level)
        return f"{self.name} {level}"

    def spec(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "name": self.name,
            "level": self.level,
            "params": [list(p) for p in self.params],
        }

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


def content_key(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def array_key(a: np.ndarray) -> str:
    """Content hash of an array (shape, dtype, bytes)."""
    digest = hashlib.sha256(f"{a.shape}:{a.dtype}".encode())
    digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:24]


def to_uint8(x) -> np.ndarray:
    """Float images in [0, 1] (a tensor or array, N, C, H, W) -> uint8 array, rounded; uint8
    images as they are."""
    if str(getattr(x, "dtype", "")) in ("torch.uint8", "uint8"):  # no torch import here
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.uint8(np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255.0), 0, 255))


def to_tensor(a: np.ndarray, device=None):
    """uint8 (N, C, H, W) -> float tensor in [0, 1] on ``device``."""
    import torch

    return torch.from_numpy(np.array(a, dtype=np.uint8)).to(device).float().div_(255.0)


def resolve(transform: str):
    module, _, attr = transform.partition(":")
    return getattr(importlib.import_module(module), attr)


def _run_chunk(
    transform: str, images: np.ndarray, condition: Condition, seed: int, start: int
) -> np.ndarray:
    out = resolve(transform)(images, condition, seed, start)
    if out.dtype != np.uint8 or out.shape != images.shape:
        raise ValueError(
            f"{transform} returned {out.dtype} {out.shape} for {condition.label}; "
            f"expected uint8 {images.shape}"
        )
    return out


def _mp_context():
    """``fork`` where there is one (workers run numpy code only, and a user script without a
    ``__main__`` guard is not re-run as with ``spawn``), else ``spawn``."""
    from multiprocessing import get_all_start_methods, get_context

    return get_context("fork" if "fork" in get_all_start_methods() else "spawn")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def may_start_processes() -> bool:
    """False in a daemonic process (one of the scorer's CPU workers, ``--workers``), which
    Python does not let start children: it generates serially, on the share of the cores its
    run gave it, as its sibling workers do beside it."""
    import multiprocessing

    return not multiprocessing.current_process().daemon


class _ConditionLock:
    """An exclusive advisory lock (``flock``) on ``<cache file>.lock``, held while one process
    generates a condition; released when that process exits, however it stops. Without
    ``fcntl`` (Windows) every lock is granted: processes may then generate the same condition
    twice, which costs time, not correctness (each write is atomic)."""

    def __init__(self, target: Path):
        self.path = target.with_name(target.name + ".lock")
        self._fd: int | None = None

    def take(self, wait: bool) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass
class StimulusSet:
    """``conditions`` x ``source`` images (uint8, N, C, H, W) under ``transform``, cached."""

    source: np.ndarray
    conditions: list[Condition]
    transform: str
    seed: int
    version: str = "1"
    workers: int | None = None
    cache_dir: Path | None = None
    split_images: bool = (
        True  # False: a transform that needs the whole set (one task per condition)
    )
    generated: int = 0
    reused: int = 0
    _source_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.source.dtype != np.uint8 or self.source.ndim != 4:
            raise ValueError("source images must be uint8 (N, C, H, W)")
        if self.cache_dir is None:
            from bioprior.plugin import home

            self.cache_dir = home() / "stimuli"
        self._source_key = array_key(self.source)
        seen: set[Condition] = set()
        self.conditions = [c for c in self.conditions if not (c in seen or seen.add(c))]

    def key(self, condition: Condition) -> str:
        return content_key(
            {
                "source": self._source_key,
                "transform": self.transform,
                "version": self.version,
                "condition": condition.spec(),
                "seed": self.seed,
            }
        )

    def path(self, condition: Condition) -> Path:
        return Path(self.cache_dir) / f"{self.key(condition)}.npy"

    def _load(self, condition: Condition) -> np.ndarray | None:
        path = self.path(condition)
        if not path.exists():
            return None
        try:
            a = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        return a if a.shape == self.source.shape and a.dtype == np.uint8 else None

    def derived(
        self, condition: Condition, name: str, compute: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """``compute(self[condition])``, a per-image array derived from one set alone (one value
        or row per image), cached beside the set as ``<key>.<name>.npy`` and computed again
        where that file is missing or unreadable. ``name`` names the computation and its
        version (``"fwhm-1"``): change it with the computation."""
        path = self.path(condition).with_suffix(f".{name}.npy")
        try:
            a = np.load(path)
            if len(a) == len(self.source):
                return a
        except (OSError, ValueError, TypeError):
            pass
        a = np.asarray(compute(np.asarray(self[condition])))
        self._save_file(path, a)
        return a

    def _save(self, condition: Condition, a: np.ndarray) -> None:
        self._save_file(self.path(condition), a)

    @staticmethod
    def _save_file(path: Path, a: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, a)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def cached_share(self) -> float:
        """The share of the conditions the cache holds already (1.0 where there are none): what
        a run stopped while it generated them left, for the plan's estimate."""
        if not self.conditions:
            return 1.0
        return sum(self._load(c) is not None for c in self.conditions) / len(self.conditions)

    def ensure(self) -> StimulusSet:
        """Generate and cache every condition not cached yet. Processes that need the same set
        at once (two of the scorer's workers evaluating two models of one seed) share the work:
        a condition is generated under a lock on its cache file (:class:`_ConditionLock`); a
        process generates the conditions no other holds (serially: one at a time, so that two
        processes split the set; with its pool: all it can take at once), then waits for the
        others' and reads them, generating one itself only where its holder stopped without
        writing it."""
        missing = []
        for c in self.conditions:
            if self._load(c) is None:
                missing.append(c)
            else:
                self.reused += 1
        theirs: list[Condition] = []
        if self._pooled(len(missing)):
            locks = {c: _ConditionLock(self.path(c)) for c in missing}
            mine = [c for c in missing if locks[c].take(wait=False)]
            theirs = [c for c in missing if c not in mine]
            try:
                self._generate_and_save([c for c in mine if not self._found(c)])
            finally:
                for c in mine:
                    locks[c].release()
        else:
            theirs = [c for c in missing if not self._generate_locked(c, wait=False)]
        for c in theirs:  # generated by another process meanwhile, or left to us
            self._generate_locked(c, wait=True)
        return self

    def _generate_locked(self, condition: Condition, wait: bool) -> bool:
        """Under ``condition``'s lock, generate it unless another process cached it; False
        when another process holds the lock (and ``wait`` is False)."""
        lock = _ConditionLock(self.path(condition))
        if not lock.take(wait=wait):
            return False
        try:
            if not self._found(condition):
                self._generate_and_save([condition])
        finally:
            lock.release()
        return True

    def _found(self, condition: Condition) -> bool:
        """Cached by another process since :meth:`ensure` looked (counted as reused)."""
        if self._load(condition) is None:
            return False
        self.reused += 1
        return True

    def _generate_and_save(self, conditions: list[Condition]) -> None:
        if conditions:
            for c, a in zip(conditions, self._generate(conditions), strict=True):
                self._save(c, a)
                self.generated += 1

    def _pooled(self, conditions: int) -> bool:
        """Whether ``conditions`` conditions are generated by a process pool (else serially)."""
        n = len(self.source)
        workers = default_workers() if self.workers is None else self.workers
        small = n * conditions < PARALLEL_MIN_IMAGES and self.workers is None
        return workers > 1 and not small and may_start_processes()

    def _generate(self, conditions: list[Condition]) -> list[np.ndarray]:
        n = len(self.source)
        workers = default_workers() if self.workers is None else self.workers
        if not self._pooled(len(conditions)):
            return [_run_chunk(self.transform, self.source, c, self.seed, 0) for c in conditions]
        from concurrent.futures import ProcessPoolExecutor

        pieces = max(1, -(-4 * workers // len(conditions)))  # about 4 tasks per worker
        chunk = max(1, -(-n // pieces)) if self.split_images else n
        tasks = [(c, s) for c in conditions for s in range(0, n, chunk)]
        with ProcessPoolExecutor(workers, mp_context=_mp_context()) as pool:
            futures = [
                pool.submit(_run_chunk, self.transform, self.source[s : s + chunk], c, self.seed, s)
                for c, s in tasks
            ]
            parts: dict[Condition, list[np.ndarray]] = {c: [] for c in conditions}
            for (c, _), fut in zip(tasks, futures, strict=True):
                parts[c].append(fut.result())
        return [np.concatenate(parts[c]) for c in conditions]

    def __getitem__(self, condition: Condition) -> np.ndarray:
        a = self._load(condition)
        if a is None:
            raise KeyError(f"{condition.label} is not generated (call ensure())")
        return a

    def items(self) -> Iterator[tuple[Condition, np.ndarray]]:
        for c in self.conditions:
            yield c, self[c]

    @property
    def stats(self) -> dict[str, int]:
        return {"generated": self.generated, "reused": self.reused}


def transform_now(
    transform: str, images: np.ndarray, conditions: Iterable[Condition], seed: int
) -> dict[Condition, np.ndarray]:
    """Apply ``transform`` to a few images in-process, uncached (previews)."""
    return {c: _run_chunk(transform, images, c, seed, 0) for c in conditions}


def evaluate(
    module,
    arrays: Iterable[tuple[Condition, np.ndarray]],
    labels,
    device,
    seed: int,
    batch_size: int = 1024,
    per_image: dict[Condition, np.ndarray] | None = None,
) -> dict[Condition, float]:
    """Accuracy of ``module`` on each condition's images (uint8 N, C, H, W), in large batches,
    with the RNG seeded from ``seed`` for every condition. ``per_image``, when given, receives
    each condition's boolean vector of which images were classified correctly."""
    import torch

    from bioprior.plugin import seeded

    labels = labels.to(device)
    results: dict[Condition, float] = {}
    module.eval()
    with torch.no_grad():
        for condition, a in arrays:
            correct = 0
            hits = []
            with seeded(seed, device):
                for i in range(0, len(a), batch_size):
                    x = to_tensor(a[i : i + batch_size], device)
                    pred = module(x).argmax(1)
                    hit = pred == labels[i : i + batch_size]
                    correct += int(hit.sum())
                    if per_image is not None:
                        hits.append(hit.cpu().numpy())
            results[condition] = correct / max(1, len(a))
            if per_image is not None:
                per_image[condition] = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    return results


def packed_tree(per_image: dict[Condition, np.ndarray], key=None) -> dict[str, Any]:
    """Per-image correctness as stored in a result's ``correct`` metric: ``{name: {level:
    packed}}`` (``key(condition)`` -> the path of names, default ``(name, level)``; the
    ``clean`` condition at the top level), each leaf ``bioprior.plugin.pack_correct``'s dict."""
    from bioprior.plugin import pack_correct

    def level(c: Condition) -> str:
        return f"{c.level:g}" if isinstance(c.level, float) else str(c.level)

    tree: dict[str, Any] = {}
    for c, hits in per_image.items():
        path = key(c) if key else ((c.name,) if c.family == "clean" else (c.name, level(c)))
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = pack_correct(hits)
    return tree


def predictions(module, a: np.ndarray, device, seed: int, batch_size: int = 1024):
    """Softmax probabilities of ``module`` on uint8 images (N, C, H, W), seeded."""
    import torch

    from bioprior.plugin import seeded

    out = []
    module.eval()
    with torch.no_grad(), seeded(seed, device):
        for i in range(0, len(a), batch_size):
            out.append(module(to_tensor(a[i : i + batch_size], device)).float().softmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


__all__ = [
    "Condition",
    "StimulusSet",
    "array_key",
    "content_key",
    "evaluate",
    "packed_tree",
    "predictions",
    "subset_indices",
    "to_tensor",
    "to_uint8",
    "transform_now",
]


def subset_indices(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """The (sorted, seeded) test images a benchmark evaluates: all ``n``, or ``max_images``."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_images])


def image_rng(seed: int, condition: Condition, index: int) -> np.random.Generator:
    """The generator of one image's randomness under ``condition``: independent of batching."""
    import zlib

    tag = zlib.crc32(json.dumps(condition.spec(), sort_keys=True, default=str).encode())
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, tag, index]))
