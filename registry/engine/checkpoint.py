"""Training checkpoints: a long training that is killed or stopped resumes where it was.

A checkpoint is the whole state of a training between two of its steps: the model's (or the
batched members') weights and buffers, the optimizer's state, the epoch and the position in it
(the epoch's data order and running sums), the history so far, and every random stream (the
trainer's generator, the global torch RNG that stochastic layers draw from, the CUDA RNG on a
GPU, the objectives' generators and their own state). The trainers (:func:`.trainer.train_model`,
:func:`.batched.train_batched`) write one every ``BIOPRIOR_CHECKPOINT_INTERVAL`` seconds (default
300; ``0`` or ``off``: no checkpoints at all) and when the process is asked to stop (SIGINT,
SIGTERM: the step that is running ends, the checkpoint is written, then the process stops as it
would have, or, in a scorer that turns SIGTERM into :class:`..base.stops.Stopped`, raises that;
a second Ctrl-C stops it at once), and resume from it, so a resumed training ends with the
weights of an uninterrupted one (bit for bit on a CPU with the same thread count).

The file is safetensors (tensors only, RNG states as uint8; never unpickled) with the rest as JSON
in its metadata, written atomically (temp file, fsync, rename: :mod:`..base.atomic`), beside the
weights cache as ``<key>.ckpt.safetensors`` (:func:`..store.weights.checkpoint_file`; a batched
training's under its first member's key, with every member's key recorded). It is trusted only
when its content matches the hash stored in it and its identity (format, training keys, recipes,
seeds, device type) is the training's; otherwise it is ignored with a notice and the training
starts over. It records the software that wrote it (:func:`software`); a resume under other
software is said in a warning and recorded in the history (``resumed_software``). The service
removes it once the final weights are stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bioprior.registry.base import atomic, denormals, provenance, stops

INTERVAL_ENV = "BIOPRIOR_CHECKPOINT_INTERVAL"
DEFAULT_INTERVAL_S = 300.0
FORMAT = 1
STATE_KEY = "checkpoint"
STATE_HASH_KEY = "checkpoint_sha256"


def interval_from_env() -> float | None:
    """Seconds between checkpoints from ``BIOPRIOR_CHECKPOINT_INTERVAL`` (default 300); None
    when it is ``0``, ``off`` or ``no`` (no checkpoints)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_INTERVAL_S
    if raw in ("off", "no", "false", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: seconds between checkpoints, or off") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: seconds between checkpoints, or off")
    return value if value > 0 else None


