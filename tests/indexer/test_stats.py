"""indexer.stats: the per-prototype table and the slot statistics, checked against counts recomputed here
from the ``segments`` table (of the real tiny index, and of a small index database written by hand with
known dead prototypes and label counts), and near-duplicates against a pairwise loop."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.recipes import NEAR_DUPLICATE_THRESHOLD
from indexer import schema
from indexer.stats import compute_stats, fill_prototypes, load_stats, near_duplicates, store_stats
from indexer.store import ConceptIndex


def _pairs_above(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(a, b, cosine) of every pair with cosine > threshold, one pair at a time."""
    out = []
    for a, b in itertools.combinations(range(len(vectors)), 2):
        u, v = vectors[a].astype(np.float64), vectors[b].astype(np.float64)
        nu, nv = max(math.sqrt(u @ u), 1e-12), max(math.sqrt(v @ v), 1e-12)
        cos = float(u @ v) / (nu * nv)
        if cos > threshold:
            out.append((a, b, cos))
    return sorted(out, key=lambda t: -t[2])


# ---------------------------------------------------------------- near_duplicates
def test_near_duplicates_on_known_angles() -> None:
    # unnormalised on purpose: cosines are of directions
    deg = np.deg2rad([0.0, 10.0, 30.0, 180.0])
    v = np.stack([np.cos(deg), np.sin(deg)], axis=1) * np.array([[1.0], [3.0], [0.5], [2.0]])
    got = near_duplicates(v, 0.85)
    assert [(d["a"], d["b"]) for d in got] == [(0, 1), (1, 2), (0, 2)]  # cos 10°, 20°, 30° = .985, .940, .866
    np.testing.assert_allclose([d["cosine"] for d in got], np.cos(np.deg2rad([10, 20, 30])), atol=1e-6)
    assert near_duplicates(v, 0.9) == got[:2]
    assert near_duplicates(v, 0.95) == got[:1]
    assert near_duplicates(v, 0.85, limit=2) == got[:2]
    assert near_duplicates(v, 0.99) == []
    assert len(near_duplicates(v, -1.0)) == 5  # 0 and 3 are opposite: cosine -1 is not above -1


def test_near_duplicates_threshold_is_strict() -> None:
    v = np.array([[1.0, 0.0], [3.0, 4.0]])  # cosine 3/5
    cos = near_duplicates(v, -1.0)[0]["cosine"]
    assert near_duplicates(v, cos) == []
    assert len(near_duplicates(v, cos - 1e-6)) == 1


def test_near_duplicates_edge_inputs() -> None:
    assert near_duplicates(np.zeros((0, 4)), 0.5) == []
    assert near_duplicates(np.ones((1, 4)), -1.0) == []
    # a zero vector has cosine 0 with everything instead of NaN
    got = near_duplicates(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), -0.5)
    assert got[0] == {"a": 1, "b": 2, "cosine": 1.0}
    assert sorted((d["a"], d["b"], d["cosine"]) for d in got[1:]) == [(0, 1, 0.0), (0, 2, 0.0)]


# ---------------------------------------------------------------- the real tiny index
def _independent(index_dir: Path) -> dict:
    conn = sqlite3.connect(index_dir / schema.DB_NAME)
    try:
        image_ids = [r[0] for r in conn.execute("SELECT id FROM images ORDER BY id")]
        segs = conn.execute("SELECT image_id, prototype, area FROM segments").fetchall()
    finally:
        conn.close()
    k = int(np.load(index_dir / schema.PROTOTYPES_NAME).shape[0])
    per_image = Counter(i for i, _, _ in segs)
    active = [per_image.get(i, 0) for i in image_ids]
    images = [len({i for i, p, _ in segs if p == q}) for q in range(k)]
    areas = [sum(a for _, p, a in segs if p == q) for q in range(k)]
    total = sum(areas)
    return {"k": k, "active": active, "images": images, "segments": [sum(p == q for _, p, _ in segs)
            for q in range(k)], "share": [a / total for a in areas], "n_seg": len(segs)}  # fmt: skip


