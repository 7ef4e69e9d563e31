"""A long evaluation killed mid-way resumes from its journal (``registry/engine/journal.py``) to
the numbers of an uninterrupted one: the adversarial benchmark on a stochastic model (internal
noise at inference: every attack step and every evaluation draws from the RNG)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_cli, tiny_submission
from safetensors import safe_open

from bioprior.registry.engine.journal import EvaluationJournal

ADVERSARIAL = {
    "name": "adversarial",
    "params": {
        "images": 480,
        "batch_size": 16,
        "curves": {
            "pgd": {"attack": {"name": "pgd_linf", "params": {"steps": 10}}, "epsilons": [0.0, 0.1]}
        },
        "score_curve": "pgd",
        "score_epsilon": 0.1,
        "unbounded": {"name": "pgd_linf", "params": {"steps": 2, "rel_stepsize": 0.5}},
        "eot_samples": 2,
        "eval_samples": 2,
        "transfer": False,
        "minimal_images": 0,
    },
}
#: the unit whose batches the first run is killed among (the stochastic mode's PGD at 0.1: every
#: step draws noise, so a stream resumed from the wrong state changes its numbers)
STAGE = "stochastic/curve pgd/epsilon 1/"


def _submission() -> dict:
    sub = tiny_submission("journal", benchmarks=[ADVERSARIAL])
    noise = {"sigma": 0.3, "at_inference": True}
    sub["constraints"] = [{"name": "internal_noise", "params": noise}]
    return sub


def _row(home) -> tuple[dict, dict]:
    with sqlite3.connect(home / "results.sqlite") as conn:
        ((metrics, provenance),) = conn.execute("SELECT metrics, provenance FROM results")
    return json.loads(metrics), json.loads(provenance)


def _journals(home) -> list:
    return sorted((home / "weights").glob("*.journal.safetensors"))


def test_an_evaluation_killed_mid_way_resumes_to_the_same_numbers(tmp_path, write_submission):
    path = write_submission(_submission())
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    env = {"BIOPRIOR_HOME": str(fresh)}
    assert (out := run_cli("score", str(path), "--device", "cpu", env=env)).returncode == 0, out
    expected, provenance = _row(fresh)
    assert "resumed" not in provenance and not _journals(fresh)

    # the same job in another home, its journal written after every unit; killed (the whole
    # process group, SIGKILL: nothing gets to clean up) once the journal holds some units
    env = {**os.environ, "BIOPRIOR_HOME": str(resumed), "BIOPRIOR_CHECKPOINT_INTERVAL": "1e-6"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path), "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline, units = time.time() + 300, []
    while time.time() < deadline and proc.poll() is None and not units:
        units = [u for u in _units(resumed) if u.startswith(STAGE)]
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (journal,) = _journals(resumed)  # killed mid-evaluation, among the stage's batches
    assert any(u.startswith(STAGE) for u in _units(resumed)), _units(resumed)
    assert not _rows(resumed)

    plan = run_cli("score", str(path), "--dry-run", env={"BIOPRIOR_HOME": str(resumed)})
    assert plan.returncode == 0, plan.stderr
    assert "resumes from its journal: " in plan.stdout, plan.stdout  # the estimate knows it

    again = run_cli("score", str(path), "--device", "cpu", env={"BIOPRIOR_HOME": str(resumed)})
    assert again.returncode == 0, again.stderr
    log = again.stdout + again.stderr
    assert "units of work recorded)" in log, log
    metrics, provenance = _row(resumed)
    assert metrics == expected  # bit for bit: every accuracy, curve and flag
    assert provenance["resumed"]["units_recalled"] >= 1
    assert not journal.exists()  # removed with the result


def _units(home) -> list[str]:
    """The labels of the units in ``home``'s journal (none while there is none)."""
    for path in _journals(home):
        try:
            with safe_open(str(path), "pt") as fh:
                return list(json.loads(fh.metadata()["checkpoint"])["state"]["units"])
        except (OSError, RuntimeError, KeyError, ValueError):
            pass  # replaced while read
    return []


def _rows(home) -> list:
    if not (home / "results.sqlite").exists():
        return []
    with sqlite3.connect(home / "results.sqlite") as conn:
        try:
            return conn.execute("SELECT job_key FROM results").fetchall()
        except sqlite3.OperationalError:
            return []


#: what the journals of the unit tests said
notices: list[str] = []


def _journal(path, identity=None, interval="1e-6", monkeypatch=None) -> EvaluationJournal:
    """A journal written after every unit (the interval set once per test, by its first call)."""
    if monkeypatch is not None:
        monkeypatch.setenv("BIOPRIOR_CHECKPOINT_INTERVAL", interval)
    return EvaluationJournal.at(path, identity or {"job": "j"}, torch.device("cpu"), notices.append)


