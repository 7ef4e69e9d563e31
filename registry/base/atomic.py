"""Crash-safe files: written to a temp file beside the target, fsynced, renamed, the folder fsynced.

A reader therefore sees the old file or the whole new one, never half of one, even after a power
loss. Temp files carry their writer's host and pid (``NAME.HOST.PID.RANDOM.tmp``) so that
:func:`remove_orphans` deletes only those whose writer is gone (another scorer sharing the home
may be writing its own right now). Weights carry a hash of their tensors, checked on load.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
TENSORS_HASH_KEY = "tensors_sha256"


def host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` writes the file (e.g. safetensors' ``save_file``); then fsync + rename."""
    with atomic_path(path) as tmp:
        write(tmp)


def remove_orphans(folder: str | os.PathLike, max_age_s: float = 24 * 3600) -> list[Path]:
    """Delete temp files left by writers that died (same host, pid gone), and any temp file
    older than ``max_age_s`` (a writer on another host, or an old naming scheme)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    me = host()
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        parts = tmp.name[: -len(TMP_SUFFIX)].rsplit(".", 3)
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        mine = len(parts) == 4 and parts[1] == me and parts[2].isdigit()
        dead = mine and int(parts[2]) != os.getpid() and not pid_alive(int(parts[2]))
        if dead or age > max_age_s:
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def tensors_hash(state: Mapping[str, Any]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes, bytes): what a weights file must hold."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(_raw_bytes(t))
    return digest.hexdigest()


def _raw_bytes(t: Any) -> bytes:
    import torch

    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


class CorruptFile(ValueError):
    """A file whose content does not match the hash stored with it."""


def check_tensors(path: str | os.PathLike, state: Mapping[str, Any], metadata: Mapping[str, str]):
    """Raise :class:`CorruptFile` when ``state`` does not hash to the stored hash (files written
    before hashes were stored have none and pass)."""
    expected = (metadata or {}).get(TENSORS_HASH_KEY)
    if expected is not None and tensors_hash(state) != expected:
        raise CorruptFile(f"{path}: tensors do not match their stored hash (corrupt file)")