def test_stats_of_the_tiny_index_match_the_segments_table(tiny_index: Path) -> None:
    want = _independent(tiny_index)
    with ConceptIndex.open(tiny_index) as ix:
        st = ix.stats()
    k = want["k"]
    assert (st.num_images, st.num_segments, st.num_prototypes) == (12, want["n_seg"], k)
    dead = [q for q in range(k) if want["images"][q] == 0]
    assert st.dead == dead and st.num_dead == len(dead) and st.num_alive == k - len(dead)
    assert st.per_prototype.images == want["images"]
    assert st.per_prototype.segments == want["segments"]
    np.testing.assert_allclose(st.per_prototype.pixel_share, want["share"], atol=1e-7)
    np.testing.assert_allclose(st.per_prototype.image_share, np.array(want["images"]) / 12, atol=1e-7)
    active = want["active"]
    ap = st.active_per_image
    assert (ap.min, ap.max) == (min(active), max(active))
    assert ap.mean == pytest.approx(sum(active) / len(active))
    assert ap.median == pytest.approx(float(np.median(active)))
    hist = Counter(active)
    assert ap.histogram == [hist.get(n, 0) for n in range(max(active) + 1)]
    # the long tail: by pixel share descending, cumulative share ends at 1
    shares = want["share"]
    assert [shares[q] for q in st.long_tail.order] == sorted(shares, reverse=True)
    assert st.long_tail.cumulative_pixel_share[-1] == pytest.approx(1.0)
    alive = sorted((q for q in range(k) if q not in dead), key=lambda q: (-want["images"][q], q))
    assert [a.id for a in st.most_active] == alive[:10]
    assert [a.images for a in st.most_active] == [want["images"][q] for q in alive[:10]]
    assert {a.id for a in st.least_active} == set(alive[-10:])
    assert st.duplicate_threshold == NEAR_DUPLICATE_THRESHOLD


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 0.1, 0.3, NEAR_DUPLICATE_THRESHOLD])
def test_near_duplicates_of_the_tiny_index_at_several_thresholds(tiny_index: Path, threshold: float) -> None:
    want = _pairs_above(np.load(tiny_index / schema.PROTOTYPES_NAME), threshold)
    with ConceptIndex.open(tiny_index) as ix:
        st = ix.stats(duplicate_threshold=threshold)
        stored = ix.stats()
    assert st.duplicate_threshold == threshold
    assert [(d.a, d.b) for d in st.near_duplicates] == [(a, b) for a, b, _ in want]
    np.testing.assert_allclose([d.cosine for d in st.near_duplicates], [c for *_, c in want], atol=1e-5)
    if threshold == -1.0:
        k = st.num_prototypes
        assert len(st.near_duplicates) == k * (k - 1) // 2  # random prototypes: no exactly opposite pair
    # asking at another threshold leaves the stored statistics alone
    assert stored.duplicate_threshold == NEAR_DUPLICATE_THRESHOLD
    assert stored.per_prototype == st.per_prototype


def test_refresh_stats_stores_the_new_threshold(tiny_index: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_index, tmp_path / "copy")
    with ConceptIndex.open(copy) as ix:
        ix.refresh_stats(duplicate_threshold=0.0)
    with ConceptIndex.open(copy) as ix:
        st = ix.stats()
    assert st.duplicate_threshold == 0.0
    want = _pairs_above(np.load(copy / schema.PROTOTYPES_NAME), 0.0)
    assert [(d.a, d.b) for d in st.near_duplicates] == [(a, b) for a, b, _ in want]


# ---------------------------------------------------------------- a hand-written index database
K = 5
CLASSES = ["sky", "road", "tree"]
# (image, prototype, score, area); prototypes 2 and 4 are never argmax (dead); image 3 has no segment
SEGMENTS = [
    (0, 0, 0.9, 40),
    (0, 1, 0.5, 24),
    (1, 0, 0.7, 30),
    (1, 3, 0.6, 34),
    (2, 0, 0.2, 10),
    (2, 1, 0.8, 50),
    (2, 3, 0.4, 4),
]


@pytest.fixture()
def hand_db(tmp_path: Path) -> sqlite3.Connection:
    conn = schema.create(tmp_path / schema.DB_NAME, schema.INDEX_SCHEMA)
    per_image = Counter(i for i, *_ in SEGMENTS)
    for i in range(4):
        conn.execute("INSERT INTO images VALUES (?, ?, 8, 8, 0, 0, 8, 8, ?)", (i, f"{i}.png", per_image.get(i, 0)))
    ordered = sorted(SEGMENTS, key=lambda s: (s[1], -s[2], s[0]))  # the merge's order
    for sid, (i, p, score, area) in enumerate(ordered):
        conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, 1, 0, 0, 1, 1, '', 0)", (sid, i, p, score, area))
    conn.execute("INSERT INTO skipped VALUES ('broken.jpg', 'cannot decode')")
    conn.commit()
    yield conn
    conn.close()


LABEL_COUNTS = np.array([[30, 10, 0], [0, 0, 0], [0, 0, 0], [1, 2, 5], [0, 0, 0]], dtype=np.int64)