def normalized(value: Any) -> Any:
    """``value`` as it reads back from JSON (what a checkpoint's identity is compared as)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# -- nested state <-> JSON + named tensors -------------------------------------------------------
def pack(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` (tensors, numbers, strings, None, lists, tuples, dicts of them) as JSON, its
    tensors moved into ``tensors`` under names beginning with ``name``."""
    if isinstance(obj, torch.Tensor):
        # a copy of its own: safetensors refuses tensors that share storage
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"$tensor": name, "device": str(obj.device)}
    if isinstance(obj, torch.Generator):
        raise TypeError(f"{name}: a generator (give its get_state(), a uint8 tensor)")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"$tuple": [pack(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = [[k, pack(v, f"{name}.{k}", tensors)] for k, v in obj.items()]
        if all(isinstance(k, str) and not k.startswith("$") for k, _ in items):
            return dict(items)
        if not all(isinstance(k, (str, int)) for k, _ in items):
            raise TypeError(f"{name}: keys of a checkpointed dict are strings or integers")
        return {"$dict": items}
    raise TypeError(f"{name}: {type(obj).__name__} cannot be checkpointed")


def unpack(obj: Any, tensors: dict[str, torch.Tensor], device: Any = None) -> Any:
    """The inverse of :func:`pack`: tensors back on the device they were on, or (those that were
    not on the CPU) on ``device`` when given."""
    if isinstance(obj, list):
        return [unpack(v, tensors, device) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$tensor" in obj:
        where = obj["device"] if device is None or obj["device"] == "cpu" else device
        return tensors[obj["$tensor"]].to(where)
    if "$tuple" in obj:
        return tuple(unpack(v, tensors, device) for v in obj["$tuple"])
    if "$dict" in obj:
        return {k: unpack(v, tensors, device) for k, v in obj["$dict"]}
    return {k: unpack(v, tensors, device) for k, v in obj.items()}


# -- random streams ------------------------------------------------------------------------------
def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global torch RNG: the CPU's, and the training device's when it is a GPU."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class Unusable(ValueError):
    """A checkpoint that is unreadable, corrupt, or of another training."""


def check_like(what: str, saved: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> None:
    """Raise :class:`Unusable` unless ``saved`` has the names, shapes and dtypes of ``live``."""
    if not isinstance(saved, dict) or saved.keys() != live.keys():
        raise Unusable(f"its {what} are not this training's (other names)")
    for name, tensor in live.items():
        other = saved[name]
        if not isinstance(other, torch.Tensor) or (other.shape, other.dtype) != (
            tensor.shape,
            tensor.dtype,
        ):
            raise Unusable(f"its {what} are not this training's ({name})")


# -- the file --------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """A training's state as the trainer gave it to :func:`write` (tensors back in place)."""

    state: dict[str, Any]


def write(path: str | os.PathLike, identity: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` (nested, with tensors) atomically as a checkpoint of ``identity``."""
    tensors: dict[str, torch.Tensor] = {}
    packed = pack(state, "s", tensors)
    text = json.dumps({"identity": normalized(identity), "state": packed}, sort_keys=True)
    digest = atomic.tensors_hash(tensors)
    metadata = {
        STATE_KEY: text,
        atomic.TENSORS_HASH_KEY: digest,
        STATE_HASH_KEY: _sha256(text + digest),
    }
    atomic.write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _content(metadata: dict[str, str]) -> tuple[dict[str, Any], Any, str]:
    """A checkpoint's identity, packed state and its tensors' recorded hash, from its metadata:
    the JSON checked against the hash stored with it; else :class:`Unusable`."""
    text = metadata.get(STATE_KEY)
    digest = metadata.get(atomic.TENSORS_HASH_KEY)
    if text is None or digest is None or metadata.get(STATE_HASH_KEY) != _sha256(text + digest):
        raise Unusable("its content does not match the hash stored in it")
    try:
        content = json.loads(text)
        return content["identity"], content["state"], digest
    except (ValueError, KeyError, TypeError):
        raise Unusable("its state is not readable JSON") from None


def _state(metadata: dict[str, str], identity: dict[str, Any]) -> tuple[Any, str]:
    """:func:`_content`'s packed state and tensors' hash, where it is of ``identity``; else
    :class:`Unusable`."""
    stored, packed, digest = _content(metadata)
    expected = normalized(identity)
    if stored != expected:
        what = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise Unusable(f"it is of another training (differs in {', '.join(what)})")
    return packed, digest


def read(path: str | os.PathLike, identity: dict[str, Any], device: Any = None) -> Snapshot:
    """The checkpoint at ``path`` if it is whole and of ``identity``; else :class:`Unusable`
    (or FileNotFoundError). Only safetensors and JSON are parsed: nothing is unpickled. Tensors
    that were on a GPU come back on ``device`` when given."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), "pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise Unusable(f"unreadable ({' '.join(str(exc).split())[:200]})") from None
    packed, digest = _state(metadata, identity)
    if atomic.tensors_hash(tensors) != digest:
        raise Unusable("its tensors do not match the hash stored in it")
    try:
        return Snapshot(unpack(packed, tensors, device))
    except (KeyError, TypeError, RuntimeError) as exc:
        raise Unusable(f"its state does not unpack ({exc})") from None


#: what a training's numbers can depend on besides its key (``provenance.capture``'s fields)
NUMERICS = ("bioprior", "git_commit", "git_dirty", "torch", "numpy", "torch_num_threads", "cpu")
NUMERICS += ("cpu_capability", "cuda", "cudnn", "gpu")


def software(device: str) -> dict[str, Any]:
    """The software and hardware this process trains with, as far as they can change numbers
    (recorded with each checkpoint: a training resumed elsewhere says what wrote its first part)."""
    captured = provenance.capture(device)
    out = {k: captured[k] for k in NUMERICS if captured.get(k) is not None}
    if not device.startswith("cuda"):
        out["denormals"] = denormals.state()
    return out


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def saved(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """(identity, packed state) of the checkpoint at ``path``, from its metadata alone (checked
    against the hash stored with it, the tensors not read); else :class:`Unusable` or OSError."""
    try:
        with safe_open(str(path), "pt") as fh:
            metadata = dict(fh.metadata() or {})
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise Unusable(f"unreadable ({exc})") from None
    identity, packed, _ = _content(metadata)
    return identity, packed


def progress(path: str | os.PathLike, identity: dict[str, Any]) -> tuple[int, int] | None:
    """Where the checkpoint at ``path`` would resume ``identity``'s training: (epoch, examples
    into it), from its metadata alone (its JSON checked against the hash stored with it, the
    tensors not read: what a plan's estimate needs, not what a resume trusts); None where there
    is none, or it is unreadable or another training's."""
    try:
        with safe_open(str(path), "pt") as fh:
            metadata = dict(fh.metadata() or {})
        packed, _ = _state(metadata, identity)
        return int(packed["epoch"]), int(packed["position"])
    except (Unusable, SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


# -- the trainers' side ------------------------------------------------------------------------
class Checkpointer:
    """One training's checkpoints: where, of what (``identity``: JSON values), how often.

    The trainer calls :meth:`resume` once before its first step, :meth:`due` between steps and
    :meth:`save` when it is due, inside :meth:`stops` (which turns SIGINT / SIGTERM into a
    checkpoint at the next step boundary, then the stop); whoever stores the final weights calls
    :meth:`finish`. ``notice`` says why a checkpoint is ignored or not written."""

    #: what a resume under other software means, in the warning that says it
    mixed = "its weights come from both (recorded in its history)"

    def __init__(
        self,
        path: str | os.PathLike,
        identity: dict[str, Any],
        interval_s: float | None = DEFAULT_INTERVAL_S,
        notice: Callable[[str], None] | None = None,
        label: str = "training",
    ):
        self.path = Path(path)
        self.identity = {"format": FORMAT, **identity}
        self.interval_s = interval_s
        self.notice = notice or (lambda text: None)
        self.label = label
        self.enabled = True
        self.saves = 0
        self.resumed_at: tuple[int, int] | None = None
        #: the software that wrote the checkpoint resumed from (:func:`software`; {} if unsaid)
        self.resumed_software: dict[str, Any] = {}
        self._last = time.monotonic()
        self._stop: int | None = None
        self._previous: dict[int, Any] = {}

    @classmethod
    def from_env(cls, path, identity, notice=None, label="training") -> Checkpointer:
        """Every ``BIOPRIOR_CHECKPOINT_INTERVAL`` seconds; ``off``: no checkpoint is written or
        resumed, and a stop stops at once."""
        interval = interval_from_env()
        checkpointer = cls(path, identity, interval, notice, label)
        checkpointer.enabled = interval is not None
        return checkpointer

    def _software(self) -> dict[str, Any]:
        return software(str(self.identity.get("device", "")))

    def progress(self) -> tuple[int, int] | None:
        """(epoch, examples into it) this training would resume at (:func:`progress`), or None
        (no usable checkpoint, or checkpoints off)."""
        return progress(self.path, self.identity) if self.enabled else None

    def disable(self, reason: str) -> None:
        """No checkpoints for this training (e.g. an objective whose state cannot be saved)."""
        if self.enabled:
            self.notice(f"note: {self.label} is not checkpointed: {reason}")
        self.enabled = False
        if self._stop is None:
            self._restore()  # a stop from now on stops at once, as without checkpoints

    def resume(
        self, fits: Callable[[dict[str, Any]], None] | None = None, device: Any = None
    ) -> dict[str, Any] | None:
        """The saved state to resume from, or None (none, or not trusted: said in a notice).
        ``fits(state)`` raises :class:`Unusable` when the state is not the live training's
        (e.g. its tensors' names or shapes), before anything of it is applied."""
        if not self.enabled:
            return None
        try:
            snapshot = read(self.path, self.identity, device)
            if fits is not None:
                fits(snapshot.state)
        except FileNotFoundError:
            return None
        except Unusable as exc:
            self.notice(
                f"warning: ignoring the checkpoint {self.path}: {exc}; training from the start"
            )
            return None
        state = snapshot.state
        self.resumed_at = (int(state["epoch"]), int(state["position"]))
        self.notice(f"resuming {self.label} from its checkpoint ({self.where(state)})")
        written = state.pop("software", None)
        then = self.resumed_software = dict(written) if isinstance(written, dict) else {}
        now = self._software()
        changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        if then and changed:
            before = ", ".join(f"{k} {then.get(k)}" for k in changed)
            after = ", ".join(f"{k} {now.get(k)}" for k in changed)
            self.notice(
                f"warning: {self.label}'s checkpoint was written with {before}; it resumes with "
                f"{after}: {self.mixed}"
            )
        self._last = time.monotonic()
        return state

    def where(self, state: dict[str, Any]) -> str:
        """Where a saved ``state`` resumes, in words."""
        return f"epoch {int(state['epoch']) + 1}, {int(state['position'])} examples into it"

    def due(self, epoch: int, position: int) -> bool:
        """Whether to save before the step at (``epoch``, example ``position``): the interval
        has passed, or a stop was asked for."""
        if not self.enabled or (epoch, position) == self.resumed_at:
            return False
        if self._stop is not None:
            return True
        return self.interval_s is not None and time.monotonic() - self._last >= self.interval_s

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (a failure is a notice, and no more checkpoints); then, if a stop was
        asked for, stop as the signal would have."""
        try:
            write(self.path, self.identity, {**state, "software": self._software()})
            self.saves += 1
        except Exception as exc:  # noqa: BLE001 - a checkpoint that fails must not stop training
            self.disable(f"writing {self.path} failed ({type(exc).__name__}: {exc})")
        self._last = time.monotonic()
        if self._stop is not None:
            self._stop_now()

    def finish(self) -> None:
        """The training's weights are stored: remove the checkpoint; then carry out a stop asked
        for after the training's last step boundary (its work is kept, not checkpointed)."""
        self.path.unlink(missing_ok=True)
        if self._stop is not None:
            self._stop_now()

    # -- stops -------------------------------------------------------------------------------------
    @contextmanager
    def stops(self) -> Iterator[None]:
        """While training: the first SIGINT (where Python's own handler is in place) or SIGTERM
        (where the default is) asks for a checkpoint at the next step boundary, after which the
        process stops as it would have (KeyboardInterrupt, or death by SIGTERM); a second Ctrl-C
        stops it at once (a second SIGTERM does not: a stop sent to a process group reaches a
        worker twice, from the sender and from its scorer; SIGKILL is what stops at once). Only
        in the main thread; elsewhere, and without checkpoints, nothing changes."""
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}
        wanted = {
            signal.SIGINT: (signal.default_int_handler,),
            signal.SIGTERM: (signal.SIG_DFL, stops.raise_stopped),
        }
        for signum, defaults in wanted.items():
            handler = signal.getsignal(signum)
            if any(handler is default for default in defaults):
                previous[signum] = handler
                signal.signal(signum, self._on_signal)
        self._previous = previous
        try:
            yield
        finally:  # a stop asked after the last step boundary: carried out by finish()
            self._restore()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop is None and self.enabled:
            self._stop = signum
            return
        if signum == signal.SIGTERM and self._stop == signal.SIGTERM:
            return  # SIGTERM to the process group, then the scorer's own: one stop, checkpointed
        self._stop_now(signum)  # a second signal: now

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_now(self, signum: int | None = None) -> None:
        signum = signum or self._stop
        self._restore()
        if signum == signal.SIGTERM:
            if signal.getsignal(signal.SIGTERM) is stops.raise_stopped:  # a scorer's own stop
                raise stops.Stopped(signum)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        raise KeyboardInterrupt


__all__ = [
    "DEFAULT_INTERVAL_S",
    "INTERVAL_ENV",
    "Checkpointer",
    "Snapshot",
    "Unusable",
    "global_rng_state",
    "interval_from_env",
    "progress",
    "read",
    "set_global_rng_state",
    "write",
]
