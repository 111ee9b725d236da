"""The API serves every score of an evaluation with its tag and its check against the paper's row, the
paper's row with its own tag, and runs evaluation jobs with the seeds and image list asked for."""

from __future__ import annotations

import dataclasses
import shutil

from fastapi.testclient import TestClient

from indexer.evaluate import EvalConfig, run_eval
from indexer.evaluate_tag import PAPER
from indexer.store import ConceptIndex
from indexer.types import ImageList, ScoreTag
from server.app import create_app
from tests.server.conftest import wait_job

TAG_FIELDS = {f.name for f in dataclasses.fields(ScoreTag)}
LIST_FIELDS = {f.name for f in dataclasses.fields(ImageList)}


def _tags(item: dict) -> list[dict]:
    return [item["tag"], item["many_to_one"]["tag"], *(s["tag"] for s in item["scores"])]


def test_every_score_in_the_response_carries_its_tag(make_settings, server_index, tmp_path) -> None:
    index = shutil.copytree(server_index, tmp_path / "with-eval")
    with ConceptIndex.open(index) as ix:
        ckpt, root = ix.manifest.checkpoint.path, ix.data_root
    run_eval(EvalConfig(ckpt, root, "synthetic", resolution=32, limit=2, seeds=2, index_dir=index))
    with TestClient(create_app(make_settings(index=index))) as client:
        body = client.get("/api/eval").json()
    (item,) = body["items"]
    assert [s["matching"] for s in item["scores"]] == ["one-to-one", "many-to-one", "cluster-probe"]
    for tag in _tags(item):
        assert set(tag) == TAG_FIELDS and set(tag["image_list"]) == LIST_FIELDS
    assert item["image_list"] == {"name": "all-val2017", "used": 2, "listed": 12, "missing": 0}
    probe = item["scores"][2]
    assert probe["tag"]["seeds"] == 2 and [r["seed"] for r in probe["runs"]] == [0, 1] and probe["miou_std"] is not None
    for score in item["scores"]:
        check = score["paper"]
        assert check["reference"] == PAPER.name and check["comparable"] is False
        assert {"benchmark", "K", "resolution"} <= {d["field"] for d in check["differences"]}
    assert body["paper"] == PAPER.to_dict() and body["paper"]["tag"]["k"] == 27


def test_an_eval_job_takes_seeds_and_the_image_list(make_settings, server_index, tmp_path) -> None:
    index = shutil.copytree(server_index, tmp_path / "index-copy")
    with TestClient(create_app(make_settings(index=index))) as client:
        bad = client.post("/api/eval", json={"protocol": "synthetic", "seeds": 0})
        assert bad.status_code == 422
        body = {"protocol": "synthetic", "baseline": "kmeans-rgb", "resolution": 32, "seeds": 2, "all_images": True}
        r = client.post("/api/eval", json=body)
        assert r.status_code == 201, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
        assert job["status"] == "succeeded", job
        (item,) = client.get("/api/eval").json()["items"]
    one = item["scores"][0]
    assert one["tag"]["seeds"] == 2 and len(one["runs"]) == 2 and item["protocol"]["seeds"] == [0, 1]
    assert item["image_list"]["name"] == "all-val2017"
