"""The training DataLoader: deterministic per-sample augmentation seeds, DDP sharding, resumable position.

Every sample's augmentation is seeded from ``(seed, epoch, rank, position in the epoch)``: Python
``random``, NumPy and torch are reseeded in the worker right before the image is augmented. So the
views of a step do not depend on the number of workers, ranks never draw the same augmentations, and
a run resumed in the middle of an epoch gets exactly the batches an uninterrupted run would have had
(the sampler starts at the first batch not yet trained; nothing is loaded to skip the others).
"""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from core.augment import FastTwoViewAugment, TwoViewAugment, collate_two_views
from core.datasets import TwoViewDataset, find_images
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)


class DataError(RuntimeError):
    """A dataset problem reported before training starts (missing path, too few images, ...)."""


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """Returns the 63-bit augmentation seed of one sample (stable across workers and resumes)."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank, position])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 1 << 31]))


class SeededTwoViews(Dataset):
    """Wraps a two-view dataset: item ``(index, seed)`` → the views of image ``index`` drawn with ``seed``."""

    def __init__(self, dataset: TwoViewDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        return self.dataset[index]


class ResumableSampler(Sampler):
    """DistributedSampler (shuffled, reseeded per epoch) yielding ``(index, seed)`` from a start offset."""

    def __init__(self, num_images: int, world_size: int, rank: int, seed: int, batch_size: int) -> None:
        self.inner = DistributedSampler(
            range(num_images), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.seed, self.rank, self.batch_size = seed, rank, batch_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and the first batch to produce."""
        self.epoch, self.start_batch = epoch, start_batch
        self.inner.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        """Returns the number of full local batches per epoch."""
        return len(self.inner) // self.batch_size

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self.inner)[: self.batches_per_epoch() * self.batch_size]
        for pos in range(self.start_batch * self.batch_size, len(indices)):
            yield indices[pos], sample_seed(self.seed, self.epoch, self.rank, pos)


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: let the main process save and stop the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


#: Splits of a COCO root that the index and the evaluation use: never trained on by default.
HELD_OUT_SPLITS = ("val2017", "test2017")


def training_images(cfg: TrainConfig) -> list[Path]:
    """Returns the training images: those of each split folder of ``cfg.split`` in turn (each sorted), or of the
    data folder itself when no split is named. Raises :class:`DataError` for a missing path or split, and for
    a COCO root with held-out splits (val2017, test2017) and no split named: walking it whole would train on
    the evaluation images."""
    root = Path(cfg.data)
    if not root.exists():
        hint = " (generate it with: slotcon synth --out data/synthetic)" if "synthetic" in str(root) else ""
        raise DataError(f"dataset path {str(root)!r} does not exist{hint}")
    if not cfg.split:
        held_out = [s for s in HELD_OUT_SPLITS if (root / "annotations").is_dir() and (root / s).is_dir()]
        if held_out:
            raise DataError(
                f"{str(root)!r} is a COCO root with {', '.join(held_out)} (the splits the index and "
                "the evaluation use): name the splits to train on, e.g. --split train2017 (COCO) or "
                "--split train2017,unlabeled2017 (COCO+)"
            )
    try:
        if not cfg.split:
            return find_images(root, None)
        return [p for split in cfg.split for p in find_images(root, split)]
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e


def build_loader(cfg: TrainConfig, world_size: int, rank: int) -> tuple[DataLoader, ResumableSampler]:
    """Returns the training loader and its sampler; raises :class:`DataError` with a clear message."""
    root = Path(cfg.data)
    paths = training_images(cfg)
    if cfg.batch_size % world_size:
        raise DataError(f"batch_size {cfg.batch_size} is not divisible by the {world_size} processes")
    local_batch = cfg.batch_size // world_size
    if len(paths) // world_size < local_batch:
        raise DataError(
            f"dataset {str(root)!r} (splits {','.join(cfg.split) or 'none'}) has {len(paths)} images, "
            f"fewer than one batch of {cfg.batch_size}; lower --batch-size"
        )
    aug_cls = FastTwoViewAugment if cfg.fast_augment else TwoViewAugment
    dataset = SeededTwoViews(
        TwoViewDataset(paths, aug_cls(cfg.image_size, cfg.min_scale), skip_unreadable=cfg.skip_unreadable)
    )
    sampler = ResumableSampler(len(paths), world_size, rank, cfg.seed, local_batch)
    workers = max(cfg.workers, 0)
    loader = DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, local_batch, drop_last=True),
        num_workers=workers,
        collate_fn=collate_two_views,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        persistent_workers=cfg.persistent_workers and workers > 0,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    logger.info(
        "%d training images in %s (splits %s), %d batches of %d per process per epoch",
        len(paths),
        root,
        ",".join(cfg.split) or "none: the whole folder",
        sampler.batches_per_epoch(),
        local_batch,
    )
    return loader, sampler
