"""The training fields are defined once (core.train_fields): the trainer's rules and the server's
``TrainOverrides`` are built from the table, so neither can drift from it or from ``TrainConfig``. Every bound
is tried on both sides: the value at it is accepted, the one past it refused, by the trainer (with its message)
and by the API (a validation error; tests/server/test_train_overrides.py sends some over HTTP)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
from pydantic import ValidationError

from core import recipes
from core.train_fields import ARCHS, TRAIN_FIELDS, Rule, TrainField, client_fields, trainer_rules
from server.schemas import TrainOverrides
from tests.core.bounds import edges
from trainer.config import RULES, TrainConfig

CONFIG_TYPES = typing.get_type_hints(TrainConfig)
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


RANGES = [(name, spec) for name, spec in TRAIN_FIELDS.items() if spec.rule is not None and not spec.rule.choices]
CLIENT_RANGES = [(name, spec) for name, spec in client_fields().items() if spec.rule and not spec.rule.choices]


def test_the_table_imports_no_torch_and_no_pydantic() -> None:
    code = "import sys, core.train_fields; bad = {'torch', 'pydantic'} & set(sys.modules); assert not bad, bad"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_archs_are_the_encoders() -> None:
    from core.encoder import ARCHS as ENCODERS

    assert tuple(ENCODERS) == ARCHS


@pytest.mark.parametrize("name", list(TRAIN_FIELDS))
def test_every_field_is_a_train_config_field_of_its_type(name: str) -> None:
    spec = TRAIN_FIELDS[name]
    assert name in CONFIG_FIELDS, f"TRAIN_FIELDS[{name!r}] is no TrainConfig field"
    assert not CONFIG_FIELDS[name].metadata.get("derived"), name  # derived while running, never given
    assert CONFIG_TYPES[name] is spec.kind, (name, CONFIG_TYPES[name], spec.kind)
    default = getattr(TrainConfig(), name)
    for rule in (spec.rule, spec.api_rule):
        if rule is not None:
            rule.check(name, default)  # the defaults (the release's recipe) pass the trainer and the API
            assert bool(rule.choices) == (spec.kind is str), name  # texts are choices, numbers ranges
    if spec.kind is bool:
        assert spec.rule is None and spec.api_rule is None, name


def test_every_numeric_and_choice_field_of_the_config_is_in_the_table() -> None:
    for name, field in CONFIG_FIELDS.items():
        if CONFIG_TYPES[name] in (int, float) and not field.metadata.get("derived"):
            assert name in TRAIN_FIELDS and TRAIN_FIELDS[name].rule is not None, name


def test_the_trainers_rules_are_the_table() -> None:
    assert RULES == trainer_rules() == {n: s.rule for n, s in TRAIN_FIELDS.items() if s.rule is not None}
    assert all(RULES[n] is TRAIN_FIELDS[n].rule for n in RULES)


def _plain(annotation: object) -> tuple[object, tuple]:
    """(the type, the Literal's choices or ()) of an ``X | None`` annotation."""
    (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(inner) is typing.Literal:
        return str, typing.get_args(inner)
    return inner, ()


def test_the_api_overrides_are_the_tables_client_fields() -> None:
    """Names (in the table's order), types, choices, bounds and descriptions: all from the table."""
    assert list(TrainOverrides.model_fields) == list(client_fields())
    assert TrainOverrides.model_config == {"extra": "forbid", "strict": True, "allow_inf_nan": False}
    for name, field in TrainOverrides.model_fields.items():
        spec, rule = TRAIN_FIELDS[name], TRAIN_FIELDS[name].api_rule
        kind, choices = _plain(field.annotation)
        assert kind is spec.kind and field.default is None, name
        assert choices == (rule.choices if rule else ()), name
        assert (field.description or "") == spec.description, name
        bounds = {k: getattr(m, k) for m in field.metadata for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}
        assert len(bounds) == len(field.metadata), (name, field.metadata)
        expected = {}
        if rule is not None and not rule.choices:
            if rule.lo is not None:
                expected["gt" if rule.lo_open else "ge"] = rule.lo
            if rule.hi is not None:
                expected["lt" if rule.hi_open else "le"] = rule.hi
        assert bounds == expected, name


def test_every_client_number_is_capped_and_no_wider_than_the_trainer_allows() -> None:
    """The API bounds every number, and its range lies inside the trainer's."""
    looser = set()
    for name, spec in CLIENT_RANGES:
        api, trainer = spec.api_rule, spec.rule
        assert api is not None and api.hi is not None, f"{name}: the API leaves it unbounded"
        accepted, _ = edges(api, spec.kind)
        for value in accepted:
            try:
                trainer.check(name, value)
            except ValueError:
                looser.add(name)
    assert looser == set()  # a request the API takes never fails the trainer's checks at the job's start
    for name, spec in client_fields().items():
        if spec.rule is not None and spec.rule.choices:
            assert set(spec.api_rule.choices) == set(spec.rule.choices), name


@pytest.mark.parametrize("name", [n for n, _ in RANGES])
def test_the_trainer_accepts_each_bound_and_refuses_one_past_it(name: str) -> None:
    spec = TRAIN_FIELDS[name]
    accepted, refused = edges(spec.rule, spec.kind)
    for value in accepted:
        TrainConfig(**{name: value}).validate()
    for value in refused:
        with pytest.raises(ValueError) as e:
            TrainConfig(**{name: value}).validate()
        assert str(e.value) == f"{name}={value!r}: must be {spec.rule.describe()}"


@pytest.mark.parametrize("name", [n for n, _ in CLIENT_RANGES])
def test_the_api_accepts_each_bound_and_refuses_one_past_it(name: str) -> None:
    spec = TRAIN_FIELDS[name]
    accepted, refused = edges(spec.api_rule, spec.kind)
    for value in accepted:
        assert getattr(TrainOverrides.model_validate({name: value}), name) == value
    for value in refused:
        with pytest.raises(ValidationError) as e:
            TrainOverrides.model_validate({name: value})
        assert e.value.errors()[0]["loc"] == (name,)


@pytest.mark.parametrize("name", [n for n, s in client_fields().items() if s.rule is not None and s.rule.choices])
def test_choices_are_the_same_for_the_trainer_and_the_api(name: str) -> None:
    spec = TRAIN_FIELDS[name]
    for choice in spec.rule.choices:
        TrainConfig(**{name: choice}).validate()
        assert getattr(TrainOverrides.model_validate({name: choice}), name) == choice
    with pytest.raises(ValueError, match=rf"^{name}='nope': must be one of "):
        TrainConfig(**{name: "nope"}).validate()
    with pytest.raises(ValidationError):
        TrainOverrides.model_validate({name: "nope"})


def test_the_edges_helper_sees_open_and_closed_bounds() -> None:
    """The bound test above cannot pass vacuously: its helper names the values on both sides of each bound."""
    assert edges(Rule(0, 1, hi_open=True), int) == ([0, 0], [-1, 1])
    assert edges(Rule(0, lo_open=True), float) == ([5e-324], [0.0])
    assert edges(Rule(2, 10), int) == ([2, 10], [1, 11])
    assert TrainField(int, Rule(1), api_max=5).api_rule == Rule(1, 5)


@pytest.mark.parametrize("name", sorted(recipes.PRESETS))
def test_every_presets_client_values_pass_the_api(name: str) -> None:
    """A client that sends a preset's own values back is never refused."""
    values = {k: v for k, v in recipes.PRESETS[name].items() if k in client_fields()}
    values = {k: float(v) if client_fields()[k].kind is float else v for k, v in values.items()}
    assert TrainOverrides.model_validate(values).model_dump(exclude_none=True) == values
