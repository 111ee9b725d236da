"""Activation is all-or-nothing, on a live uvicorn: each broken index (garbage SQLite, truncated FAISS,
manifest without checkpoint, wrong K, a checkpoint of another K, a checkpoint overwritten after
indexing) is refused with a typed 400/409 and the old index keeps serving reads and uploads; the
same index at start-up is a one-line error and exit code 3, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.checkpoint import save_checkpoint
from server.services.digests import content_sha256

ROOT = Path(__file__).resolve().parents[2]


def _manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())


def _write_manifest(index: Path, manifest: dict) -> None:
    (index / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def broken(tmp_path_factory, server_index, synthetic_root, make_tiny_model) -> dict[str, tuple[Path, int, str, str]]:
    """name → (index dir, expected status, code, words in the message), all under one indexes dir."""
    from indexer.build import build_index

    root = tmp_path_factory.mktemp("activation")
    indexes, runs = root / "indexes", root / "runs"
    cases: dict[str, tuple[Path, int, str, str]] = {}

    def copy(name: str) -> Path:
        return shutil.copytree(server_index, indexes / name)

    bad = copy("garbage-sqlite")
    (bad / "index.db").write_bytes(b"this is not a database" * 200)
    cases["garbage-sqlite"] = (bad, 400, "bad_index", "index.db")

    bad = copy("truncated-faiss")
    data = (bad / "segments.faiss").read_bytes()
    (bad / "segments.faiss").write_bytes(data[: len(data) // 3])
    cases["truncated-faiss"] = (bad, 400, "bad_index", "segments.faiss")

    bad = copy("no-checkpoint")
    m = _manifest(bad)
    del m["checkpoint"]
    _write_manifest(bad, m)
    cases["no-checkpoint"] = (bad, 400, "bad_index", "'checkpoint' is missing")

    bad = copy("wrong-k")
    m = _manifest(bad)
    m["num_prototypes"] = 6
    _write_manifest(bad, m)
    cases["wrong-k"] = (bad, 400, "bad_index", "K = 6")

    # A K = 6 index whose manifest names a K = 8 checkpoint with that checkpoint's true hash.
    (runs / "k6").mkdir(parents=True)
    (runs / "k8").mkdir(parents=True)
    save_checkpoint(runs / "k6" / "final.pth", make_tiny_model(3, num_prototypes=6))
    save_checkpoint(runs / "k8" / "final.pth", make_tiny_model(4))
    k6 = build_index(
        runs / "k6" / "final.pth", synthetic_root, indexes / "other-k", split="val2017", resize=96, crop=96
    )
    m = _manifest(k6)
    m["checkpoint"] = {"path": str(runs / "k8" / "final.pth"), "sha256": content_sha256(runs / "k8" / "final.pth")}
    _write_manifest(k6, m)
    cases["other-k"] = (k6, 409, "index_mismatch", "K = 6, D = 32 but its checkpoint k8/final.pth has K = 8")

    # Indexed from runs/resumed/final.pth, which a resumed run then overwrote with other weights.
    (runs / "resumed").mkdir()
    save_checkpoint(runs / "resumed" / "final.pth", make_tiny_model(5))
    stale = build_index(
        runs / "resumed" / "final.pth", synthetic_root, indexes / "overwritten", split="val2017", resize=96, crop=96
    )
    save_checkpoint(runs / "resumed" / "final.pth", make_tiny_model(6))
    cases["overwritten"] = (stale, 409, "index_mismatch", "resumed/final.pth now holds sha256")
    return cases


@pytest.fixture(scope="module")
def live(live_server, broken, server_index, synthetic_root, tmp_path_factory):
    indexes = next(iter(broken.values()))[0].parent
    state = tmp_path_factory.mktemp("activation-state")
    index = shutil.copytree(server_index, state / "tiny")
    with live_server(
        "--index",
        str(index),
        "--indexes-dir",
        str(indexes),
        "--runs-dir",
        str(indexes.parent / "runs"),  # the checkpoints the broken indexes name: the server opens no other
        "--state-dir",
        str(state),
        "--data-root",
        str(synthetic_root),
    ) as srv:
        yield srv


CASES = ["garbage-sqlite", "truncated-faiss", "no-checkpoint", "wrong-k", "other-k", "overwritten"]


@pytest.mark.parametrize("name", CASES)
def test_a_broken_index_is_refused_and_the_old_one_keeps_serving(live, broken, sample_jpeg, name):
    _, status, code, words = broken[name]
    with httpx.Client(base_url=live.base, timeout=120) as c:
        before = c.get("/api/health").json()
        r = c.post("/api/index/activate", json={"name": name})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and words in err["message"], err
        assert "/" + name not in err["message"] and str(ROOT) not in err["message"]  # names, not paths
        health = c.get("/api/health")
        assert health.status_code == 200
        assert health.json()["index"] == before["index"] and health.json()["checkpoint"] == before["checkpoint"]
        assert c.get("/api/prototypes").status_code == 200
        assert c.get("/api/images/0", params={"size": 32}).status_code == 200
        upload = c.post("/api/slots", files={"file": ("a.jpg", sample_jpeg, "image/jpeg")})
        assert upload.status_code == 200 and upload.json()["slots"]


def test_the_overwritten_checkpoint_message_says_how_to_rebuild(live, broken):
    r = httpx.post(f"{live.base}/api/index/activate", json={"name": "overwritten"}, timeout=120)
    message = r.json()["error"]["message"]
    assert "POST /api/jobs/index" in message and '"checkpoint": "resumed/final.pth"' in message
    assert "slotcon index --checkpoint resumed/final.pth" in message


@pytest.mark.parametrize("name", CASES)
def test_a_broken_index_at_start_up_is_one_line_and_exit_code_3(broken, tmp_path, name):
    index, _, _, words = broken[name]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--index",
            str(index),
            "--port",
            "9",
            "--state-dir",
            str(tmp_path / "state"),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )
    assert out.returncode == 3, out.stdout + out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "slotcon serve:" in line]
    assert len(lines) == 1 and "cannot serve the configured index" in lines[0] and words in lines[0], lines
    assert "Traceback" not in out.stdout + out.stderr


def test_a_good_index_still_activates(live, server_index, broken):
    """The refusals above are about those indexes: a sound one switches (and back)."""
    indexes = next(iter(broken.values()))[0].parent
    shutil.copytree(server_index, indexes / "sound", dirs_exist_ok=True)
    with httpx.Client(base_url=live.base, timeout=120) as c:
        r = c.post("/api/index/activate", json={"name": "sound"})
        assert r.status_code == 200 and r.json()["name"] == "sound"
        assert c.get("/api/health").json()["index"]["name"] == "sound"
