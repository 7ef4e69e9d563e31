"""CPU workers (``bioprior score --workers``, registry/threads.py ``cpu_workers``): steps that can
run side by side run at once in forked processes, each with its share of the threads, and give
exactly the numbers of one-thread trainings run one after another."""

from __future__ import annotations

import pytest
from conftest import run_cli, tiny_submission
from typer.testing import CliRunner

from bioprior.registry.base import threads
from bioprior.registry.cli.app import app
from bioprior.registry.store.results import ResultStore


def _rows(home) -> dict:
    with ResultStore(home / "results.sqlite") as store:
        return {r["job_key"]: r for r in store.rows()}


def test_two_workers_give_the_numbers_of_one_thread_trainings_in_turn(tmp_path, write_submission):
    path = write_submission(tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.5]}))
    runs = {}
    for name, args in {
        "workers": ["--threads", "2"],
        "in-turn": ["--threads", "1", "--workers", "1"],
    }.items():
        home = tmp_path / name
        out = run_cli(
            "score", str(path), "--device", "cpu", "--batch", "1", *args,
            env={"BIOPRIOR_HOME": str(home)},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        runs[name] = (out.stdout, _rows(home))
    text, parallel = runs["workers"]
    assert "2 CPU workers x 1 thread" in text
    assert text.count("in process") == 4  # natural and random data for each sigma
    _, in_turn = runs["in-turn"]
    assert parallel.keys() == in_turn.keys() and len(parallel) == 2
    for key, row in parallel.items():
        assert row["status"] == "ok"
        assert row["provenance"]["torch_num_threads"] == 1
        assert row["metrics"] == in_turn[key]["metrics"]  # exactly: same seeds, same threads


def test_a_resumed_run_trains_its_last_step_as_the_whole_run_would_have(tmp_path, write_submission):
    """Workers are counted on the plan from scratch, not on what is left: after an interruption
    that left one of two trainings to do, it still trains on one thread, so its weights and the
    job's numbers are those of the uninterrupted run (not those of a two-thread training)."""
    import sqlite3

    path = write_submission(tiny_submission())  # natural and random data: two trainings
    home = tmp_path / "home"
    args = ("score", str(path), "--device", "cpu", "--batch", "1", "--threads", "2")
    first = run_cli(*args, env={"BIOPRIOR_HOME": str(home)})
    assert first.returncode == 0, first.stderr
    (whole,) = _rows(home).values()
    with sqlite3.connect(home / "results.sqlite") as db:  # as if stopped before the evaluation
        db.execute("DELETE FROM results")
    min((home / "weights").glob("*.safetensors")).unlink()  # and before one training
    resumed = run_cli(*args, env={"BIOPRIOR_HOME": str(home)})
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trainings to run" in resumed.stdout and "1 cached" in resumed.stdout
    assert "2 CPU workers x 1 thread" in resumed.stdout
    (again,) = _rows(home).values()
    assert again["provenance"]["torch_num_threads"] == 1
    assert again["weights_hash"] == whole["weights_hash"]
    assert again["metrics"] == whole["metrics"]


def test_workers_of_two_threads_fork_from_a_clean_server(tmp_path, write_submission):
    """A child forked from a driver that has run OpenMP threads hangs in its first parallel
    region (GNU libgomp is not fork-safe): workers of more than one thread come from a fork
    server (here 2 x 2 threads on CI's 2 cores: oversubscribed, but it must finish)."""
    path = write_submission(tiny_submission())
    home = tmp_path / "home"
    out = run_cli(
        "score", str(path), "--device", "cpu", "--batch", "1", "--threads", "4", "--workers", "2",
        env={"BIOPRIOR_HOME": str(home)}, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 CPU workers x 2 threads" in out.stdout
    ((row),) = _rows(home).values()
    assert row["status"] == "ok" and row["provenance"]["torch_num_threads"] == 2


def test_auto_workers_share_the_threads_among_the_steps_there_are():
    assert threads.cpu_workers(None, threads=2, side_by_side=4) == 2
    assert threads.cpu_workers(None, threads=8, side_by_side=3) == 3  # 3 steps: 3 workers
    assert threads.cpu_workers(None, threads=1, side_by_side=4) == 1  # a busy machine: one
    assert threads.cpu_workers(None, threads=2, side_by_side=0) == 1
    assert threads.cpu_workers(3, threads=2, side_by_side=1) == 3  # asked for


@pytest.mark.parametrize("free_gb, plan", [(64, "2 CPU workers x 1 thread"), (0.1, "memory for 1")])
def test_auto_workers_are_as_many_as_fit_in_memory(
    tmp_path, write_submission, monkeypatch, free_gb, plan
):
    """A machine with room for one training at a time runs its trainings in turn, and says so."""
    from bioprior.registry.engine import estimate

    monkeypatch.setattr(estimate, "available_bytes", lambda device: int(free_gb * 2**30))
    monkeypatch.setenv("BIOPRIOR_HOME", str(tmp_path / "home"))
    path = write_submission(tiny_submission())  # natural and random data: two trainings
    result = CliRunner().invoke(app, ["score", str(path), "--dry-run", "--threads", "2"])
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("plan:")]
    assert plan in line
    assert ("CPU workers" in line) == (free_gb > 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "many"], "--workers: must be a positive integer or 'auto' (got 'many')"),
        (["--workers", "-2"], "--workers: must be a positive integer or 'auto' (got '-2')"),
        (["--workers", "2", "--executor", "ray"], "--workers: only with --executor local"),
    ],
)
def test_bad_workers_is_one_line(tmp_path, write_submission, args, message):
    path = write_submission(tiny_submission())
    result = CliRunner().invoke(app, ["score", str(path), "--db", str(tmp_path / "r.db"), *args])
    assert result.exit_code == 2
    (line,) = [ln for ln in result.stderr.splitlines() if not ln.startswith("warning:")]
    assert message in line
    assert not (tmp_path / "r.db").exists()


