"""Jobs recovered after a restart finish their on-finish step (a real SIGKILL of a live server while an
index job that was to become the active index runs, then a restart), and the indexes and runs folders
open only regular directories and files inside them: a FIFO named manifest.json, symlinks out of the
folder and devices are skipped, and no hash of a file outside the folders is ever shown."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.processes import pid_alive
from server.services.jobstore import JobStore


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_an_index_job_is_activated_when_it_is_recovered_after_sigkill(
    live_server, tiny_checkpoint, synthetic_root, tmp_path
):
    runs, indexes, state = tmp_path / "runs", tmp_path / "indexes", tmp_path / "state"
    (runs / "r1").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, runs / "r1" / "final.pth")
    args = ["--runs-dir", str(runs), "--indexes-dir", str(indexes), "--state-dir", str(state)]
    args += ["--data-root", str(synthetic_root)]
    with live_server(*args) as first:
        r = httpx.post(
            f"{first.base}/api/jobs/index",
            json={"run": "r1", "name": "kidx2", "activate": True, "resize": 96, "crop": 96},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        assert first.proc is not None
        first.proc.kill()  # SIGKILL: no shutdown step runs; the job (its own session) goes on
        first.proc.wait(timeout=10)
    row = JobStore(state / "jobs.db").get(job)
    assert row is not None and row.status == "running" and row.pid
    _wait_for(lambda: not pid_alive(row.pid), 180, "the index job to finish")
    assert (indexes / "kidx2" / "manifest.json").is_file()
    with live_server(*args) as second:
        health = httpx.get(f"{second.base}/api/health", timeout=5).json()
        assert health["index"] is not None and health["index"]["name"] == "kidx2"
        settled = httpx.get(f"{second.base}/api/jobs/{job}", timeout=5).json()
        assert settled["status"] == "succeeded" and "made 'kidx2' the default index" in settled["message"]


def test_a_recovered_job_that_cannot_be_activated_says_why(make_settings, tmp_path):
    """The same recovery without the restart's machinery: the job's output is not a usable index, so the
    job is marked with the reason (and the server keeps its index)."""
    settings = make_settings()
    out = settings.indexes_dir / "half"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text("{}")  # the job's done file: it finished, but its index is broken
    store = JobStore(settings.state_dir / "jobs.db")
    job = store.insert(
        kind="index", name="half", config={"run": "r1", "activate": True}, argv=["python", "-m", "indexer"],
        output_dir=str(out), progress_path=str(tmp_path / "p.json"), log_path=str(tmp_path / "log"),
        done_path=str(out / "manifest.json"),
    )  # fmt: skip
    store.update(job, pid=2**22 + 12345)  # no such process: it ended while no server watched it
    with TestClient(create_app(settings)) as client:
        settled = client.get(f"/api/jobs/{job}").json()
        assert settled["status"] == "succeeded"
        assert "not made the default (the previous default stays)" in settled["message"]
        assert client.get("/api/health").json()["index"]["name"] == "tiny"


# ---------------------------------------------------------------------------------------------- folders


@pytest.fixture()
def hostile_indexes(make_settings, server_index, tiny_checkpoint, tmp_path):
    """An indexes folder holding a good index, a FIFO named manifest.json, symlinks out of the folder (to a
    directory and as a manifest), and a manifest whose checkpoint names a file outside every folder."""
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    shutil.copytree(server_index, indexes / "good")
    (indexes / "fifo").mkdir()
    os.mkfifo(indexes / "fifo" / "manifest.json")
    os.mkfifo(indexes / "fifo.json")
    outside = tmp_path / "outside"
    shutil.copytree(server_index, outside)
    (indexes / "linked").symlink_to(outside, target_is_directory=True)
    (indexes / "manifest-link").mkdir()
    (indexes / "manifest-link" / "manifest.json").symlink_to(outside / "manifest.json")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours" * 100)
    stolen = indexes / "stolen"
    shutil.copytree(server_index, stolen)
    manifest = json.loads((stolen / "manifest.json").read_text())
    manifest["checkpoint"]["path"] = str(secret)
    (stolen / "manifest.json").write_text(json.dumps(manifest))
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, runs / "r1" / "final.pth")
    os.mkfifo(runs / "r1" / "fifo.pth")
    (runs / "r1" / "linked.pth").symlink_to(tiny_checkpoint)
    (runs / "out").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
    return make_settings(indexes_dir=indexes, runs_dir=runs), secret


@pytest.mark.timeout(120)  # a FIFO opened would block forever: fail instead
def test_fifos_and_symlinks_in_the_folders_are_skipped(hostile_indexes):
    settings, _ = hostile_indexes
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        listed = client.get("/api/indexes")
        assert listed.status_code == 200 and time.perf_counter() - started < 5
        items = listed.json()["items"]  # the default index (configured elsewhere) first, then the folder's
        assert items[0]["name"] == "tiny" and items[0]["default"]
        assert sorted(i["name"] for i in items[1:]) == ["good", "stolen"]
        checkpoints = client.get("/api/checkpoints")
        assert checkpoints.status_code == 200
        assert [c["id"] for c in checkpoints.json()["items"]] == ["r1/final.pth"]
        for name, status, words in [
            ("linked", 404, "does not exist"),
            ("fifo", 400, "manifest.json is not a regular file"),
            ("manifest-link", 400, "manifest.json is a symlink"),
        ]:
            r = client.get("/api/compare", params={"a": name})
            assert r.status_code == 404, (name, r.text)
            r = client.post("/api/index/activate", json={"name": name})
            assert r.status_code == status and words in r.json()["error"]["message"], (name, r.text)
        assert client.get("/api/compare", params={"a": "good"}).status_code == 200


def test_no_hash_of_a_file_outside_the_folders(hostile_indexes):
    settings, secret = hostile_indexes
    import hashlib

    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/index/activate", json={"name": "stolen"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "checkpoint_outside"
        assert digest[:6] not in r.text and str(secret.parent) not in r.text
        assert client.get("/api/health").json()["index"]["name"] == "tiny"
