"""Recipes, defined once: every fact about a run that crosses a package boundary.

Pure data (no torch): the trainer's presets (:mod:`trainer.config` resolves them), the evaluation's
protocols and baselines, the index's resolution defaults, the near-duplicate threshold and the evaluation
resolution. The server serves them at ``GET /api/options``; its request schemas, the UI's forms and
``slotcon demo`` derive from them, so no other module restates a value.
"""

from __future__ import annotations

import copy
from typing import Any

#: The release's recipe (scripts/slotcon_*_r50_*.sh with main_pretrain.py's defaults; tests/trainer/test_recipes.py
#: compares every value): R50, projector 4096 → 256, K = 256, τ_t 0.07 / τ_s 0.1 / slot τ 0.2, centre momentum
#: 0.9, teacher momentum 0.99 → 1, LARS (η 0.001, momentum 0.9, weight decay 1e-5) at lr 1.0 × batch/256 for a
#: batch of 512, warm-up from lr/100 over 5 epochs, cosine to 1e-6; --fp16 (here ``auto``: fp16 with the grad
#: scaler on every GPU, as the release; bf16 only when asked). The dataclass defaults are these values; the
#: presets restate the ones the scripts pass. Splits are named explicitly, and no preset reads val2017 or
#: test2017, the splits that the index and the evaluation use.
_R50_COCO: dict[str, Any] = dict(
    arch="resnet50",
    dim_hidden=4096,
    dim_out=256,
    num_prototypes=256,
    teacher_momentum=0.99,
    teacher_temp=0.07,
    group_loss_weight=0.5,
    batch_size=512,
    optimizer="lars",
    lr=1.0,
    weight_decay=1e-5,
    warmup_epochs=5,
    epochs=800,
    precision="auto",
    budget_minutes=0.0,
    log_every=10,
    save_every=50,
    workers=8,
)
#: The release's datasets: COCO (train2017, and unlabeled2017 for COCO+) and ImageNet (K = 2048, a checkpoint
#: every 5 epochs); each preset then names its splits and length.
_R50_COCO_ROOT: dict[str, Any] = dict(_R50_COCO, data="data/coco", split=["train2017"])
_R50_IMAGENET: dict[str, Any] = dict(
    _R50_COCO, data="data/imagenet", split=["train"], num_prototypes=2048, save_every=5
)


def _in_runs(presets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``presets``, each one training into ``runs/<its name>`` and holding its own copies of the lists."""
    return {name: copy.deepcopy(values) | {"output_dir": f"runs/{name}"} for name, values in presets.items()}


#: name → field overrides on top of the dataclass defaults (``output_dir``: ``runs/<name>``).
PRESETS: dict[str, dict[str, Any]] = _in_runs(
    {
        # Synthetic scenes (2000 train images at 128 px, six classes, muted palette) on a 2-core CPU: a 3/8-width
        # ResNet-18 at stride 16 (a 6×6 map for 96 px crops), K = 6 (one prototype per class), LARS at an
        # unscaled lr, teacher momentum 0.95 → 1 and a sharper teacher (τ_t 0.04, DINO's value, instead of the
        # release's 0.07: at 0.07 the short run's assignments drift to uniform). Batch 16: what the short run
        # needs is updates (at batch 64, 186-310 steps, one or two prototypes die at the end of the warm-up and
        # never recover); the narrow network buys them. A 9-minute budget fixes the step count on the machine it
        # runs on, at most 8 epochs (1000 steps, 53-55 mIoU from 750 steps on); precision auto (bf16 only where
        # the CPU has it natively). Calibrated with bench/demo_quality.py; numbers in the README ("Demo quality").
        "cpu-demo": dict(
            data="data/synthetic",
            arch="resnet18",
            width=0.375,
            stride16=True,
            image_size=96,
            min_scale=0.2,
            dim_hidden=512,
            dim_out=128,
            num_prototypes=6,
            batch_size=16,
            optimizer="lars",
            lr=3.0,
            lr_scaling="none",
            warmup_epochs=1,
            epochs=8,
            budget_minutes=9.0,
            teacher_momentum=0.95,
            teacher_temp=0.04,
            precision="auto",
            channels_last=True,
            device="cpu",
            workers=1,
            pin_memory=False,
            threads=2,
            log_every=20,
            save_every=2,
            save_minutes=2.0,
        ),
        # the release's dataset "COCO": train2017/*.jpg
        "coco-r50-800ep": _R50_COCO_ROOT,
        # The paper's COCO-Stuff-27 model (Table 5; Section 4.4: "trained with K = 27 to match the number of
        # categories"): the COCO recipe with one prototype per coarse class, so the benchmark's one-to-one
        # Hungarian matching leaves no prototype unmatched (docs/evaluation.md: training to the 18.26 / 42.36 row).
        "coco-r50-800ep-k27": dict(_R50_COCO_ROOT, num_prototypes=27),
        # "COCOplus": train2017/*.jpg + unlabeled2017/*.jpg, read from a standard COCO root
        "cocoplus-r50-800ep": dict(_R50_COCO_ROOT, split=["train2017", "unlabeled2017"]),
        # "ImageNet": train/*/*.JPEG
        "imagenet-r50-100ep": dict(_R50_IMAGENET, epochs=100),
        "imagenet-r50-200ep": dict(_R50_IMAGENET, epochs=200),
    }
)

#: The preset a fresh checkout trains (``slotcon demo``, the trainer's and the UI's default).
DEFAULT_PRESET = "cpu-demo"
#: The trainer's numeric precisions (``auto``: bf16 where the hardware computes it natively).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: The training form's main options, in the order the UI shows them (the rest keep the preset's values).
FORM_FIELDS = ("epochs", "batch_size", "lr", "num_prototypes", "precision", "budget_minutes")


def preset_form(name: str) -> dict[str, Any]:
    """The main options of preset ``name`` (:data:`FORM_FIELDS`), as the training form starts from them;
    every preset states them (tests/core/test_recipes.py), so they equal the trainer's resolved config."""
    return {key: PRESETS[name][key] for key in FORM_FIELDS}


#: Unsupervised-segmentation protocols and baselines (``none`` = the checkpoint itself).
PROTOCOLS = ("synthetic", "cocostuff27")
BASELINES = ("none", "random-init", "kmeans-rgb")
#: Shorter side and centre-crop size of the evaluation (the paper's 320 × 320).
EVAL_RESOLUTION = 320
#: The splits an index or an evaluation may read.
EVAL_SPLITS = ("val2017", "train2017")

#: The index's model input: the shorter side resized to this, then a centre crop (the release's 256/224).
INDEX_RESIZE = 256
INDEX_CROP = 224
#: Two prototypes whose cosine is at least this are listed as near-duplicates by default.
NEAR_DUPLICATE_THRESHOLD = 0.9

#: The label value of pixels that belong to no class (label maps, COCO-Stuff's stuffthingmaps, predictions).
IGNORE_LABEL = 255
