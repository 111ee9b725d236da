"""indexer.compare on real small indexes: identity, a permuted checkpoint, a split prototype, timelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import atomic_save, read_checkpoint, save_checkpoint
from indexer.build import build_index
from indexer.compare import DEFAULT_MIN_IOU, analyse, compare, reanalyse, timeline
from indexer.compare_cli import build_parser, main
from indexer.store import ConceptIndex

EMBED_KEYS = ("grouping_q.slot_embed.weight", "grouping_k.slot_embed.weight")
PERM = [3, 7, 0, 5, 1, 6, 2, 4]  # row i of the permuted checkpoint is row PERM[i] of the original


def _write_with_prototypes(src: Path, dst: Path, edit) -> Path:
    ckpt = read_checkpoint(src)
    state = dict(ckpt["model"])
    for key in EMBED_KEYS:
        state[key] = edit(state[key].clone())
    atomic_save({**ckpt, "model": state}, dst)
    return dst


@pytest.fixture(scope="module")
def permuted_index(tmp_path_factory, tiny_checkpoint: Path, synthetic_root: Path) -> Path:
    """The tiny checkpoint with its prototype rows permuted by PERM, indexed."""
    d = tmp_path_factory.mktemp("perm")
    ckpt = _write_with_prototypes(tiny_checkpoint, d / "perm.pth", lambda w: w[torch.tensor(PERM)])
    return build_index(ckpt, synthetic_root, d / "index", split="val2017", batch_size=4)


@pytest.fixture(scope="module")
def split_setup(tmp_path_factory, tiny_checkpoint: Path, synthetic_root: Path, tiny_index: Path):
    """(index, j, i): the tiny checkpoint's largest prototype j replaced by two near copies, in slots j and
    a dead slot i, pushed apart along the main direction in which j's segment vectors vary, so the two
    share j's pixels."""
    with ConceptIndex.open(tiny_index) as idx:
        protos = idx.prototypes()
        j = max(protos, key=lambda p: p.pixel_share).id
        dead = [p.id for p in protos if p.dead]
        lo, hi = idx.prototype_range(j)
        vectors = np.stack([idx.segment_vector(s) for s in range(lo, hi)])
        c = idx.prototype_vectors()[j]
    assert dead, "the tiny model has dead prototypes to duplicate into"
    i = dead[0]
    x = vectors - vectors.mean(0)
    x -= np.outer(x @ c, c)
    d = np.linalg.svd(x, full_matrices=False)[2][0]
    d -= (d @ c) * c
    d /= np.linalg.norm(d)
    eps = 0.05

    def edit(w: torch.Tensor) -> torch.Tensor:
        n = w[j].norm()
        for slot, sign in ((i, 1.0), (j, -1.0)):
            v = torch.from_numpy(c + sign * eps * d)
            w[slot] = v / v.norm() * n
        return w

    out = tmp_path_factory.mktemp("dup")
    ckpt = _write_with_prototypes(tiny_checkpoint, out / "dup.pth", edit)
    return build_index(ckpt, synthetic_root, out / "index", split="val2017", batch_size=4), j, i


def _active(index_dir: Path) -> list[int]:
    with ConceptIndex.open(index_dir) as idx:
        return [p.id for p in idx.prototypes() if not p.dead]


def test_index_with_itself_matches_every_prototype_to_itself(tiny_index: Path):
    c = compare(tiny_index, tiny_index)
    active = _active(tiny_index)
    assert len(active) >= 2
    assert c.active_a == c.active_b == active
    assert c.mapping() == {k: k for k in active}
    assert all(p.iou == pytest.approx(1.0) and p.overlap == p.area_a == p.area_b for p in c.pairs)
    assert (c.splits, c.merges, c.born, c.died) == ([], [], [], [])
    assert c.same_id_matches == len(active) and c.num_images == 12
    # the overlap matrix of an index with itself is diagonal
    assert np.count_nonzero(c.overlap - np.diag(np.diag(c.overlap))) == 0
    assert c.num_pixels == int(np.trace(c.overlap))


