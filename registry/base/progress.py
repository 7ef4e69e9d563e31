"""Progress reporting: the scorer and trainer talk to a :class:`Reporter`.

- :class:`RichReporter`: rich bars (jobs overall, epochs of the model in training), on a terminal.
- :class:`PlainReporter`: one plain, flushed line per event when output is piped or logged: each
  job's start and end, each training's start and end, and every N epochs the epoch, loss and
  accuracy.
- :class:`EventReporter`: the Python API's, silent by default: every event goes to the
  ``bioprior.progress`` logger (INFO; shown only if the caller configures logging) and to an
  optional callback receiving :class:`ProgressEvent`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

logger = logging.getLogger("bioprior.progress")


class Reporter:
    """No-op reporter; subclasses override what they show."""

    def jobs_started(self, total: int) -> None: ...
    def job_started(self, label: str) -> None: ...
    def job_finished(self, label: str, status: str, score: float | None) -> None: ...
    def training_started(self, label: str, epochs: int) -> None: ...
    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None: ...
    def training_finished(self) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class ForwardingReporter(Reporter):
    """A step's reporter in a child process: its notices (``message``: e.g. unreadable cached
    weights, retrained) go to ``send`` as ``("message", text)`` for the driver to show, and so
    does about every tenth epoch of its trainings, named, since workers train side by side (the
    driver announces the trainings themselves)."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self.send = send
        self.training, self.lines = "", EpochLines(0)

    def training_started(self, label: str, epochs: int) -> None:
        self.training, self.lines = label, EpochLines(epochs)

    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None:
        line = self.lines.line(epoch, stats)
        if line:
            self.message(f"  {line}: {self.training}")

    def message(self, text: str) -> None:
        self.send(("message", text))


