"""A real K = 2048 index (the ImageNet models' prototype count) through the routes behind each page:
every answer stays small (the K×K similarity is never K² JSON numbers) and still says what it should."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.checkpoint import save_checkpoint
from indexer.build import build_index
from server.app import create_app
from server.services.projection import similarity_png

K = 2048
BUDGET = 1_000_000  # bytes per response


@pytest.fixture(scope="module")
def k2048_index(make_tiny_model, synthetic_root: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k2048")
    model = make_tiny_model(0, num_prototypes=K)
    ckpt = save_checkpoint(tmp / "k2048.pth", model, epoch=0, step=0)
    index = build_index(ckpt, synthetic_root, tmp / "index", split="val2017", batch_size=4)
    return index


def test_k2048_routes_stay_within_the_response_budget(k2048_index: Path, make_settings) -> None:
    with TestClient(create_app(make_settings(index=k2048_index))) as client:
        sizes = {}
        for route in (
            "/api/prototypes",
            "/api/prototypes/map",
            "/api/stats",
            "/api/prototypes/similarity.png",
            "/api/prototypes/0",
            "/api/images?limit=50",
        ):
            r = client.get(route)
            assert r.status_code == 200, (route, r.text[:200])
            sizes[route] = len(r.content)
        assert max(sizes.values()) < BUDGET, sizes
        assert client.get("/api/prototypes").json()["total"] == K
        grid = client.get("/api/prototypes", params={"sort": "most_active", "offset": 48, "limit": 24})
        assert grid.status_code == 200 and len(grid.json()["items"]) == 24 and grid.json()["total"] == K
        assert len(grid.content) < sizes["/api/prototypes"] / 50  # the grid's page, not the whole list
        numbers = client.get("/api/prototypes/similarity")
        assert numbers.status_code == 422 and numbers.json()["error"]["code"] == "too_many_prototypes"
        img = Image.open(io.BytesIO(client.get("/api/prototypes/similarity.png").content))
        assert img.size == (512, 512)  # 2048 prototypes, 4×4 blocks max-pooled


def test_the_pooled_heatmap_keeps_a_near_duplicate_visible() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(K, 64)).astype(np.float32)
    v[1001] = v[7] + 0.01 * rng.normal(size=64)  # one near-duplicate pair among random prototypes
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    img = np.asarray(Image.open(io.BytesIO(similarity_png(sim, 512))).convert("RGB"))  # 4×4 blocks
    assert img.shape == (512, 512, 3)
    red = (img[..., 0].astype(int) - img[..., 2]) > 100  # cosine near 1 is strongly red
    assert red[7 // 4, 1001 // 4] and red[1001 // 4, 7 // 4]
    assert red.sum() == 2  # the diagonal (a prototype with itself) does not paint every block red
    small = np.asarray(Image.open(io.BytesIO(similarity_png(sim[:8, :8]))).convert("RGB"))
    assert small.shape == (256, 256, 3)  # 8 cells of 32 px
