"""Browsers' cross-site requests refused (a page of another site cannot make the server work), those
without Origin/Sec-Fetch-Site served; and no absolute server path in any answer, error or job log,
with a token as without."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.jobstore import JobStore
from server.services.names import ServerPaths


def _upload(client, data: bytes, **kwargs):
    return client.post("/api/slots", files={"file": ("a.jpg", data, "image/jpeg")}, **kwargs)


@pytest.mark.parametrize(
    "headers, why",
    [
        ({"Origin": "http://evil.example"}, "Origin 'http://evil.example' is not this server's"),
        ({"Origin": "null"}, "Origin 'null'"),
        ({"Origin": "http://testserver:8080"}, "is not this server's"),  # another port: another origin
        ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site is 'cross-site'"),
        ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site is 'same-site'"),
    ],
)
def test_cross_site_upload_is_refused(client, sample_jpeg, headers, why):
    r = _upload(client, sample_jpeg, headers=headers)
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "cross_site" and why in error["message"] and "POST /api/slots" in error["message"]
    assert _upload(client, sample_jpeg).status_code == 200  # the same request without a browser's headers


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://testserver"},  # the server's own pages
        {"Origin": "http://localhost:8501", "Sec-Fetch-Site": "same-site"},  # the UI's origin (CORS allows it)
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
def test_same_origin_and_headerless_requests_are_served(client, sample_jpeg, headers):
    assert _upload(client, sample_jpeg, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("PUT", "/api/prototypes/1/label", {"label": "x"}),
        ("DELETE", "/api/prototypes/1/label", None),
        ("POST", "/api/jobs/index", {"run": "r"}),
        ("POST", "/api/index/activate", {"name": "x"}),
        ("GET", "/api/figure?prototypes=0-3", None),
        ("GET", "/api/images/0/overlay?prototype=1", None),
        ("GET", "/api/compare?a=x", None),
        ("GET", "/api/prototypes/similarity.png", None),
    ],
)
def test_state_changing_and_expensive_routes_refuse_cross_site(client, method, url, body):
    r = client.request(method, url, json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site", r.text
    assert client.get("/api/prototypes/1").json()["label"] is None  # nothing was done
    # cheap reads stay open to any page (CORS still keeps their answers from other origins' scripts)
    assert client.get("/api/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_cross_site_check_on_a_live_server(live_server, server_index, sample_jpeg, tmp_path):
    """On a real uvicorn (the Host a browser sends names the port): the server's own origin passes."""
    import httpx

    with live_server("--index", str(server_index), "--state-dir", str(tmp_path / "state")) as srv:
        files = {"file": ("a.jpg", sample_jpeg, "image/jpeg")}
        evil = httpx.post(f"{srv.base}/api/slots", files=files, headers={"Origin": "http://evil.com"}, timeout=30)
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_site"
        own = httpx.post(f"{srv.base}/api/slots", files=files, headers={"Origin": srv.base}, timeout=30)
        assert own.status_code == 200, own.text
        assert httpx.post(f"{srv.base}/api/slots", files=files, timeout=30).status_code == 200


# ---------------------------------------------------------------------------------------------- paths


def test_server_paths_are_named_relative_to_their_folders(tmp_path):
    runs = tmp_path / "runs"
    paths = ServerPaths([runs, tmp_path / "data" / "coco"])
    assert paths.text(f"saved {runs}/demo/current.pth") == "saved demo/current.pth"
    assert paths.text(str(tmp_path / "data" / "coco")) == "coco"
    assert paths.text(f"{tmp_path}/runsX/a") == f"{tmp_path}/runsX/a"  # not under the folder: left alone
    assert paths.value({"a": [f"{runs}/x.pth"], "n": 3}) == {"a": ["x.pth"], "n": 3}
    body = json.dumps({"root": str(tmp_path / "data" / "coco"), "ckpt": f"{runs}/demo/e1.pth"}).encode()
    assert json.loads(paths.json_bytes(body)) == {"root": "coco", "ckpt": "demo/e1.pth"}


@pytest.fixture(scope="module")
def index_with_eval(server_index, tmp_path_factory) -> Path:
    """A copy of the tiny index with one real stored evaluation (its checkpoint and data root absolute)."""
    from indexer.evaluate import EvalConfig, run_eval
    from indexer.store import ConceptIndex

    copy = shutil.copytree(server_index, tmp_path_factory.mktemp("eval-index") / "with-eval")
    with ConceptIndex.open(copy) as ix:
        ckpt, root = ix.manifest.checkpoint.path, ix.data_root
    result = run_eval(EvalConfig(ckpt, root, "synthetic", resolution=32, limit=1))
    assert Path(result.checkpoint.path).is_absolute() and Path(result.data_root).is_absolute()
    with ConceptIndex.open(copy) as ix:
        ix.store_eval(result, [])
    return copy


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_evaluations_show_no_absolute_path(make_settings, index_with_eval, tiny_checkpoint, synthetic_root, token):
    settings = make_settings(index=index_with_eval, **({"host": "0.0.0.0", "api_token": token} if token else {}))
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/eval")
        assert r.status_code == 200
        (item,) = r.json()["items"]
        assert item["checkpoint"]["path"] == f"{tiny_checkpoint.parent.name}/{tiny_checkpoint.name}"
        assert item["data_root"] == synthetic_root.name
        for absolute in (str(tiny_checkpoint.parent), str(synthetic_root), str(index_with_eval.parent)):
            assert absolute not in r.text


def test_job_metrics_logs_and_errors_show_no_absolute_path(make_settings, tmp_path):
    settings = make_settings()
    run = settings.runs_dir / "demo"
    run.mkdir(parents=True)
    metrics, log = run / "metrics.jsonl", settings.state_dir / "logs" / "job.log"
    log.parent.mkdir(parents=True)
    records = [
        {"step": 1, "loss": 2.5, "total_steps": 2},
        {"event": "stopped", "step": 1, "reason": "SIGTERM", "checkpoint": str(run / "current.pth")},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    log.write_text(f"saved {run / 'current.pth'}\nread {settings.data_root / 'train2017'}\n")
    store = JobStore(settings.state_dir / "jobs.db")
    job = store.insert(
        kind="train", name="demo", config={"preset": "cpu-demo"}, argv=["python", "-m", "trainer"],
        output_dir=str(run), progress_path=str(metrics), log_path=str(log), done_path=None,
    )  # fmt: skip
    store.update(job, status="stopped", finished_at=time.time(), message=f"stopped; {run / 'current.pth'} saved")
    with TestClient(create_app(settings)) as client:
        page = client.get(f"/api/jobs/{job}/metrics")
        assert page.status_code == 200 and page.json()["event"]["checkpoint"] == "demo/current.pth"
        assert client.get(f"/api/jobs/{job}").json()["message"] == "stopped; demo/current.pth saved"
        text = client.get(f"/api/jobs/{job}/log").json()["log"]
        assert text == "saved demo/current.pth\nread train2017\n"  # each relative to its folder
        missing = client.post("/api/index/activate", json={"name": "nope"})
        assert missing.status_code == 404
        for r in (page, missing, client.get("/api/jobs")):
            assert str(tmp_path) not in r.text