def test_permuted_prototypes_recover_the_permutation(tiny_index: Path, permuted_index: Path):
    c = compare(tiny_index, permuted_index)
    inverse = {old: new for new, old in enumerate(PERM)}
    active = _active(tiny_index)
    assert c.mapping() == {k: inverse[k] for k in active}
    assert all(p.iou == pytest.approx(1.0) for p in c.pairs)
    assert c.same_id_matches == sum(inverse[k] == k for k in active)
    assert (c.splits, c.merges, c.born, c.died) == ([], [], [], [])
    d = json.loads(c.to_json())
    assert d["summary"]["matched"] == len(active) and d["summary"]["mean_iou"] == pytest.approx(1.0)
    assert {(p["a"], p["b"]) for p in d["pairs"]} == set(c.mapping().items())


def test_duplicated_prototype_shows_a_split_and_reversed_a_merge(tiny_index: Path, split_setup):
    dup_index, j, i = split_setup
    c = compare(tiny_index, dup_index)
    assert [r.source for r in c.splits] == [j]
    (split,) = c.splits
    assert sorted(split.parts) == sorted([i, j])
    assert split.coverage > 0.9 and min(split.part_coverage) > 0.2 and min(split.part_purity) > 0.8
    assert c.mapping()[j] in (i, j)  # j is matched to the larger half
    assert c.born == [] and i in c.active_b and i not in c.active_a

    r = compare(dup_index, tiny_index)
    assert [m.source for m in r.merges] == [j] and sorted(r.merges[0].parts) == sorted([i, j])
    assert r.splits == [] and r.died == []


def test_analyse_classifies_born_died_and_ignores_weak_pairs():
    o = np.zeros((3, 4), dtype=np.int64)
    o[0, 0], o[1, 1] = 100, 90  # matched
    o[2, :2], o[2, 3] = (4, 3), 2  # A2 spread over B0, B1, B3 (at most 44 % in one): no counterpart, died
    o[0, 3], o[1, 3] = 2, 2  # B3 spread over A0, A1, A2 (a third in each): IoU 2/13 with A2, below 0.2: born
    pairs, splits, merges, born, died, act_a, act_b = analyse(o)
    assert [(p.a, p.b) for p in pairs] == [(0, 0), (1, 1)]
    assert died == [2] and born == [3] and splits == merges == []
    assert act_a == [0, 1, 2] and act_b == [0, 1, 3]
    # with min_iou 0.1 the weak pair is a match
    pairs, splits, merges, born, died, *_ = analyse(o, min_iou=0.1)
    assert [(p.a, p.b) for p in pairs] == [(0, 0), (1, 1), (2, 3)] and born == died == []
    # B0 split into halves B0 and B2 lying inside A0
    o[0, 0], o[0, 2] = 50, 50
    pairs, splits, *_ = analyse(o)
    assert [(r.source, sorted(r.parts)) for r in splits] == [(0, [0, 2])]


def test_an_absorbed_prototype_is_merged_not_died():
    """A1's pixels all go to B0, which continues A0: A1 was merged into B0 though it is only 5 % of it
    (under min_part); seen from B, B0 split into A0 and A1."""
    o = np.array([[900, 0], [50, 0], [0, 500]])
    pairs, splits, merges, born, died, *_ = analyse(o)
    assert [(p.a, p.b) for p in pairs] == [(0, 0), (2, 1)]
    assert died == [] and born == [] and splits == []
    (merge,) = merges
    assert (merge.kind, merge.source, merge.parts, merge.absorbed) == ("merge", 0, [0, 1], [1])
    assert merge.part_coverage == pytest.approx([900 / 950, 50 / 950]) and merge.part_purity == [1.0, 1.0]
    assert merge.coverage == pytest.approx(1.0)
    pairs, splits, merges, born, died, *_ = analyse(o.T)
    assert merges == [] and born == [] and died == []
    (split,) = splits
    assert (split.source, split.parts, split.absorbed) == (0, [0, 1], [1])
    # a part of its own size (at least min_part) is no absorption
    pairs, splits, merges, *_ = analyse(np.array([[900, 0], [200, 0], [0, 500]]))
    assert merges[0].parts == [0, 1] and merges[0].absorbed == []


