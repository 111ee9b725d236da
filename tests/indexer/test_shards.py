"""indexer.shards: what a rank writes (ShardWriter) and the merge into ``index.db`` + ``segments.faiss``.

The segmentations are built here by hand (real masks, RLEs and vectors, known scores), so the merged order
(prototype, score descending, image id) and the vector permutation are checked against a sort done in the
test, and the merge must not depend on how the images were split between shards.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from indexer import schema
from indexer.segments import ImageSegmentation
from indexer.shards import ShardWriter, merge_shards, merged_label_counts

DIM, K, C = 8, 4, 3
SIZE = (6, 4)  # (width, height) of every image


def _seg(image_id: int, protos: list[int], scores: list[float], classes: int = C) -> ImageSegmentation:
    """A real segmentation: prototype p owns columns of a 6×4 image; vector = a one-hot code of
    (image, prototype) so every segment's vector is unique and recognisable after the merge."""
    w, h = SIZE
    s = len(protos)
    masks = np.zeros((s, h, w), dtype=np.uint8)
    for i in range(s):
        masks[i, :, i::s] = 1
    rles = [mask_utils.encode(np.asfortranarray(m))["counts"].decode() for m in masks]
    vectors = np.stack([_code(image_id, p) for p in protos]) if s else np.zeros((0, DIM), np.float32)
    label_counts = None
    if classes:
        label_counts = np.array([[image_id + p, p, 1][:classes] for p in protos], dtype=np.int64).reshape(s, classes)
    return ImageSegmentation(
        prototypes=np.array(protos, dtype=np.int64), vectors=vectors, scores=np.array(scores, np.float32),
        feature_areas=np.array([3] * s), areas=masks.reshape(s, -1).sum(1), bboxes=np.array([[i, 0, 1, h] for i in
        range(s)]).reshape(s, 4), rles=rles, label_counts=label_counts,
    )  # fmt: skip


def _code(image_id: int, proto: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[proto] = 1.0
    v[K + image_id % K] = 0.5 + image_id  # unique per (image, prototype) for these tests
    return v


# image id → (prototypes, scores); image 3 ties image 1 on prototype 2 (same score): lower id first
IMAGES = {
    1: ([0, 2], [0.5, 0.9]),
    2: ([0, 1, 3], [0.7, 0.2, 0.4]),
    3: ([2], [0.9]),
    4: ([0, 3], [0.1, 0.8]),
}


def _write(directory: Path, image_ids: list[int], classes: int = C, skipped: tuple[str, ...] = ()) -> Path:
    writer = ShardWriter(directory, DIM, K, classes)
    for i in image_ids:
        protos, scores = IMAGES[i]
        writer.add_image(i, f"img{i}.png", SIZE, (0, 0, *SIZE), _seg(i, protos, scores, classes))
    for name in skipped:
        writer.add_skipped(name, "cannot decode")
    writer.close()
    return directory


def _expected_order() -> list[tuple[int, int, float]]:
    """(prototype, image id, score) of every segment in the merged order, sorted independently here."""
    rows = [(p, i, s) for i, (ps, ss) in IMAGES.items() for p, s in zip(ps, ss, strict=True)]
    return sorted(rows, key=lambda r: (r[0], -np.float32(r[2]), r[1]))


def _merged(out: Path) -> tuple[list[sqlite3.Row], np.ndarray]:
    conn = schema.connect(out / schema.DB_NAME, readonly=True)
    try:
        rows = conn.execute("SELECT * FROM segments ORDER BY id").fetchall()
    finally:
        conn.close()
    index = faiss.read_index(str(out / schema.FAISS_NAME))
    vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, DIM), np.float32)
    return rows, vectors


def test_shard_writer_files(tmp_path: Path) -> None:
    shard = _write(tmp_path / "s0", [1, 2], skipped=("bad.jpg",))
    rows = 2 + 3
    assert (shard / "raw.f32").stat().st_size == rows * DIM * 4
    raw = np.fromfile(shard / "raw.f32", dtype=np.float32).reshape(rows, DIM)
    np.testing.assert_array_equal(raw, np.stack([_code(1, 0), _code(1, 2), _code(2, 0), _code(2, 1), _code(2, 3)]))
    conn = sqlite3.connect(shard / "raw.db")
    assert conn.execute("SELECT raw_row, image_id, prototype FROM raw_segments ORDER BY raw_row").fetchall() == [
        (0, 1, 0),
        (1, 1, 2),
        (2, 2, 0),
        (3, 2, 1),
        (4, 2, 3),
    ]
    assert conn.execute("SELECT id, num_segments, width, height FROM raw_images ORDER BY id").fetchall() == [
        (1, 2, 6, 4),
        (2, 3, 6, 4),
    ]
    assert conn.execute("SELECT * FROM skipped").fetchall() == [("bad.jpg", "cannot decode")]
    conn.close()
    counts = np.load(shard / "label_counts.npy")
    want = np.zeros((K, C), np.int64)
    for i in (1, 2):
        for p in IMAGES[i][0]:
            want[p] += [i + p, p, 1]
    np.testing.assert_array_equal(counts, want)


