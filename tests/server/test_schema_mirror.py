"""The API's response models are the indexer's documents, and nothing in a response is untyped.

Walks the OpenAPI schema the UI codes against: no response model may pass unknown fields through
(``extra="allow"``) or carry a free-form object (``dict[str, Any]``); the statistics and evaluation
models have exactly the fields of ``indexer.types.Stats`` / ``EvalResult`` plus the API's own; and a
real stored evaluation and real statistics of a real index validate against them.
"""

from __future__ import annotations

import dataclasses
import shutil

from indexer import types as indexer_types
from server import schemas
from server.app import create_app


def _refs(node, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def _response_components(spec: dict) -> set[str]:
    """Every component reachable from a response body."""
    comps = spec["components"]["schemas"]
    todo: set[str] = set()
    for path in spec["paths"].values():
        for op in path.values():
            for resp in op.get("responses", {}).values():
                _refs(resp.get("content", {}), todo)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        _refs(comps[name], todo)
    return seen


def _free_objects(node, where: str, out: list[str]) -> None:
    """Schemas that accept any object: ``type: object`` without properties, or any ``additionalProperties``
    that is ``true`` / ``{}``."""
    if isinstance(node, dict):
        extra = node.get("additionalProperties")
        if extra is True or extra == {}:
            out.append(where)
        if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            out.append(where)
        for k, v in node.items():
            _free_objects(v, f"{where}.{k}", out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _free_objects(v, f"{where}[{i}]", out)


def test_no_response_model_is_open(make_settings) -> None:
    spec = create_app(make_settings()).openapi()
    comps = spec["components"]["schemas"]
    reachable = _response_components(spec)
    assert {"Stats", "EvalResult", "Job", "CheckpointEntry", "SlotsResult"} <= reachable
    problems: list[str] = []
    for name in sorted(reachable):
        _free_objects(comps[name], name, problems)
    assert problems == [], f"free-form objects in responses: {problems}"
    for name in dir(schemas):
        model = getattr(schemas, name)
        if isinstance(model, type) and issubclass(model, schemas.BaseModel) and model.__name__ in reachable:
            assert model.model_config.get("extra") != "allow", name


def test_stats_and_eval_models_mirror_the_indexer_types() -> None:
    stats = {f.name for f in dataclasses.fields(indexer_types.Stats)}
    assert set(schemas.Stats.model_fields) == stats
    result = {f.name for f in dataclasses.fields(indexer_types.EvalResult)}
    assert set(schemas.EvalResult.model_fields) == result | {"id", "created_at", "examples"}
    nested = schemas.Stats.model_fields["active_per_image"].annotation
    assert set(nested.model_fields) == {f.name for f in dataclasses.fields(indexer_types.ActivePerImage)}


def test_real_stats_and_evaluations_fit_the_models(make_settings, server_index, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from indexer.evaluate import EvalConfig, run_eval
    from indexer.store import ConceptIndex

    copy = shutil.copytree(server_index, tmp_path / "with-eval")
    with ConceptIndex.open(copy) as ix:
        config = EvalConfig(
            ix.manifest.checkpoint.path,
            ix.data_root,
            "synthetic",
            resolution=32,
            limit=2,
            index_dir=copy,
            num_examples=1,
        )
    run_eval(config)
    with TestClient(create_app(make_settings(index=copy))) as client:
        _check_stats_and_evals(client)


def _check_stats_and_evals(client) -> None:
    stats = client.get("/api/stats")
    assert stats.status_code == 200, stats.text
    body = stats.json()
    schemas.Stats.model_validate(body)
    k = body["num_prototypes"]
    assert len(body["per_prototype"]["images"]) == k
    # near-duplicates at any threshold: -1 takes every pair, 1.0 (practically) none of distinct vectors
    every = client.get("/api/stats", params={"duplicate_threshold": -1.0}).json()
    assert len(every["near_duplicates"]) == k * (k - 1) // 2 and every["duplicate_threshold"] == -1.0
    sim = client.get("/api/prototypes/similarity").json()["cosine"]
    for d in every["near_duplicates"]:
        assert d["a"] < d["b"] and abs(d["cosine"] - sim[d["a"]][d["b"]]) < 2e-3
    above = client.get("/api/stats", params={"duplicate_threshold": 0.5}).json()["near_duplicates"]
    assert {(d["a"], d["b"]) for d in above} == {
        (a, b) for a in range(k) for b in range(a + 1, k) if sim[a][b] > 0.5 + 1e-3
    } | {(d["a"], d["b"]) for d in above if abs(d["cosine"] - 0.5) <= 1e-3}
    assert client.get("/api/stats", params={"duplicate_threshold": 2}).status_code == 422
    evals = client.get("/api/eval").json()["items"]
    assert evals, "the server fixture's index stores a real evaluation"
    for item in evals:
        schemas.EvalResult.model_validate(item)
        assert 0.0 <= item["miou"] <= 1.0 and len(item["per_class"]) == len(item["class_names"])
