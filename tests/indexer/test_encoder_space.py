"""The second embedding of an index: the segments' pooled encoder (pre-projector) features.

Built on a real tiny index; the stored vectors are recomputed independently from the plain full model
(encoder → argmax of the projector's prototype cosines → mean of the raw features per segment →
L2 norm) and neighbour search is compared with brute force over every stored vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.checkpoint import load_model
from core.datasets import load_rgb
from indexer import schema
from indexer.build import build_index
from indexer.segments import model_input
from indexer.shards import centre_vectors
from indexer.store import ConceptIndex, SpaceUnavailableError
from indexer.types import Manifest

ENCODER_CHANNELS = 128  # tests/conftest.py TINY_CONFIG: ResNet-18 at width 0.25 → 16·8 channels


@pytest.fixture(scope="module")
def index(tiny_index: Path):
    with ConceptIndex.open(tiny_index) as ix:
        yield ix


@pytest.fixture(scope="module")
def projector_only(tmp_path_factory: pytest.TempPathFactory, trained_checkpoint: Path, synthetic_root: Path) -> Path:
    out = tmp_path_factory.mktemp("noenc") / "ix"
    return build_index(trained_checkpoint, synthetic_root, out, split="val2017", batch_size=4, encoder_vectors=False)


def _all_vectors(index: ConceptIndex, space: str) -> np.ndarray:
    return np.stack([index.segment_vector(i, space) for i in range(index.num_segments)])


def test_manifest_records_the_encoder_space(index: ConceptIndex, tiny_index: Path) -> None:
    m = Manifest.load(tiny_index)
    assert m.encoder is not None and m.encoder.dim == ENCODER_CHANNELS and m.encoder.faiss.spec == "Flat"
    assert m.encoder.centred
    assert (tiny_index / schema.ENCODER_FAISS_NAME).is_file()
    assert index.spaces == ("projector", "encoder")
    assert index.space_dim("encoder") == ENCODER_CHANNELS and index.space_dim("projector") == index.dim == 32
    vecs = _all_vectors(index, "encoder")
    assert vecs.shape == (index.num_segments, ENCODER_CHANNELS)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_encoder_vectors_equal_an_independent_recomputation(
    index: ConceptIndex, tiny_checkpoint: Path, synthetic_root: Path
) -> None:
    model = load_model(tiny_checkpoint, "cpu").eval()  # the plain full model, BN unfolded
    mean = np.load(Path(index.index_dir) / schema.ENCODER_MEAN_NAME)
    assert mean.shape == (ENCODER_CHANNELS,) and np.linalg.norm(mean) > 0.5  # pooled ReLU features share a mean
    protos = F.normalize(model.grouping_k.slot_embed.weight.detach(), dim=1)
    for image in index.images(0, 4):
        x, _ = model_input(load_rgb(image.path, upright=False), index.manifest.resize, index.manifest.crop)
        with torch.no_grad():
            feats = model.encoder_k(x[None])[0]  # (C, h, w)
            z = F.normalize(model.projector_k(feats[None])[0], dim=0)  # (D, h, w)
        labels = torch.einsum("dhw,kd->khw", z, protos).argmax(0)
        segments = index.image_segments(image.id)
        assert sorted(s.prototype for s in segments) == sorted(torch.unique(labels).tolist())
        for s in segments:
            pooled = F.normalize(feats[:, labels == s.prototype].mean(1), dim=0).numpy()
            expected = centre_vectors(pooled[None], mean)[0]  # centred on the index's mean, re-normalised
            np.testing.assert_allclose(index.segment_vector(s.id, "encoder"), expected, atol=1e-4)
            # a pooled feature from outside the index is centred by search() as the stored ones were
            (best, sim), *_ = index.search(pooled, 1, space="encoder")
            assert best.id == s.id and sim == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("space", ["projector", "encoder"])
def test_neighbours_in_each_space_equal_brute_force(index: ConceptIndex, space: str) -> None:
    vecs = _all_vectors(index, space)
    for source in (0, index.num_segments // 2, index.num_segments - 1):
        sims = vecs @ vecs[source]
        sims[source] = -np.inf
        expected = np.argsort(-sims, kind="stable")[:5]
        got = index.neighbors(source, 5, space=space)
        ids = [s.id for s, _ in got]
        assert source not in ids and len(set(ids)) == 5
        # the same similarities in the same order (ids may differ only between exactly tied segments)
        np.testing.assert_allclose([d for _, d in got], sims[expected], atol=1e-5)
        np.testing.assert_allclose(sims[ids], sims[expected], atol=1e-5)


def test_encoder_neighbours_restricted_to_a_prototype(index: ConceptIndex) -> None:
    k = max(range(index.num_prototypes), key=lambda p: index.prototype(p).num_segments)
    lo, hi = index.prototype_range(k)
    got = index.neighbors(lo, 50, prototype=k, space="encoder")
    assert got and all(s.prototype == k and lo <= s.id < hi and s.id != lo for s, _ in got)
    assert len(got) == min(50, hi - lo - 1)


def test_the_two_spaces_rank_differently(index: ConceptIndex) -> None:
    """The point of the second space: similarities there are not the projector's (different vectors)."""
    proj = [d for _, d in index.neighbors(0, 10, space="projector")]
    enc = [d for _, d in index.neighbors(0, 10, space="encoder")]
    assert not np.allclose(proj, enc, atol=1e-3)


def test_an_index_without_encoder_vectors_says_so(projector_only: Path) -> None:
    assert Manifest.load(projector_only).encoder is None
    assert not (projector_only / schema.ENCODER_FAISS_NAME).exists()
    with ConceptIndex.open(projector_only) as ix:
        assert ix.spaces == ("projector",)
        assert ix.neighbors(0, 3)  # the projector space still answers
        with pytest.raises(SpaceUnavailableError, match="no encoder vectors.*--no-encoder-vectors"):
            ix.neighbors(0, 3, space="encoder")
        with pytest.raises(SpaceUnavailableError, match="unknown embedding space 'pixels'"):
            ix.neighbors(0, 3, space="pixels")


def test_search_checks_the_space_dimension(index: ConceptIndex) -> None:
    with pytest.raises(ValueError, match="encoder space has 128"):
        index.search(np.ones(32, np.float32), 3, space="encoder")
    assert index.search(np.ones(ENCODER_CHANNELS, np.float32), 3, space="encoder")
