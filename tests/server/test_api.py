"""The read routes against a real tiny index: health, prototypes, segments, neighbours, images,
overlays, stats, the map, labels, OpenAPI; unknown ids → 404, bad parameters → 422."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from indexer.store import ConceptIndex


def test_health_reports_checkpoint_index_and_device(client, server_index):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["device"] == "cpu" and h["version"]
    assert h["index"]["name"] == server_index.name and h["index"]["num_images"] == 12
    assert h["index"]["num_prototypes"] == 8 and h["index"]["crop"] == 112
    assert h["checkpoint"]["sha256"] == h["index"]["checkpoint_sha256"]
    assert h["auth_required"] is False and h["running_jobs"] == 0


def test_prototypes_match_the_index(client, server_index):
    body = client.get("/api/prototypes").json()
    with ConceptIndex.open(server_index) as ix:
        records = ix.prototypes()
    assert body["total"] == len(body["items"]) == 8
    assert body["num_dead"] == sum(r.dead for r in records) and body["has_ground_truth"] is True
    for p, r in zip(body["items"], records, strict=True):
        assert p["id"] == r.id and p["dead"] == r.dead and p["num_images"] == r.num_images
        assert p["purity"] == r.purity and p["majority_class_name"] == r.majority_class_name
        assert p["majority_class_id"] == r.majority_class_id
        assert len(p["color"]) == 3
        if not p["dead"]:
            assert 0 < p["purity"] <= 1 and p["best_image_id"] is not None
    one = client.get("/api/prototypes/0").json()
    assert one == body["items"][0]


def test_top_segments_are_ranked_and_paginated(client):
    k = next(p["id"] for p in client.get("/api/prototypes").json()["items"] if p["num_segments"] >= 3)
    page = client.get(f"/api/prototypes/{k}/segments", params={"limit": 50}).json()
    scores = [s["score"] for s in page["items"]]
    assert scores == sorted(scores, reverse=True) and page["total"] == len(scores)
    assert all(s["prototype"] == k for s in page["items"])
    second = client.get(f"/api/prototypes/{k}/segments", params={"offset": 1, "limit": 2}).json()["items"]
    assert [s["id"] for s in second] == [s["id"] for s in page["items"][1:3]]
    seg = page["items"][0]
    mask = mask_utils.decode({"size": seg["rle"]["size"], "counts": seg["rle"]["counts"].encode()})
    assert int(mask.sum()) == seg["area"]
    assert client.get(f"/api/segments/{seg['id']}").json() == seg


def test_neighbors_sorted_and_filtered(client):
    near = client.get("/api/segments/0/neighbors", params={"limit": 5}).json()["items"]
    sims = [n["similarity"] for n in near]
    assert len(near) == 5 and sims == sorted(sims, reverse=True)
    assert all(n["segment"]["id"] != 0 for n in near)
    k = client.get("/api/segments/0").json()["prototype"]
    same = client.get("/api/segments/0/neighbors", params={"limit": 5, "prototype": k}).json()["items"]
    assert all(n["segment"]["prototype"] == k for n in same)


def test_images_thumbnails_and_overlays(client):
    page = client.get("/api/images", params={"offset": 2, "limit": 3}).json()
    assert [i["id"] for i in page["items"]] == [2, 3, 4] and page["total"] == 12
    r = client.get("/api/images/2")
    assert r.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(r.content)).size == (96, 96)
    thumb = Image.open(io.BytesIO(client.get("/api/images/2", params={"size": 48}).content))
    assert max(thumb.size) == 48
    seg = client.get("/api/segments/0").json()
    r = client.get(f"/api/images/{seg['image_id']}/overlay", params={"segment": 0})
    assert r.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{seg['image_id']}").content)), np.int16)
    mask = mask_utils.decode({"size": seg["rle"]["size"], "counts": seg["rle"]["counts"].encode()}).astype(bool)
    x, y, w, h = client.get("/api/images", params={"offset": seg["image_id"], "limit": 1}).json()["items"][0]["box"]
    original, mask = original[y : y + h, x : x + w], mask[y : y + h, x : x + w]  # the overlay shows the crop
    red_shift = (overlay[..., 0] - overlay[..., 1:].mean(-1)) - (original[..., 0] - original[..., 1:].mean(-1))
    assert red_shift[mask].mean() > 40 and abs(red_shift[~mask].mean()) < 5  # Figure 3: red inside only
    by_proto = client.get(f"/api/images/{seg['image_id']}/overlay", params={"prototype": seg["prototype"]})
    assert by_proto.content == r.content
    slots = client.get(f"/api/images/{seg['image_id']}/slots", params={"size": 64})
    assert slots.headers["content-type"] == "image/png" and Image.open(io.BytesIO(slots.content)).size == (64, 64)


@pytest.mark.parametrize(
    "url, code",
    [
        ("/api/prototypes/99", "not_found"),
        ("/api/prototypes/99/segments", "not_found"),
        ("/api/segments/100000", "not_found"),
        ("/api/segments/100000/neighbors", "not_found"),
        ("/api/images/100000", "not_found"),
        ("/api/images/100000/slots", "not_found"),
        ("/api/jobs/12345", "not_found"),
        ("/api/eval/777/examples", "not_found"),
        ("/api/images/0/overlay?prototype=99", "not_found"),
    ],
)
def test_unknown_ids_are_404(client, url, code):
    r = client.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == code
    assert "does not exist" in r.json()["error"]["message"] or "not active" in r.json()["error"]["message"]
    assert client.get("/api/prototypes/0").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/prototypes/0/segments?limit=0",
        "/api/prototypes/0/segments?limit=abc",
        "/api/prototypes/0/segments?offset=-1",
        "/api/prototypes/-1",
        "/api/segments/0/neighbors?limit=1000",
        "/api/segments/0/neighbors?prototype=-2",
        "/api/images/0?size=1",
        "/api/images/0/overlay",
        "/api/images/0/overlay?prototype=1&segment=2",
        "/api/images?limit=0",
        "/api/jobs?kind=bogus",
    ],
)
def test_bad_parameters_are_422(client, url):
    r = client.get(url)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["message"]
    assert client.get("/api/segments/0/neighbors?limit=2").status_code == 200


def test_labels_persist_and_validate(client, make_settings):
    r = client.put("/api/prototypes/3/label", json={"label": "  checker  "})
    assert r.status_code == 200 and r.json()["label"] == "checker"
    assert client.get("/api/prototypes/3").json()["label"] == "checker"
    assert client.put("/api/prototypes/3/label", json={"label": ""}).status_code == 422
    assert client.put("/api/prototypes/3/label", json={"name": "x"}).status_code == 422
    assert client.put("/api/prototypes/99/label", json={"label": "x"}).status_code == 404
    for blank in ("   ", "\t\n", None):  # a blank label is refused, and clears nothing
        r = client.put("/api/prototypes/3/label", json={"label": blank})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", blank
        assert client.get("/api/prototypes/3").json()["label"] == "checker"
    assert "DELETE" in client.put("/api/prototypes/3/label", json={"label": " "}).json()["error"]["message"]
    assert client.put("/api/prototypes/3/label", json={"label": "a\x00b"}).status_code == 422
    assert client.delete("/api/prototypes/3/label").json()["label"] is None
    assert client.get("/api/prototypes/3").json()["label"] is None
    assert client.delete("/api/prototypes/99/label").status_code == 404


def test_map_stats_eval_checkpoints(client, make_settings):
    m = client.get("/api/prototypes/map").json()
    assert m["method"] == "pca" and len(m["points"]) == 8
    xy = np.array([[p["x"], p["y"]] for p in m["points"]])
    assert np.abs(xy).max() == pytest.approx(1.0) and len({tuple(r) for r in xy.round(6)}) == 8
    assert client.get("/api/prototypes/map").json() == m  # cached: identical
    cached = list((make_settings().state_dir / "cache").glob("prototype-map-*.json"))
    assert len(cached) == 1
    stats = client.get("/api/stats").json()
    assert stats["num_images"] == 12 and stats["num_prototypes"] == 8
    hist = stats["active_per_image"]["histogram"]  # hist[n] = images with n active prototypes
    assert sum(hist) == 12
    assert stats["active_per_image"]["mean"] == pytest.approx(sum(n * c for n, c in enumerate(hist)) / 12)
    sim = np.array(client.get("/api/prototypes/similarity").json()["cosine"])
    assert sim.shape == (8, 8) and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1.0, atol=2e-3)
    assert client.get("/api/eval").json()["items"] == []
    assert client.get("/api/checkpoints").json() == {"items": []}


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for p in (
        "/api/health",
        "/api/prototypes",
        "/api/prototypes/map",
        "/api/prototypes/{k}/label",
        "/api/prototypes/{k}/segments",
        "/api/segments/{segment_id}/neighbors",
        "/api/images/{image_id}/overlay",
        "/api/slots",
        "/api/stats",
        "/api/eval",
        "/api/jobs/train",
        "/api/jobs/{job_id}/metrics",
        "/api/checkpoints",
        "/api/index/activate",
        "/api/eval/{eval_id}/examples/{image_id}.png",
    ):
        assert p in paths, p
    assert client.get("/docs").status_code == 200
    assert client.get("/api/nope").json()["error"]["code"] == "not_found"


def test_stored_evaluations_and_examples(make_settings, server_index, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from server.app import create_app

    copy = shutil.copytree(server_index, tmp_path / "with-eval")
    pred = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 8, mode="P")
    gt = Image.fromarray(np.full((8, 8), 3, dtype=np.uint8), mode="P")
    pngs = []
    for im in (pred, gt):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    from indexer.evaluate import EvalConfig, run_eval

    with ConceptIndex.open(copy) as ix:
        ckpt = ix.manifest.checkpoint.path
    result = run_eval(EvalConfig(ckpt, ix.data_root, "synthetic", resolution=32, limit=2))
    with ConceptIndex.open(copy) as ix:
        eval_id = ix.store_eval(result, [(2, "val2017/x.jpg", pngs[0], pngs[1])])
    with TestClient(create_app(make_settings(index=copy))) as client:
        items = client.get("/api/eval").json()["items"]
        assert len(items) == 1 and items[0]["id"] == eval_id and items[0]["miou"] == result.miou
        ex = items[0]["examples"][0]
        assert ex["image_id"] == 2 and ex["prediction"] and ex["ground_truth"]
        listing = client.get(f"/api/eval/{eval_id}/examples").json()["items"]
        assert listing[0]["image_id"] == 2
        r = client.get(listing[0]["pred_url"])
        assert r.headers["content-type"] == "image/png" and r.content == pngs[0]
        assert client.get(listing[0]["gt_url"]).content == pngs[1]
        assert client.get(f"/api/eval/{eval_id}/examples/99.png").status_code == 404
        assert client.get(f"/api/eval/{eval_id}/examples/2.png?kind=other").status_code == 422
