"""The recipes are defined once: the trainer resolves its presets from them, the training form's main
options equal the resolved configs, and the server's request schemas agree with the trainer's config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest

from core import recipes
from server.schemas import EvalRequest, IndexRequest, TrainOverrides, TrainRequest
from trainer.config import PRESETS, TrainConfig, resolve_config


def _typed(value: object) -> object:
    """``value`` with the type of every number kept (``5`` and ``5.0`` differ), for an exact comparison."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def test_the_presets_hold_the_values_recorded_before_they_were_derived() -> None:
    """The presets are a base recipe plus differences, each writing to ``runs/<name>``; data/presets_recorded.json
    holds every preset's values as they were written out in full, before: the derivation changed none of them."""
    recorded = json.loads((Path(__file__).parent / "data" / "presets_recorded.json").read_text())
    assert list(recipes.PRESETS) == list(recorded)
    assert _typed(recipes.PRESETS) == _typed(recorded)
    lists = [v for preset in recipes.PRESETS.values() for v in preset.values() if isinstance(v, list)]
    assert len({id(v) for v in lists}) == len(lists)  # no preset shares a list with another


def test_the_trainer_resolves_the_recipes_presets() -> None:
    assert PRESETS is recipes.PRESETS and recipes.DEFAULT_PRESET in PRESETS


@pytest.mark.parametrize("name", sorted(recipes.PRESETS))
def test_the_form_values_are_the_resolved_config(name: str) -> None:
    cfg = resolve_config(argparse.Namespace(preset=name, config=None))
    assert recipes.preset_form(name) == {key: getattr(cfg, key) for key in recipes.FORM_FIELDS}


def _plain(annotation: object) -> tuple[type, tuple]:
    """(the Python type, the Literal choices or ()) of an ``X | None`` field annotation."""
    args = (
        [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else [annotation]
    )
    (inner,) = args
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        return type(choices[0]), choices
    return inner, ()


def test_train_overrides_mirror_the_train_config() -> None:
    """Every field a client may override is a TrainConfig field of the same type (a rename or a type
    change on either side fails here)."""
    config = {f.name: f for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    for name, field in TrainOverrides.model_fields.items():
        assert name in config, f"TrainOverrides.{name} is no TrainConfig field"
        assert not config[name].metadata.get("derived"), name
        kind, choices = _plain(field.annotation)
        assert kind is type(getattr(defaults, name)), (name, kind, type(getattr(defaults, name)))
        if choices:
            assert getattr(defaults, name) in choices, name
    assert set(typing.get_args(TrainOverrides.model_fields["precision"].annotation)[0].__args__) == set(
        recipes.PRECISIONS
    )


def test_the_request_schemas_take_their_choices_from_the_recipes() -> None:
    assert set(typing.get_args(TrainRequest.model_fields["preset"].annotation)) == set(recipes.PRESETS)
    assert TrainRequest().preset == recipes.DEFAULT_PRESET
    assert typing.get_args(EvalRequest.model_fields["baseline"].annotation) == recipes.BASELINES
    assert typing.get_args(EvalRequest.model_fields["protocol"].annotation) == recipes.PROTOCOLS
    assert EvalRequest().resolution == recipes.EVAL_RESOLUTION
    index = IndexRequest(run="r")
    assert (index.resize, index.crop) == (recipes.INDEX_RESIZE, recipes.INDEX_CROP)


def test_the_recipes_import_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, core.recipes; assert 'torch' not in sys.modules, 'torch'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
