"""``GET /api/options``: the choices of every form (presets, precisions, protocols, baselines, defaults),
served from :mod:`core.recipes` so that no client restates them."""

from __future__ import annotations

from fastapi import APIRouter

from core import recipes
from server.schemas import Options, PresetOption

router = APIRouter(tags=["options"])


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
    )
