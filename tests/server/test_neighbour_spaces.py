"""``GET /api/segments/{id}/neighbors?space=``: neighbours in the projector or the encoder embedding,
against a real tiny index; an index without encoder vectors answers 409 naming what it has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from indexer.store import ConceptIndex
from server.app import create_app


def test_health_lists_the_spaces(client):
    assert client.get("/api/health").json()["index"]["spaces"] == ["projector", "encoder"]


@pytest.mark.parametrize("space", ["projector", "encoder"])
def test_neighbours_in_a_space_are_the_index_answer(client, server_index: Path, space: str):
    body = client.get("/api/segments/3/neighbors", params={"limit": 6, "space": space}).json()
    assert body["space"] == space and body["segment_id"] == 3
    with ConceptIndex.open(server_index) as ix:
        expected = ix.neighbors(3, 6, space=space)
        vecs = np.stack([ix.segment_vector(i, space) for i in range(ix.num_segments)])
    assert [n["segment"]["id"] for n in body["items"]] == [s.id for s, _ in expected]
    sims = vecs[[n["segment"]["id"] for n in body["items"]]] @ vecs[3]
    np.testing.assert_allclose([n["similarity"] for n in body["items"]], sims, atol=1e-5)


def test_the_default_space_is_the_projector(client):
    default = client.get("/api/segments/3/neighbors", params={"limit": 4}).json()
    explicit = client.get("/api/segments/3/neighbors", params={"limit": 4, "space": "projector"}).json()
    assert default == explicit and default["space"] == "projector"
    encoder = client.get("/api/segments/3/neighbors", params={"limit": 4, "space": "encoder"}).json()
    assert [n["similarity"] for n in encoder["items"]] != [n["similarity"] for n in default["items"]]


def test_an_unknown_space_is_a_422(client):
    r = client.get("/api/segments/3/neighbors", params={"space": "pixels"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_openapi_documents_the_space(client):
    op = client.get("/openapi.json").json()["paths"]["/api/segments/{segment_id}/neighbors"]["get"]
    (param,) = [p for p in op["parameters"] if p["name"] == "space"]
    assert param["schema"]["enum"] == ["projector", "encoder"] and param["schema"]["examples"] == ["encoder"]
    assert "409" in op["responses"]


def test_an_index_without_encoder_vectors_answers_409(
    make_settings, tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path
):
    ix = build_index(tiny_checkpoint, synthetic_root, tmp_path / "plain", split="val2017", encoder_vectors=False)
    with TestClient(create_app(make_settings(index=ix))) as c:
        assert c.get("/api/health").json()["index"]["spaces"] == ["projector"]
        assert c.get("/api/segments/0/neighbors", params={"space": "projector"}).status_code == 200
        r = c.get("/api/segments/0/neighbors", params={"space": "encoder"})
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "space_unavailable" and "--no-encoder-vectors" in err["message"]
        assert str(tmp_path) not in err["message"]  # names the index, never its path


@pytest.mark.parametrize("space", ["projector", "encoder"])
def test_an_uploaded_slot_finds_its_own_index_entry_in_either_space(client, server_index: Path, space: str):
    """An indexed image uploaded with ``?crop=true``: in either space each slot's nearest dataset segment is its
    own index entry at similarity 1 (the slot's pooled encoder feature is centred as the index's are), and the
    rest rank as the index's own search from that entry does."""
    with ConceptIndex.open(server_index) as ix:
        rec = ix.image(5)
        entry = {s.prototype: s for s in ix.image_segments(5)}
        expected = {k: [(s.id, sim) for s, sim in ix.search(ix.segment_vector(seg.id, space), 4, space=space,
                                                               stored=True)]
                    for k, seg in entry.items()}  # fmt: skip
    r = client.post(
        "/api/slots",
        params={"crop": "true", "neighbors": 4, "space": space},
        files={"file": (rec.path.name, rec.path.read_bytes(), "image/jpeg")},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["space"] == space and sorted(s["prototype"] for s in body["slots"]) == sorted(entry)
    for slot in body["slots"]:
        got = [(n["segment"]["id"], n["similarity"]) for n in slot["neighbors"]]
        assert got[0][0] == entry[slot["prototype"]].id and got[0][1] == pytest.approx(1.0, abs=1e-4)
        assert [i for i, _ in got] == [i for i, _ in expected[slot["prototype"]]]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected[slot["prototype"]]], atol=1e-4)


def test_upload_neighbours_default_to_the_projector_and_409_without_encoder_vectors(
    client, make_settings, tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, sample_jpeg: bytes
):
    files = {"file": ("a.jpg", sample_jpeg, "image/jpeg")}
    default = client.post("/api/slots", files=files).json()
    encoder = client.post("/api/slots", params={"space": "encoder"}, files=files).json()
    assert default["space"] == "projector" and encoder["space"] == "encoder"
    sims = lambda body: [n["similarity"] for s in body["slots"] for n in s["neighbors"]]  # noqa: E731
    assert sims(default) and sims(default) != sims(encoder)
    op = client.get("/openapi.json").json()["paths"]["/api/slots"]["post"]
    assert any(p["name"] == "space" for p in op["parameters"]) and "409" in op["responses"]
    ix = build_index(tiny_checkpoint, synthetic_root, tmp_path / "plain", split="val2017", encoder_vectors=False)
    with TestClient(create_app(make_settings(index=ix))) as c:
        r = c.post("/api/slots", params={"space": "encoder"}, files=files)
        assert r.status_code == 409 and r.json()["error"]["code"] == "space_unavailable"
        assert c.post("/api/slots", params={"space": "encoder", "neighbors": 0}, files=files).status_code == 200
