"""Comparing two indexes through the API: indexes by name only, a permuted checkpoint's prototypes
matched back to the originals, side-by-side tiles, and clear errors (real indexes, no path from the client)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from core.checkpoint import atomic_save, read_checkpoint
from indexer.build import build_index
from server.app import create_app

PERM = [3, 7, 0, 5, 1, 6, 2, 4]  # prototype i of the permuted checkpoint is prototype PERM[i] of the original


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, server_index: Path, tiny_checkpoint: Path, synthetic_root: Path) -> Path:
    root = tmp_path_factory.mktemp("compare") / "indexes"
    shutil.copytree(server_index, root / "base")
    ckpt = read_checkpoint(tiny_checkpoint)
    state = dict(ckpt["model"])
    for key in ("grouping_q.slot_embed.weight", "grouping_k.slot_embed.weight"):
        state[key] = state[key][torch.tensor(PERM)].clone()
    perm = atomic_save({**ckpt, "model": state}, root.parent / "perm.pth")
    build_index(perm, synthetic_root, root / "perm", split="val2017", resize=128, crop=112)
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{}")
    return root


def test_a_permuted_checkpoint_is_matched_back(indexes: Path, make_settings) -> None:
    settings = make_settings(index=indexes / "base", indexes_dir=indexes)
    with TestClient(create_app(settings)) as client:
        listing = client.get("/api/indexes").json()["items"]
        assert [(i["name"], i["active"]) for i in listing] == [("base", True), ("perm", False)]
        r = client.get("/api/compare", params={"a": "perm"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["index_a"] == "perm" and body["index_b"] == "base" and body["num_images"] == 12
        assert body["pairs"] and all(p["b"] == PERM[p["a"]] and p["iou"] == pytest.approx(1.0) for p in body["pairs"])
        assert sorted(p["a"] for p in body["pairs"]) == body["active_a"]
        assert body["splits"] == [] and body["merges"] == [] and body["born"] == [] and body["died"] == []
        assert body["summary"]["matched"] == len(body["pairs"])
        manifest = indexes / "perm" / "manifest.json"
        os.utime(manifest, ns=(manifest.stat().st_atime_ns, manifest.stat().st_mtime_ns + 10**9))  # "rebuilt"
        again = client.get("/api/compare", params={"a": "perm"})  # reopened; the earlier handle is closed
        assert again.status_code == 200 and again.json()["pairs"] == body["pairs"]
        same = client.get("/api/compare", params={"a": "base", "b": "base"}).json()
        assert same["summary"]["same_id_matches"] == len(same["pairs"]) == len(same["active_a"])

        pair = body["pairs"][0]
        tiles = [
            client.get(f"/api/indexes/{name}/prototypes/{k}/best.png")
            for name, k in (("perm", pair["a"]), ("base", pair["b"]))
        ]
        assert all(t.status_code == 200 and t.headers["content-type"] == "image/png" for t in tiles)
        assert tiles[0].content == tiles[1].content  # the same segment: the same prototype under two ids
        assert max(Image.open(io.BytesIO(tiles[0].content)).size) <= 160  # a thumbnail, never enlarged

        assert client.get("/api/compare", params={"a": "missing"}).status_code == 404
        assert client.get("/api/compare", params={"a": "../base"}).status_code == 422
        assert client.get("/api/compare", params={"a": "broken"}).json()["error"]["code"] == "bad_index"
        assert client.get("/api/indexes/..%2Fbase/prototypes/0/best.png").status_code in (404, 422)
        assert client.get("/api/indexes/perm/prototypes/99/best.png").status_code == 404


def test_the_figure_route_draws_the_papers_layout(client) -> None:
    protos = client.get("/api/prototypes").json()["items"]
    alive = [p["id"] for p in protos if not p["dead"]][:2]
    spec = ",".join(map(str, alive))
    first = client.get("/api/figure", params={"prototypes": spec, "topk": 3})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert "attachment" in first.headers["content-disposition"]
    assert client.get("/api/figure", params={"prototypes": spec, "topk": 3}).content == first.content  # deterministic
    img = Image.open(io.BytesIO(first.content))
    assert img.width > img.height  # two rows of three cells and a title column
    pdf = client.get("/api/figure", params={"prototypes": spec, "topk": 3, "format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    svg = client.get("/api/figure", params={"prototypes": spec, "format": "svg"})
    assert svg.content.lstrip().startswith(b"<")
    bad_requests = (
        {"prototypes": "1,,2"},
        {"prototypes": "999"},
        {"prototypes": "0-40"},
        {"prototypes": "1", "format": "gif"},
    )
    for bad in bad_requests:
        assert client.get("/api/figure", params=bad).status_code == 422, bad


def test_the_minimum_iou_is_an_option(indexes: Path, make_settings) -> None:
    from indexer.compare import compare

    settings = make_settings(index=indexes / "base", indexes_dir=indexes)
    with TestClient(create_app(settings)) as client:
        default = client.get("/api/compare", params={"a": "perm"}).json()
        strict = client.get("/api/compare", params={"a": "perm", "min_iou": 0.95}).json()
        assert client.get("/api/compare", params={"a": "perm", "min_iou": 2}).status_code == 422
    assert default["params"]["min_iou"] == 0.2 and strict["params"]["min_iou"] == 0.95
    direct = compare(indexes / "perm", indexes / "base", min_iou=0.95).to_dict()
    for key in ("pairs", "splits", "merges", "born", "died", "summary"):
        assert strict[key] == direct[key], key


def test_names_are_carried_over_through_the_matching(indexes: Path, make_settings) -> None:
    settings = make_settings(index=indexes / "base", indexes_dir=indexes)
    with TestClient(create_app(settings)) as client:
        assert client.put("/api/prototypes/3/label", json={"label": "stripes"}).status_code == 200
        kept = client.put("/api/prototypes/0/label", params={"index": "perm"}, json={"label": "kept"})
        assert kept.status_code == 200
        assert client.put("/api/prototypes/7/label", json={"label": "dots"}).status_code == 200
        r = client.post("/api/indexes/perm/names/carry", json={"source": "base"})
        assert r.status_code == 200, r.text
        body = r.json()
        # base's 3 is perm's 0 (already named: kept), base's 7 is perm's 1
        assert [(c["source_prototype"], c["prototype"], c["label"]) for c in body["items"]] == [(7, 1, "dots")]
        assert body["skipped"] == 1
        labels = {p["id"]: p["label"] for p in client.get("/api/prototypes", params={"index": "perm"}).json()["items"]}
        assert labels[0] == "kept" and labels[1] == "dots"
        again = client.post("/api/indexes/perm/names/carry", json={"source": "base", "overwrite": True}).json()
        assert {(c["prototype"], c["label"]) for c in again["items"]} == {(0, "stripes"), (1, "dots")}
        assert client.post("/api/indexes/perm/names/carry", json={"source": "nope"}).status_code == 404
