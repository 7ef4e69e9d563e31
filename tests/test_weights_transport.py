"""Weights as bytes (Ray's object store, ``--weights-transport object-store``): checked by the
tensors hash stored in the safetensors file before they are written, atomically, into a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import dead_pid
from safetensors.torch import save

from bioprior.registry.base import atomic
from bioprior.registry.store.weights import BadWeights, checked_hash, install, read, weights_file


def _weights_bytes(seed: int = 0, with_hash: bool = True) -> bytes:
    """A weights file as TrainingService._save writes it (tensors, history, tensors' hash)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    metadata = {"history": json.dumps({"loss": [1.0]})}
    if with_hash:
        metadata[atomic.TENSORS_HASH_KEY] = atomic.tensors_hash(state)
    return save(state, metadata=metadata)


def test_install_writes_checked_weights_and_read_returns_them(tmp_path):
    blob = _weights_bytes()
    digest = install(tmp_path / "weights", "abc", blob)
    path = weights_file(tmp_path / "weights", "abc")
    assert path.read_bytes() == blob
    assert read(tmp_path / "weights", "abc") == (blob, digest)
    assert install(tmp_path / "weights", "abc", blob, expected=digest) == digest  # again: same
    assert not list((tmp_path / "weights").glob("*.tmp"))
    assert read(tmp_path / "weights", "missing") is None


def test_damaged_or_foreign_weights_are_refused_and_nothing_is_written(tmp_path):
    blob = _weights_bytes()
    damaged = bytearray(blob)
    damaged[-3] ^= 0xFF  # a bit of a tensor flipped on the way
    other = _weights_bytes(seed=1)
    cases = {
        bytes(damaged): "do not match their stored hash",
        b"not a weights file": "not a safetensors file",
        _weights_bytes(with_hash=False): "no tensors_sha256",
    }
    for bad, message in cases.items():
        with pytest.raises(BadWeights, match=message):
            install(tmp_path / "weights", "abc", bad)
    expected = checked_hash("abc", blob)
    with pytest.raises(BadWeights, match="expected"):  # intact, but not the file asked for
        install(tmp_path / "weights", "abc", other, expected=expected)
    assert not (tmp_path / "weights").exists() or not list((tmp_path / "weights").iterdir())
    weights_file(tmp_path / "weights", "abc").parent.mkdir(parents=True, exist_ok=True)
    weights_file(tmp_path / "weights", "abc").write_bytes(bytes(damaged))
    assert read(tmp_path / "weights", "abc") is None  # a corrupt stored file is never sent


def test_weights_trained_by_one_worker_serve_another_without_a_shared_home(
    registry, bioprior_home, tmp_path
):
    """The Ray task's body without Ray: a worker trains in its own home and returns the files;
    another worker, with an empty home of its own, installs them and evaluates without training,
    to the numbers of a worker that trained the model itself."""
    from conftest import tiny_submission

    from bioprior.registry.engine.worker import StepWorker
    from bioprior.registry.execution.ray_executor import _run_delivered
    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.planning.payloads import WorkerSettings, step_payload
    from bioprior.registry.planning.steps import summarize
    from bioprior.registry.store.weights import Delivery
    from bioprior.registry.submissions.loading import validate_submission_dict

    jobs = plan([validate_submission_dict(tiny_submission("moved", seeds=[3]), registry)])
    steps = summarize(jobs, set(), registry).steps
    *trainings, evaluation = steps
    assert len(trainings) == 2 and evaluation.kind == "evaluate"  # natural + random labels

    def worker(name: str) -> tuple[StepWorker, Path]:
        home = tmp_path / name
        return StepWorker(WorkerSettings(home=str(home), device="cpu"), registry), home / "weights"

    trainer, trainer_store = worker("trainer")
    files: dict[str, bytes] = {}
    for step in trainings:
        keys = tuple(m.key for m in step.members)
        result, *blobs = _run_delivered(
            trainer, trainer_store, step_payload(step), Delivery(returns=keys), ()
        )
        assert result["fields"]["status"] == "ok" and all(blobs)
        files.update(zip(keys, blobs))
    assert set(files) == evaluation.training_keys

    evaluator, evaluator_store = worker("evaluator")
    install = tuple((key, checked_hash(key, blob)) for key, blob in files.items())
    result = _run_delivered(
        evaluator,
        evaluator_store,
        step_payload(evaluation),
        Delivery(install=install),
        list(files.values()),
    )
    assert result["fields"]["status"] == "ok", result
    assert result["transport"] == {"installed": 2, "trained": 0}
    assert not list(evaluator_store.glob("*")) and not list(trainer_store.glob("*"))  # no leftovers

    alone, _ = worker("alone")  # trains both models itself
    own = alone.run_payload(step_payload(evaluation))
    assert alone.trainings_run == 2
    assert own["fields"]["score"] == result["fields"]["score"]
    assert own["fields"]["weights"] == result["fields"]["weights"]

    damaged = bytearray(files[install[0][0]])
    damaged[-3] ^= 0xFF
    refused, _ = worker("refused")
    bad = _run_delivered(
        refused,
        tmp_path / "refused" / "weights",
        step_payload(evaluation),
        Delivery(install=install),
        [bytes(damaged), files[install[1][0]]],
    )
    assert bad["fields"]["error_class"] == "worker_lost"
    assert "do not match their stored hash" in bad["fields"]["error"]
    assert bad["transport"] == {"installed": 0, "trained": 0}


def test_homes_of_dead_workers_on_this_host_are_removed(tmp_path):
    import os

    from bioprior.registry.store.weights import HOME_PREFIX, remove_dead_homes

    pid = dead_pid()
    me = atomic.host()
    dead = tmp_path / f"{HOME_PREFIX}{me}-{pid}-abc123"
    alive = tmp_path / f"{HOME_PREFIX}{me}-{os.getpid()}-abc123"
    elsewhere = tmp_path / f"{HOME_PREFIX}other-host-{pid}-abc123"
    for folder in (dead, alive, elsewhere):
        (folder / "weights").mkdir(parents=True)
    assert remove_dead_homes(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and elsewhere.exists()
