"""The server's own settings that outlive a restart (the default index), in the state database.

One key-value table in ``<state_dir>/jobs.db`` beside the jobs table (:mod:`server.services.jobstore`);
each call opens its own short connection, so request threads and the job watcher can use it at once.
"""

from __future__ import annotations

import time
from contextlib import closing

from server.services.sqlite_store import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

DEFAULT_INDEX = "default_index"


class StateStore(SqliteStore):
    """Get and set the server's persistent values by key."""

    schema = _SCHEMA

    def get(self, key: str) -> str | None:
        """The stored value, or None."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT value FROM server_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing what was there)."""
        with self._lock, closing(self._connect()) as con, con:
            con.execute(
                "INSERT INTO server_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, time.time()),
            )
