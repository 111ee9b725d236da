"""SlotCon pretraining: config, LARS, schedules, the training engine, checkpoints and export."""

from trainer.config import PRESETS, TrainConfig
from trainer.lars import LARS
from trainer.schedules import lr_schedule, teacher_momentum_schedule

__all__ = ["LARS", "PRESETS", "TrainConfig", "lr_schedule", "teacher_momentum_schedule"]
