"""``POST /api/jobs/train`` takes its overrides' bounds from core.train_fields: over HTTP, the value at each
bound of a few fields passes validation and the one past it is a 422 naming the field (the whole table is
tried on the model in tests/core/test_train_fields.py)."""

from __future__ import annotations

import pytest

from core.train_fields import TRAIN_FIELDS, client_fields
from tests.core.bounds import edges

#: Fields of every kind of bound: closed and open, the API's cap, a trainer's bound the API keeps.
FIELDS = ("epochs", "batch_size", "lr", "momentum", "min_scale", "seed", "save_every", "warmup_epochs")


def test_the_fields_tried_are_client_fields_with_two_bounds() -> None:
    for name in FIELDS:
        rule = client_fields()[name].api_rule
        assert rule.lo is not None and rule.hi is not None, name
    kinds = {(TRAIN_FIELDS[n].api_rule.lo_open, TRAIN_FIELDS[n].api_rule.hi_open) for n in FIELDS}
    assert kinds == {(False, False), (True, False), (False, True)}


@pytest.mark.parametrize("name", FIELDS)
def test_each_bound_is_accepted_and_one_past_it_refused(client, name: str) -> None:
    accepted, refused = edges(TRAIN_FIELDS[name].api_rule, TRAIN_FIELDS[name].kind)
    for value in accepted:
        body = {"preset": "cpu-demo", "overrides": {name: value}, "name": "no-such-run", "resume": True}
        r = client.post("/api/jobs/train", json=body)
        assert r.status_code == 404, (name, value, r.text)  # validated; the run to resume does not exist
    for value in refused:
        r = client.post("/api/jobs/train", json={"preset": "cpu-demo", "overrides": {name: value}})
        assert r.status_code == 422, (name, value, r.text)
        assert name in r.json()["error"]["message"]
    assert client.get("/api/jobs").json()["items"] == []