def test_merge_orders_by_prototype_then_score_then_image_and_permutes_vectors(tmp_path: Path) -> None:
    shards = [_write(tmp_path / "s0", [1, 2, 3, 4], skipped=("x.jpg",))]
    out = tmp_path / "out"
    out.mkdir()
    counts = merge_shards(shards, out, DIM, "Flat")
    assert counts == {"images": 4, "segments": 8, "skipped": 1}
    rows, vectors = _merged(out)
    want = _expected_order()
    assert [(r["prototype"], r["image_id"]) for r in rows] == [(p, i) for p, i, _ in want]
    assert [r["id"] for r in rows] == list(range(8))
    np.testing.assert_allclose([r["score"] for r in rows], [s for *_, s in want], rtol=1e-6)
    # rank restarts at 0 for every prototype
    ranks: dict[int, int] = {}
    for r in rows:
        assert r["rank"] == ranks.get(r["prototype"], 0)
        ranks[r["prototype"]] = r["rank"] + 1
    # FAISS row i is the vector of segment i
    np.testing.assert_array_equal(vectors, np.stack([_code(i, p) for p, i, _ in want]))
    assert not (out / ".merge.db").exists()


def test_merge_does_not_depend_on_the_split_between_shards(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    merge_shards([_write(tmp_path / "a0", [1, 2, 3, 4])], one, DIM, "Flat")
    two = tmp_path / "two"
    two.mkdir()
    split = [_write(tmp_path / "b0", [4, 2]), _write(tmp_path / "b1", []), _write(tmp_path / "b2", [3, 1])]
    merge_shards(split, two, DIM, "Flat")
    rows1, vec1 = _merged(one)
    rows2, vec2 = _merged(two)
    assert [tuple(r) for r in rows1] == [tuple(r) for r in rows2]
    np.testing.assert_array_equal(vec1, vec2)


def test_merge_into_an_ivf_index_reconstructs_every_segment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    merge_shards([_write(tmp_path / "s0", [1, 2]), _write(tmp_path / "s1", [3, 4])], out, DIM, "IVF2,Flat")
    rows, vectors = _merged(out)
    assert isinstance(faiss.read_index(str(out / schema.FAISS_NAME)), faiss.IndexIVF)
    np.testing.assert_array_equal(vectors, np.stack([_code(r["image_id"], r["prototype"]) for r in rows]))


def test_merge_of_shards_without_segments(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    counts = merge_shards([_write(tmp_path / "s0", [], skipped=("a.jpg", "b.jpg"))], out, DIM, "Flat")
    assert counts == {"images": 0, "segments": 0, "skipped": 2}
    rows, vectors = _merged(out)
    assert rows == [] and vectors.shape == (0, DIM)


def test_the_same_image_in_two_shards_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(sqlite3.IntegrityError):
        merge_shards([_write(tmp_path / "s0", [1]), _write(tmp_path / "s1", [1])], out, DIM, "Flat")


def test_merge_in_a_directory_whose_name_has_a_quote(tmp_path: Path) -> None:
    """Bug (fixed): ``ATTACH DATABASE '<path>'`` was built by string formatting, so an output or shard path
    with an apostrophe (``/data/o'brien/index``) was a SQL syntax error."""
    root = tmp_path / "o'brien"
    out = root / "out"
    out.mkdir(parents=True)
    counts = merge_shards([_write(root / "s0", [1, 2]), _write(root / "s1", [3])], out, DIM, "Flat")
    assert counts["segments"] == 6


def test_merged_label_counts_sums_the_shards(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "a", [1, 2]), _write(tmp_path / "b", [3, 4])
    total = merged_label_counts([a, b])
    np.testing.assert_array_equal(total, np.load(a / "label_counts.npy") + np.load(b / "label_counts.npy"))
    assert total.sum() == sum(i + p + p + 1 for i, (ps, _) in IMAGES.items() for p in ps)


def test_merged_label_counts_is_none_without_labels(tmp_path: Path) -> None:
    assert merged_label_counts([_write(tmp_path / "a", [1, 2], classes=0)]) is None
    assert merged_label_counts([]) is None
