"""Index builds: atomic replacement, bad input, CLI and progress file, sharded torchrun equality."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import indexer.build as build_mod
from core.checkpoint import CheckpointError
from indexer.__main__ import main as index_main
from indexer.build import build_index
from indexer.store import ConceptIndex

REPO = Path(__file__).resolve().parents[2]


def _small_copy(synthetic_root: Path, dest: Path, n: int = 4) -> Path:
    (dest / "val2017").mkdir(parents=True)
    (dest / "labels" / "val2017").mkdir(parents=True)
    shutil.copy(synthetic_root / "synthetic.json", dest)
    for p in sorted((synthetic_root / "val2017").iterdir())[:n]:
        shutil.copy(p, dest / "val2017")
        shutil.copy(synthetic_root / "labels" / "val2017" / f"{p.stem}.png", dest / "labels" / "val2017")
    return dest


def _contents(index_dir: Path) -> dict:
    with ConceptIndex.open(index_dir) as ix:
        segs = [ix.segment(i) for i in range(ix.num_segments)]
        return {
            "images": [(i.id, i.file_name, i.width, i.height, i.crop_box) for i in ix.images(0, 10**6)],
            "segments": [(s.image_id, s.prototype, s.area, s.bbox, s.rle["counts"], s.rank) for s in segs],
            "scores": np.array([s.score for s in segs]),
            "vectors": np.stack([ix.segment_vector(i) for i in range(ix.num_segments)]),
            "prototypes": [(p.num_images, p.num_segments, p.dead, p.majority_class_name) for p in ix.prototypes()],
            "stats": {k: v for k, v in ix.stats().to_dict().items() if k != "per_prototype"},
        }


def test_interrupted_build_keeps_previous_index(tiny_checkpoint, synthetic_root, tmp_path, monkeypatch):
    data = _small_copy(synthetic_root, tmp_path / "data")
    out = build_index(tiny_checkpoint, data, tmp_path / "ix", batch_size=2)
    before = (out / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted mid-merge")

    monkeypatch.setattr(build_mod, "merge_shards", boom)
    with pytest.raises(KeyboardInterrupt):
        build_index(tiny_checkpoint, data, out, batch_size=2)
    assert (out / "manifest.json").read_text() == before
    ConceptIndex.open(out).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ix"]  # no temp dir left behind
    monkeypatch.undo()
    build_index(tiny_checkpoint, data, out, batch_size=2)  # a successful rebuild replaces it
    assert json.loads((out / "manifest.json").read_text())["built_at"]


def test_bad_inputs(tiny_checkpoint, synthetic_root, tmp_path, make_tiny_model):
    data = _small_copy(synthetic_root, tmp_path / "data", n=3)
    (data / "val2017" / "000000000999.jpg").write_bytes(b"not a jpeg")
    # a label map whose size does not match its image: purity ignores it, the image is still indexed
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "labels" / "val2017" / "000000000002.png")
    out = build_index(tiny_checkpoint, data, tmp_path / "ix", batch_size=2)
    with ConceptIndex.open(out) as ix:
        assert ix.num_images == 3
        assert ix.skipped_images()[0][0] == "val2017/000000000999.jpg"
        assert ix.manifest.counts.skipped == 1 and ix.stats().skipped_images == 1
        assert ix.manifest.counts.label_problems == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        build_index(tiny_checkpoint, empty, tmp_path / "ix2")
    with pytest.raises(FileNotFoundError):
        build_index(tiny_checkpoint, tmp_path / "missing", tmp_path / "ix2")
    model = make_tiny_model(0)
    backbone = tmp_path / "backbone.pth"
    torch.save({"model": {f"module.encoder_k.{k}": v for k, v in model.encoder_k.state_dict().items()}}, backbone)
    with pytest.raises(CheckpointError, match="cannot group"):
        build_index(backbone, data, tmp_path / "ix3")
    assert index_main(["--checkpoint", str(backbone), "--data", str(data), "--out", str(tmp_path / "ix3")]) == 2
    assert not (tmp_path / "ix2").exists() and not (tmp_path / "ix3").exists()


def test_cli_plain_folder_with_progress_file(tiny_checkpoint, synthetic_root, tmp_path, capsys):
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for p in sorted((synthetic_root / "val2017").iterdir())[:3]:
        Image.open(p).resize((120, 90)).save(folder / f"{p.stem}.png")
    progress = tmp_path / "progress.json"
    rc = index_main(["--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "photos"), "--out",
                     str(tmp_path / "ix"), "--workers", "0", "--batch-size", "2", "--progress-file", str(progress),
                     "--no-progress"])  # fmt: skip
    assert rc == 0
    state = json.loads(progress.read_text())
    assert state["done"] == state["total"] == 3 and state["stage"] == "done"
    with ConceptIndex.open(tmp_path / "ix") as ix:
        assert ix.split is None and ix.manifest.labels is None
        assert ix.image(0).file_name == "nested/000000000001.png" and ix.image(0).width == 120
        assert ix.prototypes()[0].purity is None


def test_two_process_torchrun_equals_one_process(tiny_checkpoint, synthetic_root, tmp_path, tiny_index):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside the interpreter")
    out = tmp_path / "ix2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "indexer", "--checkpoint",
           str(tiny_checkpoint), "--data", str(synthetic_root), "--out", str(out), "--batch-size", "4",
           "--workers", "0", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _contents(tiny_index), _contents(out)
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    assert one["images"] == two["images"]
    assert one["segments"] == two["segments"]
    assert one["prototypes"] == two["prototypes"]
    np.testing.assert_allclose(one["scores"], two["scores"], atol=1e-5)
    np.testing.assert_allclose(one["vectors"], two["vectors"], atol=1e-5)
    assert one["stats"] == two["stats"]


def test_release_checkpoint_indexes(synthetic_root, tmp_path, make_tiny_model):
    from core.checkpoint import to_release_state

    release = tmp_path / "release.pth"
    torch.save(to_release_state(make_tiny_model(0)), release)
    out = build_index(release, _small_copy(synthetic_root, tmp_path / "d", 2), tmp_path / "ix", batch_size=2)
    with ConceptIndex.open(out) as ix:
        assert ix.num_images == 2
