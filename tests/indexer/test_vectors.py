"""indexer.vectors: the FAISS spec chosen for a build, the index built from chunks, and search (optionally
within a segment-id range) checked against brute-force inner products computed here with numpy."""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
import pytest

from indexer.vectors import INDEX_TYPES, build_faiss, faiss_spec, search


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _chunked(x: np.ndarray, size: int):
    return lambda: (x[i : i + size] for i in range(0, len(x), size))


def _brute(x: np.ndarray, q: np.ndarray, k: int, lo: int = 0, hi: int | None = None):
    """Top-k ids (and scores) of q against x[lo:hi] by inner product, in global ids."""
    hi = len(x) if hi is None else hi
    sims = q @ x[lo:hi].T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order + lo


# ---------------------------------------------------------------- faiss_spec
def test_flat_is_always_flat() -> None:
    assert faiss_spec("flat", 32, 10**9) == "Flat"


def test_unknown_type_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="hnsw") as e:
        faiss_spec("hnsw", 32, 1000)
    for t in INDEX_TYPES:
        assert t in str(e.value)


def test_ivf_default_nlist_is_four_sqrt_count() -> None:
    count = 1_000_000
    nlist = int(4 * math.sqrt(count))  # 4000, under the 4096 cap
    assert faiss_spec("ivf", 32, count) == f"IVF{nlist},Flat"
    assert faiss_spec("ivf", 32, 10**8) == "IVF4096,Flat"  # capped


def test_ivf_falls_back_to_flat_below_39_vectors_per_list(caplog: pytest.LogCaptureFixture) -> None:
    # explicit nlist=10 needs 390 vectors
    assert faiss_spec("ivf", 32, 390, nlist=10) == "IVF10,Flat"
    with caplog.at_level(logging.WARNING, logger="indexer.vectors"):
        assert faiss_spec("ivf", 32, 389, nlist=10) == "Flat"
    assert "too few" in caplog.text
    assert faiss_spec("ivfpq", 32, 0) == "Flat"  # no vectors at all


def test_ivfpq_with_fewer_vectors_than_a_pq_codebook_falls_back_to_ivf_flat(caplog: pytest.LogCaptureFixture) -> None:
    """Bug (fixed): 200 vectors passed the IVF4 check (156) but cannot train 256 PQ centroids."""
    with caplog.at_level(logging.WARNING, logger="indexer.vectors"):
        assert faiss_spec("ivfpq", 16, 200, nlist=4) == "IVF4,Flat"
    assert "PQ" in caplog.text
    x = _unit(200, 16, seed=7)
    index = build_faiss("IVF4,Flat", 16, _chunked(x, 64), lambda m: x[:m])
    assert index.ntotal == 200


def test_ivfpq_sub_quantizers_divide_dim_and_stay_at_most_a_quarter_of_it() -> None:
    count = 10**6
    nlist = int(4 * math.sqrt(count))
    for dim, m in [(256, 64), (128, 32), (32, 8), (48, 8), (6, 1), (3, 1)]:
        assert faiss_spec("ivfpq", dim, count) == f"IVF{nlist},PQ{m}np", dim
    assert faiss_spec("ivfpq", 256, count, pq_m=16) == f"IVF{nlist},PQ16np"


# ---------------------------------------------------------------- build_faiss + search
def test_flat_build_from_chunks_keeps_segment_id_order_and_searches_exactly() -> None:
    x = _unit(103, 16)
    index = build_faiss("Flat", 16, _chunked(x, 10))
    assert index.ntotal == 103 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    np.testing.assert_array_equal(index.reconstruct_n(0, 103), x)
    q = _unit(4, 16, seed=1)
    sims, ids = search(index, q, 5)
    want_sims, want_ids = _brute(x, q, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, rtol=0, atol=1e-5)


