"""Concept names that belong to the model, not to one index: keyed by a hash of the teacher's weights and
the prototype id, in the state database (``<state_dir>/jobs.db``), so re-indexing the same checkpoint,
indexing it on other images, or indexing a re-saved or exported copy of it shows the same names.

Each index's SQLite keeps a copy of the names (what its routes, figures and sorting read): when an index is
opened its own names are migrated here (a prototype the store has no row for), then the store's names
are written into it; a name set through the API goes to both, and to the other open indexes of the model.
A removed name is kept as a row without a label, so an older index does not bring it back.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import closing
from pathlib import Path

import torch

from server.services.sqlite_store import SqliteStore

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS concept_names (
    model TEXT NOT NULL,              -- teacher_hash() of the checkpoint
    prototype INTEGER NOT NULL,
    label TEXT,                       -- NULL: the name was removed
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, prototype)
);
CREATE TABLE IF NOT EXISTS model_keys (
    checkpoint_sha256 TEXT PRIMARY KEY,
    model TEXT NOT NULL
);
"""

#: The teacher's modules in a SlotCon state dict (``docs/method.md`` §1: the EMA network that scores segments).
TEACHER_PREFIXES = ("encoder_k.", "projector_k.", "grouping_k.")


def teacher_hash(path: Path) -> str:
    """The first 32 hex digits of a sha256 over the teacher's tensors of the checkpoint at ``path`` (names in
    order, dtype, shape, bytes; a release checkpoint's ``module.`` prefix dropped), so two files holding the
    same weights share it however they were saved. Raises :class:`core.checkpoint.CheckpointError`."""
    from core.checkpoint import CheckpointError, read_checkpoint

    state = read_checkpoint(path).get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name} holds no model state")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    keys = sorted(k for k in state if k.startswith(TEACHER_PREFIXES)) or sorted(state)
    digest = hashlib.sha256()
    for key in keys:
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:32]


class NameStore(SqliteStore):
    """The concept names by model and prototype, and the model key of each checkpoint hash seen."""

    schema = _SCHEMA

    def model_for(self, checkpoint_sha256: str) -> str | None:
        """The model key stored for a checkpoint's content hash, or None."""
        with closing(self._connect()) as con:
            row = con.execute(
                "SELECT model FROM model_keys WHERE checkpoint_sha256 = ?", (checkpoint_sha256,)
            ).fetchone()
        return None if row is None else str(row[0])

    def remember_model(self, checkpoint_sha256: str, model: str) -> None:
        """Store the model key of a checkpoint's content hash."""
        with self._lock, closing(self._connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO model_keys VALUES (?, ?)", (checkpoint_sha256, model))

    def names(self, model: str) -> dict[int, str | None]:
        """{prototype: label or None (removed)} of a model."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT prototype, label FROM concept_names WHERE model = ?", (model,)).fetchall()
        return {int(k): label for k, label in rows}

    def set(self, model: str, prototype: int, label: str | None) -> None:
        """Name (or, with None, un-name) a model's prototype."""
        with self._lock, closing(self._connect()) as con, con:
            con.execute(
                "INSERT INTO concept_names VALUES (?, ?, ?, ?) ON CONFLICT(model, prototype) DO UPDATE SET "
                "label = excluded.label, updated_at = excluded.updated_at",
                (model, int(prototype), label, time.time()),
            )

    def migrate(self, model: str, labels: dict[int, str]) -> int:
        """Copy an index's ``labels`` for the prototypes the store has no row for; returns how many."""
        known = self.names(model)
        fresh = {k: v for k, v in labels.items() if k not in known}
        for k, label in fresh.items():
            self.set(model, k, label)
        return len(fresh)
