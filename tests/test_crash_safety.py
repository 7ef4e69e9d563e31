"""Crash safety: SIGKILL the scorer at random moments, rerun after each; at the end every job is
done exactly once, no row or weights file is lost, duplicated or half-written, no temp file left.
Weights are fsynced before the rename, orphaned temp files removed at start, hashes checked on
load."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, tiny_submission

from bioprior.registry.base import atomic


def _rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(
                "SELECT job_key, submission, status, finished_at, metrics FROM results"
            ).fetchall()
    except sqlite3.OperationalError:
        return []


def _check_weights(weights: Path) -> int:
    """Every weights file loads and matches its stored tensor hash; returns how many."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = sorted(weights.glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), "pt") as fh:
            meta = fh.metadata()
        assert atomic.TENSORS_HASH_KEY in meta
        atomic.check_tensors(f, load_file(str(f)), meta)  # raises if half-written or corrupt
    return len(files)


def _kill_and_rerun(kills: int, seed: int, home: Path, path: Path) -> None:
    rng = random.Random(seed)
    db, weights = home / "results.sqlite", home / "weights"
    cmd = [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path), "--device", "cpu"]
    finished: dict[tuple, tuple] = {}
    for _ in range(kills):
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.0, 7.0))  # start-up (~2-4 s), then trainings and saves
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rows = _rows(db)
        keys = [(k, s) for k, s, *_ in rows]
        assert len(keys) == len(set(keys)), "duplicated row"
        for k, s, status, fin, metrics in rows:
            json.loads(metrics)  # whole rows only
            if status == "ok":  # a finished row is never rewritten
                assert finished.setdefault((k, s), (fin, metrics)) == (fin, metrics)
    res = run_cli("score", str(path), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    rows = _rows(db)
    assert len(rows) == 4 and len({(k, s) for k, s, *_ in rows}) == 4
    assert {status for _, _, status, *_ in rows} == {"ok"}
    for k, s, _status, fin, metrics in rows:
        if (k, s) in finished:
            assert finished[(k, s)] == (fin, metrics)
    assert _check_weights(weights) == 8  # two trainings per seed, each file whole
    assert not list(home.rglob("*.tmp")), "temp files left behind"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _sweep(write_submission) -> Path:
    """4 jobs, 8 trainings (memorization trains on digits and on random images per seed)."""
    sub = tiny_submission("crash", seeds=[0, 1, 2, 3])
    sub["training"]["epochs"] = 3
    return write_submission(sub)


def test_sigkill_at_random_moments_then_rerun(bioprior_home, write_submission):
    _kill_and_rerun(3, 15, bioprior_home, _sweep(write_submission))


@pytest.mark.slow
def test_sigkill_twenty_times_then_rerun(bioprior_home, write_submission):
    _kill_and_rerun(20, 2026, bioprior_home, _sweep(write_submission))


def test_a_kill_during_a_weights_save_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "weights" / "abc.safetensors"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from bioprior.registry.base import atomic\n"
        "def half(tmp):\n"
        "    Path(tmp).write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic.write_with(Path({str(target)!r}), half)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT)
    assert not target.exists()
    (orphan,) = target.parent.glob("*.tmp")  # what a killed writer leaves
    busy = target.parent / f"other.safetensors.{atomic.host()}.{os.getpid()}.x.tmp"
    busy.write_bytes(b"a live writer's file")  # another scorer still writing: kept
    removed = atomic.remove_orphans(target.parent)
    assert removed == [orphan] and busy.exists()
    old = target.parent / "legacy.tmp"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert atomic.remove_orphans(target.parent) == [old]


def test_corrupt_weights_are_detected_by_hash_and_retrained(bioprior_home, registry):
    import torch

    from bioprior.registry.base.progress import Reporter
    from bioprior.registry.engine.service import TrainingService
    from bioprior.registry.planning.jobs import plan
    from bioprior.registry.submissions.loading import validate_submission_dict

    class Messages(Reporter):
        def __init__(self):
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    (job,) = plan([validate_submission_dict(tiny_submission("corrupt"), registry)])
    first = TrainingService(bioprior_home, torch.device("cpu"))
    trained = first.trained(job.training)
    path = bioprior_home / "weights" / f"{job.training.key}.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the last tensor: the file still parses
    path.write_bytes(bytes(data))
    reporter = Messages()
    second = TrainingService(bioprior_home, torch.device("cpu"), reporter)
    again = second.trained(job.training)
    assert second.trainings_run == 1 and not again.from_cache
    assert any("do not match their stored hash" in m for m in reporter.lines)
    assert again.weights_hash == trained.weights_hash  # retrained: the same numbers
    third = TrainingService(bioprior_home, torch.device("cpu"))
    assert third.trained(job.training).from_cache  # the rewritten file is whole again