def test_a_single_query_vector_is_accepted() -> None:
    x = _unit(20, 8)
    index = build_faiss("Flat", 8, _chunked(x, 7))
    sims, ids = search(index, x[3], 1)  # 1-D query
    assert ids.shape == (1, 1) and ids[0, 0] == 3
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_empty_chunks_are_skipped() -> None:
    x = _unit(5, 8)
    index = build_faiss("Flat", 8, lambda: iter([x[:0], x[:2], x[2:2], x[2:]]))
    np.testing.assert_array_equal(index.reconstruct_n(0, 5), x)


def test_flat_search_within_a_range_only_returns_ids_of_that_range() -> None:
    x = _unit(60, 8)
    index = build_faiss("Flat", 8, _chunked(x, 60))
    q = _unit(3, 8, seed=2)
    sims, ids = search(index, q, 4, id_range=(20, 30))
    want_sims, want_ids = _brute(x, q, 4, 20, 30)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


def test_range_smaller_than_k_pads_with_minus_one() -> None:
    x = _unit(30, 8)
    index = build_faiss("Flat", 8, _chunked(x, 30))
    _, ids = search(index, x[:1], 5, id_range=(10, 12))
    assert sorted(ids[0, :2].tolist()) == [10, 11]
    assert ids[0, 2:].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("lo_hi", [(7, 7), (9, 3)])
def test_an_empty_range_finds_nothing(lo_hi: tuple[int, int]) -> None:
    x = _unit(30, 8)
    index = build_faiss("Flat", 8, _chunked(x, 30))
    sims, ids = search(index, x[:2], 3, id_range=lo_hi)
    assert ids.shape == (2, 3) and (ids == -1).all()
    assert np.isneginf(sims).all()


def test_ivf_build_trains_on_the_sample_and_reconstructs_by_segment_id() -> None:
    dim, n, nlist = 8, 600, 4
    x = _unit(n, dim, seed=3)
    asked: list[int] = []

    def sample(m: int) -> np.ndarray:
        asked.append(m)
        return x[:m]

    index = build_faiss(f"IVF{nlist},Flat", dim, _chunked(x, 128), sample)
    assert asked == [64 * nlist]  # the training sample size
    assert index.ntotal == n
    ivf = faiss.extract_index_ivf(index)
    assert ivf.nprobe == nlist  # min(nlist, 16): every list probed, so the search is exact here
    for i in (0, 123, n - 1):  # the direct map makes reconstruct(segment id) work
        np.testing.assert_array_equal(index.reconstruct(i), x[i])
    q = _unit(3, dim, seed=4)
    _, ids = search(index, q, 5)
    np.testing.assert_array_equal(ids, _brute(x, q, 5)[1])
    _, ids = search(index, q, 5, id_range=(100, 140))
    np.testing.assert_array_equal(ids, _brute(x, q, 5, 100, 140)[1])


def test_ivf_nprobe_is_capped_at_16() -> None:
    dim, nlist = 4, 20
    x = _unit(64 * nlist, dim, seed=5)
    index = build_faiss(f"IVF{nlist},Flat", dim, _chunked(x, 500), lambda m: x[:m])
    assert faiss.extract_index_ivf(index).nprobe == 16


def test_ivfpq_with_few_lists_trains_its_codebooks_on_enough_vectors() -> None:
    """Bug (fixed): the training sample was 64·nlist vectors, under the 256 that an 8-bit PQ codebook needs
    whenever nlist < 4 (``--faiss ivfpq --nlist 2``), and FAISS refused to train."""
    dim, n = 16, 400
    x = _unit(n, dim, seed=6)
    spec = faiss_spec("ivfpq", dim, n, nlist=2)
    assert spec == "IVF2,PQ4np"
    index = build_faiss(spec, dim, _chunked(x, 100), lambda m: x[:m])
    assert index.ntotal == n
    # PQ is lossy: a stored vector is still its own nearest neighbour for most queries
    _, ids = search(index, x[:20], 1)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.8
