"""The jobs table: one SQLite row per child process the server started (train, index, eval).

Lives in ``<state_dir>/jobs.db`` so jobs survive server restarts. Each call opens its own short
connection (SQLite in WAL mode), so the store is safe to use from the watcher thread and from
request threads at once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from server.services.sqlite_store import SqliteStore

ACTIVE = ("running", "stopping")
FINAL = ("succeeded", "failed", "stopped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,               -- train | index | eval
    name TEXT NOT NULL,               -- run / index / eval name (never a client path)
    status TEXT NOT NULL,             -- running | stopping | succeeded | failed | stopped
    config TEXT NOT NULL,             -- the request, JSON
    argv TEXT NOT NULL,               -- the child's command line, JSON list
    pid INTEGER,
    output_dir TEXT NOT NULL,
    progress_path TEXT NOT NULL,      -- metrics.jsonl (train) or --progress-file JSON (index, eval)
    done_path TEXT,                   -- a file whose existence means success (when no exit code is known)
    log_path TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    message TEXT,
    stop_requested_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


@dataclass
class JobRow:
    """One row of the jobs table (``config`` and ``argv`` decoded)."""

    id: int
    kind: str
    name: str
    status: str
    config: dict[str, Any]
    argv: list[str]
    pid: int | None
    output_dir: str
    progress_path: str
    done_path: str | None
    log_path: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    message: str | None = None
    stop_requested_at: float | None = None

    @property
    def active(self) -> bool:
        """True while the child may still be running."""
        return self.status in ACTIVE


def _row(r: sqlite3.Row) -> JobRow:
    d = dict(r)
    d["config"] = json.loads(d["config"])
    d["argv"] = json.loads(d["argv"])
    return JobRow(**d)


class JobStore(SqliteStore):
    """CRUD on the jobs table in ``<state_dir>/jobs.db``."""

    schema = _SCHEMA
    rows = True

    def insert(
        self,
        *,
        kind: str,
        name: str,
        config: dict,
        argv: list[str],
        output_dir: str,
        progress_path: str,
        log_path: str,
        done_path: str | None = None,
    ) -> int:
        """Add a job in status ``running`` (pid set later by :meth:`update`); returns its id."""
        with self._lock, closing(self._connect()) as con, con:
            cur = con.execute(
                "INSERT INTO jobs (kind, name, status, config, argv, output_dir, progress_path, done_path,"
                " log_path, created_at) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    name,
                    json.dumps(config),
                    json.dumps(argv),
                    output_dir,
                    progress_path,
                    done_path,
                    log_path,
                    time.time(),
                ),
            )
            return int(cur.lastrowid)

    def update(self, job_id: int, **values: Any) -> None:
        """Set columns of one job (``argv``/``config`` are JSON-encoded)."""
        if not values:
            return
        for key in ("argv", "config"):
            if key in values:
                values[key] = json.dumps(values[key])
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock, closing(self._connect()) as con, con:
            con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))  # noqa: S608

    def get(self, job_id: int) -> JobRow | None:
        """The job, or None."""
        with closing(self._connect()) as con:
            r = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(r) if r else None

    def list(
        self, kind: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobRow]:
        """Jobs, newest first, optionally filtered by kind and status."""
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if status:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with closing(self._connect()) as con:
            return [_row(r) for r in con.execute(sql, (*args, limit, offset))]

    def active(self, kind: str | None = None) -> list[JobRow]:
        """Jobs in an active status (running or stopping)."""
        rows = self.list(kind=kind, limit=10_000)
        return [r for r in rows if r.active]

    def count(self) -> int:
        """Number of jobs in the table."""
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
