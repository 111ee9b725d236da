"""``GET /api/prototypes?sort=&q=&hide_dead=&offset=&limit=``: the server filters, orders and pages the
prototype list (a K = 2048 grid loads one page); checked against orders computed here from the
index's own records, on the real tiny index with two concepts named."""

from __future__ import annotations

import pytest

from indexer.store import ConceptIndex


def _expected(records, sort: str, q: str = "", hide_dead: bool = False) -> list[int]:
    keep = [r for r in records if not (hide_dead and r.dead)]
    if q:
        ql = q.lower()
        keep = [r for r in keep if ql in (r.label or "").lower() or ql in (r.majority_class_name or "").lower()
                or ql in (str(r.id), f"#{r.id}")]  # fmt: skip
    by_id = sorted(keep, key=lambda r: r.id)
    if sort == "id":
        return [r.id for r in by_id]
    if sort in ("most_active", "least_active"):
        asc = sorted(by_id, key=lambda r: (r.num_images, r.pixel_share))
        if sort == "least_active":
            return [r.id for r in asc]
        desc = sorted(by_id, key=lambda r: (r.num_images, r.pixel_share), reverse=True)  # stable: id order in ties
        return [r.id for r in desc]
    if sort == "purity":
        return [r.id for r in sorted(by_id, key=lambda r: -1.0 if r.purity is None else r.purity, reverse=True)]
    assert sort == "label"
    return [r.id for r in sorted(by_id, key=lambda r: (r.label is None, (r.label or "").lower()))]


@pytest.fixture()
def named(client, server_index):
    """The client with prototypes 5 and 2 named "Zebra stripes" and "apple"."""
    assert client.put("/api/prototypes/5/label", json={"label": "Zebra stripes"}).status_code == 200
    assert client.put("/api/prototypes/2/label", json={"label": "apple"}).status_code == 200
    yield client
    client.delete("/api/prototypes/5/label")
    client.delete("/api/prototypes/2/label")


@pytest.mark.parametrize("sort", ["id", "most_active", "least_active", "purity", "label"])
@pytest.mark.parametrize("hide_dead", [False, True])
def test_pages_concatenate_to_the_filtered_order(named, server_index, sort: str, hide_dead: bool):
    with ConceptIndex.open(server_index) as ix:
        records = ix.prototypes()
    want = _expected(records, sort, hide_dead=hide_dead)
    got, offset = [], 0
    while True:
        params = {"sort": sort, "hide_dead": str(hide_dead).lower(), "offset": offset, "limit": 3}
        body = named.get("/api/prototypes", params=params).json()
        assert body["total"] == len(want) and body["offset"] == offset
        assert body["num_prototypes"] == 8 and body["num_dead"] == sum(r.dead for r in records)
        if not body["items"]:
            break
        assert len(body["items"]) <= 3
        got += [p["id"] for p in body["items"]]
        offset += 3
    assert got == want
    if sort == "label" and not hide_dead:  # named first (other tests may have named more), case-blind
        named_ids = {r.id for r in records if r.label}
        assert {2, 5} <= named_ids and set(got[: len(named_ids)]) == named_ids
        assert got.index(2) < got.index(5)  # "apple" before "Zebra stripes"


def test_the_query_keeps_labels_classes_and_ids(named, server_index):
    with ConceptIndex.open(server_index) as ix:
        records = ix.prototypes()
    for q in ("ZEBRA", "apple", "#3", "3", "box", " stripes "):
        body = named.get("/api/prototypes", params={"q": q}).json()
        assert [p["id"] for p in body["items"]] == _expected(records, "id", q.strip()), q
    assert named.get("/api/prototypes", params={"q": "no such concept"}).json()["total"] == 0


def test_no_parameters_is_every_prototype_and_bad_ones_are_422(client):
    body = client.get("/api/prototypes").json()
    assert [p["id"] for p in body["items"]] == list(range(8)) and body["total"] == body["num_prototypes"] == 8
    for params in ({"sort": "colour"}, {"limit": 0}, {"offset": -1}, {"q": "x" * 201}):
        r = client.get("/api/prototypes", params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", params
    beyond = client.get("/api/prototypes", params={"offset": 50, "limit": 5}).json()
    assert beyond["items"] == [] and beyond["total"] == 8
