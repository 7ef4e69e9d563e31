"""The results store: SQLite (WAL), one row per (job key, submission), written atomically.

A finished (``ok``) row is never overwritten: a rerun skips it. A failed row is replaced when
the job is run again. Rows carry full provenance: variant, versions, device, weights hash, spec.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from .executor import JobOutcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    job_key TEXT NOT NULL,
    submission TEXT NOT NULL,
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    benchmark TEXT NOT NULL,
    benchmark_version TEXT NOT NULL,
    benchmark_params TEXT NOT NULL,
    training_key TEXT NOT NULL,
    metrics TEXT NOT NULL,
    score REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    device TEXT,
    plugin_versions TEXT NOT NULL,
    weights_hash TEXT,
    weights TEXT,
    spec TEXT NOT NULL,
    bioprior_version TEXT,
    UNIQUE (job_key, submission)
);
CREATE INDEX IF NOT EXISTS results_submission ON results (submission);
"""

JSON_COLUMNS = ("variant", "benchmark_params", "metrics", "plugin_versions", "weights", "spec")


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        migrate_error_class(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def done(self) -> set[tuple[str, str]]:
        """(submission, job key) of every finished job."""
        rows = self.conn.execute("SELECT submission, job_key FROM results WHERE status = 'ok'")
        return {(r["submission"], r["job_key"]) for r in rows}

    def write(self, outcome: JobOutcome) -> bool:
        """Insert or replace a failed row, in one transaction; returns False if an ok row exists."""
        from bioprior import __version__

        job = outcome.job
        row = {
            "job_key": job.key,
            "submission": job.submission,
            "variant": json.dumps(job.variant, sort_keys=True),
            "seed": job.seed,
            "benchmark": job.benchmark.entry.name,
            "benchmark_version": job.benchmark.entry.version,
            "benchmark_params": json.dumps(
                job.benchmark.params.model_dump(mode="json"), sort_keys=True
            ),
            "training_key": job.training.key,
            "metrics": json.dumps(outcome.metrics, sort_keys=True, default=_json_default),
            "score": outcome.score,
            "status": outcome.status,
            "error": outcome.error,
            "error_class": getattr(outcome, "error_class", None)
            if outcome.status != "ok"
            else None,
            "started_at": outcome.started_at,
            "finished_at": outcome.finished_at,
            "duration_s": outcome.duration_s,
            "device": outcome.device,
            "plugin_versions": json.dumps(job.plugin_versions, sort_keys=True),
            "weights_hash": outcome.weights_hash,
            "weights": json.dumps(outcome.weights, sort_keys=True),
            "spec": json.dumps(job.identity(), sort_keys=True, default=str),
            "bioprior_version": __version__,
        }
        cols = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in row if c not in {"job_key", "submission"}
        )
        with self.conn:  # BEGIN ... COMMIT: the row lands whole or not at all
            cur = self.conn.execute(
                f"INSERT INTO results ({cols}) VALUES ({marks}) ON CONFLICT (job_key, submission) "
                f"DO UPDATE SET {updates} WHERE results.status != 'ok'",
                row,
            )
        return cur.rowcount > 0

    def rows(
        self, submission: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM results WHERE 1=1", []
        if submission:
            sql += " AND submission = ?"
            args.append(submission)
        if status:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY submission, benchmark, variant, seed, id"
        return [decode(r) for r in self.conn.execute(sql, args)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())


def migrate_error_class(conn: sqlite3.Connection) -> None:
    """Additive migration: the ``error_class`` column (why a job failed, see failures.py)."""
    from .failures import classify_error_text

    columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    if "error_class" in columns:
        return
    conn.execute("BEGIN IMMEDIATE")  # the column and the classes of older failed rows, together
    try:
        conn.execute("ALTER TABLE results ADD COLUMN error_class TEXT")
        failed = conn.execute("SELECT id, error FROM results WHERE status = 'failed'").fetchall()
        conn.executemany(
            "UPDATE results SET error_class = ? WHERE id = ?",
            [(classify_error_text(error), id_) for id_, error in failed],
        )
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK")
        if "duplicate column" not in str(exc):  # else another process added it first
            raise


def decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for col in JSON_COLUMNS:
        if out.get(col) is not None:
            out[col] = json.loads(out[col])
    return out


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
