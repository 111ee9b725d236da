"""Every bound is a 422 (never a 500 or a launched job): numeric job fields, finite floats, seeds,
strict booleans and integers, processes per node, ids and offsets in every route; index and
evaluation jobs are exclusive per output with unique names; the token never reaches a job; the
checkpoint listing and job logs need the token when one is set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.jobs import child_env
from server.services.launch import process_limit
from tests.server.conftest import TINY_TRAIN

BIG = 2**63  # one past SQLite's INTEGER range


def _train(client, overrides=None, **body):
    return client.post("/api/jobs/train", json={"preset": "cpu-demo", "overrides": overrides or {}, **body})


@pytest.mark.parametrize(
    "field, value",
    [
        ("dim_hidden", 65536),
        ("dim_out", 4096),
        ("num_prototypes", 65536),
        ("batch_size", 65536),
        ("epochs", 10**6),
        ("total_steps", 10**9),
        ("max_steps", 10**9),
        ("budget_minutes", 10**7),
        ("lr", 1000.0),
        ("lr", 0),
        ("weight_decay", 2.0),
        ("momentum", 1.0),
        ("warmup_epochs", 10**6),
        ("final_lr", 1e6),
        ("teacher_momentum", 1.5),
        ("image_size", 8),
        ("image_size", 4096),
        ("min_scale", 0),
        ("width", 16.0),
        ("teacher_temp", 0),
        ("teacher_temp", 1e9),
        ("student_temp", 100.0),
        ("group_loss_weight", 2.0),
        ("workers", 1000),
        ("threads", 10**6),
        ("seed", 2**32),
        ("seed", 10**30),
        ("seed", -1),
        ("log_every", 0),
        ("log_every", 10**9),
        ("save_every", 10**9),
        ("save_minutes", 10**9),
        ("max_minutes", 10**9),
    ],
)
def test_numeric_training_fields_are_bounded(client, field, value):
    r = _train(client, {field: value})
    assert r.status_code == 422, (field, value, r.text)
    assert field in r.json()["error"]["message"]
    assert client.get("/api/jobs").json()["items"] == []


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("field", ["warmup_epochs", "teacher_temp", "lr", "budget_minutes", "width"])
def test_floats_are_finite(client, field, raw):
    body = '{"preset": "cpu-demo", "overrides": {"' + field + '": ' + raw + "}}"
    r = client.post("/api/jobs/train", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (field, raw, r.text)
    assert client.get("/api/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "overrides, body",
    [
        ({"epochs": True}, {}),
        ({"epochs": 2.0}, {}),
        ({"epochs": "2"}, {}),
        ({"stride16": 1}, {}),
        ({"stride16": "true"}, {}),
        ({"fast_augment": 0}, {}),
        ({"seed": 1.5}, {}),
        ({}, {"resume": 1}),
        ({}, {"nproc_per_node": 2.0}),
        ({}, {"nproc_per_node": True}),
        ({}, {"resume": "yes"}),
    ],
)
def test_booleans_and_integers_are_strict(client, overrides, body):
    r = _train(client, overrides, **body)
    assert r.status_code == 422, (overrides, body, r.text)


def test_nproc_per_node_is_within_the_machine(client):
    limit, of_what = process_limit("cpu")
    r = _train(client, {"device": "cpu"}, nproc_per_node=min(64, limit + 1))
    if limit >= 64:
        pytest.skip("this machine has 64 cores or more: the schema's own cap applies first")
    assert r.status_code == 422 and of_what in r.json()["error"]["message"], r.text
    assert _train(client, {"device": "cpu"}, nproc_per_node=65).status_code == 422
    assert client.get("/api/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"run": "r", "resize": 4096},
        {"run": "r", "crop": 8},
        {"run": "r", "batch_size": 10**6},
        {"run": "r", "activate": 1},
        {"run": "r", "resize": 256.0},
        {"run": "r", "split": "test"},
    ],
)
def test_index_request_bounds(client, body):
    assert client.post("/api/jobs/index", json=body).status_code == 422


@pytest.mark.parametrize("body", [{"resolution": 10**6}, {"resolution": 320.5}, {"resolution": True}])
def test_eval_request_bounds(client, body):
    assert client.post("/api/eval", json=body).status_code == 422


@pytest.mark.parametrize(
    "method, url",
    [
        ("GET", f"/api/jobs/{BIG}"),
        ("GET", f"/api/jobs/{BIG}/log"),
        ("GET", f"/api/jobs/{BIG}/metrics"),
        ("DELETE", f"/api/jobs/{BIG}"),
        ("GET", f"/api/jobs/1/metrics?since={BIG}"),
        ("GET", f"/api/images/{BIG}"),
        ("GET", f"/api/images?offset={BIG}"),
        ("GET", f"/api/images/0/overlay?segment={BIG}"),
        ("GET", f"/api/images/0/overlay?prototype={BIG}"),
        ("GET", f"/api/images/{BIG}/slots"),
        ("GET", f"/api/segments/{BIG}"),
        ("GET", f"/api/segments/{BIG}/neighbors"),
        ("GET", f"/api/segments/0/neighbors?prototype={BIG}"),
        ("GET", f"/api/prototypes/{BIG}"),
        ("GET", f"/api/prototypes/0/segments?offset={BIG}"),
        ("GET", f"/api/prototypes/{BIG}/segments"),
        ("GET", f"/api/eval/{BIG}/examples"),
        ("GET", f"/api/eval/0/examples/{BIG}.png"),
        ("GET", "/api/jobs/-1"),
        ("GET", f"/api/prototypes/0/segments?offset={10**12}"),
    ],
)
def test_ids_and_offsets_are_bounded(client, method, url):
    r = client.request(method, url)
    assert r.status_code == 422, (url, r.status_code, r.text)
    assert r.json()["error"]["code"] == "invalid_request"


def test_activate_job_id_is_bounded(client):
    assert client.post("/api/index/activate", json={"job_id": BIG}).status_code == 422
    assert client.post("/api/index/activate", json={"job_id": 2**63 - 1}).status_code == 404


def test_largest_ids_are_404_not_500(client):
    top = 2**63 - 1
    for url in (
        f"/api/jobs/{top}",
        f"/api/images/{top}",
        f"/api/segments/{top}",
        f"/api/prototypes/{top}",
        f"/api/eval/{top}/examples",
        f"/api/images/{top}/slots",
    ):
        assert client.get(url).status_code == 404, url
    assert client.get(f"/api/prototypes/0/segments?offset={2**31 - 1}").json()["items"] == []


def test_ids_beyond_the_range_on_a_live_server(live_server, server_index, tmp_path):
    """Over real HTTP the answer is a 422 and the connection stays usable (it was a 500 and a reset)."""
    with (
        live_server("--index", str(server_index), "--state-dir", str(tmp_path / "state")) as srv,
        httpx.Client(base_url=srv.base, timeout=60) as c,
    ):
        for url in (f"/api/jobs/{BIG}", f"/api/segments/{10**30}", f"/api/images?offset={BIG}"):
            assert c.get(url).status_code == 422, url
        assert c.get("/api/health").status_code == 200


# ---------------------------------------------------------------- jobs: exclusivity and names
def _index_body(**kw):
    return {"checkpoint": "r1/final.pth", "resize": 64, "crop": 64, **kw}


@pytest.fixture()
def app_with_run(make_settings, tiny_checkpoint):
    settings = make_settings()
    run = settings.runs_dir / "r1"
    run.mkdir(parents=True)
    (run / "final.pth").write_bytes(tiny_checkpoint.read_bytes())
    return settings


def _settle(client, ids, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(client.get(f"/api/jobs/{i}").json()["status"] != "running" for i in ids):
            return
        time.sleep(0.3)


def test_index_jobs_are_exclusive_per_output_and_named_uniquely(app_with_run):
    with TestClient(create_app(app_with_run)) as client:
        first = client.post("/api/jobs/index", json=_index_body(name="same"))
        assert first.status_code == 201, first.text
        again = client.post("/api/jobs/index", json=_index_body(name="same"))
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_conflict"
        a = client.post("/api/jobs/index", json=_index_body())
        b = client.post("/api/jobs/index", json=_index_body())  # the same second: still two names
        assert a.status_code == b.status_code == 201
        assert a.json()["name"] != b.json()["name"]
        rows = client.get("/api/jobs").json()["items"]
        _settle(client, [r["id"] for r in rows])
        assert all(client.get(f"/api/jobs/{r['id']}/log").status_code == 200 for r in rows)
        from server.services.jobstore import JobStore

        paths = [r.log_path for r in JobStore(app_with_run.state_dir / "jobs.db").list()]
        assert len(set(paths)) == len(paths) == 3


def test_eval_jobs_are_exclusive_per_index(make_settings, server_index, tmp_path):
    import shutil

    index = shutil.copytree(server_index, tmp_path / "index-copy")
    with TestClient(create_app(make_settings(index=index))) as client:
        first = client.post("/api/eval", json={"resolution": 64})
        assert first.status_code == 201, first.text
        second = client.post("/api/eval", json={"resolution": 64})
        assert second.status_code == 409 and "index-copy" in second.json()["error"]["message"]
        _settle(client, [first.json()["id"]])
        third = client.post("/api/eval", json={"resolution": 64})
        assert third.status_code == 201 and third.json()["name"] != first.json()["name"]
        _settle(client, [third.json()["id"]])


def test_an_eval_job_refuses_a_checkpoint_changed_since_it_was_loaded(
    make_settings, tmp_path, tiny_checkpoint, make_tiny_model, synthetic_root
):
    from core.checkpoint import save_checkpoint
    from indexer.build import build_index

    ckpt = tmp_path / "runs" / "r" / "final.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    index = build_index(ckpt, synthetic_root, tmp_path / "ix", split="val2017", resize=64, crop=64)
    with TestClient(create_app(make_settings(index=index))) as client:
        save_checkpoint(ckpt, make_tiny_model(9))  # a resumed run writes over it
        r = client.post("/api/eval", json={"resolution": 64})
        assert r.status_code == 409 and r.json()["error"]["code"] == "checkpoint_changed"
        assert client.get("/api/jobs").json()["items"] == []


# ---------------------------------------------------------------- the token stays in the server
def test_jobs_do_not_inherit_the_api_token(monkeypatch, make_settings):
    monkeypatch.setenv("SLOTCON_API_TOKEN", "s3cret-token")
    monkeypatch.setenv("SLOTCON_OTHER", "kept")
    env = child_env()
    assert "SLOTCON_API_TOKEN" not in env and env["SLOTCON_OTHER"] == "kept"
    settings = make_settings(api_token="s3cret-token")
    auth = {"Authorization": "Bearer s3cret-token"}
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/api/jobs/train",
            headers=auth,
            json={
                "preset": "cpu-demo",
                "name": "envcheck",
                "overrides": {**TINY_TRAIN, "epochs": 50},
            },
        )
        assert r.status_code == 201, r.text
        pid = r.json()["pid"]
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(v.startswith(b"SLOTCON_API_TOKEN=") for v in environ)
            assert b"SLOTCON_OTHER=kept" in environ
        finally:
            client.delete(f"/api/jobs/{r.json()['id']}", headers=auth)
            _settle(client, [r.json()["id"]], timeout=120)


# ---------------------------------------------------------------- reads that reveal paths or logs
def test_paths_and_logs_need_the_token_when_one_is_set(make_settings, tiny_checkpoint):
    settings = make_settings(api_token="s3cret-token")
    run = settings.runs_dir / "r1"
    run.mkdir(parents=True)
    import torch

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["train_config"] = {"data": "/srv/private/data/coco", "output_dir": str(run), "epochs": 3}
    torch.save(ckpt, run / "final.pth")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/checkpoints").status_code == 401
        assert client.get("/api/jobs/1/log").status_code == 401
        assert client.get("/api/prototypes").status_code == 200  # plain reads stay open
        listed = client.get("/api/checkpoints", headers={"Authorization": "Bearer s3cret-token"})
        assert listed.status_code == 200
        text = json.dumps(listed.json())
        assert "/srv/private" not in text and str(settings.runs_dir) not in text and os.sep + "r1" not in text
        assert listed.json()["items"][0]["train_config"] == {"data": "coco", "output_dir": "r1", "epochs": 3}
