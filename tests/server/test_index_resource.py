"""The index as a resource, through the API on real indexes: ``?index=NAME`` on the reads answers from
that index (its segments, its model for uploads), ``?build=`` refuses a rebuilt index with a 409, the
earlier path address redirects, the named indexes kept open are bounded, indexes are renamed and
deleted (never the default), and the default changes only on purpose and survives a restart."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.checkpoint import save_checkpoint
from indexer.build import build_index
from indexer.store import ConceptIndex
from server.app import create_app
from server.runtime import build_id
from server.services.indexes import readable_name


@pytest.fixture(scope="module")
def tree(tmp_path_factory, server_index: Path, synthetic_root: Path, make_tiny_model) -> Path:
    """``runs/r1/ckpt_epoch_2.pth`` (another model than the default index's), and under ``indexes/``: a copy
    of the shared index (``base``) and an index of that checkpoint at another resolution (``other``)."""
    root = tmp_path_factory.mktemp("index-resource")
    (root / "runs" / "r1").mkdir(parents=True)
    ckpt = save_checkpoint(root / "runs" / "r1" / "ckpt_epoch_2.pth", make_tiny_model(7), epoch=2, step=6)
    shutil.copytree(server_index, root / "indexes" / "base")
    build_index(ckpt, synthetic_root, root / "indexes" / "other", split="val2017", resize=96, crop=96)
    return root


def _settings(make_settings, tree: Path, **overrides):
    values = dict(index=tree / "indexes" / "base", indexes_dir=tree / "indexes", runs_dir=tree / "runs")
    return make_settings(**(values | overrides))


def _segment_ids(client: TestClient, k: int, **params) -> list[int]:
    r = client.get(f"/api/prototypes/{k}/segments", params={"limit": 5, **params})
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()["items"]]


def test_a_named_index_answers_the_reads(make_settings, tree: Path, sample_jpeg: bytes) -> None:
    other = tree / "indexes" / "other"
    shutil.copytree(other, tree / "indexes" / "spare", dirs_exist_ok=True)
    with ConceptIndex.open(other) as ix:
        expected = {k: [s.id for s in ix.top_segments(k, limit=5)] for k in range(ix.num_prototypes)}
    settings = _settings(make_settings, tree, index_cache_entries=1)
    with TestClient(create_app(settings)) as client:
        listing = client.get("/api/indexes").json()
        assert listing["default"] == "base"
        entry = next(i for i in listing["items"] if i["name"] == "other")
        build = build_id(other)
        assert entry["build"] == build and not entry["default"]
        assert (entry["run"], entry["checkpoint"], entry["epoch"], entry["step"]) == ("r1", "ckpt_epoch_2.pth", 2, 6)

        named = {k: _segment_ids(client, k, index="other") for k in expected}
        default = {k: _segment_ids(client, k) for k in expected}
        assert named == expected and named != default  # that index's segments, not the default's
        assert default == {k: _segment_ids(client, k, index="base") for k in expected}

        r = client.get("/api/prototypes", params={"index": "other"})
        assert r.headers["X-Index"] == "other" and r.headers["X-Index-Build"] == build
        assert client.get("/api/prototypes", params={"index": "other", "build": build}).status_code == 200
        stale = client.get("/api/prototypes/0/segments", params={"index": "other", "build": "0123abcd"})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "build_changed"
        assert "rebuilt" in stale.json()["error"]["message"]
        assert client.get("/api/prototypes", params={"index": "nope"}).status_code == 404
        assert client.get("/api/prototypes", params={"index": "../base"}).status_code == 422

        seg = expected[0][0]
        assert client.get(f"/api/segments/{seg}", params={"index": "other"}).json()["id"] == seg
        for path in ("/api/stats", "/api/images"):
            assert client.get(path, params={"index": "other"}).status_code == 200, path
        png = client.get("/api/images/0/slots", params={"index": "other", "size": 64})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"

        # The earlier path address redirects to the parameter.
        moved = client.get("/api/indexes/other/prototypes/0/best.png", follow_redirects=False)
        assert moved.status_code == 308 and moved.headers["location"].startswith(
            "/api/prototypes/0/best.png?index=other"
        )
        assert (
            client.get(moved.headers["location"]).content
            == client.get("/api/indexes/other/prototypes/0/best.png").content
        )

        # An upload analysed by that index's model: its K and its neighbours.
        up = client.post(
            "/api/slots", params={"index": "other", "neighbors": 1}, files={"file": ("a.jpg", sample_jpeg)}
        )
        assert up.status_code == 200, up.text
        assert all(n["segment"]["id"] in _all_ids(other) for s in up.json()["slots"] for n in s["neighbors"])

        runtime = client.app.state.runtime
        assert runtime.indexes.names() == ["other"] and runtime.indexes.get("other", _stamp(other)).model is not None
        assert client.get("/api/prototypes", params={"index": "spare"}).status_code == 200
        assert runtime.indexes.names() == ["spare"]  # one entry: the least recently used left

        # A rebuild under the same name: a link to the earlier build warns.
        manifest = json.loads((other / "manifest.json").read_text())
        (other / "manifest.json").write_text(json.dumps(manifest | {"built_at": "2030-01-01T00:00:00"}))
        try:
            again = client.get("/api/prototypes/0/segments", params={"index": "other", "build": build})
            assert again.status_code == 409 and again.json()["error"]["code"] == "build_changed"
            assert client.get("/api/indexes").json()["items"][1]["build"] == build_id(other) != build
        finally:
            (other / "manifest.json").write_text(json.dumps(manifest))

        # Renamed and deleted, never the default.
        r = client.post("/api/indexes/spare/rename", json={"name": "renamed"})
        assert r.status_code == 200 and r.json()["name"] == "renamed"
        assert client.get("/api/prototypes", params={"index": "spare"}).status_code == 404
        assert client.get("/api/prototypes", params={"index": "renamed"}).status_code == 200
        assert (
            client.post("/api/indexes/renamed/rename", json={"name": "other"}).json()["error"]["code"] == "index_exists"
        )
        assert client.post("/api/indexes/base/rename", json={"name": "b2"}).json()["error"]["code"] == "default_index"
        assert client.delete("/api/indexes/base").status_code == 409
        assert client.delete("/api/indexes/renamed").status_code == 204
        assert not (tree / "indexes" / "renamed").exists()
        assert client.delete("/api/indexes/renamed").status_code == 404


def _all_ids(index: Path) -> set[int]:
    with ConceptIndex.open(index) as ix:
        return {s.id for k in range(ix.num_prototypes) for s in ix.top_segments(k, limit=10_000)}


def _stamp(index: Path) -> tuple[int, int]:
    st = (index / "manifest.json").stat()
    return st.st_mtime_ns, st.st_size


def test_the_default_is_stored_and_the_flag_wins(make_settings, tree: Path) -> None:
    unset = _settings(make_settings, tree, index=None)
    with TestClient(create_app(unset)) as client:
        assert client.get("/api/health").json()["index"] is None
        r = client.put("/api/indexes/default", json={"name": "other"})
        assert r.status_code == 200 and r.json()["name"] == "other"
        assert client.put("/api/indexes/default", json={"name": "nope"}).status_code == 404
    with TestClient(create_app(unset)) as client:  # restarted: the stored default
        assert client.get("/api/health").json()["index"]["name"] == "other"
        assert client.app.state.runtime.default_source == "the stored default"
    flagged = _settings(make_settings, tree, index=tree / "indexes" / "base")
    with TestClient(create_app(flagged)) as client:  # --index wins for this run, the stored default stays
        assert client.get("/api/health").json()["index"]["name"] == "base"
        assert client.app.state.runtime.default_source == "--index"
    with TestClient(create_app(unset)) as client:
        assert client.get("/api/health").json()["index"]["name"] == "other"


def test_readable_names(tmp_path: Path) -> None:
    assert readable_name(tmp_path, "cpu-demo", Path("final.pth")) == "cpu-demo-final"
    assert readable_name(tmp_path, "cpu-demo", Path("ckpt_epoch_2.pth")) == "cpu-demo-epoch2"
    assert readable_name(tmp_path, "run 1", Path("weird.name.pth")) == "run-1-weird-name"
    (tmp_path / "cpu-demo-final").mkdir()
    assert readable_name(tmp_path, "cpu-demo", Path("final.pth")) == "cpu-demo-final-2"
    assert readable_name(tmp_path, "cpu-demo", Path("final.pth"), {"cpu-demo-final-2"}) == "cpu-demo-final-3"


def test_an_index_job_leaves_the_default_unless_asked(make_settings, tree: Path, tiny_checkpoint: Path) -> None:
    settings = _settings(make_settings, tree, state_dir=tree / "job-state")
    (tree / "runs" / "r2").mkdir(exist_ok=True)
    shutil.copy(tiny_checkpoint, tree / "runs" / "r2" / "final.pth")
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/jobs/index", json={"checkpoint": "r2/final.pth", "resize": 96, "crop": 96})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "r2-final"
        deadline = time.time() + 120
        while (job := client.get(f"/api/jobs/{r.json()['id']}").json())["status"] == "running":
            assert time.time() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        time.sleep(0.5)  # the watcher's on-finish step has run by now
        assert client.get("/api/health").json()["index"]["name"] == "base"
        listing = client.get("/api/indexes").json()
        assert listing["default"] == "base" and "r2-final" in [i["name"] for i in listing["items"]]
        assert client.get("/api/prototypes", params={"index": "r2-final"}).status_code == 200


def test_names_belong_to_the_model(make_settings, tree: Path, synthetic_root: Path) -> None:
    from core.checkpoint import atomic_save, read_checkpoint

    src = tree / "runs" / "r1" / "ckpt_epoch_2.pth"
    (tree / "runs" / "r3").mkdir(exist_ok=True)
    copy = atomic_save({**read_checkpoint(src), "note": "exported"}, tree / "runs" / "r3" / "copy.pth")
    assert copy.read_bytes() != src.read_bytes()  # the same weights in another file
    for name, ckpt in (("names-copy", copy), ("names-again", src)):
        build_index(ckpt, synthetic_root, tree / "indexes" / name, split="val2017", resize=64, crop=64)
    with ConceptIndex.open(tree / "indexes" / "other") as ix:
        ix.set_label(1, "stripes")  # saved in the index's own database, before names belonged to the model
    settings = _settings(make_settings, tree)

    def label(client: TestClient, index: str, k: int) -> str | None:
        return client.get(f"/api/prototypes/{k}", params={"index": index}).json()["label"]

    try:
        with TestClient(create_app(settings)) as client:
            assert label(client, "other", 1) == "stripes"  # migrated on first open
            assert label(client, "names-copy", 1) == "stripes"  # a re-saved copy of the same weights
            r = client.put("/api/prototypes/3/label", params={"index": "names-copy"}, json={"label": "sky"})
            assert r.status_code == 200 and r.json()["label"] == "sky"
            assert label(client, "other", 3) == "sky"  # an open index of the same model follows
            assert client.delete("/api/prototypes/1/label", params={"index": "other"}).status_code == 200
            assert label(client, "names-copy", 1) is None
            assert label(client, "base", 1) != "stripes" and label(client, "base", 3) != "sky"  # another model
        with TestClient(create_app(settings)) as client:  # restarted: the same checkpoint indexed again
            assert label(client, "names-again", 3) == "sky" and label(client, "names-again", 1) is None
            assert label(client, "other", 1) is None  # a removed name does not come back from an index
    finally:
        for name in ("names-copy", "names-again"):
            shutil.rmtree(tree / "indexes" / name, ignore_errors=True)
        with ConceptIndex.open(tree / "indexes" / "other") as ix:
            ix.set_label(1, None)
            ix.set_label(3, None)
