"""The step worker: a :class:`~bioprior.registry.engine.runner.StepRunner` any process can
rebuild from plain :class:`~bioprior.registry.planning.payloads.WorkerSettings` (the executors
are handed this class; they never import the engine themselves)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bioprior.registry.base.failures import classify_exception
from bioprior.registry.hooks.loading import get_registry
from bioprior.registry.planning.outcomes import now
from bioprior.registry.planning.payloads import (
    WorkerSettings,
    failed_outcome,
    failed_payload,
    outcome_payload,
    step_from_payload,
)


class StepWorker:
    """Runs steps in this process: built from :class:`WorkerSettings` (the registry is loaded
    here, from this machine's entry points), so it can be rebuilt in any process."""

    def __init__(self, settings: WorkerSettings, registry=None, reporter=None):
        self.settings = settings
        self._registry = registry
        self._reporter = reporter
        self._runner = None

    def use_reporter(self, reporter) -> None:
        """Report to ``reporter`` (a child's :class:`.progress.ForwardingReporter`); before the
        first step, which builds the training service with it."""
        if self._runner is None:
            self._reporter = reporter

    @property
    def registry(self):
        if self._registry is None:
            self.settings.apply_environment()
            self._registry = get_registry()
        return self._registry

    @property
    def runner(self):
        if self._runner is None:
            from bioprior.registry.engine.runner import StepRunner  # lazy: torch
            from bioprior.registry.engine.service import TrainingService  # lazy: torch
            from bioprior.registry.engine.trainer import select_device  # lazy: torch

            self.settings.apply_environment()
            device = select_device(self.settings.device)
            service = TrainingService(Path(self.settings.home), device, self._reporter)
            self._runner = StepRunner(service, self.registry)
        return self._runner

    def __call__(self, step):
        started = now()
        try:
            runner = self.runner
        except Exception as exc:  # noqa: BLE001 - e.g. cuda asked for on a CPU-only worker
            return failed_outcome(
                step, f"{type(exc).__name__}: {exc}", classify_exception(exc), started
            )
        outcome = runner(step)
        if (
            outcome.status == "ok"
            and getattr(outcome, "score", None) is not None
            and not math.isfinite(outcome.score)
        ):
            outcome.score = None
        return outcome

    def run_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """JSON step in, plain outcome dict out (for workers in other processes)."""
        started = now()
        try:
            step = step_from_payload(self.registry, payload)
        except Exception as exc:  # noqa: BLE001 - recorded against the step by the driver
            message = " ".join(str(exc).split())
            return failed_payload(f"{type(exc).__name__}: {message}", "plugin_error", started)
        return outcome_payload(self(step))

    @property
    def trainings_run(self) -> int:
        """How many trainings this worker has run (its weights were not in its store)."""
        return self._runner.service.trainings_run if self._runner is not None else 0
