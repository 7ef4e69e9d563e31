"""The results store: SQLite (WAL), one row per (job key, submission), written atomically.

A finished (``ok``) row is never overwritten: a rerun skips it. A failed row is replaced when
the job is run again. Rows carry full provenance: variant, versions, device, weights hash, spec,
and the software / hardware of the run (``provenance``, see :mod:`.provenance`). Columns are only
ever added (older databases gain them on open); :meth:`ResultStore.open_readonly` reads a database
without creating or changing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from bioprior import __version__
from bioprior.registry.base.failures import classify_error_text
from bioprior.registry.base.provenance import capture
from bioprior.registry.planning.jobs import (
    constraints_signature,
    cost_signature,
    stimuli_signature,
)
from bioprior.registry.planning.outcomes import JobOutcome

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
    provenance TEXT,
    UNIQUE (job_key, submission)
);
CREATE INDEX IF NOT EXISTS results_submission ON results (submission);
"""

JSON_COLUMNS = (
    "variant",
    "benchmark_params",
    "metrics",
    "plugin_versions",
    "weights",
    "spec",
    "provenance",
)
#: columns added after the first release: ``ALTER TABLE ... ADD COLUMN`` on older databases
ADDED_COLUMNS = {"provenance": "TEXT"}
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """A path that cannot be used as a results database (one line)."""


class BadRow(StoreError):
    """A stored row whose values are not what bioprior writes (one line: file, row, column)."""


#: what each JSON column decodes to (``None``: the column may hold JSON null)
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "variant": (dict,),
    "benchmark_params": (dict,),
    "metrics": (dict,),
    "plugin_versions": (dict,),
    "weights": (dict, type(None)),
    "spec": (dict,),
    "provenance": (dict, type(None)),
}
#: plain columns and the Python types SQLite may give back for them
PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "job_key": (str,),
    "submission": (str,),
    "seed": (int,),
    "benchmark": (str,),
    "benchmark_version": (str,),
    "training_key": (str,),
    "score": (int, float, type(None)),
    "status": (str,),
    "error": (str, type(None)),
    "error_class": (str, type(None)),
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
    "duration_s": (int, float, type(None)),
    "device": (str, type(None)),
    "weights_hash": (str, type(None)),
    "bioprior_version": (str, type(None)),
}
TYPE_NAMES = {
    dict: "a JSON object",
    list: "a JSON list",
    str: "text",
    int: "an integer",
    float: "a number",
    bytes: "bytes",
    bool: "true/false",
    type(None): "null",
}
#: the columns of SCHEMA (a ``results`` table without one of them is not bioprior's)
REQUIRED_COLUMNS = tuple(
    line.split()[0]
    for line in SCHEMA.split("(", 1)[1].splitlines()
    if line.strip() and line.split()[0].islower() and not line.strip().startswith("UNIQUE")
)


def database_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a results database, or None if it looks like one."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"no results database at {path} (run `bioprior score` first)"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a directory, not a results database"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_size == 0:
        return f"{path} is an empty file, not a results database (run `bioprior score` first)"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if head != SQLITE_MAGIC:
        return f"{path} is not an SQLite database"
    return None


#: how long a scorer waits for another one that holds the database
BUSY_TIMEOUT_S = 30.0


def _while_locked(statement: Callable[[], Any]) -> Any:
    """Run ``statement``, again while SQLite says the database is locked: switching a new
    database to WAL (or creating its tables) while another scorer does the same can fail at once,
    without the busy timeout (SQLite returns SQLITE_BUSY to avoid a deadlock)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def full_disk_hint(path: str | Path) -> str:
    """`` (no space left on ...)`` when the folder of ``path`` is on a full file system (SQLite
    then says "disk I/O error" or "database or disk is full"), else ``""``."""
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" (no space left on the file system of {folder})" if free < 64 * 1024 else ""


def _not_a_store(path: Path) -> str | None:
    """Why an existing ``path`` must not be opened for writing as a results database: not a
    regular file, or bytes that are not SQLite. An empty file is a new database, or one another
    scorer is creating (SQLite creates the file, then writes its first page): decided from one
    look at the file, so that the other scorer's first write between two looks is no error."""
    if str(path) == ":memory:" or not os.path.lexists(path):
        return None
    try:
        info = path.stat()
    except OSError:
        info = None  # database_problem says why
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0:
        return None
    return database_problem(path)


