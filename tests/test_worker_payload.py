"""Workers rebuilt in another process: steps travel as JSON payloads and come back as outcomes."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from conftest import tiny_submission

from bioprior.registry.engine.runner import StepRunner
from bioprior.registry.engine.worker import StepWorker
from bioprior.registry.execution.isolated import IsolatedExecutor
from bioprior.registry.planning.jobs import plan
from bioprior.registry.planning.payloads import (
    WorkerSettings,
    outcome_from_payload,
    outcome_payload,
    step_from_payload,
    step_payload,
)
from bioprior.registry.submissions.loading import validate_submission_dict


def _jobs(registry, **overrides):
    sub = tiny_submission("payload", **overrides)
    return plan([validate_submission_dict(sub, registry)])


def test_a_step_survives_json_with_its_content_key(registry):
    jobs = _jobs(
        registry,
        seeds=[0, 3],
        training={
            "dataset": {"name": "gaussian_noise", "params": {"source": "digits"}},
            "epochs": 1,
        },
    )
    for job in jobs:
        payload = json.loads(json.dumps(step_payload(job)))
        again = step_from_payload(registry, payload)
        assert again.key == job.key and again.training.key == job.training.key
        assert again.label == job.label
    tampered = json.loads(json.dumps(step_payload(jobs[0])))
    tampered["benchmark"]["version"] = "999"
    with pytest.raises(RuntimeError, match="version 1 on this worker, 999 on the driver"):
        step_from_payload(registry, tampered)


def test_settings_and_worker_pickle_and_outcomes_round_trip(registry, tmp_path):
    settings = WorkerSettings(home=str(tmp_path), device="cpu")
    worker = pickle.loads(pickle.dumps(StepWorker(settings)))
    assert worker.settings == settings
    (job,) = _jobs(registry)
    outcome = worker(job)
    assert outcome.status == "ok", outcome.error
    back = outcome_from_payload(job, pickle.loads(pickle.dumps(outcome_payload(outcome))))
    assert back == outcome
    assert dataclasses.asdict(back)["metrics"] == outcome.metrics


@pytest.mark.slow  # a spawned child imports torch and the registry afresh
def test_spawned_children_rebuild_worker_and_step(registry, bioprior_home, tmp_path):
    """The path CUDA devices take (spawn, not fork): same numbers as in this process."""
    (job,) = _jobs(registry, seeds=[5])
    settings = WorkerSettings(home=str(bioprior_home), device="cpu")
    executor = IsolatedExecutor(
        settings=settings, start_method="spawn", poll_s=0.1, worker_class=StepWorker
    )
    (remote,) = list(executor.run([job], None))
    assert remote.status == "ok", remote.error
    import torch

    from bioprior.registry.engine.service import TrainingService

    service = TrainingService(tmp_path / "elsewhere", torch.device("cpu"))  # trained anew
    local = StepRunner(service, registry)(job)
    assert local.metrics == remote.metrics and local.weights_hash == remote.weights_hash


def test_training_steps_travel_and_run_before_their_evaluation(registry, bioprior_home):
    from bioprior.registry.execution.scheduling import InProcessBackend, schedule
    from bioprior.registry.planning.steps import TrainStep

    (job,) = _jobs(registry, seeds=[2])
    train = TrainStep((job.training,), submissions=(job.submission,))
    assert train.key == job.training.key
    again = step_from_payload(registry, json.loads(json.dumps(step_payload(train))))
    assert again == train and again.key == train.key
    worker = StepWorker(WorkerSettings(home=str(bioprior_home), device="cpu"), registry)
    outcomes = list(schedule([train, job], InProcessBackend(worker)))
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[0].step is train
    assert (bioprior_home / "weights" / f"{job.training.key}.safetensors").exists()
    assert worker.runner.service.trainings_run == 2  # the shared model, then the random-data one
    assert job.training.key in outcomes[1].weights
