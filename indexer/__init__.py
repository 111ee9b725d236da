"""Concept indexer: checkpoint + image set → FAISS/SQLite index, slot statistics, Hungarian evaluation."""