def test_the_default_minimum_iou_of_a_match_is_0_2():
    assert DEFAULT_MIN_IOU == 0.2 and build_parser().parse_args(["a", "b"]).min_iou == 0.2
    weak = np.array([[15, 0], [85, 100]])  # A0-B0 IoU 15/100 = 0.15: below 0.2
    pairs, *_ = analyse(weak)
    assert [(p.a, p.b) for p in pairs] == [(1, 1)]
    pairs, *_ = analyse(weak, min_iou=0.1)
    assert [(p.a, p.b) for p in pairs] == [(0, 0), (1, 1)]


def test_timeline_over_checkpoints(tiny_index: Path, permuted_index: Path, split_setup, tmp_path: Path):
    dup_index, j, i = split_setup
    t = timeline([tiny_index, permuted_index, dup_index])
    assert [p["active"] for p in t.points] == [len(_active(x)) for x in (tiny_index, permuted_index, dup_index)]
    assert all(p["active"] + p["dead"] == 8 for p in t.points)
    first, second = t.intervals
    assert first["matched"] == t.points[0]["active"] and first["mean_iou"] == pytest.approx(1.0)
    assert first["splits"] == first["merges"] == first["born"] == first["died"] == 0
    assert second["splits"] == 1 and second["split_list"][0]["source"] == PERM.index(j)
    json.loads(t.to_json())
    with pytest.raises(ValueError, match="two or more"):
        timeline([tiny_index])

    out = tmp_path / "t.json"
    assert main(["--timeline", str(tiny_index), str(permuted_index), str(dup_index), "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["intervals"]) == 2


def test_cli(tiny_index: Path, permuted_index: Path, tmp_path: Path, capsys):
    out = tmp_path / "c.json"
    assert main([str(tiny_index), str(permuted_index), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"matched {len(_active(tiny_index))} (mean IoU 1.000" in text
    d = json.loads(out.read_text())
    assert d["summary"]["matched"] == len(_active(tiny_index))
    assert main([str(tiny_index), str(tmp_path / "nowhere")]) == 2
    assert "not a concept index" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tiny_index)])
    assert e.value.code == 2


def test_no_shared_images_is_refused(tiny_index: Path, tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path):
    train = build_index(tiny_checkpoint, synthetic_root, tmp_path / "train", split="train2017", batch_size=8)
    with pytest.raises(ValueError, match="share no image"):
        compare(tiny_index, train)


def test_k256_self_comparison(make_tiny_model, synthetic_root: Path, tmp_path: Path):
    ckpt = save_checkpoint(tmp_path / "k256.pth", make_tiny_model(0, num_prototypes=256), epoch=0, step=0)
    index = build_index(ckpt, synthetic_root, tmp_path / "k256", split="val2017", batch_size=4)
    c = compare(index, index)
    assert c.overlap.shape == (256, 256)
    assert c.mapping() == {k: k for k in _active(index)} and len(c.pairs) >= 2


def test_reanalyse_equals_a_fresh_comparison(tiny_index: Path, split_setup) -> None:
    dup_index, j, i = split_setup
    c = compare(tiny_index, dup_index)
    for min_iou in (0.0, 0.5, 0.99):
        again = reanalyse(c, min_iou=min_iou).to_dict(with_overlap=True)
        fresh = compare(tiny_index, dup_index, min_iou=min_iou).to_dict(with_overlap=True)
        for d in (again, fresh):
            d.pop("seconds")
        assert again == fresh
