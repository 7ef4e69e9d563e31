"""Claims with leases, so that scorers sharing one results database do each step once.

Before a step runs, its scorer claims it in the ``claims`` table of the results database (one
``BEGIN IMMEDIATE`` transaction: check that no ``ok`` result exists and that nobody else holds a
live claim, then take it). A heartbeat thread renews the scorer's leases while its steps run.
A claim is taken over when its lease expired, or at once when its owner is a process on this
host that no longer exists (a scorer killed with SIGKILL). A finished claim stays, marked
``finished``: another scorer that started before it finished treats the step as done (even if it
failed: the failure is stored, a later run retries it), so a step is never run twice at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioprior.registry.base.atomic import host, pid_alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    claim_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'finished')),
    expires_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    label TEXT
);
"""

MINE, DONE, BUSY = "mine", "done", "busy"


def claim_key(step: Any) -> str:
    """An evaluation is claimed per submission (its row is); a training by its content key."""
    submission = getattr(step, "submission", None)
    return f"{submission}/{step.key}" if submission else step.key


def migrate_claims(conn: sqlite3.Connection) -> None:
    """Additive migration: the ``claims`` table (a table of its own; results are untouched)."""
    conn.executescript(SCHEMA)


class Claims:
    """The claims of one scorer (``owner``) in the database at ``db``."""

    def __init__(
        self,
        db: str | Path,
        lease_s: float = 60.0,
        weights_dir: str | Path | None = None,
        done: Callable[[sqlite3.Connection, Any], bool] | None = None,
    ):
        if lease_s <= 0:
            raise ValueError(f"lease must be positive (got {lease_s})")
        self.db = str(db)
        self.lease_s = lease_s
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.done_check = done or self._done
        self.host, self.pid = host(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.session_start = time.time()
        self.conn = self._connect()
        migrate_claims(self.conn)
        week = 7 * 24 * 3600  # finished claims only matter to scorers running at the same time
        self.conn.execute(
            "DELETE FROM claims WHERE state = 'finished' AND updated_at < ?", (time.time() - week,)
        )
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    # -- the question "is this step done?" ------------------------------------------------------
    def _done(self, conn: sqlite3.Connection, step: Any) -> bool:
        submission = getattr(step, "submission", None)
        if submission is not None:
            try:
                row = conn.execute(
                    "SELECT 1 FROM results WHERE job_key = ? AND submission = ? AND status = 'ok'",
                    (step.key, submission),
                ).fetchone()
            except sqlite3.OperationalError:  # no results table yet
                return False
            return row is not None
        if getattr(step, "kind", None) == "train" and self.weights_dir is not None:
            return (self.weights_dir / f"{step.key}.safetensors").exists()
        return False

    # -- claiming -------------------------------------------------------------------------------
    def acquire(self, step: Any) -> str:
        """``mine`` (run it), ``done`` (someone finished it: skip) or ``busy`` (another live
        scorer runs it: ask again later)."""
        key = claim_key(step)
        now = time.time()
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self.done_check(conn, step):
                    conn.execute("COMMIT")
                    return DONE
                row = conn.execute("SELECT * FROM claims WHERE claim_key = ?", (key,)).fetchone()
                if row is not None and row["owner"] != self.owner:
                    if row["state"] == "finished" and row["updated_at"] >= self.session_start:
                        conn.execute("COMMIT")
                        return DONE
                    if row["state"] == "running" and self._alive(row, now):
                        conn.execute("COMMIT")
                        return BUSY
                conn.execute(
                    "INSERT INTO claims (claim_key, owner, host, pid, state, expires_at, "
                    "updated_at, label) VALUES (?, ?, ?, ?, 'running', ?, ?, ?) "
                    "ON CONFLICT (claim_key) DO UPDATE SET owner = excluded.owner, "
                    "host = excluded.host, pid = excluded.pid, state = 'running', "
                    "expires_at = excluded.expires_at, updated_at = excluded.updated_at, "
                    "label = excluded.label",
                    (
                        key,
                        self.owner,
                        self.host,
                        self.pid,
                        now + self.lease_s,
                        now,
                        getattr(step, "label", ""),
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (a full disk):
                    conn.execute("ROLLBACK")  # its error is the one to see, not ROLLBACK's
                raise
            self.held.add(key)
        self._ensure_heartbeat()
        return MINE

    def _alive(self, row: sqlite3.Row, now: float) -> bool:
        if row["expires_at"] < now:
            return False
        if row["host"] == self.host and row["pid"] != self.pid:
            return pid_alive(row["pid"])
        return True

    def finish(self, step: Any) -> None:
        """The step's outcome is stored: mark the claim finished (kept, see the module doc)."""
        key = claim_key(step)
        with self._lock:
            self.conn.execute(
                "UPDATE claims SET state = 'finished', updated_at = ? "
                "WHERE claim_key = ? AND owner = ?",
                (time.time(), key, self.owner),
            )
            self.held.discard(key)

    def release(self, step: Any) -> None:
        """Give a claim back without finishing (the step was not run)."""
        key = claim_key(step)
        with self._lock:
            self.conn.execute(
                "DELETE FROM claims WHERE claim_key = ? AND owner = ? AND state = 'running'",
                (key, self.owner),
            )
            self.held.discard(key)

    def renew(self) -> int:
        """Push the leases of every claim this scorer holds; returns how many."""
        with self._lock:
            if not self.held:
                return 0
            cur = self.conn.execute(
                "UPDATE claims SET expires_at = ? WHERE owner = ? AND state = 'running'",
                (time.time() + self.lease_s, self.owner),
            )
            return cur.rowcount

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(
                target=self._beat, name="bioprior-claims", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except sqlite3.Error:
                pass  # a busy database: the next beat tries again, well within the lease

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        with self._lock:
            for key in list(self.held):
                self.conn.execute(
                    "DELETE FROM claims WHERE claim_key = ? AND owner = ? AND state = 'running'",
                    (key, self.owner),
                )
            self.held.clear()
            self.conn.close()
