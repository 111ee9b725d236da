"""``GET /api/options``: the choices of every form (presets, precisions, protocols, baselines, defaults),
served from :mod:`core.recipes` so that no client restates them."""

from __future__ import annotations

from fastapi import APIRouter

from core import recipes
from core.train_fields import client_fields
from server.schemas import FieldRange, Options, PresetOption

router = APIRouter(tags=["options"])

#: The numbers of the UI's training form: the preset's main options and the hard stop.
FORM_NUMBERS = tuple(n for n in (*recipes.FORM_FIELDS, "max_minutes") if client_fields()[n].kind in (int, float))


def train_ranges() -> dict[str, FieldRange]:
    """The API's range of each number of the training form, from the training fields' table."""
    ranges = {}
    for name in FORM_NUMBERS:
        rule = client_fields()[name].api_rule
        assert rule is not None and rule.lo is not None and rule.hi is not None, name  # every client number is capped
        ranges[name] = FieldRange(
            minimum=rule.lo, maximum=rule.hi, exclusive_minimum=rule.lo_open, exclusive_maximum=rule.hi_open
        )
    return ranges


@router.get("/options")
def options() -> Options:
    """The presets with their main options, and the choices and defaults of the evaluation and index forms."""
    return Options(
        presets=[
            PresetOption(
                name=name, **recipes.preset_form(name), warmup_epochs=float(recipes.PRESETS[name]["warmup_epochs"])
            )
            for name in recipes.PRESETS
        ],
        default_preset=recipes.DEFAULT_PRESET,
        precisions=list(recipes.PRECISIONS),
        protocols=list(recipes.PROTOCOLS),
        baselines=list(recipes.BASELINES),
        eval_resolution=recipes.EVAL_RESOLUTION,
        eval_splits=list(recipes.EVAL_SPLITS),
        index_resize=recipes.INDEX_RESIZE,
        index_crop=recipes.INDEX_CROP,
        near_duplicate_threshold=recipes.NEAR_DUPLICATE_THRESHOLD,
        train_ranges=train_ranges(),
    )