class ResultStore:
    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self.conn = _connect_readonly(self.path)
            self.conn.row_factory = sqlite3.Row
            return
        problem = _not_a_store(self.path)
        if problem:
            raise StoreError(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self._refuse_foreign()
        except BaseException:
            self.conn.close()
            raise
        _while_locked(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))
        self.conn.execute("PRAGMA synchronous=NORMAL")
        _while_locked(lambda: self.conn.executescript(SCHEMA))
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(results)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in have:
                try:
                    self.conn.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
        migrate_error_class(self.conn)

    def _refuse_foreign(self) -> None:
        """Raise :class:`StoreError` for an SQLite database that is not a results store: tables
        but no ``results`` (bioprior's would be added to someone else's database), or a
        ``results`` table without bioprior's columns or with a NOT NULL column it cannot fill."""
        tables = [
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        if tables and "results" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(
                f"{self.path} is an SQLite database but not a bioprior results store (its tables: "
                f"{shown}); nothing was added to it: give another --db"
            )
        if "results" not in tables:
            return
        columns = {r[1]: r for r in self.conn.execute("PRAGMA table_info(results)")}
        missing = [c for c in REQUIRED_COLUMNS if c not in columns and c not in ADDED_COLUMNS]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" * (len(missing) > 4))
            raise StoreError(
                f"{self.path}: its results table lacks the column(s) {shown}: not a bioprior "
                "results store, or a damaged one"
            )
        known = {*REQUIRED_COLUMNS, "error_class"}
        unfillable = [
            name
            for name, (_, _, _, notnull, default, pk) in columns.items()
            if name not in known and notnull and default is None and not pk
        ]
        if unfillable:
            raise StoreError(
                f"{self.path}: its results table has the column(s) {', '.join(unfillable)}, "
                "NOT NULL without a default, which bioprior cannot fill"
            )

    @classmethod
    def open_readonly(cls, path: str | Path) -> ResultStore:
        """Open an existing database for reading only; raise :class:`StoreError` (one line)."""
        path = Path(path)
        problem = database_problem(path)
        if problem:
            raise StoreError(problem)
        try:
            return cls(path, readonly=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None

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
            "provenance": json.dumps(
                _provenance(outcome),
                sort_keys=True,
                default=str,
            ),
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

    def recorded_weights(self, training_key: str) -> set[str]:
        """The weights hashes finished rows recorded for a training key (its ``weights`` column:
        training key -> hash of the weights the job used); empty when none did."""
        needle = json.dumps(training_key)
        found = set()
        for (weights,) in self.conn.execute(
            "SELECT weights FROM results WHERE status = 'ok' AND instr(weights, ?) > 0", (needle,)
        ):
            try:
                value = json.loads(weights).get(training_key)
            except (ValueError, AttributeError):
                continue
            if isinstance(value, str):
                found.add(value)
        return found

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
        return [decode(r, self.path) for r in self.conn.execute(sql, args)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def evaluation_times(self) -> list[MeasuredEvaluation]:
        """How long the finished evaluations took (oldest first), by cost signature and seed, and
        whether each generated its stimuli (``None``: a benchmark without cached stimuli). Rows that cannot
        be read are left out (an estimate, never an error)."""
        sql = (
            "SELECT spec, seed, duration_s, json_extract(metrics, '$.stimuli.generated'), device, "
            "json_extract(provenance, '$.cpu_seconds'), json_extract(provenance, '$.torch_num_threads') "
            "FROM results WHERE status = 'ok' AND duration_s IS NOT NULL ORDER BY finished_at, id"
        )
        out = []
        try:
            rows = self.conn.execute(sql).fetchall()
        except sqlite3.Error:
            return out
        for spec, seed, seconds, generated, device, cpu, threads in rows:
            try:
                identity = json.loads(spec)
                signature, stimuli = cost_signature(identity), stimuli_signature(identity)
                constraints = constraints_signature(identity)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            if not isinstance(seconds, int | float) or not seconds >= 0:
                continue
            fresh = None if not isinstance(generated, int) else generated > 0
            cpu = float(cpu) if isinstance(cpu, int | float) and cpu >= 0 else None
            threads = threads if isinstance(threads, int) and threads > 0 else None
            out.append(
                MeasuredEvaluation(
                    signature,
                    stimuli,
                    seed,
                    float(seconds),
                    fresh,
                    str(device or ""),
                    cpu,
                    threads,
                    constraints,
                )
            )
        return out


@dataclass(frozen=True)
class MeasuredEvaluation:
    """One finished evaluation's time (:meth:`ResultStore.evaluation_times`)."""

    signature: str  # bioprior.registry.planning.jobs.cost_signature
    stimuli: str  # bioprior.registry.planning.jobs.stimuli_signature
    seed: int
    seconds: float
    generated: bool | None  # it generated its stimuli (None: it has none)
    device: str = ""
    cpu_seconds: float | None = None  # its process's CPU time (rows since provenance has it)
    threads: int | None = None  # torch's threads where it ran
    constraints: str = ""  # bioprior.registry.planning.jobs.constraints_signature


def _provenance(outcome: Any) -> dict[str, Any]:
    """:func:`capture` of where the outcome ran, with the CPU seconds an evaluation took (what
    the plan's estimates scale by the cores a step will get: :class:`~bioprior.registry.base.
    threads.CoreShare`)."""
    out = capture(outcome.device, getattr(outcome, "threads", None))
    cpu = getattr(outcome, "cpu_s", None)
    if cpu is not None:
        out["cpu_seconds"] = round(cpu, 3)
    if getattr(outcome, "denormals", None):
        out["denormals"] = outcome.denormals
    if getattr(outcome, "resumed", None):
        out["resumed"] = outcome.resumed
    return out


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """``mode=ro``; a WAL database in a folder we may not write (no ``-shm`` to create) is
    read as immutable instead. Checks that the ``results`` table is there."""
    uri = f"file:{quote(str(path.resolve()))}"
    for flags in ("?mode=ro", "?mode=ro&immutable=1"):
        conn = sqlite3.connect(f"{uri}{flags}", uri=True, timeout=30.0, isolation_level=None)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:
            conn.close()
            if flags.endswith("immutable=1") or os.access(path.parent, os.W_OK):
                raise
            continue
        if "results" not in tables:
            conn.close()
            raise sqlite3.DatabaseError("not a bioprior results database (no results table)")
        return conn
    raise sqlite3.OperationalError("unable to open database file")  # not reached


def migrate_error_class(conn: sqlite3.Connection) -> None:
    """Additive migration: the ``error_class`` column (why a job failed, see failures.py)."""
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
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if "duplicate column" not in str(exc):  # else another process added it first
            raise


def decode(row: sqlite3.Row | Mapping[str, Any], path: str | Path = "the results database"):
    """A stored row with its JSON columns decoded, each column checked against what bioprior
    writes; raise :class:`BadRow` naming the file, the row and the column."""
    out = dict(row)

    def bad(col: str, what: str) -> BadRow:
        where = f"row {out['id']}" if isinstance(out.get("id"), int) else "a row"
        return BadRow(f"{path}: {where}, column {col}: {what}")

    for col, kinds in PLAIN_TYPES.items():
        if col in out and not isinstance(out[col], kinds):
            raise bad(col, f"expected {_kinds(kinds)}, found {_shown(out[col])}")
    for col in JSON_COLUMNS:
        value = out.get(col)
        if value is None:
            continue
        if not isinstance(value, str):
            raise bad(col, f"expected JSON text, found {_shown(value)}")
        try:
            out[col] = json.loads(value)
        except ValueError as exc:
            raise bad(col, f"malformed JSON ({exc})") from None
        kinds = JSON_TYPES.get(col, (object,))
        if not isinstance(out[col], kinds):
            raise bad(col, f"expected {_kinds(kinds)}, found {_shown(out[col])}")
    return out


def _kinds(kinds: tuple[type, ...]) -> str:
    return " or ".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _shown(value: Any) -> str:
    kind = TYPE_NAMES.get(type(value), type(value).__name__)
    if value is None:
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
