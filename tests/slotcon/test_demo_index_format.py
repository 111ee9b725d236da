"""``slotcon demo`` rebuilds an index of an older format instead of serving one the server would refuse."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.schema import INDEX_VERSION
from slotcon.demo import index_format_outdated


def test_outdated_index_formats_are_detected(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": INDEX_VERSION}))
    assert not index_format_outdated(manifest)
    manifest.write_text(json.dumps({"version": INDEX_VERSION - 1}))
    assert index_format_outdated(manifest)
    manifest.write_text("{not json")
    assert index_format_outdated(manifest)
