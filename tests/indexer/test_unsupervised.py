"""Hungarian-matched unsupervised segmentation scores: hand-worked cases and a brute-force reference."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from indexer.unsupervised import ConfusionAccumulator, hungarian_scores, scores_from_confusion


def test_permutation_scores_one():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(3, 16, 16))
    perm = np.array([3, 0, 4, 1, 2])
    r = hungarian_scores(perm[gt], gt, num_classes=5)
    assert r["miou"] == pytest.approx(1.0)
    assert r["pixel_accuracy"] == pytest.approx(1.0)
    assert r["matching"] == [int(np.where(perm == k)[0][0]) for k in range(5)]
    assert r["many_to_one"]["miou"] == pytest.approx(1.0)
    json.dumps(r, allow_nan=False)


def test_ignore_pixel_not_counted():
    gt = np.array([0, 255, 1])
    pred = np.array([1, 0, 0])  # the ignored pixel would be wrong under any matching
    r = hungarian_scores(pred, gt, num_classes=2)
    assert r["pixel_accuracy"] == 1.0 and r["miou"] == 1.0
    assert r["counts"]["labelled_pixels"] == 2 and r["counts"]["ignored_pixels"] == 1


def test_hand_worked_three_classes():
    gt = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([1, 1, 0, 0, 0, 2])
    r = hungarian_scores(pred, gt, num_classes=3)
    assert r["matching"] == [1, 0, 2]
    assert r["pixel_accuracy"] == pytest.approx(5 / 6)
    assert r["per_class_iou"] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert r["miou"] == pytest.approx(7 / 9)
    assert r["confusion"] == [[1, 2, 0], [2, 0, 0], [0, 0, 1]]


def test_more_clusters_than_classes_unmatched_counted_wrong():
    gt = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 2])  # cluster 2 cannot be matched: its pixel is wrong
    r = hungarian_scores(pred, gt, num_classes=2)
    assert r["matching"] == [0, 1, None]
    assert r["unmatched_clusters_counted_wrong"] is True
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)
    assert r["per_class_iou"] == pytest.approx([1.0, 2 / 3])
    assert r["miou"] == pytest.approx(5 / 6)
    assert r["counts"]["unmatched_cluster_pixels"] == 1 and r["counts"]["unmatched_clusters"] == 1
    m2o = r["many_to_one"]
    assert m2o["mapping"] == [0, 1, 1]
    assert m2o["pixel_accuracy"] == 1.0 and m2o["miou"] == 1.0


def test_fewer_clusters_than_classes():
    gt = np.array([0, 1, 2, 2])
    pred = np.array([0, 0, 1, 1])
    r = hungarian_scores(pred, gt, num_classes=3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 4)
    # class 0 or 1 gets cluster 0 (tie); the other class has IoU 0
    assert sorted(r["per_class_iou"][:2]) == pytest.approx([0.0, 0.5])
    assert r["per_class_iou"][2] == 1.0


def test_absent_class_is_none_and_excluded():
    gt = np.array([0, 0, 1])
    pred = np.array([0, 0, 1])
    r = hungarian_scores(pred, gt, num_classes=3)
    assert r["per_class_iou"] == [1.0, 1.0, None]
    assert r["miou"] == 1.0


def test_streaming_equals_stacked_and_torch_ok():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 4, size=(8, 9)) for _ in range(5)]
    preds = [rng.integers(0, 6, size=(8, 9)) for _ in range(5)]
    gts[0][0, :3] = 255
    a = hungarian_scores(np.stack(preds), np.stack(gts), num_classes=4)
    b = hungarian_scores(iter(preds), (torch.from_numpy(g) for g in gts), num_classes=4)
    assert a["confusion"] == b["confusion"] and a["miou"] == b["miou"]
    assert b["counts"]["num_images"] == 5
    acc1, acc2 = ConfusionAccumulator(4), ConfusionAccumulator(4)
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        (acc1 if i % 2 else acc2).update(p, g)
    acc1.merge(acc2)
    assert acc1.scores()["confusion"] == a["confusion"]


def test_shape_mismatch_and_bad_clusters():
    with pytest.raises(ValueError, match="shape"):
        hungarian_scores(np.zeros((2, 3), int), np.zeros((3, 2), int), num_classes=2)
    with pytest.raises(ValueError, match="num_clusters"):
        hungarian_scores(np.array([5]), np.array([0]), num_classes=2, num_clusters=3)
    with pytest.raises(ValueError, match="negative"):
        hungarian_scores(np.array([-1]), np.array([0]), num_classes=2)


def _reference(conf: np.ndarray) -> tuple[float, float, bool]:
    """Brute force over every one-to-one matching; unmatched clusters wrong. Returns (acc, miou, unique)."""
    k, c = conf.shape
    best, scores = -1, []
    for clusters in itertools.permutations(range(k), min(k, c)):
        for classes in itertools.permutations(range(c), min(k, c)):
            total = sum(conf[a, b] for a, b in zip(clusters, classes, strict=True))
            scores.append((total, clusters, classes))
    best = max(s[0] for s in scores)
    winners = [s for s in scores if s[0] == best]
    _, clusters, classes = winners[0]
    ious = []
    for cls in range(c):
        tp = sum(conf[a, b] for a, b in zip(clusters, classes, strict=True) if b == cls)
        pred_as = sum(conf[a].sum() for a, b in zip(clusters, classes, strict=True) if b == cls)
        union = pred_as + conf[:, cls].sum() - tp
        ious.append(tp / union if union else math.nan)
    unique = len({tuple(sorted(zip(w[1], w[2], strict=True))) for w in winners}) == 1
    return best / conf.sum(), float(np.nanmean(ious)), unique


@pytest.mark.parametrize("k,c", [(3, 3), (4, 3), (2, 4), (5, 4)])
def test_matches_brute_force(k: int, c: int):
    rng = np.random.default_rng(k * 10 + c)
    for _ in range(5):
        conf = rng.integers(0, 50, size=(k, c))
        r = scores_from_confusion(conf)
        acc, miou, unique = _reference(conf)
        assert r["pixel_accuracy"] == pytest.approx(acc)
        if unique:
            assert r["miou"] == pytest.approx(miou)


def test_large_set_streams_quickly():
    rng = np.random.default_rng(2)
    acc = ConfusionAccumulator(27)
    pred = rng.integers(0, 27, size=(320, 320))
    gt = rng.integers(0, 27, size=(320, 320)).astype(np.uint8)
    for _ in range(100):
        acc.update(pred, gt)
    r = acc.scores()
    assert r["counts"]["labelled_pixels"] == 100 * 320 * 320
