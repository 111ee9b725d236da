"""The training page's preset defaults are the trainer's: the UI keeps a copy (it does not import torch)."""

from __future__ import annotations

import argparse

import pytest

from trainer.config import PRESETS, resolve_config
from ui.app_pages.training import PRESETS as UI_PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_training_form_defaults_match_the_trainer(name: str) -> None:
    cfg = resolve_config(argparse.Namespace(preset=name, config=None))
    assert UI_PRESETS[name] == {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                "num_prototypes": cfg.num_prototypes, "precision": cfg.precision,
                                "budget_minutes": cfg.budget_minutes}


def test_every_trainer_preset_is_offered() -> None:
    assert set(UI_PRESETS) == set(PRESETS)
