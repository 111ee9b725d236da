"""``GET /api/segments/{id}/neighbors?space=``: neighbours in the projector or the encoder embedding (issue 17),
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
