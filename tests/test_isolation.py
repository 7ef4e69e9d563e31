"""Process isolation: plugins that segfault, hang, hog memory or return NaN / wrong-shape logits
are stored as failed with their class, and the sweep goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from faulty_plugins import activate, faulty_submission, install

from bioprior.registry.execution.isolated import IsolatedExecutor, local_devices
from bioprior.registry.execution.scheduling import InProcessBackend, Limits, parse_size, schedule
from bioprior.registry.planning.outcomes import JobOutcome
from bioprior.registry.planning.payloads import WorkerSettings


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    folder = install(tmp_path / "site")
    activate(folder, monkeypatch)
    return folder


def test_faulty_plugins_are_classified_and_the_sweep_goes_on(
    faulty, write_submission, bioprior_home
):
    subs = [
        faulty_submission("ok-before", "ok"),
        faulty_submission("segfault", "segfault", limits={"retries": 1}),
        faulty_submission("hang", "hang", limits={"timeout_s": 3}),
        faulty_submission("hog", "hog", limits={"memory": "1500M"}),
        faulty_submission("nan", "nan"),
        faulty_submission("wrong-shape", "wrong_shape"),
        faulty_submission("wrong-rank", "wrong_rank"),
        faulty_submission("raises", "raise"),
        faulty_submission("ok-after", "ok", seeds=[1]),
    ]
    files = [str(write_submission(s)) for s in subs]
    t0 = time.monotonic()
    res = run_cli("score", *files, "--device", "cpu", "--isolate")
    assert res.returncode == 1, res.stderr  # some jobs failed; the run itself finished
    assert "7 job(s) failed" in res.stderr
    assert time.monotonic() - t0 < 240
    # the trainings ran in child processes: the console gets a line per finished training
    trained = [line for line in res.stdout.splitlines() if line.startswith("  trained ")]
    assert trained and all(" on cpu: last epoch loss " in line for line in trained), res.stdout
    assert any(" on digits (seed 1) " in line for line in trained), trained  # ok-after's
    out = run_cli("results", "--format", "json")
    rows = {r["submission"]: r for r in json.loads(out.stdout)}
    assert {k: rows[k]["status"] for k in rows} == {
        "ok-before": "ok",
        "ok-after": "ok",
        "segfault": "failed",
        "hang": "failed",
        "hog": "failed",
        "nan": "failed",
        "wrong-shape": "failed",
        "wrong-rank": "failed",
        "raises": "failed",
    }
    classes = {k: r["error_class"] for k, r in rows.items()}
    assert classes == {
        "ok-before": None,
        "ok-after": None,
        "segfault": "crashed",
        "hang": "timeout",
        "hog": "out_of_memory",
        "nan": "invalid_output",
        "wrong-shape": "invalid_output",
        "wrong-rank": "invalid_output",  # checked before training, which it would crash
        "raises": "plugin_error",
    }
    assert (
        "SIGSEGV" in rows["segfault"]["error"] and "after 2 attempts" in rows["segfault"]["error"]
    )
    assert "3 s" in rows["hang"]["error"]
    assert "NaN" in rows["nan"]["error"] and "(16, 11)" in rows["wrong-shape"]["error"]
    assert "(16, 10, 1)" in rows["wrong-rank"]["error"]
    assert rows["ok-before"]["score"] > 0.5 and rows["ok-after"]["score"] > 0.5
    table = run_cli("results")
    assert "failed (timeout)" in table.stdout and "failed (crashed)" in table.stdout

    again = run_cli("score", files[0], files[2], "--device", "cpu", "--timeout", "2")
    assert "2 jobs: 1 already done, 1 to run" in again.stdout  # failed rows are retried
    rows = {r["submission"]: r for r in json.loads(run_cli("results", "--format", "json").stdout)}
    assert "after 2 s" in rows["hang"]["error"]  # the command line's limit wins


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state  # a zombie waiting for init to reap it: dead


def test_a_step_does_not_outlive_its_killed_scorer(faulty, write_submission, tmp_path):
    pid_file = tmp_path / "step.pid"
    path = write_submission(faulty_submission("orphan", "hang"))
    env = {**os.environ, "BIOPRIOR_TEST_PID_FILE": str(pid_file)}
    cmd = [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path), "--isolate"]
    scorer = subprocess.Popen(
        cmd + ["--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    step_pid = int(pid_file.read_text())
    scorer.send_signal(signal.SIGKILL)
    scorer.wait()
    deadline = time.monotonic() + 10
    while not _gone(step_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = _gone(step_pid)
    if not gone:
        os.kill(step_pid, signal.SIGKILL)  # the orphan this test made
    assert gone, "the step's process outlived its scorer"


BAD_OPTIONS = {
    ("--executor", "spark"): "--executor: must be local or ray",
    ("--timeout", "0"): "--timeout: must be a positive number",
    ("--memory-limit", "lots"): "--memory-limit: expected a size like 4G",
    ("--memory-limit", "1M"): "--memory-limit: 1M is below 64M",
    ("--retries", "-1"): "--retries: must be between 0 and 10",
    ("--ray-address", "127.0.0.1:1"): "--ray-address: only with --executor ray",
    ("--weights-transport", "nfs"): "--weights-transport: must be shared or object-store",
    ("--weights-transport", "object-store"): "--weights-transport: only with --executor ray",
}


def test_bad_executor_options_are_one_line_errors(write_submission):
    from conftest import tiny_submission

    from bioprior.registry.scoring.options import ExecutionError, ExecutionOptions

    flags = {"--executor": "executor", "--timeout": "timeout_s", "--memory-limit": "memory"}
    flags |= {"--retries": "retries", "--ray-address": "ray_address"}
    flags |= {"--weights-transport": "weights_transport"}
    for (flag, value), message in BAD_OPTIONS.items():
        typed = {"--timeout": float, "--retries": int}.get(flag, str)(value)
        with pytest.raises(ExecutionError) as err:
            ExecutionOptions(**{flags[flag]: typed}).check()
        assert str(err.value).startswith(message)
    path = str(write_submission(tiny_submission("opts")))
    res = run_cli("score", path, "--device", "cpu", "--memory-limit", "lots")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: --memory-limit: expected a size like 4G")
    res = run_cli("score", path, "--executor", "ray", "--weights-transport", "nfs")
    assert res.returncode == 2 and res.stderr.strip() == (
        "error: --weights-transport: must be shared or object-store (got 'nfs')"
    ), res.stderr
    bad = tiny_submission("bad-limits", limits={"memory": "lots"})
    res = run_cli("validate", str(write_submission(bad)))
    assert res.returncode == 2 and "limits.memory" in res.stderr


def test_parse_size():
    assert parse_size("4G") == 4 << 30
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5gb") == int(1.5 * (1 << 30))
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("-1G")


def test_local_devices_one_worker_per_gpu():
    assert local_devices("auto", count=lambda: 0) == ["cpu"]
    assert local_devices("auto", count=lambda: 3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert local_devices("cuda:1", count=lambda: 3) == ["cuda:1"]
    with pytest.raises(ValueError):
        local_devices("cuda", count=lambda: 0)


@dataclass(frozen=True)
class FakeStep:
    key: str
    kind: str = "evaluate"
    label: str = ""
    depends_on: tuple[str, ...] = ()


class DeviceWorker:
    """Records the device it was built for (as the real StepWorker, from settings)."""

    def __init__(self, settings: WorkerSettings):
        self.device = settings.device

    def __call__(self, step):
        import os

        start = time.time()
        time.sleep(0.6)
        return JobOutcome(
            step,
            "ok",
            metrics={"device": self.device, "pid": os.getpid(), "t": (start, time.time())},
        )


def test_one_worker_per_device_runs_steps_side_by_side(tmp_path):
    settings = WorkerSettings(home=str(tmp_path), device="auto")
    devices = local_devices("auto", count=lambda: 2)  # a fake machine with two GPUs
    executor = IsolatedExecutor(
        devices=devices,
        settings=settings,
        start_method="fork",
        worker_class=DeviceWorker,
        poll_s=0.05,
    )
    steps = [FakeStep(f"s{i}") for i in range(4)]
    outcomes = list(executor.run(steps, None))
    assert sorted(o.job.key for o in outcomes) == ["s0", "s1", "s2", "s3"]
    assert all(o.status == "ok" for o in outcomes)
    used = [o.metrics["device"] for o in outcomes]
    assert sorted(used) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert len({o.metrics["pid"] for o in outcomes}) == 4  # each step in its own process
    spans = sorted(o.metrics["t"] for o in outcomes)
    assert spans[1][0] < spans[0][1]  # the first two ran at the same time
    for i in range(len(spans) - 2):  # never three at once
        assert spans[i + 2][0] >= spans[i][1] - 0.05


def test_dependencies_failed_dependency_and_retries():
    calls: list[str] = []

    def worker(step):
        calls.append(step.key)
        if step.key == "train-bad":
            return JobOutcome(step, "failed", error="boom", error_class="plugin_error")
        if step.key == "flaky" and calls.count("flaky") < 3:
            return JobOutcome(step, "failed", error="lost", error_class="worker_lost")
        return JobOutcome(step, "ok")

    steps = [
        FakeStep("train-ok", kind="train"),
        FakeStep("train-bad", kind="train"),
        FakeStep("eval-1", depends_on=("train-ok",)),
        FakeStep("eval-2", depends_on=("train-bad",)),
        FakeStep("eval-3", depends_on=("done-before",)),  # not in the plan: done already
        FakeStep("flaky"),
    ]
    limits = {"flaky": Limits(retries=2)}
    outcomes = {
        o.job.key: o
        for o in schedule(steps, InProcessBackend(worker), lambda s: limits.get(s.key, Limits()))
    }
    assert outcomes["eval-1"].status == "ok"
    assert outcomes["eval-2"].status == "failed"
    # the row says why: the failed training's class, and that it was a dependency
    assert outcomes["eval-2"].error_class == "plugin_error"
    assert outcomes["eval-2"].error.startswith("dependency failed: train-bad: boom")
    assert "eval-2" not in calls  # never ran
    assert outcomes["eval-3"].status == "ok"
    assert outcomes["flaky"].status == "ok" and calls.count("flaky") == 3
    assert calls.index("train-ok") < calls.index("eval-1")


@pytest.mark.gpu
def test_isolated_steps_on_every_gpu(write_submission):
    """On a GPU machine: one worker process per GPU (spawned: CUDA cannot be forked), each step
    under a memory limit (RLIMIT_DATA on CUDA), rows on a cuda device."""
    import torch
    from conftest import tiny_submission

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path = write_submission(tiny_submission("gpu-isolated", seeds=[0, 1, 2]))
    res = run_cli("score", str(path), "--device", "auto", "--isolate", "--memory-limit", "16G")
    assert res.returncode == 0, res.stderr
    rows = json.loads(run_cli("results", "--format", "json").stdout)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    used = {r["device"] for r in rows}
    assert all(d.startswith("cuda") for d in used)
    assert len(used) == min(3, torch.cuda.device_count())