def test_workers_where_the_steps_run_on_a_gpu_is_one_line_before_anything_opens(
    tmp_path, write_submission, monkeypatch
):
    """``--workers 2`` on a machine whose steps run on its GPU: refused before the results
    database is created (a GPU runs one step at a time)."""
    from bioprior.registry.execution import isolated as isolation

    monkeypatch.setattr(isolation, "local_devices", lambda device="auto", count=None: ["cuda:0"])
    path = write_submission(tiny_submission())
    db = tmp_path / "r.db"
    result = CliRunner().invoke(app, ["score", str(path), "--db", str(db), "--workers", "2"])
    assert result.exit_code == 2
    (line,) = [ln for ln in result.stderr.splitlines() if not ln.startswith("warning:")]
    assert "--workers: CPU workers only (--device auto runs one step per GPU)" in line
    assert not db.exists()


def test_a_step_that_fails_in_a_worker_records_the_workers_threads(
    tmp_path, write_submission, monkeypatch
):
    """A failed evaluation's row says what it ran on, as an ok one does: one thread in a worker
    of a two-thread run, not the driver's two (here an evaluation killed at its time limit)."""
    from faulty_plugins import activate, faulty_submission, install

    activate(install(tmp_path / "site"), monkeypatch)
    home = tmp_path / "home"
    slow = faulty_submission(
        "slow",
        benchmarks=[{"name": "counted", "params": {"sleep_s": 120}}],
        limits={"timeout_s": 5},
    )
    files = [str(write_submission(s)) for s in (faulty_submission("ok"), slow)]
    out = run_cli(
        "score", *files, "--device", "cpu", "--threads", "2", "--workers", "2",
        env={"BIOPRIOR_HOME": str(home)},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # the slow job failed; the run finished
    assert "2 CPU workers x 1 thread" in out.stdout
    with ResultStore(home / "results.sqlite") as store:
        rows = {r["submission"]: r for r in store.rows()}
    assert rows["ok"]["status"] == "ok" and rows["slow"]["error_class"] == "timeout"
    assert [rows[s]["provenance"]["torch_num_threads"] for s in ("ok", "slow")] == [1, 1]


def test_a_workers_notices_reach_the_console(tmp_path, write_submission):
    """A step in a worker that finds its cached weights unreadable says so on the driver's
    console, as it does in turn, and retrains them to the same numbers."""
    path = write_submission(tiny_submission())
    home = tmp_path / "home"
    args = ("score", str(path), "--device", "cpu", "--threads", "2", "--workers", "2")
    first = run_cli(*args, env={"BIOPRIOR_HOME": str(home)})
    assert first.returncode == 0, first.stderr
    files = sorted((home / "weights").glob("*.safetensors"))
    assert len(files) == 2  # natural and random data
    for f in files:
        f.write_bytes(b"garbage")
    before = _rows(home)
    with ResultStore(home / "results.sqlite") as store:
        store.conn.execute("DELETE FROM results")
    again = run_cli(*args, env={"BIOPRIOR_HOME": str(home)})
    assert again.returncode == 0, again.stderr
    assert "2 CPU workers x 1 thread" in again.stdout
    noticed = [ln for ln in again.stdout.splitlines() if "unreadable cached weights" in ln]
    assert len(noticed) == 2 and all(any(f.name in ln for ln in noticed) for f in files)
    after = _rows(home)
    assert [r["metrics"] for r in after.values()] == [r["metrics"] for r in before.values()]


def test_the_api_trains_side_by_side_to_the_numbers_of_trainings_in_turn(
    tmp_path, write_submission, monkeypatch
):
    """``bioprior.score`` runs a sweep's trainings in two one-thread workers as the CLI does:
    the rows are those of one-thread trainings in turn, and every job is counted as it ends."""
    import bioprior

    path = write_submission(tiny_submission(sweep={"constraints.0.params.sigma": [0.0, 0.5]}))
    runs, events = {}, []
    for name, kwargs in {
        "workers": {"threads": 2, "progress": events.append},
        "in-turn": {"threads": 1, "workers": 1},
    }.items():
        monkeypatch.setenv("BIOPRIOR_HOME", str(tmp_path / name))  # weights trained anew
        rows = bioprior.score(path, device="cpu", **kwargs)
        runs[name] = {r["job_key"]: r for r in rows}
    plan = next(e.text for e in events if e.text.startswith("plan:"))
    assert "2 CPU workers x 1 thread" in plan
    assert sum(" in process " in e.text for e in events if e.kind == "message") == 4
    finished = [e for e in events if e.kind == "job_finished"]
    assert [(e.index, e.total) for e in finished] == [(1, 2), (2, 2)]
    assert runs["workers"].keys() == runs["in-turn"].keys() and len(runs["workers"]) == 2
    for key, row in runs["workers"].items():
        assert row["status"] == "ok" and row["provenance"]["torch_num_threads"] == 1
        assert row["metrics"] == runs["in-turn"][key]["metrics"]


def test_the_api_trains_an_in_memory_module_in_this_process():
    from torch import nn

    import bioprior

    with pytest.raises(ValueError, match="workers=2: an in-memory nn.Module trains in this"):
        bioprior.score(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
            benchmarks=["memorization"],
            training={"dataset": "digits"},
            workers=2,
        )


def test_the_api_refuses_workers_where_the_steps_run_on_a_gpu(monkeypatch, write_submission):
    import bioprior
    from bioprior.registry.execution import isolated as isolation

    monkeypatch.setattr(isolation, "local_devices", lambda device="auto", count=None: ["cuda:0"])
    with pytest.raises(ValueError, match="workers=2: CPU workers only .device='auto' runs one"):
        bioprior.score(write_submission(tiny_submission()), workers=2)