class CollectingReporter(Reporter):
    """A step's reporter in a Ray task: its notices kept for the task's outcome, which carries
    them to the driver (``drain``)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def drain(self) -> list[str]:
        out, self.messages = self.messages, []
        return out


def is_forwarded_message(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and item[0] == "message"


def _outcome(status: str, score: float | None) -> str:
    if status != "ok":
        return "failed"
    return f"score {score:.3f}" if score is not None else "ok"


def _epoch_stats(stats: dict[str, float]) -> str:
    parts = [f"loss {stats['loss']:.4f}"] if "loss" in stats else []
    if "accuracy" in stats:
        parts.append(f"accuracy {stats['accuracy']:.3f}")
    return " ".join(parts)


def remote_training_line(label: str, seconds: float, device: str, history: dict) -> str:
    """The line for a training that ran in another process (its epochs were not shown here):
    time, device, and its last epoch from the history stored with its weights."""
    last = {k: v[-1] for k, v in history.items() if isinstance(v, list) and v}
    stats = _epoch_stats(last)
    line = f"  trained {label} in {seconds:.1f}s on {device or '?'}"
    return f"{line}: last epoch {stats}" if stats else line


def epoch_interval(epochs: int, lines: int = 10) -> int:
    """Report every N epochs so that a training prints about ``lines`` lines."""
    return max(1, epochs // lines)


#: a training that printed nothing for this long reports its next epoch whatever its number
QUIET_S = 600.0


class EpochLines:
    """Which epochs of one training get a line, and its pace: about every tenth epoch (or
    ``every``), the last, and any that ends ``QUIET_S`` or more after the previous line (a
    150-epoch training of 8-minute epochs, Fig. 4A's HMAX on a CPU, would else be silent for
    two hours). From its second epoch here on, a line adds the time an epoch takes and what is
    left (a resumed training's first epoch here may be partial, so it is not counted)."""

    def __init__(self, epochs: int, every: int | None = None, clock=time.monotonic) -> None:
        self.epochs, self.every, self.clock = epochs, every or epoch_interval(epochs), clock
        self.last_line = clock()
        self.first: tuple[int, float] | None = None  # (epochs done, time) at the first epoch

    def line(self, epoch: int, stats: dict[str, float]) -> str | None:
        now, done = self.clock(), epoch + 1
        if self.first is None:
            self.first = (done, now)
        due = done % self.every == 0 or done == self.epochs or now - self.last_line >= QUIET_S
        if not (self.epochs and due):
            return None
        self.last_line = now
        text = f"epoch {done}/{self.epochs} {_epoch_stats(stats)}"
        first_done, first_t = self.first
        if done > first_done and done < self.epochs:
            pace = (now - first_t) / (done - first_done)
            left = human_seconds(pace * (self.epochs - done))
            text += f" ({human_seconds(pace)} an epoch, ~{left} left)"
        return text


def human_seconds(seconds: float) -> str:
    """``2.3 h``, ``7.6 min``, ``41.0 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


class PlainReporter(Reporter):
    """One line per event, flushed at once (for pipes, CI logs and ``| tee``)."""

    def __init__(self, console: Any = None, every: int | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(file=sys.stdout, soft_wrap=True)
        self.every = every
        self.total = 0
        self.index = 0
        self.epochs = 0
        self.lines = EpochLines(0)
        self._job_t0 = self._train_t0 = 0.0
        self._training = ""
        self._job = ""  # the job announced by job_started (steps run elsewhere announce none)

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self.console.file.flush()

    def jobs_started(self, total: int) -> None:
        self.total, self.index = total, 0

    def job_started(self, label: str) -> None:
        self.index += 1
        self._job, self._job_t0 = label, time.perf_counter()
        self._say(f"[{self.index}/{self.total}] start {label}")

    def job_finished(self, label: str, status: str, score: float | None) -> None:
        if label != self._job:  # ran in a Ray task or a child process: counted as it finishes
            self.index += 1
            self._say(f"[{self.index}/{self.total}] done {label}: {_outcome(status, score)}")
            return
        seconds = time.perf_counter() - self._job_t0
        self._job = ""
        self._say(
            f"[{self.index}/{self.total}] done {label}: {_outcome(status, score)} ({seconds:.1f}s)"
        )

    def training_started(self, label: str, epochs: int) -> None:
        self.epochs, self._training = epochs, label
        self._train_t0 = time.perf_counter()
        self.lines = EpochLines(epochs, self.every)
        self._say(f"  train {label}: {epochs} epochs")

    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None:
        line = self.lines.line(epoch, stats)
        if line:
            self._say(f"  {line}")

    def training_finished(self) -> None:
        seconds = time.perf_counter() - self._train_t0
        self._say(f"  trained {self._training} in {seconds:.1f}s")

    def message(self, text: str) -> None:
        self._say(text)


class RichReporter(Reporter):
    """Two rich progress bars: jobs overall, and epochs of the model being trained."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.jobs: Any = None
        self.epochs: Any = None

    def jobs_started(self, total: int) -> None:
        self.progress.start()
        self.jobs = self.progress.add_task("jobs", total=total, info="")

    def job_started(self, label: str) -> None:
        self.progress.update(self.jobs, info=escape(label))

    def job_finished(self, label: str, status: str, score: float | None) -> None:
        self.progress.advance(self.jobs)
        self.progress.console.print(f"  {escape(label)}: {_outcome(status, score)}")

    def training_started(self, label: str, epochs: int) -> None:
        self.epochs = self.progress.add_task(f"  train {escape(label)}", total=epochs, info="")

    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None:
        info = f"loss {stats['loss']:.3f} acc {stats['accuracy']:.3f}"
        self.progress.update(self.epochs, advance=1, info=info)

    def training_finished(self) -> None:
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
            self.epochs = None

    def message(self, text: str) -> None:
        self.progress.console.print(escape(text))

    def close(self) -> None:
        self.progress.stop()


def for_output(console: Any = None) -> Reporter:
    """Rich bars when ``console`` (default: stdout) is a terminal, plain lines otherwise."""
    from rich.console import Console

    console = console or Console()
    if console.is_terminal:
        return RichReporter(console)
    return PlainReporter(Console(file=console.file, soft_wrap=True))


@dataclass(frozen=True)
class ProgressEvent:
    """One progress event of :func:`bioprior.score` (``kind`` names it; the rest as it applies)."""

    kind: str  # jobs_started | job_started | job_finished | training_started | epoch | ...
    label: str = ""
    index: int = 0  # 1-based job number
    total: int = 0  # jobs to run
    status: str | None = None
    score: float | None = None
    epoch: int | None = None  # 1-based
    epochs: int | None = None
    stats: dict[str, float] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        if self.kind == "job_started":
            return f"[{self.index}/{self.total}] start {self.label}"
        if self.kind == "job_finished":
            return f"[{self.index}/{self.total}] done {self.label}: {_outcome(self.status or '', self.score)}"
        if self.kind == "training_started":
            return f"train {self.label}: {self.epochs} epochs"
        if self.kind == "epoch":
            return f"epoch {self.epoch}/{self.epochs} {_epoch_stats(self.stats)}"
        if self.kind == "training_finished":
            return f"trained {self.label}"
        if self.kind == "jobs_started":
            return f"{self.total} jobs to run"
        return self.text


class EventReporter(Reporter):
    """Events to the ``bioprior.progress`` logger (INFO; epochs at DEBUG) and to ``callback``."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None = None) -> None:
        self.callback = callback
        self.total = self.index = 0
        self.epochs = 0
        self.training = self.job = ""

    def _emit(self, event: ProgressEvent, level: int = logging.INFO) -> None:
        logger.log(level, "%s", event)
        if self.callback is not None:
            self.callback(event)

    def jobs_started(self, total: int) -> None:
        self.total, self.index = total, 0
        self._emit(ProgressEvent("jobs_started", total=total))

    def job_started(self, label: str) -> None:
        self.index += 1
        self.job = label
        self._emit(ProgressEvent("job_started", label, self.index, self.total))

    def job_finished(self, label: str, status: str, score: float | None) -> None:
        if label != self.job:  # ran in a child process: counted as it finishes
            self.index += 1
        self.job = ""
        self._emit(ProgressEvent("job_finished", label, self.index, self.total, status, score))

    def training_started(self, label: str, epochs: int) -> None:
        self.epochs, self.training = epochs, label
        self._emit(ProgressEvent("training_started", label, self.index, self.total, epochs=epochs))

    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None:
        event = ProgressEvent(
            "epoch",
            self.training,
            self.index,
            self.total,
            epoch=epoch + 1,
            epochs=self.epochs,
            stats=dict(stats),
        )
        self._emit(event, logging.DEBUG)

    def training_finished(self) -> None:
        self._emit(ProgressEvent("training_finished", self.training, self.index, self.total))

    def message(self, text: str) -> None:
        self._emit(ProgressEvent("message", text=text))
