"""Progress reporting: the scorer and trainer talk to a :class:`Reporter`; the CLI uses rich bars."""

from __future__ import annotations

from typing import Any

from rich.markup import escape


class Reporter:
    """No-op reporter (the Python API default)."""

    def jobs_started(self, total: int) -> None: ...
    def job_started(self, label: str) -> None: ...
    def job_finished(self, label: str, status: str, score: float | None) -> None: ...
    def training_started(self, label: str, epochs: int) -> None: ...
    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None: ...
    def training_finished(self) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


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

        self.console = console or Console(stderr=True)
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
        shown = (
            "failed" if status != "ok" else (f"score {score:.3f}" if score is not None else "ok")
        )
        self.progress.console.print(f"  {escape(label)}: {shown}")

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
