"""Claims with leases: scorers sharing one results database compute each step once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, dead_pid
from faulty_plugins import activate, faulty_submission, install

from bioprior.registry.store.claims import BUSY, DONE, MINE, Claims
from bioprior.registry.store.results import ResultStore


@dataclass(frozen=True)
class Step:
    key: str
    submission: str | None = "sub"
    kind: str = "evaluate"
    label: str = "a step"
    depends_on: tuple[str, ...] = ()


def test_claim_busy_done_and_finished(tmp_path):
    db = tmp_path / "results.sqlite"
    a, b = Claims(db, lease_s=30), Claims(db, lease_s=30)
    step = Step("k1")
    assert a.acquire(step) == MINE
    assert a.acquire(step) == MINE  # idempotent for its owner
    assert b.acquire(step) == BUSY  # a live claim of another scorer
    a.finish(step)
    assert b.acquire(step) == DONE  # finished after b started: b does not redo it
    late = Claims(db, lease_s=30)  # a scorer started after it finished: a rerun retries it
    assert late.acquire(step) == MINE
    for c in (a, b, late):
        c.close()


def test_result_row_means_done(tmp_path):
    from bioprior.registry.store.results import ResultStore

    db = tmp_path / "results.sqlite"
    ResultStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO results (job_key, submission, variant, seed, benchmark, benchmark_version,"
            " benchmark_params, training_key, metrics, status, plugin_versions, spec) VALUES "
            "('k2', 'sub', '{}', 0, 'b', '1', '{}', 't', '{}', 'ok', '{}', '{}')"
        )
    claims = Claims(db)
    assert claims.acquire(Step("k2")) == DONE
    assert claims.acquire(Step("k2", submission="other")) == MINE  # another submission's row
    claims.close()


def test_expired_lease_and_dead_owner_are_taken_over(tmp_path):
    db = tmp_path / "results.sqlite"
    holder = Claims(db, lease_s=0.3)
    holder._ensure_heartbeat = lambda: None  # a scorer that hangs: no renewals
    other = Claims(db, lease_s=30)
    assert holder.acquire(Step("k3")) == MINE
    assert other.acquire(Step("k3")) == BUSY
    time.sleep(0.4)
    assert other.acquire(Step("k3")) == MINE  # lease expired

    pid = dead_pid()
    with sqlite3.connect(db) as conn:  # a claim of a scorer killed with SIGKILL on this host
        conn.execute(
            "INSERT INTO claims VALUES ('sub/k4', 'x', ?, ?, 'running', ?, ?, '')",
            (other.host, pid, time.time() + 3600, time.time()),
        )
    assert other.acquire(Step("k4")) == MINE  # taken over at once, not after an hour
    holder.close()
    other.close()


def test_heartbeat_renews_leases(tmp_path):
    db = tmp_path / "results.sqlite"
    holder = Claims(db, lease_s=0.6)
    assert holder.acquire(Step("k5")) == MINE
    other = Claims(db, lease_s=30)
    time.sleep(1.5)  # over twice the lease: only renewals keep it
    assert other.acquire(Step("k5")) == BUSY
    holder.close()  # a closed scorer gives back what it did not finish
    assert other.acquire(Step("k5")) == MINE
    other.close()


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    folder = install(tmp_path / "site")
    activate(folder, monkeypatch)
    return folder


def test_a_store_another_scorer_is_creating_opens(tmp_path, monkeypatch):
    """Two scorers started together on a fresh home: SQLite creates the file empty, then writes
    its first page. The other scorer looks at the file just before that write and opens it
    after: one look decides (an empty file is a new store), so neither look is an error."""
    db = tmp_path / "results.sqlite"
    db.touch()  # the first scorer's sqlite3.connect
    real_stat, written = Path.stat, []

    def first_page_written_after_the_look(self, *args, **kwargs):
        info = real_stat(self, *args, **kwargs)
        if self == db and not written:
            written.append(True)
            with ResultStore(db):  # the first scorer writes its schema
                pass
        return info

    monkeypatch.setattr(Path, "stat", first_page_written_after_the_look)
    with ResultStore(db) as store:
        assert written and store.rows() == []


def test_two_scorers_with_overlapping_plans_compute_each_job_once(
    faulty, tmp_path, write_submission, bioprior_home
):
    log = tmp_path / "evaluations.log"
    shared = faulty_submission(
        "shared", seeds=[0, 1, 2, 3], benchmarks=[{"name": "counted", "params": {"sleep_s": 0.5}}]
    )
    only_a = faulty_submission("only-a", seeds=[0])
    only_b = faulty_submission("only-b", seeds=[0])
    a_files = [str(write_submission(only_a)), str(write_submission(shared))]
    b_files = [str(write_submission(shared)), str(write_submission(only_b))]
    env = {**os.environ, "BIOPRIOR_TEST_COUNT_LOG": str(log), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bioprior.registry.cli.app", "score", "--device", "cpu"]
    procs = [
        subprocess.Popen(
            cmd + files,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for files in (a_files, b_files)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    runs = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    assert len(runs) == 6  # 4 shared + 1 + 1 jobs
    assert set(runs.values()) == {1}, runs  # each computed exactly once
    db = bioprior_home / "results.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT submission, job_key, status FROM results").fetchall()
    assert len(rows) == 6 and {s for _, _, s in rows} == {"ok"}
    assert {(s, k) for s, k, _ in rows} == set(runs)
    skipped = sum((out + err).count("done by another scorer") for out, err in outputs)
    assert 1 <= skipped <= 8  # contended: steps (4 trainings, 4 evaluations) the other had done


def test_error_class_migration_classifies_older_failed_rows(tmp_path):
    from bioprior.registry.store.results import SCHEMA, ResultStore

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # a database from before the column existed
        conn.executescript(SCHEMA)
        for key, error in [("a", "MemoryError: "), ("b", "ValueError: bad [x.py:3]")]:
            conn.execute(
                "INSERT INTO results (job_key, submission, variant, seed, benchmark, "
                "benchmark_version, benchmark_params, training_key, metrics, status, error, "
                "plugin_versions, spec) VALUES (?, 's', '{}', 0, 'b', '1', '{}', 't', '{}', "
                "'failed', ?, '{}', '{}')",
                (key, error),
            )
    with ResultStore(db) as store:
        classes = {r["job_key"]: r["error_class"] for r in store.rows()}
    assert classes == {"a": "out_of_memory", "b": "plugin_error"}
    ResultStore(db).close()  # a second open does nothing more
