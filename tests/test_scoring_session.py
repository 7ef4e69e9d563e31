"""The scoring layer's pieces the CLI and the API share, without training anything: options
checked once (in the command line's order), the executor each set of options gets (built with
what it needs, never patched after), the Ray executor sized on the cluster (a fake Ray here)."""

from __future__ import annotations

import sys
import types

import pytest
from conftest import tiny_submission

import bioprior
from bioprior.registry.base.progress import CollectingReporter
from bioprior.registry.base.threads import ThreadsError
from bioprior.registry.execution.isolated import IsolatedExecutor
from bioprior.registry.execution.ray_executor import RayExecutor, RayUnavailable
from bioprior.registry.execution.scheduling import ClaimingExecutor
from bioprior.registry.planning.payloads import WorkerSettings
from bioprior.registry.scoring.executors import build_executor
from bioprior.registry.scoring.options import (
    ExecutionError,
    ExecutionOptions,
    OptionError,
    ScoreOptions,
)
from bioprior.registry.scoring.workers import WorkerPlan


def _build(tmp_path, options=None, device="cpu", **kwargs):
    return build_executor(
        options or ExecutionOptions(),
        [],
        device,
        db=tmp_path / "r.sqlite",
        home=tmp_path / "home",
        reporter=CollectingReporter(),
        **kwargs,
    )


def test_the_local_executor_is_claimed_in_process_or_isolated_where_asked(tmp_path):
    execution = _build(tmp_path)
    assert isinstance(execution.executor, ClaimingExecutor)
    execution.close()
    for options, kwargs, devices, threads in [
        (ExecutionOptions(isolate=True), {}, ["cpu"], None),
        (ExecutionOptions(timeout_s=5.0), {}, ["cpu"], None),
        (ExecutionOptions(), {"sharing": WorkerPlan(2, 3, "")}, ["cpu", "cpu"], 3),
    ]:
        execution = _build(tmp_path, options, **kwargs)
        executor = execution.executor
        assert isinstance(executor, IsolatedExecutor)
        assert (executor.devices, executor.threads) == (devices, threads)
        assert executor.settings == WorkerSettings(home=str(tmp_path / "home"), device="cpu")
        execution.close()
    execution = _build(tmp_path, device="auto", gpu_count=lambda: 2)
    assert execution.executor.devices == ["cuda:0", "cuda:1"]  # a step per GPU at once
    execution.close()
    with pytest.raises(ExecutionError, match="^--device: no CUDA device is available"):
        _build(tmp_path, device="cuda", gpu_count=lambda: 0)


def test_options_are_checked_in_the_command_lines_order(tmp_path):
    with pytest.raises(ThreadsError, match="--workers"):
        ScoreOptions.parse(workers="many", data_root=tmp_path / "nope")
    with pytest.raises(OptionError, match="^--data-root: .* is not a directory"):
        ScoreOptions.parse(data_root=tmp_path / "nope", device="gpu")
    with pytest.raises(ExecutionError, match="^--executor"):
        ScoreOptions.parse(execution=ExecutionOptions(executor="spark"))
    options = ScoreOptions.parse(device="cpu", threads=2, workers=3, db=tmp_path / "r.db")
    assert (options.threads.threads, options.execution.workers) == (2, 3)
    assert options.db == tmp_path / "r.db" and options.data_root is None


def test_the_api_refuses_a_data_root_that_is_no_folder(tmp_path, write_submission):
    with pytest.raises(ValueError, match="--data-root: .* is not a directory"):
        bioprior.score(write_submission(tiny_submission()), data_root=tmp_path / "nope")


class FakeRay(types.ModuleType):
    """Just what connecting and sizing read: a cluster of ``gpus`` GPUs, started here."""

    def __init__(self, gpus: int):
        super().__init__("ray")
        self.gpus, self.running, self.shutdowns = gpus, False, 0

    def is_initialized(self) -> bool:
        return self.running

    def init(self, address=None, **kwargs) -> None:
        self.running = True

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0, **({"GPU": float(self.gpus)} if self.gpus else {})}

    def shutdown(self) -> None:
        self.running, self.shutdowns = False, self.shutdowns + 1


@pytest.mark.parametrize(
    ("gpus", "device", "per_step", "num_gpus", "task_device"),
    [
        (0, "cpu", None, 0.0, "cpu"),
        (0, "auto", None, 0.0, "cpu"),
        (1, "auto", None, 1.0, "cuda"),  # a GPU per step where there are
        (1, "cpu", None, 0.0, "cpu"),
        (1, "cuda", 0.25, 0.25, "cuda"),
    ],
)
def test_ray_is_sized_on_the_cluster_before_the_executor_is_built(
    monkeypatch, gpus, device, per_step, num_gpus, task_device
):
    ray = FakeRay(gpus)
    monkeypatch.setitem(sys.modules, "ray", ray)
    options = ExecutionOptions(executor="ray", gpus_per_step=per_step)
    executor = RayExecutor.from_options(options, WorkerSettings(home="/h", device=device), device)
    assert (executor.num_gpus, executor.settings.device) == (num_gpus, task_device)
    executor.shutdown()  # it started Ray, so it stops it
    assert ray.shutdowns == 1 and not ray.running


def test_a_cluster_that_cannot_run_the_steps_is_one_line_and_ray_is_stopped(tmp_path, monkeypatch):
    ray = FakeRay(0)
    monkeypatch.setitem(sys.modules, "ray", ray)
    with pytest.raises(RayUnavailable, match="^--device: cuda: the Ray cluster has no GPU"):
        RayExecutor.from_options(ExecutionOptions(executor="ray"), WorkerSettings("/h"), "cuda")
    assert ray.shutdowns == 1
    ray.gpus = 1
    options = ExecutionOptions(executor="ray", gpus_per_step=0.0)
    with pytest.raises(ExecutionError) as err:  # through the factory: the CLI's one line
        _build(tmp_path, options, device="cuda:0")
    assert str(err.value) == "--gpus-per-step: 0 with --device cuda:0: no task gets a GPU"
    assert ray.shutdowns == 2
