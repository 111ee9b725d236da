"""Jobs through the API with real child processes: a tiny training run to 100 %, a long one stopped
mid-way (checkpoint saved), both still listed after an app restart; re-attach, vanished, one-at-a-time,
allow-listed overrides, indexing and switching to the new index without a restart."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.jobstore import JobStore
from tests.server.conftest import TINY_TRAIN, wait_job


def _train(client, name: str, **overrides):
    return client.post(
        "/api/jobs/train", json={"preset": "cpu-demo", "name": name, "overrides": {**TINY_TRAIN, **overrides}}
    )


def test_train_progress_stop_and_restart(make_settings):
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        r = _train(client, "quick", epochs=1, max_steps=3)
        assert r.status_code == 201, r.text
        quick = r.json()
        assert quick["status"] == "running" and quick["kind"] == "train" and quick["name"] == "quick"
        done = wait_job(client, quick["id"])
        assert done["status"] == "succeeded" and done["progress"] == 1.0, done
        assert done["latest_metrics"]["step"] == done["total_steps"] == 3
        metrics = client.get(f"/api/jobs/{quick['id']}/metrics").json()
        assert [m["step"] for m in metrics["items"]] == [1, 2, 3] and metrics["event"]["event"] == "finished"
        newer = client.get(f"/api/jobs/{quick['id']}/metrics", params={"since": 2}).json()["items"]
        assert [m["step"] for m in newer] == [3]
        assert "saved" in client.get(f"/api/jobs/{quick['id']}/log").json()["log"]
        ckpts = client.get("/api/checkpoints").json()["items"]
        assert {"quick/final.pth", "quick/current.pth"} <= {c["id"] for c in ckpts}
        final = next(c for c in ckpts if c["id"] == "quick/final.pth")
        assert final["epoch"] == 1 and final["config"]["num_prototypes"] == 8

        long = _train(client, "long", epochs=500, max_steps=100000).json()
        wait_job(client, long["id"], lambda j: (j["step"] or 0) >= 2)
        second = _train(client, "another", epochs=1, max_steps=3)
        assert second.status_code == 409 and second.json()["error"]["code"] == "job_conflict"
        r = client.delete(f"/api/jobs/{long['id']}")
        assert r.status_code == 202 and r.json()["status"] in ("stopping", "stopped")
        stopped = wait_job(client, long["id"], lambda j: j["status"] not in ("running", "stopping"))
        assert stopped["status"] == "stopped" and 0 < stopped["progress"] < 1, stopped
        assert (settings.runs_dir / "long" / "current.pth").is_file()
        assert client.delete(f"/api/jobs/{long['id']}").status_code == 409
    with TestClient(create_app(settings)) as client:  # a restarted server still knows both jobs
        jobs = {j["name"]: j for j in client.get("/api/jobs").json()["items"]}
        assert jobs["quick"]["status"] == "succeeded" and jobs["long"]["status"] == "stopped"
        assert client.get(f"/api/jobs/{long['id']}/metrics").json()["event"]["event"] == "stopped"


def test_running_job_is_reattached_after_restart(make_settings):
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        job = _train(client, "survivor", epochs=500, max_steps=100000).json()
        wait_job(client, job["id"], lambda j: (j["step"] or 0) >= 1)
    with TestClient(create_app(settings)) as client:  # the child kept running while no server watched
        again = client.get(f"/api/jobs/{job['id']}").json()
        assert again["status"] == "running" and again["pid"] == job["pid"]
        step = again["step"]
        wait_job(client, job["id"], lambda j: (j["step"] or 0) > step)  # progress still flows
        client.delete(f"/api/jobs/{job['id']}")
        assert wait_job(client, job["id"], lambda j: j["status"] not in ("running", "stopping"))["status"] == "stopped"


def test_vanished_job_is_marked_failed(make_settings):
    settings = make_settings()
    store = JobStore(settings.state_dir / "jobs.db")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job_id = store.insert(
        kind="train",
        name="ghost",
        config={},
        argv=[sys.executable, "-m", "trainer"],
        output_dir=str(settings.runs_dir / "ghost"),
        progress_path=str(settings.runs_dir / "ghost" / "metrics.jsonl"),
        log_path=str(settings.state_dir / "ghost.log"),
    )
    store.update(job_id, pid=gone.pid)
    with TestClient(create_app(settings)) as client:
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "failed" and job["message"] == "process vanished after server restart"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"preset": "cpu-demo", "overrides": {"data": "/etc"}}, "data"),
        ({"preset": "cpu-demo", "overrides": {"output_dir": "/tmp/x"}}, "output_dir"),
        ({"preset": "cpu-demo", "overrides": {"resume": "/tmp/x.pth"}}, "resume"),
        ({"preset": "cpu-demo", "overrides": {"epochs": "many"}}, "epochs"),
        ({"preset": "cpu-demo", "overrides": {"arch": "vit"}}, "arch"),
        ({"preset": "nope"}, "preset"),
        ({"preset": "cpu-demo", "name": "../escape"}, "name"),
        ({"preset": "cpu-demo", "output_dir": "/tmp"}, "output_dir"),
    ],
)
def test_train_request_allow_list(client, body, field):
    r = client.post("/api/jobs/train", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    assert client.get("/api/jobs").json() == {"items": []}


def test_index_job_then_activate_without_restart(make_settings, tiny_checkpoint, server_index):
    settings = make_settings()
    run = settings.runs_dir / "r1"
    run.mkdir(parents=True)
    (run / "final.pth").write_bytes(tiny_checkpoint.read_bytes())
    with TestClient(create_app(settings)) as client:
        bad = client.post("/api/jobs/index", json={"checkpoint": "../r1/final.pth"})
        assert bad.status_code == 422
        missing = client.post("/api/jobs/index", json={"checkpoint": "nope/final.pth"})
        assert missing.status_code == 404
        r = client.post(
            "/api/jobs/index",
            json={"checkpoint": "r1/final.pth", "name": "fresh", "resize": 96, "crop": 96, "activate": True},
        )
        assert r.status_code == 201, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
        assert job["status"] == "succeeded" and job["progress"] == 1.0, job
        deadline = time.time() + 10
        while client.get("/api/health").json()["index"]["name"] != "fresh" and time.time() < deadline:
            time.sleep(0.1)
        health = client.get("/api/health").json()
        assert health["index"]["name"] == "fresh" and health["index"]["crop"] == 96
        assert client.get("/api/prototypes/0/segments?limit=1").status_code == 200
        ckpt = next(c for c in client.get("/api/checkpoints").json()["items"] if c["id"] == "r1/final.pth")
        assert ckpt["indexed"] and ckpt["active"]
        assert client.post("/api/index/activate", json={"name": "nope"}).status_code == 404
        assert client.post("/api/index/activate", json={"job_id": 1, "name": "x"}).status_code == 422
        assert client.post("/api/index/activate", json={"job_id": job["id"]}).json()["name"] == "fresh"


def test_eval_job_through_the_api_stores_its_result(make_settings, server_index, tmp_path):
    """POST /api/eval runs the evaluation as a job; the result lands in the active index and is served."""
    import shutil

    index = shutil.copytree(server_index, tmp_path / "index-copy")
    with TestClient(create_app(make_settings(index=index))) as client:
        assert client.get("/api/eval").json()["items"] == []
        bad = client.post("/api/eval", json={"protocol": "synthetic", "resolution": 8})
        assert bad.status_code == 422
        r = client.post("/api/eval", json={"protocol": "synthetic", "baseline": "kmeans-rgb", "resolution": 64})
        assert r.status_code == 201, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
        assert job["status"] == "succeeded" and job["progress"] == 1.0, job
        items = client.get("/api/eval").json()["items"]
        assert len(items) == 1 and items[0]["baseline"] == "kmeans-rgb"
        assert 0.0 <= items[0]["miou"] <= 1.0 and items[0]["examples"]
