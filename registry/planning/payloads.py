"""A worker any process can rebuild: plain settings in, a step's outcome out.

Executors that run steps elsewhere (a child process, a Ray worker on another machine) send the
step as a JSON payload (:func:`step_payload`) and the worker's :class:`WorkerSettings`; the far
side rebuilds the step against its own registry (checking that the content key is the same, so
a worker with other plugin versions cannot store numbers under the driver's key) and runs it.
The outcome comes back as a plain dict (:func:`outcome_payload`) and is re-attached to the
driver's step (:func:`outcome_from_payload`): only the driver writes the database.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from bioprior.registry.hooks.entries import load_attribute
from bioprior.registry.planning.jobs import Job
from bioprior.registry.planning.outcomes import JobOutcome, TrainOutcome, now
from bioprior.registry.planning.spec import TrainingSpec
from bioprior.registry.planning.steps import EvaluateStep, TrainStep
from bioprior.registry.submissions.loading import Component
from bioprior.registry.submissions.schema import TrainingRecipe


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, as plain values (picklable, JSON-able)."""

    home: str
    device: str = "cpu"
    data_root: str | None = None

    def replace(self, **changes: Any) -> WorkerSettings:
        return dataclasses.replace(self, **changes)

    def apply_environment(self) -> None:
        """Point this process at the same home and data root as the driver."""
        os.environ["BIOPRIOR_HOME"] = str(self.home)
        if self.data_root:
            os.environ["BIOPRIOR_DATA"] = str(self.data_root)


# -- steps as payloads ---------------------------------------------------------------------------
def component_payload(c) -> dict[str, Any]:
    return {
        "kind": c.entry.kind,
        "name": c.entry.name,
        "version": c.entry.version,
        "params": c.params.model_dump(mode="json"),
        "source": component_payload(c.source) if c.source is not None else None,
    }


def component_from_payload(registry, payload: dict[str, Any]):
    entry = registry.get(payload["kind"], payload["name"])
    if entry.version != payload["version"]:
        raise RuntimeError(
            f"{payload['kind']} {payload['name']}: version {entry.version} on this worker, "
            f"{payload['version']} on the driver (install the same plugin versions everywhere)"
        )
    source = payload.get("source")
    return Component(
        entry,
        entry.parse_params(payload["params"]),
        component_from_payload(registry, source) if source else None,
    )


def training_payload(spec) -> dict[str, Any]:
    return {
        "model": component_payload(spec.model),
        "constraints": [component_payload(c) for c in spec.constraints],
        "recipe": spec.recipe.model_dump(mode="json"),
        "dataset": component_payload(spec.dataset),
        "seed": spec.seed,
    }


def training_from_payload(registry, payload: dict[str, Any]):
    return TrainingSpec(
        model=component_from_payload(registry, payload["model"]),
        constraints=tuple(component_from_payload(registry, c) for c in payload["constraints"]),
        recipe=TrainingRecipe.model_validate(payload["recipe"]),
        dataset=component_from_payload(registry, payload["dataset"]),
        seed=payload["seed"],
    )


def step_payload(step) -> dict[str, Any]:
    """A JSON-able description of a step: today's Job (an evaluation with lazy training), a
    planner's training or evaluation step, or a step with ``to_payload()``."""
    if hasattr(step, "to_payload"):  # a step type that knows how to travel
        return {"type": "custom", "key": step.key, "payload": step.to_payload()}
    if isinstance(step, TrainStep):  # the planner's (possibly batched) training step
        return {
            "type": "train_batch",
            "key": step.key,
            "note": step.note,
            "depends_on": list(step.depends_on),
            "submissions": list(step.submissions),
            "members": [training_payload(m) for m in step.members],
        }
    if isinstance(step, EvaluateStep):  # the planner's evaluation: its job and what it waits on
        return {**step_payload(step.job), "type": "evaluate", "depends_on": list(step.depends_on)}
    if not (hasattr(step, "training") and hasattr(step, "benchmark")):
        raise TypeError(
            f"a {type(step).__name__} step cannot be sent to another process: "
            "give it a to_payload() and its worker a way to rebuild it"
        )
    return {
        "type": "job",
        "key": step.key,
        "submission": step.submission,
        "variant": step.variant,
        "seed": step.seed,
        "training": training_payload(step.training),
        "benchmark": component_payload(step.benchmark),
    }


def step_from_payload(registry, payload: dict[str, Any]):
    if payload["type"] == "custom":
        raise RuntimeError("a custom step type needs its own worker to be rebuilt")
    if payload["type"] == "train_batch":
        planned = TrainStep(
            tuple(training_from_payload(registry, m) for m in payload["members"]),
            payload.get("note", ""),
            depends_on=tuple(payload.get("depends_on", ())),
            submissions=tuple(payload.get("submissions", ())),
        )
        if planned.key != payload["key"]:
            raise RuntimeError(
                f"training {payload['key']} rebuilt with key {planned.key} on this worker: "
                "its plugins differ from the driver's"
            )
        return planned

    job = Job(
        payload["submission"],
        payload["variant"],
        payload["seed"],
        training_from_payload(registry, payload["training"]),
        component_from_payload(registry, payload["benchmark"]),
    )
    if job.key != payload["key"]:
        raise RuntimeError(
            f"step {payload['key']} rebuilt with key {job.key} on this worker: "
            "its plugins differ from the driver's"
        )
    if payload["type"] == "evaluate":
        return EvaluateStep(job, tuple(payload.get("depends_on", ())))
    return job


# -- outcomes as payloads ------------------------------------------------------------------------
def _step_field(outcome) -> str:
    return dataclasses.fields(outcome)[0].name  # JobOutcome.job (the step is always first)


def outcome_payload(outcome) -> dict[str, Any]:
    skip = _step_field(outcome)
    fields = {
        f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome) if f.name != skip
    }
    cls = type(outcome)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}


def _outcome_class(step, default):
    """The outcome class for a step: the planner's training steps get a TrainOutcome."""
    if isinstance(step, TrainStep):
        return TrainOutcome
    return getattr(step, "outcome_class", default)


def _attached(cls, step):
    """What an outcome of ``cls`` holds: an evaluation step's outcome holds its job."""
    return step.job if cls is JobOutcome and isinstance(step, EvaluateStep) else step


def outcome_from_payload(step, payload: dict[str, Any]):
    cls = _outcome_class(step, load_attribute(payload["class"]))
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in payload["fields"].items() if k in names}
    return cls(_attached(cls, step), **fields)


def failed_payload(error: str, error_class: str, started: str = "") -> dict[str, Any]:
    """The payload of a failed outcome, for a step that could not be rebuilt or prepared."""
    fields = {"status": "failed", "error": error, "error_class": error_class}
    return {
        "class": "bioprior.registry.planning.outcomes:JobOutcome",
        "fields": {**fields, "started_at": started or now(), "finished_at": now()},
    }


def failed_outcome(step, error: str, error_class: str, started: str = "", duration: float = 0.0):
    """A failed outcome for a step that never returned one (killed, lost, not run)."""
    cls = _outcome_class(step, JobOutcome)
    return cls(
        _attached(cls, step),
        "failed",
        error=error,
        error_class=error_class,
        started_at=started or now(),
        finished_at=now(),
        duration_s=duration,
    )