def test_fill_prototypes_table(hand_db: sqlite3.Connection) -> None:
    fill_prototypes(hand_db, K, LABEL_COUNTS, CLASSES, labels={3: "lamp", 4: "unused"})
    rows = {r["id"]: dict(r) for r in hand_db.execute("SELECT * FROM prototypes")}
    assert sorted(rows) == list(range(K))
    total = sum(a for *_, a in SEGMENTS)
    for p in range(K):
        mine = [s for s in SEGMENTS if s[1] == p]
        r = rows[p]
        assert r["num_images"] == len({s[0] for s in mine})
        assert r["num_segments"] == len(mine)
        assert r["pixel_area"] == sum(s[3] for s in mine)
        assert r["pixel_share"] == pytest.approx(sum(s[3] for s in mine) / total)
        assert r["dead"] == int(not mine)
        if mine:
            assert r["mean_score"] == pytest.approx(sum(s[2] for s in mine) / len(mine))
        else:
            assert r["mean_score"] is None and r["first_segment"] is None
    # the best segment is the first of the prototype's id range (highest score)
    assert (rows[0]["first_segment"], rows[1]["first_segment"], rows[3]["first_segment"]) == (0, 3, 5)
    assert rows[0]["best_segment_id"] == 0
    # purity from the label counts; prototype 1 has no labelled pixel
    assert (rows[0]["majority_class"], rows[0]["majority_class_name"]) == (0, "sky")
    assert rows[0]["purity"] == pytest.approx(30 / 40) and rows[0]["labelled_pixels"] == 40
    assert (rows[3]["majority_class_name"], rows[3]["purity"]) == ("tree", pytest.approx(5 / 8))
    assert rows[1]["majority_class"] is None and rows[1]["purity"] is None and rows[1]["labelled_pixels"] == 0
    assert (rows[3]["label"], rows[4]["label"], rows[0]["label"]) == ("lamp", "unused", None)
    stored = sorted(tuple(r) for r in hand_db.execute("SELECT * FROM label_counts"))
    assert stored == sorted((int(k), int(c), int(LABEL_COUNTS[k, c])) for k, c in np.argwhere(LABEL_COUNTS > 0))


def test_fill_prototypes_rewrites_and_works_without_labels(hand_db: sqlite3.Connection) -> None:
    fill_prototypes(hand_db, K, LABEL_COUNTS, CLASSES)
    fill_prototypes(hand_db, K)  # a second fill replaces the first
    rows = hand_db.execute("SELECT majority_class, purity, labelled_pixels FROM prototypes").fetchall()
    assert len(rows) == K and all(tuple(r) == (None, None, None) for r in rows)
    assert hand_db.execute("SELECT COUNT(*) FROM label_counts").fetchone()[0] == 0


def test_compute_stats_on_the_hand_written_index(hand_db: sqlite3.Connection) -> None:
    fill_prototypes(hand_db, K)
    vectors = np.eye(K)[:, :4]
    vectors[4] = [1.0, 0.05, 0.0, 0.0]  # a near-duplicate of prototype 0
    st = compute_stats(hand_db, vectors, duplicate_threshold=0.99, top_n=2)
    assert (st.num_images, st.num_segments, st.num_prototypes, st.skipped_images) == (4, 7, K, 1)
    assert (st.dead, st.num_dead, st.num_alive) == ([2, 4], 2, 3)
    ap = st.active_per_image
    assert ap.histogram == [1, 0, 2, 1]  # image 3: none; images 0, 1: two; image 2: three
    assert (ap.min, ap.max, ap.mean, ap.median) == (0, 3, pytest.approx(7 / 4), 2.0)
    assert st.per_prototype.images == [3, 2, 0, 2, 0]
    assert st.per_prototype.image_share == [0.75, 0.5, 0.0, 0.5, 0.0]
    # pixel areas: 0 → 80, 1 → 74, 3 → 38; ties (the dead, 0) by id
    assert st.long_tail.order == [0, 1, 3, 2, 4]
    np.testing.assert_allclose(st.long_tail.cumulative_pixel_share, np.cumsum([80, 74, 38, 0, 0]) / 192)
    assert [(a.id, a.images) for a in st.most_active] == [(0, 3), (1, 2)]  # top_n, ties by id
    assert [(a.id, a.images) for a in st.least_active] == [(3, 2), (1, 2)]
    assert [(d.a, d.b) for d in st.near_duplicates] == [(0, 4)]


def test_store_and_load_stats_round_trip(hand_db: sqlite3.Connection) -> None:
    assert load_stats(hand_db) is None  # nothing stored yet
    fill_prototypes(hand_db, K)
    st = compute_stats(hand_db, np.eye(K))
    store_stats(hand_db, st)
    assert load_stats(hand_db) == st
    store_stats(hand_db, st)  # replaces, one row
    assert hand_db.execute("SELECT COUNT(*) FROM stats").fetchone()[0] == 1


@pytest.mark.parametrize("stored", ['{"num_images": 3}', "not json", "[]"])
def test_stats_stored_in_another_shape_are_recomputed(hand_db: sqlite3.Connection, stored: str) -> None:
    hand_db.execute("INSERT INTO stats VALUES ('slot_stats', ?)", (stored,))
    assert load_stats(hand_db) is None


def test_stats_json_is_plain(hand_db: sqlite3.Connection) -> None:
    fill_prototypes(hand_db, K)
    store_stats(hand_db, compute_stats(hand_db, np.eye(K)))
    raw = json.loads(hand_db.execute("SELECT value FROM stats").fetchone()[0])
    assert raw["dead"] == [2, 4] and raw["per_prototype"]["segments"] == [3, 2, 0, 2, 0]
