"""The API serves the object-discovery scores and the dissection stored with an evaluation, as the
evaluation wrote them (tags, best and worst images as PNGs), and runs evaluation jobs with the metrics and
the dissection threshold asked for."""

from __future__ import annotations

import base64
import shutil

import pytest
from fastapi.testclient import TestClient

from indexer.evaluate import EvalConfig, run_eval
from indexer.store import ConceptIndex
from server.app import create_app
from tests.server.conftest import wait_job

PNG = b"\x89PNG\r\n\x1a\n"


def test_eval_serves_object_discovery_and_dissection(make_settings, server_index, tmp_path) -> None:
    index = shutil.copytree(server_index, tmp_path / "with-eval")
    with ConceptIndex.open(index) as ix:
        ckpt, root = ix.manifest.checkpoint.path, ix.data_root
    written = run_eval(
        EvalConfig(ckpt, root, "synthetic", resolution=32, limit=4, index_dir=index,
                   metrics=("object-discovery", "dissection"))
    ).to_dict()  # fmt: skip
    with TestClient(create_app(make_settings(index=index))) as client:
        (item,) = client.get("/api/eval").json()["items"]
    assert item["metrics"] == ["object-discovery", "dissection"]
    found = item["object_discovery"]
    for key in ("fg_ari", "mbo_image", "mbo_instance", "images", "instances", "tag"):
        assert found[key] == written["object_discovery"][key]
    assert found["images"] == 4 and found["tag"]["matching"] == "slots-to-instances"
    assert len(found["best"]) == len(found["worst"]) == 3
    example = found["best"][0]
    assert base64.b64decode(example["slots_png"]).startswith(PNG)
    assert base64.b64decode(example["instances_png"]).startswith(PNG)
    dis = item["dissection"]
    assert dis == written["dissection"]
    assert len(dis["prototypes"]) == 8 and len(dis["prototypes"][0]["iou"]) == dis["num_classes"] == 6
    assert dis["threshold"] == 0.2 and dis["tag"]["matching"] == "prototype-to-class"


@pytest.mark.parametrize("body", [{"metrics": ["colour"]}, {"metrics": []}, {"dissection_threshold": 1.0}])
def test_eval_job_refuses_bad_metrics(make_settings, body) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.post("/api/eval", json={"protocol": "synthetic", **body}).status_code == 422


def test_an_eval_job_takes_the_metrics(make_settings, server_index, tmp_path) -> None:
    index = shutil.copytree(server_index, tmp_path / "index-copy")
    with TestClient(create_app(make_settings(index=index))) as client:
        body = {"protocol": "synthetic", "resolution": 32, "metrics": ["dissection"], "dissection_threshold": 0.05}
        r = client.post("/api/eval", json=body)
        assert r.status_code == 201, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
        assert job["status"] == "succeeded", job
        (item,) = client.get("/api/eval").json()["items"]
    assert item["metrics"] == ["dissection"] and item["object_discovery"] is None
    assert item["dissection"]["threshold"] == 0.05
    assert [s["matching"] for s in item["scores"]] == ["one-to-one", "many-to-one"]  # no probe without segmentation


def test_latest_dissection_and_the_dissection_sort(make_settings, server_index, tmp_path) -> None:
    index = shutil.copytree(server_index, tmp_path / "dissected")
    with TestClient(create_app(make_settings(index=index))) as client:
        assert client.get("/api/eval/dissection").status_code == 404
        # without a dissection the order falls back to id order
        ids = [p["id"] for p in client.get("/api/prototypes", params={"sort": "dissection"}).json()["items"]]
        assert ids == sorted(ids)
    with ConceptIndex.open(index) as ix:
        ckpt, root = ix.manifest.checkpoint.path, ix.data_root
    config = EvalConfig(ckpt, root, "synthetic", resolution=32, limit=3, index_dir=index, metrics=("dissection",))
    written = run_eval(config).dissection
    with TestClient(create_app(make_settings(index=index))) as client:
        body = client.get("/api/eval/dissection").json()
        page = client.get("/api/prototypes", params={"sort": "dissection", "limit": 4}).json()
    assert body["eval_id"] == 1 and body["classes_found"] == written.classes_found
    assert [r["best_iou"] for r in body["prototypes"]] == [r.best_iou for r in written.prototypes]
    order = sorted(written.prototypes, key=lambda r: (-r.best_iou, r.prototype))
    assert [p["id"] for p in page["items"]] == [r.prototype for r in order[:4]]
