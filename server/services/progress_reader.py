"""Reading a job's progress: the trainer's ``metrics.jsonl`` and the indexer's ``--progress-file``."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class _Tail:
    offset: int = 0
    inode: int = -1
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


#: The events that end a run; other event lines (``budget``: the total a time budget fixed) are notes.
LIFECYCLE_EVENTS = frozenset({"finished", "stopped", "failed"})


class MetricsReader:
    """Incremental reader of ``metrics.jsonl`` files: each call parses only the bytes appended since
    the last one (a partial last line waits for its newline). Thread-safe.

    Rows with a ``step`` are metrics; rows with an ``event`` (``finished``/``stopped``/``failed``) are
    lifecycle events; other ``event`` rows are notes.
    """

    def __init__(self) -> None:
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def read(self, path: str | os.PathLike) -> _Tail:
        """The parsed rows and events of ``path`` so far (an empty tail when it does not exist)."""
        key = str(path)
        with self._lock:
            tail = self._tails.setdefault(key, _Tail())
            try:
                st = os.stat(key)
            except FileNotFoundError:
                return _Tail()
            if st.st_ino != tail.inode or st.st_size < tail.offset:  # new or truncated file
                tail = self._tails[key] = _Tail(inode=st.st_ino)
            if st.st_size > tail.offset:
                with open(key, "rb") as f:
                    f.seek(tail.offset)
                    chunk = f.read(st.st_size - tail.offset)
                complete = chunk[: chunk.rfind(b"\n") + 1]
                tail.offset += len(complete)
                for line in complete.splitlines():
                    self._parse(line, tail)
            return tail

    @staticmethod
    def _parse(line: bytes, tail: _Tail) -> None:
        if not line.strip():
            return
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("skipping a malformed metrics line: %r", line[:120])
            return
        if not isinstance(obj, dict):
            return
        if obj.get("event") in LIFECYCLE_EVENTS:
            tail.events.append(obj)
        elif "event" in obj:
            tail.notes.append(obj)
        elif "step" in obj:
            tail.rows.append(obj)

    def since(self, path: str | os.PathLike, step: int | None, limit: int) -> list[dict[str, Any]]:
        """Metric rows with ``step > since`` (all when None), at most ``limit``, oldest first."""
        rows = self.read(path).rows
        if step is not None:
            rows = [r for r in rows if _num(r.get("step"), -1) > step]
        return rows[:limit]

    def latest(self, path: str | os.PathLike) -> dict[str, Any] | None:
        """The last metrics row, or None."""
        rows = self.read(path).rows
        return rows[-1] if rows else None

    def final_event(self, path: str | os.PathLike) -> dict[str, Any] | None:
        """The last lifecycle event (``finished``, ``stopped``, ``failed``), or None."""
        events = self.read(path).events
        return events[-1] if events else None


def _num(x: Any, default: float) -> float:
    return float(x) if isinstance(x, (int, float)) else default


def read_progress_file(path: str | os.PathLike) -> dict[str, Any] | None:
    """The indexer's ``--progress-file`` JSON (done, total, rate, eta_s, stage), or None."""
    try:
        obj = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return obj if isinstance(obj, dict) else None


def fraction(done: Any, total: Any) -> float | None:
    """done/total clipped to [0, 1], or None when either is missing."""
    if not isinstance(done, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return None
    return max(0.0, min(1.0, float(done) / float(total)))
