"""The cluster probe's parts: features at sampled pixels equal the resized map's, the sample is drawn
without labels and the same for every seed, and each seed's run is the same alone or among others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from indexer.unsupervised_probe import ClusterProbe, pixel_features, resize_weights, sampled_pixel_features


@pytest.mark.parametrize("h, w, res", [(10, 7, 32), (4, 4, 64), (20, 20, 320)])
def test_sampled_features_are_the_resized_maps(h: int, w: int, res: int) -> None:
    z = F.normalize(torch.randn(16, h, w, generator=torch.Generator().manual_seed(h)), dim=0)
    full = pixel_features(z, res)
    pick = np.sort(np.random.default_rng(0).choice(res * res, size=200, replace=False))
    assert torch.allclose(sampled_pixel_features(z, res, pick), full[pick], atol=1e-6)
    assert torch.allclose(resize_weights(h, res).sum(1), torch.ones(res))


def _probe(maps: torch.Tensor, labels: list[np.ndarray], max_points: int) -> ClusterProbe:
    probe = ClusterProbe(3, 32, len(labels), max_points=max_points)
    probe.add(maps, labels)
    return probe


def test_a_sampled_probe_runs_each_seed_as_alone() -> None:
    maps = F.normalize(torch.randn(6, 8, 4, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = [np.random.default_rng(i).integers(0, 3, (32, 32)).astype(np.uint8) for i in range(6)]
    together = _probe(maps, labels, max_points=600).run([0, 1, 2])
    assert [len(s) for s in _probe(maps, labels, 600).samples] == [100] * 6  # 600 points: 100 an image
    alone = _probe(maps, labels, max_points=600).run([2])
    assert np.array_equal(alone[0].confusion.confusion, together[2].confusion.confusion)
    assert np.array_equal(alone[0].centres, together[2].centres)
    other_labels = [np.full((32, 32), 1, np.uint8)] * 6  # labels never enter the fit
    assert np.array_equal(_probe(maps, other_labels, 600).run([2])[0].centres, together[2].centres)
    for run in together:
        assert run.confusion.confusion.sum() == 6 * 32 * 32 and np.allclose(np.linalg.norm(run.centres, axis=1), 1)
    with pytest.raises(ValueError, match="saw no image"):
        ClusterProbe(3, 32, 1).run([0])
