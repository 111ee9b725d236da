"""ConceptIndex queries against brute-force numpy rankings; labels, evaluations, mismatch refusal."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.checkpoint import file_sha256
from core.synthetic import CLASSES
from indexer.store import ConceptIndex, IndexMismatchError, IndexNotFoundError, IndexVersionError
from indexer.types import Manifest


@pytest.fixture()
def index(tiny_index):
    with ConceptIndex.open(tiny_index) as ix:
        yield ix


def _all_vectors(index: ConceptIndex) -> tuple[np.ndarray, np.ndarray]:
    vecs = np.stack([index.segment_vector(i) for i in range(index.num_segments)])
    protos = np.array([index.segment(i).prototype for i in range(index.num_segments)])
    return vecs, protos


def test_manifest_and_images(index, tiny_checkpoint, synthetic_root):
    m = index.manifest
    assert m == Manifest.load(index.index_dir) and Manifest.from_dict(m.to_dict()) == m
    assert m.checkpoint.sha256 == file_sha256(tiny_checkpoint)
    assert m.counts.images == index.num_images == 12
    assert m.resize == 256 and m.crop == 224 and index.dim == 32 and index.num_prototypes == 8
    img = index.image(3)
    assert img.path.is_file() and img.path.is_relative_to(synthetic_root.resolve())
    assert img.file_name == "val2017/" + img.path.name
    assert [i.id for i in index.images(2, 3)] == [2, 3, 4]
    with pytest.raises(KeyError):
        index.image(999)
    with pytest.raises(KeyError):
        index.segment(10**6)
    with pytest.raises(KeyError):
        index.prototype(8)


def test_top_segments_match_brute_force(index):
    """Ranked by score (the release's mean cosine, checked against the release in test_segments.py), best
    first; the score is the re-normalised vector's cosine times the mean's norm (<= 1), so never larger."""
    vecs, protos = _all_vectors(index)
    table = index.prototype_vectors()
    records = [index.segment(i) for i in range(index.num_segments)]
    for k in range(index.num_prototypes):
        mine = [r for r in records if r.prototype == k]
        expected = [r.id for r in sorted(mine, key=lambda r: (-r.score, r.image_id))]
        got = [s.id for s in index.top_segments(k, 0, 1000)]
        assert got == expected
        paged = [s.id for off in range(0, len(expected) + 3, 3) for s in index.top_segments(k, off, 3)]
        assert paged == expected
        for s in index.top_segments(k, 0, 5):
            cos = float(vecs[s.id] @ table[k])
            assert s.prototype == k and abs(s.score) <= abs(cos) + 1e-6 and s.score * cos >= 0
        p = index.prototype(k)
        assert p.num_segments == len(expected)
        assert p.best_segment_id == (expected[0] if expected else None)


def test_an_index_of_an_older_format_is_refused(tiny_index, tmp_path):
    import shutil

    old = shutil.copytree(tiny_index, tmp_path / "v1")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexVersionError) as e:
        ConceptIndex.open(old)
    message = str(e.value)
    assert "version 1" in message and "rebuild" in message and "slotcon index" in message and str(old) in message


def test_dead_prototypes_flagged_not_shown(index):
    dead = [p for p in index.prototypes() if p.dead]
    assert dead, "an untrained tiny model leaves some prototypes unused"
    for p in dead:
        assert p.num_images == 0 and p.best_segment_id is None
        assert index.top_segments(p.id) == []


def test_neighbors_and_search_match_brute_force(index):
    vecs, protos = _all_vectors(index)
    for sid in (0, 7, index.num_segments - 1):
        sims = vecs @ vecs[sid]
        sims[sid] = -np.inf
        expected = np.argsort(-sims, kind="stable")[:5]
        got = index.neighbors(sid, limit=5)
        assert [s.id for s, _ in got] == expected.tolist()
        assert [c for _, c in got] == pytest.approx(sims[expected].tolist(), abs=1e-5)
        k = int(protos[sid])
        restricted = index.neighbors(sid, limit=50, prototype=k)
        assert all(s.prototype == k for s, _ in restricted)
        assert len(restricted) == int((protos == k).sum()) - 1
    q = np.random.default_rng(0).normal(size=index.dim)
    sims = vecs @ (q / np.linalg.norm(q))
    assert [s.id for s, _ in index.search(q, limit=4)] == np.argsort(-sims)[:4].tolist()
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.zeros(3))


def test_labels_and_evaluations(tiny_index, tiny_checkpoint, synthetic_root):
    from indexer.evaluate import EvalConfig, run_eval

    result = run_eval(EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=32, limit=2))
    with ConceptIndex.open(tiny_index) as index:
        assert index.set_label(0, "rings").label == "rings"
        eval_id = index.store_eval(result, [(1, "val2017/x.jpg", b"pred", b"gt")])
    with ConceptIndex.open(tiny_index) as index:
        assert index.prototype(0).label == "rings"
        stored = index.eval_results()[0]
        assert stored.id == stored.result.eval_id == eval_id and stored.result.miou == result.miou
        assert stored.result == dataclasses.replace(result, eval_id=eval_id)
        assert index.eval_examples(eval_id) == [(1, b"pred", b"gt")]
        with pytest.raises(KeyError):
            index.eval_examples(eval_id + 100)
        index.set_label(0, None)
        assert index.prototype(0).label is None


def test_refuses_other_checkpoint(tiny_index, tiny_checkpoint, tmp_path):
    ConceptIndex.open(tiny_index, expected_checkpoint_sha=file_sha256(tiny_checkpoint)).close()
    with pytest.raises(IndexMismatchError) as e:
        ConceptIndex.open(tiny_index, expected_checkpoint_sha="f" * 64)
    assert "f" * 64 in str(e.value) and file_sha256(tiny_checkpoint) in str(e.value)
    with pytest.raises(IndexNotFoundError):
        ConceptIndex.open(tmp_path)


def test_stats_match_direct_counts(index):
    stats = index.stats().to_dict()
    segs = [index.segment(i) for i in range(index.num_segments)]
    per_image: dict[int, set[int]] = {}
    for s in segs:
        per_image.setdefault(s.image_id, set()).add(s.prototype)
    active = [len(per_image[i]) for i in sorted(per_image)]
    assert stats["num_images"] == len(active) == 12
    assert stats["active_per_image"]["mean"] == pytest.approx(np.mean(active))
    assert stats["active_per_image"]["histogram"] == np.bincount(active).tolist()
    used = {s.prototype for s in segs}
    assert stats["dead"] == sorted(set(range(8)) - used)
    images = [len({s.image_id for s in segs if s.prototype == k}) for k in range(8)]
    assert stats["per_prototype"]["images"] == images
    area = np.array([sum(s.area for s in segs if s.prototype == k) for k in range(8)], float)
    assert stats["per_prototype"]["pixel_share"] == pytest.approx((area / area.sum()).tolist(), abs=1e-7)
    assert stats["most_active"][0]["images"] == max(images)
    json.dumps(stats)


def test_near_duplicates():
    from indexer.stats import near_duplicates

    p = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 1.0]])
    pairs = near_duplicates(p, 0.9)
    assert [(d["a"], d["b"]) for d in pairs] == [(0, 1)]


def test_purity_from_labels(index):
    protos = [p for p in index.prototypes() if not p.dead]
    assert index.class_names and len(index.class_names) == len(CLASSES)
    for p in protos:
        counts = index.label_counts(p.id)
        assert p.majority_class_name == max(counts, key=counts.get)
        assert p.purity == pytest.approx(max(counts.values()) / sum(counts.values()))


def test_stats_cli(tiny_index, tmp_path, capsys):
    from indexer.stats_cli import main as stats_main

    assert stats_main([str(tiny_index), "--duplicate-threshold", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["duplicate_threshold"] == 0.5 and "per_prototype" not in out
    with ConceptIndex.open(tiny_index) as ix:
        assert ix.stats().duplicate_threshold == 0.5
        ix.refresh_stats()
    assert stats_main([str(tmp_path)]) == 2


def test_ivf_index_range_search_and_reconstruct(tmp_path):
    import faiss

    from indexer.vectors import build_faiss, faiss_spec, search

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = faiss_spec("ivf", 16, len(x), nlist=8)
    assert spec == "IVF8,Flat" and faiss_spec("ivf", 16, 100, nlist=8) == "Flat"
    assert faiss_spec("ivfpq", 16, len(x), nlist=8) == "IVF8,PQ4np"
    index = build_faiss(spec, 16, lambda: iter([x[:1000], x[1000:]]), lambda n: x[:n])
    faiss.write_index(index, str(tmp_path / "i.faiss"))
    index = faiss.read_index(str(tmp_path / "i.faiss"))
    np.testing.assert_allclose(index.reconstruct(1234), x[1234])
    sims, ids = search(index, x[1500], 5, id_range=(1400, 1600))
    assert ids[0][0] == 1500 and ((ids[0] >= 1400) & (ids[0] < 1600)).all()
    sims, ids = search(index, x[:3], 4)
    assert ids[:, 0].tolist() == [0, 1, 2]
    _, ids = search(index, x[0], 3, id_range=(5, 5))
    assert (ids == -1).all()
