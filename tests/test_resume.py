"""Killing `bioprior score` mid-run and running it again: nothing recomputed, lost or duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import ROOT, run_cli, tiny_submission


def _rows(db) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(
                "SELECT job_key, submission, status, finished_at FROM results"
            ).fetchall()
        except sqlite3.OperationalError:
            return []


def test_kill_and_resume(bioprior_home, write_submission):
    sub = tiny_submission("resume", seeds=[0, 1, 2, 3])
    sub["training"]["epochs"] = 6
    path = write_submission(sub)
    db = bioprior_home / "results.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bioprior.registry.cli.app", "score", str(path), "--device", "cpu"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not _rows(db):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(db)
    assert 1 <= len(before) < 4, f"kill landed outside the run: {len(before)} rows"

    again = run_cli("score", str(path), "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert f"4 jobs: {len(before)} already done, {4 - len(before)} to run" in again.stdout
    after = _rows(db)
    assert len(after) == 4 and len({(k, s) for k, s, *_ in after}) == 4
    assert all(status == "ok" for _, _, status, _ in after)
    assert set(before) <= set(after)  # finished rows untouched (same finish time: not recomputed)
