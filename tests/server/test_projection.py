"""server.services.projection: the 2-D PCA of the prototypes (checked against an eigen-decomposition of the
covariance done here), and the map/similarity answers on the real tiny server index with their memory and
disk caches (a cache file that cannot be used is recomputed, never an error)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.store import ConceptIndex
from server.runtime import LoadedIndex, Runtime
from server.services.projection import METHOD, pca_2d, prototype_map, prototype_similarity


def _pca_by_eigh(vectors: np.ndarray) -> np.ndarray:
    """The same projection computed another way: eigenvectors of the covariance, same sign rule."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    x = x - x.mean(axis=0)
    w, v = np.linalg.eigh(x.T @ x)
    axes = v[:, np.argsort(w)[::-1][:2]].T
    for a in axes:
        a *= np.sign(a[np.abs(a).argmax()])
    xy = x @ axes.T
    return xy / np.abs(xy).max()


# ---------------------------------------------------------------- pca_2d
def test_pca_matches_an_eigen_decomposition() -> None:
    rng = np.random.default_rng(0)
    # distinct variances along the axes so the principal directions are well defined
    v = rng.standard_normal((40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 1.0
    xy = pca_2d(v)
    assert xy.shape == (40, 2)
    np.testing.assert_allclose(xy, _pca_by_eigh(v), atol=1e-9)
    assert np.abs(xy).max() == pytest.approx(1.0)
    np.testing.assert_allclose(xy.mean(axis=0), 0.0, atol=1e-12)  # centred


def test_pca_ignores_vector_length_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    v = rng.standard_normal((12, 5))
    scaled = v * rng.uniform(0.1, 10.0, size=(12, 1))
    np.testing.assert_allclose(pca_2d(scaled), pca_2d(v), atol=1e-9)
    np.testing.assert_array_equal(pca_2d(v), pca_2d(v.copy()))
    perm = rng.permutation(12)
    np.testing.assert_allclose(pca_2d(v[perm]), pca_2d(v)[perm], atol=1e-9)  # rows follow their vectors
    assert v.dtype == np.float64 and np.array_equal(v, v)  # the input is not modified
    f32 = v.astype(np.float32)
    before = f32.copy()
    pca_2d(f32)
    np.testing.assert_array_equal(f32, before)


def test_pca_edge_inputs() -> None:
    assert pca_2d(np.ones((1, 4))).tolist() == [[0.0, 0.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        assert pca_2d(np.zeros((0, 4))).shape == (0, 2)
    same = pca_2d(np.tile([1.0, 2.0, 3.0], (5, 1)))  # identical prototypes: at the origin (to rounding), no NaN
    assert same.shape == (5, 2)
    np.testing.assert_allclose(same, 0.0, atol=1e-3)
    two = pca_2d(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert np.isfinite(two).all() and sorted(two[:, 0].tolist()) == [-1.0, 1.0]
    np.testing.assert_allclose(two[:, 1], 0.0, atol=1e-12)  # one direction of variance only
    # D = 1: normalised to [1, -1, 1], centred to [2/3, -4/3, 2/3], scaled; the second axis is zero
    one_dim = pca_2d(np.array([[1.0], [-2.0], [3.0]]))
    np.testing.assert_allclose(one_dim, [[0.5, 0.0], [-1.0, 0.0], [0.5, 0.0]], atol=1e-12)


# ---------------------------------------------------------------- the map and similarity answers
@pytest.fixture()
def served(make_settings, server_index: Path) -> Iterator[tuple[Runtime, LoadedIndex]]:
    runtime = Runtime(make_settings())
    index = ConceptIndex.open(server_index)
    yield runtime, LoadedIndex(index=index, path=server_index)
    index.close()


def _cache_files(runtime: Runtime) -> list[Path]:
    return sorted((runtime.settings.state_dir / "cache").glob("prototype-map-*.json"))


def test_prototype_map_points(served) -> None:
    runtime, loaded = served
    loaded.index.set_label(3, "sky")
    answer = prototype_map(runtime, loaded)
    records = loaded.index.prototypes()
    xy = pca_2d(loaded.index.prototype_vectors())
    assert answer.method == METHOD
    assert [p.id for p in answer.points] == [r.id for r in records] == list(range(loaded.index.num_prototypes))
    assert [p.dead for p in answer.points] == [r.dead for r in records]
    assert [p.label for p in answer.points] == [r.label for r in records]
    assert answer.points[3].label == "sky"
    np.testing.assert_allclose([[p.x, p.y] for p in answer.points], xy, atol=1e-9)
    # cached as JSON under the state directory, with the method
    (path,) = _cache_files(runtime)
    stored = json.loads(path.read_text())
    assert stored["method"] == METHOD
    np.testing.assert_allclose(stored["xy"], xy, atol=1e-6)


def test_the_map_is_cached_in_memory_then_on_disk(served) -> None:
    runtime, loaded = served
    prototype_map(runtime, loaded)
    (path,) = _cache_files(runtime)
    k = loaded.index.num_prototypes
    planted = np.linspace(-1, 1, 2 * k).reshape(k, 2)
    path.write_text(json.dumps({"method": METHOD, "xy": planted.tolist()}))
    # this runtime answers from memory: the file is not read again
    first = prototype_map(runtime, loaded)
    np.testing.assert_allclose([[p.x, p.y] for p in first.points], pca_2d(loaded.index.prototype_vectors()), atol=1e-9)
    # a fresh runtime (a restart) reads the file
    fresh = Runtime(runtime.settings)
    again = prototype_map(fresh, loaded)
    np.testing.assert_allclose([[p.x, p.y] for p in again.points], planted)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",  # truncated by a crash
        '{"xy": [[0, 0]]}',  # the wrong number of prototypes
        '{"coords": []}',  # no "xy"
        '{"xy": "abc"}',  # not numbers
        "[1, 2]",  # bug (fixed): valid JSON but not an object raised TypeError
        '{"xy": {"0": [0, 0]}}',  # bug (fixed): an object where a list belongs raised TypeError
    ],
)
def test_an_unusable_cache_file_is_recomputed_and_replaced(served, content: str) -> None:
    runtime, loaded = served
    prototype_map(Runtime(runtime.settings), loaded)
    (path,) = _cache_files(runtime)
    path.write_text(content)
    answer = prototype_map(runtime, loaded)
    want = pca_2d(loaded.index.prototype_vectors())
    np.testing.assert_allclose([[p.x, p.y] for p in answer.points], want, atol=1e-9)
    np.testing.assert_allclose(json.loads(path.read_text())["xy"], want, atol=1e-6)


def test_an_unwritable_cache_still_answers(served) -> None:
    runtime, loaded = served
    runtime.settings.state_dir.mkdir(parents=True, exist_ok=True)
    (runtime.settings.state_dir / "cache").write_text("a file where the cache directory belongs")
    answer = prototype_map(runtime, loaded)
    assert len(answer.points) == loaded.index.num_prototypes


def test_prototype_similarity(served) -> None:
    runtime, loaded = served
    sim = prototype_similarity(runtime, loaded)
    v = loaded.index.prototype_vectors().astype(np.float64)
    k = len(v)
    assert len(sim) == k and all(len(row) == k for row in sim)
    want = [[round(float(v[a] @ v[b]), 3) for b in range(k)] for a in range(k)]
    np.testing.assert_allclose(sim, want, atol=1.001e-3)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-3)  # the vectors are normalised
    assert np.array_equal(np.array(sim), np.array(sim).T)
    assert prototype_similarity(runtime, loaded) is sim  # computed once per index
