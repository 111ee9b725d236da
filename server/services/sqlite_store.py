"""One SQLite file of the server's state (jobs, the default index, concept names): created with its schema in
WAL mode, opened afresh per call so every thread gets its own connection."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path


class SqliteStore:
    """Base of the state stores: ``db_path`` created with ``schema``; :meth:`_connect` opens a connection
    (rows as ``sqlite3.Row`` when ``rows`` is set); ``_lock`` serialises a store's writes."""

    schema = ""
    rows = False

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(self.schema)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=10.0)
        if self.rows:
            con.row_factory = sqlite3.Row
        return con