def test_a_recalled_unit_continues_the_random_stream_where_it_left_it(tmp_path, monkeypatch):
    path = tmp_path / "j.journal.safetensors"

    def draw() -> dict[str, torch.Tensor]:
        return {"x": torch.rand(3)}

    torch.manual_seed(0)
    first = _journal(path, monkeypatch=monkeypatch)
    a = first.cached("a", draw)["x"]
    uninterrupted = torch.rand(3)  # what the next unit draws

    torch.manual_seed(0)  # a rerun: "a" recalled, the stream set as "a" left it
    again = _journal(path, monkeypatch=monkeypatch)
    assert torch.equal(again.cached("a", draw)["x"], a) and again.recalled == 1
    assert torch.equal(torch.rand(3), uninterrupted)
    assert again.resumed == {"units_recalled": 1}


def test_a_unit_recorded_drops_the_units_under_it(tmp_path, monkeypatch):
    journal = _journal(tmp_path / "j.journal.safetensors", monkeypatch=monkeypatch)

    def whole() -> dict[str, torch.Tensor]:
        parts = [journal.cached(f"attack/images {i}", lambda: {"x": torch.ones(2)}) for i in (0, 2)]
        assert set(journal.units) == {"attack/images 0", "attack/images 2"}
        return {"x": torch.cat([p["x"] for p in parts])}

    journal.cached("attack", whole)
    assert set(journal.units) == {"attack"}
    assert set(_journal(tmp_path / "j.journal.safetensors").units) == {"attack"}  # on disk


@pytest.mark.parametrize(
    "other", [{"job": "k"}, {"job": "j", "weights": {"t": "h2"}}], ids=["job", "weights"]
)
def test_a_journal_of_another_job_or_other_weights_is_ignored(tmp_path, monkeypatch, other):
    path = tmp_path / "j.journal.safetensors"
    identity = {"job": "j", "weights": {"t": "h1"}}
    _journal(path, identity, monkeypatch=monkeypatch).cached("a", lambda: {"x": torch.zeros(1)})
    notices.clear()
    ignored = _journal(path, other if "weights" in other else {**other, "weights": {"t": "h1"}})
    assert ignored.units == {} and ignored.resumed is None
    assert any("warning: ignoring the checkpoint" in n for n in notices), notices


def test_no_journal_is_kept_when_checkpoints_are_off(tmp_path, monkeypatch):
    path = tmp_path / "j.journal.safetensors"
    journal = _journal(path, interval="off", monkeypatch=monkeypatch)
    assert journal.cached("a", lambda: {"x": torch.ones(1)})["x"].item() == 1
    assert not path.exists() and journal.units == {}


def test_the_plan_counts_the_work_a_journal_holds_as_done(tmp_path, monkeypatch):
    """The estimate of an evaluation that resumes is its estimate less what the recorded units
    took (a twentieth at least is left)."""
    from types import SimpleNamespace

    from bioprior.registry.engine.estimate import Estimate, _resumed_evaluation
    from bioprior.registry.store.weights import journal_file

    step = SimpleNamespace(key="jobkey")
    service = SimpleNamespace(weights_dir=tmp_path, device=torch.device("cpu"))
    identity = {"job": "jobkey", "threads": torch.get_num_threads()}
    journal = _journal(journal_file(tmp_path, "jobkey"), identity, monkeypatch=monkeypatch)
    journal.cached("a", lambda: (time.sleep(0.5), {"x": torch.ones(1)})[1])
    resumed = _resumed_evaluation(Estimate(10.0, 1.0, "measured"), step, service)
    assert 9.0 < resumed.seconds <= 9.5 and "resumes from its journal: 1 units" in resumed.note
    assert _resumed_evaluation(Estimate(0.2, 1.0), step, service).seconds == 0.2 / 20
    other = SimpleNamespace(key="other")  # another job's file name: no journal of its own
    assert _resumed_evaluation(Estimate(10.0, 1.0), other, service).seconds == 10.0
    threads = torch.get_num_threads()
    try:  # a run with another thread count ignores the journal: so does its estimate
        torch.set_num_threads(threads + 1)
        assert _resumed_evaluation(Estimate(10.0, 1.0), step, service).seconds == 10.0
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_journal_is_ignored_and_the_work_done_again(tmp_path, monkeypatch):
    path = tmp_path / "j.journal.safetensors"
    _journal(path, monkeypatch=monkeypatch).cached("a", lambda: {"x": torch.ones(1)})
    blob = bytearray(path.read_bytes())
    blob[-4:] = b"\x00\xff\x00\xff"  # a tensor's bytes changed on disk
    path.write_bytes(bytes(blob))
    notices.clear()
    journal = _journal(path)
    assert journal.units == {} and any("ignoring the checkpoint" in n for n in notices), notices
    assert journal.cached("a", lambda: {"x": torch.full((1,), 2.0)})["x"].item() == 2.0
    path.write_bytes(b"not a journal")
    assert _journal(path).units == {}
