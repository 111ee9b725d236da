"""``GET /api/options`` serves the recipes (core.recipes) the forms start from, and what it offers is
accepted by the routes that take it."""

from __future__ import annotations

from core import recipes


def test_options_are_the_recipes(client) -> None:
    body = client.get("/api/options").json()
    assert [p["name"] for p in body["presets"]] == list(recipes.PRESETS)
    demo = next(p for p in body["presets"] if p["name"] == recipes.DEFAULT_PRESET)
    warmup = float(recipes.PRESETS[recipes.DEFAULT_PRESET]["warmup_epochs"])
    assert demo == {
        "name": recipes.DEFAULT_PRESET,
        **recipes.preset_form(recipes.DEFAULT_PRESET),
        "warmup_epochs": warmup,
    }
    assert body["default_preset"] == recipes.DEFAULT_PRESET
    assert body["baselines"] == list(recipes.BASELINES) and body["protocols"] == list(recipes.PROTOCOLS)
    assert (body["index_resize"], body["index_crop"]) == (recipes.INDEX_RESIZE, recipes.INDEX_CROP)
    assert body["eval_resolution"] == recipes.EVAL_RESOLUTION
    assert body["near_duplicate_threshold"] == recipes.NEAR_DUPLICATE_THRESHOLD


def test_every_offered_choice_validates(client) -> None:
    """A request built from the options passes validation (it fails later, for lack of a run or data,
    never with a 422)."""
    body = client.get("/api/options").json()
    for preset in body["presets"]:
        overrides = {k: v for k, v in preset.items() if k != "name"}
        r = client.post(
            "/api/jobs/train", json={"preset": preset["name"], "overrides": overrides, "name": "x", "resume": True}
        )
        assert r.status_code == 404, r.text  # the run 'x' does not exist: validation passed
    bad = client.post("/api/jobs/train", json={"preset": "no-such-preset"})
    assert bad.status_code == 422


def test_the_training_forms_ranges_are_what_the_api_takes(client) -> None:
    """Each number of the training form offers exactly the API's range: its bounds are taken (an excluded one
    is not), and one step past them is a 422."""
    ranges = client.get("/api/options").json()["train_ranges"]
    assert {"epochs", "batch_size", "lr", "num_prototypes", "budget_minutes", "max_minutes"} <= set(ranges)
    for name, rng in ranges.items():
        kind = int if name in ("epochs", "batch_size", "num_prototypes") else float
        step = 1 if kind is int else 1e-6
        lo = rng["minimum"] + (step if rng["exclusive_minimum"] else 0)
        hi = rng["maximum"] - (step if rng["exclusive_maximum"] else 0)
        for value, status in ((lo, 404), (hi, 404), (lo - step, 422), (hi + step, 422)):
            body = {"preset": "cpu-demo", "overrides": {name: kind(value)}, "name": "none-such", "resume": True}
            r = client.post("/api/jobs/train", json=body)
            assert r.status_code == status, (name, value, r.text)
