"""How trained weights reach the Ray workers that evaluate them (``--weights-transport``).

- ``shared`` (default): every worker uses the driver's ``$BIOPRIOR_HOME/weights``, a path every
  node must see (a network file system).
- ``object-store``: no path is shared. Each worker process keeps its own home in a temp folder;
  a training task returns each member's safetensors file as bytes (task return values, owned by
  the driver); the driver checks them by hash and writes them atomically into its own weights
  store (it stays the only writer of the home and the database); an evaluation task gets the
  files of the trainings it declared as task arguments (Ray moves them; those the driver has from
  earlier sweeps it puts with ``ray.put``) and installs them, checked by hash, in its own store. A
  worker's files live for one task (its models stay in its memory); the homes of workers that
  were killed (Ray kills a job's workers when the job ends) are removed by the next to start.

The files are safetensors: parsed without unpickling, their tensors hashed against the
``tensors_sha256`` stored with them (:mod:`atomic`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioprior.registry.base import atomic

TRANSPORTS = ("shared", "object-store")
JOURNAL_SUFFIX = ".journal.safetensors"
CHECKPOINT_SUFFIX = ".ckpt.safetensors"


@dataclass(frozen=True)
class Delivery:
    """What one Ray task does with weights under ``object-store``: install ``install`` (pairs of
    training key and tensors hash, their bytes given beside as task arguments) before the step,
    return the files of ``returns`` (training keys) after it."""

    install: tuple[tuple[str, str], ...] = ()
    returns: tuple[str, ...] = ()


class BadWeights(ValueError):
    """Weights bytes that are no safetensors file, or whose tensors do not match their hash."""


def weights_file(weights_dir: str | Path, key: str) -> Path:
    """Where a training's weights live in a store (the one rule: ``TrainingService`` uses it)."""
    return Path(weights_dir) / f"{key}.safetensors"


def checkpoint_file(weights_dir: str | Path, key: str) -> Path:
    """Where a training's checkpoint lives while it runs (beside its weights; a batched
    training's under its first member's key): removed once its weights are stored."""
    return Path(weights_dir) / f"{key}{CHECKPOINT_SUFFIX}"


def journal_file(weights_dir: str | Path, job_key: str) -> Path:
    """Where an evaluation's journal lives while it runs (:mod:`...engine.journal`): removed
    once its result is computed."""
    return Path(weights_dir) / f"{job_key}{JOURNAL_SUFFIX}"


def remove_finished_checkpoints(weights_dir: str | Path) -> list[Path]:
    """Remove the checkpoints of trainings whose weights are stored (a run killed between the
    two), and those left by runs killed while a checkpoint was written (temp files aside)."""
    removed = []
    for path in Path(weights_dir).glob(f"*{CHECKPOINT_SUFFIX}"):
        key = path.name[: -len(CHECKPOINT_SUFFIX)]
        if weights_file(weights_dir, key).exists():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def header_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (8-byte length, then JSON)."""
    if len(blob) < 8:
        raise BadWeights("not a safetensors file (too short)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise BadWeights("not a safetensors file (header past the end)")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, ValueError):
        raise BadWeights("not a safetensors file (unreadable header)") from None
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def file_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a stored weights file, reading its header only ({} if none)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            return header_metadata(head + fh.read(min(size, 1 << 24)))
    except (OSError, BadWeights):
        return {}


def stored_history(weights_dir: str | Path, key: str) -> dict:
    """The training history stored with ``key``'s weights ({} if none)."""
    try:
        history = json.loads(file_metadata(weights_file(weights_dir, key)).get("history", "{}"))
    except ValueError:
        return {}
    return history if isinstance(history, dict) else {}


def checked_hash(key: str, blob: bytes, expected: str | None = None) -> str:
    """The tensors hash of a weights file given as bytes, after checking that its tensors hash
    to the hash stored in it (and to ``expected`` when given); raise :class:`BadWeights`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    metadata = header_metadata(blob)
    stored = metadata.get(atomic.TENSORS_HASH_KEY)
    if stored is None:
        raise BadWeights(f"weights of {key}: no {atomic.TENSORS_HASH_KEY} in the file")
    if expected is not None and stored != expected:
        raise BadWeights(f"weights of {key}: hash {stored[:12]}, expected {expected[:12]}")
    try:
        state = load(blob)
    except SafetensorError as exc:
        raise BadWeights(f"weights of {key}: {exc}") from None
    try:
        atomic.check_tensors(key, state, metadata)
    except atomic.CorruptFile as exc:
        raise BadWeights(str(exc)) from None
    return stored


def install(weights_dir: str | Path, key: str, blob: bytes, expected: str | None = None) -> str:
    """Check ``blob`` by hash, then write it atomically (temp file, fsync, rename) as ``key``'s
    weights in ``weights_dir`` unless the same file is already there; return its hash."""
    digest = checked_hash(key, blob, expected)
    path = weights_file(weights_dir, key)
    if path.exists() and _sha256(path.read_bytes()) == _sha256(blob):
        return digest
    atomic.write_bytes(path, blob)
    return digest


def read(weights_dir: str | Path, key: str) -> tuple[bytes, str] | None:
    """``key``'s weights file in a store and its checked hash; None when absent or corrupt."""
    path = weights_file(weights_dir, key)
    try:
        blob = path.read_bytes()
        return blob, checked_hash(key, blob)
    except (OSError, BadWeights):
        return None


# -- cached weights that may be reused ------------------------------------------------------------
REJECTED_SUFFIX = ".rejected"


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be a weights file, found without opening it (a FIFO would block the
    reader): None for a regular file (a link to one included) or when there is nothing there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind}, not a weights file"


def state_hash(state: Mapping[str, Any]) -> str:
    """The hash of named tensors as the store records it (``weights_hash`` of a trained model:
    names, dtypes, shapes, values; 20 hex digits)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(atomic._raw_bytes(t) if t.numel() else b"")
    return digest.hexdigest()[:20]


def cached_problem(path: str | Path, key: str, recorded: Collection[str] = ()) -> str | None:
    """Why the cached weights of ``key`` at ``path`` may not be reused, or None when they may.

    They may be reused when ``path`` is a regular safetensors file whose tensors hash to the hash
    written in it and, when the store recorded hashes for ``key`` (``recorded``, see
    :meth:`ResultStore.recorded_weights`), to one of those. A file whose own hash was removed or
    re-made by whoever changed it is caught by the store's record; without a record, a file
    without its hash is not trusted either."""
    problem = not_regular(path)
    if problem:
        return problem
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        metadata = header_metadata(blob)
        if atomic.TENSORS_HASH_KEY not in metadata:
            return f"no {atomic.TENSORS_HASH_KEY} in the file"
        state = load(blob)
        atomic.check_tensors(path, state, metadata)
    except BadWeights as exc:
        return str(exc)
    except SafetensorError as exc:
        return f"not a safetensors file ({exc})"
    except atomic.CorruptFile:
        return "its tensors do not match the hash written in it"
    if recorded:
        found = state_hash(state)
        if found not in recorded:
            expected = ", ".join(sorted(recorded))
            return f"weights hash {found}, but the results store recorded {expected} for this key"
    return None


def set_aside(path: str | Path) -> Path:
    """Move a cached file that may not be reused out of the way (never deleted: it may be
    evidence), as ``<name>.rejected``; returns where it went."""
    path = Path(path)
    aside = path.with_name(path.name + REJECTED_SUFFIX)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    elif os.path.lexists(aside):
        aside.unlink()
    os.replace(path, aside)
    return aside


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_LOCAL_HOME: list[Path] = []
HOME_PREFIX = "bioprior-worker-"


def local_home() -> Path:
    """This process's own home: a temp folder named after its host and pid (a Ray worker is
    killed when its job ends, so the homes of dead workers on this host are removed here, when
    the next worker starts, and the weights in a home only live for one task)."""
    if not _LOCAL_HOME:
        root = Path(tempfile.gettempdir())
        remove_dead_homes(root)
        prefix = f"{HOME_PREFIX}{atomic.host()}-{os.getpid()}-"
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        _LOCAL_HOME.append(path)
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return _LOCAL_HOME[0]


def remove_dead_homes(root: str | Path) -> list[Path]:
    """Remove the homes in ``root`` of worker processes on this host that are gone."""
    removed = []
    me = atomic.host()
    for folder in Path(root).glob(f"{HOME_PREFIX}*"):
        host, _, pid = folder.name[len(HOME_PREFIX) :].rpartition("-")[0].rpartition("-")
        if host == me and pid.isdigit() and not atomic.pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
